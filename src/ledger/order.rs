//! One order's entry in the ledger, the order stripe that holds it with its expiry heap and
//! its idempotency queue, and the rules of which operation moves an order where.

use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use hashbrown::HashTable;
use slab::Slab;
use smallvec::SmallVec;

use super::sku::Movement;
use super::types::{OrderId, OrderRequest, OrderStatus, OrderView};
use crate::clock::Timestamp;

/// Which request created an order, so a retry of it gets the first answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    Reserve,
    Sell,
}

pub(super) struct OrderEntry {
    /// The order as it was placed, shared with its facts and views.
    pub(super) order: Arc<OrderRequest>,
    /// The snapshot generation when it was placed: a snapshot whose cut is newer leaves it
    /// out, since it did not exist at the cut.
    pub(super) born: u32,
    /// Each line's SKU version right after the order last took its units (placed, or paid
    /// after its lock expired), empty when unknown: a room tally created after that version
    /// never counted the order, so it gives nothing back when the order releases its units.
    pub(super) taken_versions: SmallVec<[u64; 1]>,
    pub(super) status: OrderStatus,
    pub(super) origin: Origin,
    pub(super) created_at: Timestamp,
    pub(super) expires_at: Timestamp,
    pub(super) updated_at: Timestamp,
}

impl OrderEntry {
    /// Whether `request` is this order again: the same platform, room and lines, the lines
    /// in any order (an order names each SKU once, so they compare as a set).
    pub(super) fn same_content(&self, request: &OrderRequest) -> bool {
        self.order.platform == request.platform
            && self.order.room == request.room
            && self.order.lines.len() == request.lines.len()
            && request
                .lines
                .iter()
                .all(|line| self.order.lines.iter().any(|mine| mine == line))
    }

    pub(super) fn view(&self, status: OrderStatus) -> OrderView {
        OrderView {
            order: self.order.clone(),
            status,
            created_at: self.created_at,
            expires_at: self.expires_at,
            updated_at: self.updated_at,
        }
    }
}

pub(super) fn is_finished(status: OrderStatus) -> bool {
    !matches!(status, OrderStatus::Locked)
}

/// An order as its stripe's slab stores it.
struct OrderSlot {
    /// The id's hash, kept so the table can grow without hashing every id again.
    hash: u64,
    entry: OrderEntry,
}

/// A pending lock in the expiry heap. Ordered by `expires_at`, then by the order it was
/// placed in, never by the id: equal expiries are common in a burst, and comparing
/// integers keeps a push cheap.
pub(super) struct Expiry {
    pub(super) expires_at: Timestamp,
    sequence: u64,
    pub(super) order_id: OrderId,
}

impl PartialEq for Expiry {
    fn eq(&self, other: &Self) -> bool {
        (self.expires_at, self.sequence) == (other.expires_at, other.sequence)
    }
}

impl Eq for Expiry {}

impl PartialOrd for Expiry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Expiry {
    /// Reversed, so that the max-heap `BinaryHeap` pops the earliest expiry first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.expires_at, other.sequence).cmp(&(self.expires_at, self.sequence))
    }
}

/// One order stripe: its orders, their pending expiries and their finishing times.
///
/// Orders live in a slab, appended in arrival order, and a small hash table maps each id's
/// hash to its slab index. Placing an order writes the next slab slot and four bytes of table,
/// instead of a whole order into a random bucket of a large table, which keeps a burst of new
/// orders out of main memory's way.
#[derive(Default)]
pub(super) struct OrderStripe {
    /// Slab indices, found by the order id's hash.
    index: HashTable<u32>,
    orders: Slab<OrderSlot>,
    /// Locks by expiry, earliest first. Entries whose order moved on are skipped when popped.
    pub(super) expiries: BinaryHeap<Expiry>,
    /// Numbers the expiries pushed, to order equal `expires_at`.
    expiries_pushed_count: u64,
    /// Settled orders (cancelled, expired, refunded) by the time they settled, oldest first,
    /// to forget them after the idempotency window. Entries whose order changed since are
    /// skipped when popped.
    pub(super) finished: VecDeque<(Timestamp, OrderId)>,
    /// Sold orders by the time they were sold, oldest first, to forget them after the refund
    /// window: a refund may come days later. Entries whose order changed since (a refund)
    /// are skipped when popped.
    pub(super) sold: VecDeque<(Timestamp, OrderId)>,
    /// Orders in the stripe whose status is `Locked`, kept as orders move so that counting
    /// them never walks the stripe.
    locked_count: usize,
    /// The newest snapshot cut this stripe was copied for.
    copied_generation: u32,
    /// While a snapshot copies the ledger, each order changed here after its cut, as it was
    /// at the cut (`None`: absent then); the copy takes these instead of what it finds.
    before_cut: std::collections::HashMap<OrderId, Option<super::values::OrderImage>>,
}

impl OrderStripe {
    fn find(&self, hash: u64, order_id: &OrderId) -> Option<usize> {
        let orders = &self.orders;
        self.index
            .find(hash, |index| {
                orders[*index as usize].entry.order.order_id == *order_id
            })
            .map(|index| *index as usize)
    }

    pub(super) fn get(&self, hash: u64, order_id: &OrderId) -> Option<&OrderEntry> {
        self.find(hash, order_id)
            .map(|index| &self.orders[index].entry)
    }

    pub(super) fn get_mut(&mut self, hash: u64, order_id: &OrderId) -> Option<&mut OrderEntry> {
        self.find(hash, order_id)
            .map(|index| &mut self.orders[index].entry)
    }

    /// Adds an order the caller checked is absent, and schedules its expiry or its
    /// forgetting.
    pub(super) fn insert(&mut self, hash: u64, entry: OrderEntry) {
        let order_id = &entry.order.order_id;
        if entry.status == OrderStatus::Locked {
            self.locked_count += 1;
            self.expire_at(entry.expires_at, order_id.clone());
        } else {
            self.finish(order_id, entry.status, entry.updated_at);
        }
        let index = self.orders.insert(OrderSlot { hash, entry });
        let index = u32::try_from(index).expect("an order stripe holds fewer than 2^32 orders");
        let orders = &self.orders;
        self.index
            .insert_unique(hash, index, |index| orders[*index as usize].hash);
    }

    pub(super) fn remove(&mut self, hash: u64, order_id: &OrderId) {
        let orders = &self.orders;
        if let Ok(occupied) = self.index.find_entry(hash, |index| {
            orders[*index as usize].entry.order.order_id == *order_id
        }) {
            let (index, _) = occupied.remove();
            let slot = self.orders.remove(index as usize);
            if slot.entry.status == OrderStatus::Locked {
                self.locked_count -= 1;
            }
        }
    }

    /// Before an order of this stripe changes because of an operation that read snapshot
    /// `generation` when it recorded its fact: keeps the order as it was, when a snapshot
    /// cut came before that fact and has not copied this stripe yet.
    pub(super) fn keep_before_cut(&mut self, hash: u64, order_id: &OrderId, generation: u32) {
        if generation <= self.copied_generation || self.before_cut.contains_key(order_id) {
            return;
        }
        // An order placed since the cut needs nothing kept: its `born` leaves it out. Only
        // one that existed at the cut is kept as it was, or as absent when it is placed again
        // after being forgotten.
        let image = match self.get(hash, order_id) {
            Some(entry) if generation <= entry.born => return,
            Some(entry) => Some(entry.image()),
            None => return,
        };
        self.before_cut.insert(order_id.clone(), image);
    }

    /// Copies up to `count` orders from slab position `start` on into `out`; returns the
    /// position to go on from, or `None` when the stripe is done.
    pub(super) fn copy_orders(
        &self,
        generation: u32,
        start: usize,
        count: usize,
        out: &mut Vec<super::values::OrderImage>,
    ) -> Option<usize> {
        let end = start.saturating_add(count);
        let capacity = self.orders.capacity();
        for position in start..end.min(capacity) {
            if let Some(slot) = self.orders.get(position)
                && slot.entry.born < generation
            {
                out.push(slot.entry.image());
            }
        }
        (end < capacity).then_some(end)
    }

    /// Ends the copy of this stripe for snapshot `generation`: what changed since the cut,
    /// as it was then.
    pub(super) fn finish_copy(
        &mut self,
        generation: u32,
    ) -> std::collections::HashMap<OrderId, Option<super::values::OrderImage>> {
        self.copied_generation = generation;
        std::mem::take(&mut self.before_cut)
    }

    /// An order of this stripe left `Locked`.
    pub(super) fn unlocked(&mut self) {
        self.locked_count -= 1;
    }

    fn expire_at(&mut self, expires_at: Timestamp, order_id: OrderId) {
        self.expiries_pushed_count += 1;
        self.expiries.push(Expiry {
            expires_at,
            sequence: self.expiries_pushed_count,
            order_id,
        });
    }

    /// Schedules the forgetting of an order that reached `status` at `now`.
    pub(super) fn finish(&mut self, order_id: &OrderId, status: OrderStatus, now: Timestamp) {
        let queue = match status {
            OrderStatus::Sold => &mut self.sold,
            _ => &mut self.finished,
        };
        queue.push_back((now, order_id.clone()));
    }

    /// Whether `expiry` is still the pending lock of its order.
    pub(super) fn is_pending(&self, hash: u64, expiry: &Expiry) -> bool {
        self.get(hash, &expiry.order_id).is_some_and(|entry| {
            entry.status == OrderStatus::Locked && entry.expires_at == expiry.expires_at
        })
    }

    pub(super) fn for_each(&self, mut visit: impl FnMut(&OrderEntry)) {
        for (_, slot) in self.orders.iter() {
            visit(&slot.entry);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.orders.len()
    }

    pub(super) fn locked_count(&self) -> usize {
        self.locked_count
    }
}

/// An operation on an existing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Confirm,
    Cancel,
    Refund,
    Expire,
}

pub(super) struct Move {
    pub(super) movement: Movement,
    pub(super) status: OrderStatus,
    /// A payment after expiry that takes the units again.
    pub(super) retaken: bool,
}

pub(super) enum Step {
    Move(Move),
    /// Already done by an earlier call: answer as it was answered, with this status.
    Replay(OrderStatus),
    /// Nothing to do, and not an error (cancelling an expired order).
    Nothing,
    Refuse,
}

impl Action {
    pub(super) fn verb(self) -> &'static str {
        match self {
            Action::Confirm => "confirmed",
            Action::Cancel => "cancelled",
            Action::Refund => "refunded",
            Action::Expire => "expired",
        }
    }

    pub(super) fn step(self, status: OrderStatus) -> Step {
        use OrderStatus::{Cancelled, Expired, Locked, Refunded, Sold};
        let moving = |movement, status, retaken| {
            Step::Move(Move {
                movement,
                status,
                retaken,
            })
        };
        match (self, status) {
            (Action::Confirm, Locked) => moving(Movement::LockToSold, Sold, false),
            (Action::Confirm, Expired) => moving(Movement::Sell, Sold, true),
            (Action::Confirm, Sold | Refunded) => Step::Replay(Sold),
            (Action::Cancel, Locked) => moving(Movement::Unlock, Cancelled, false),
            (Action::Cancel, Cancelled) => Step::Replay(Cancelled),
            (Action::Cancel, Expired) => Step::Nothing,
            (Action::Refund, Sold) => moving(Movement::Refund, Refunded, false),
            (Action::Refund, Refunded) => Step::Replay(Refunded),
            (Action::Expire, Locked) => moving(Movement::Unlock, Expired, false),
            (Action::Expire, _) => Step::Nothing,
            (Action::Confirm | Action::Cancel | Action::Refund, _) => Step::Refuse,
        }
    }
}

/// A transition of an existing order, as replay re-does it.
#[derive(Clone, Copy, Debug)]
pub(super) enum ReplayStep {
    Confirm,
    Retake,
    Cancel,
    Expire,
    Refund,
}

impl ReplayStep {
    /// The status before, the movement, and the status after.
    pub(super) fn transition(self) -> (OrderStatus, Movement, OrderStatus) {
        use OrderStatus::{Cancelled, Expired, Locked, Refunded, Sold};
        match self {
            ReplayStep::Confirm => (Locked, Movement::LockToSold, Sold),
            ReplayStep::Retake => (Expired, Movement::Sell, Sold),
            ReplayStep::Cancel => (Locked, Movement::Unlock, Cancelled),
            ReplayStep::Expire => (Locked, Movement::Unlock, Expired),
            ReplayStep::Refund => (Sold, Movement::Refund, Refunded),
        }
    }
}

impl OrderEntry {
    /// The order as a snapshot keeps it.
    pub(super) fn image(&self) -> super::values::OrderImage {
        super::values::OrderImage {
            order: self.order.clone(),
            status: self.status,
            sold_at_creation: self.origin == Origin::Sell,
            created_at: self.created_at,
            expires_at: self.expires_at,
            updated_at: self.updated_at,
            taken_versions: self.taken_versions.clone(),
        }
    }
}
