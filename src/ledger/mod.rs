//! The stock ledger: every SKU's quantities and every order's life cycle, in memory.
//!
//! Pure and synchronous: no tokio, no I/O, no wire formats. Time comes in as `now`. Each
//! successful operation returns a [`Fact`] that fully describes the change; [`Ledger::apply`]
//! replays facts, so the journal can rebuild the ledger from them.
//!
//! # Locking
//!
//! SKUs live in [`SKU_STRIPES_COUNT`] lock stripes and orders in [`ORDER_STRIPES_COUNT`], each a
//! `parking_lot::Mutex` around a hash table, chosen by hashing the id. An order operation locks
//! its order's stripe, then the stripes of its SKUs in ascending stripe index, so two
//! multi-line orders can never wait on each other in a cycle. Nothing takes an order stripe
//! while holding a SKU stripe. Every critical section is short and never blocks on anything
//! but another stripe. There is no global lock.
//!
//! A hand-written stripe array rather than a concurrent map: an order must hold several SKU
//! entries at once (all lines or none), each order stripe keeps its own expiry heap and
//! idempotency queue beside the table, and one hash per id serves both the stripe and the
//! slot.
//!
//! # Layout
//!
//! `types` (validated values and views), `fact`, `error`, `sku` (a SKU's entry and the
//! arithmetic of moving units), `order` (an order's entry, its stripe, and which operation
//! moves it where), `stripe` (tables, keys, guards), `replay` ([`Ledger::apply`]), `room`
//! (rooms, listings, plan shapes and their tallies: consumption, lost demand, outcomes,
//! halts), `show` (what a finished show leaves in its SKU's history), `values` and `image`
//! (snapshots), `durable` ([`DurableState`], the rooms and stocks as the journal has made
//! them durable).

mod allot;
mod by_platform;
mod durable;
mod error;
mod fact;
mod image;
mod order;
mod replay;
mod room;
mod show;
mod sku;
mod stripe;
mod synced;
mod types;
mod values;

#[cfg(test)]
mod tests;

use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use std::collections::{BTreeMap, HashMap};

use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;

pub use durable::DurableState;
pub use error::{LedgerError, ReplayError};
pub use fact::{AllotmentMove, Consumed, Fact, LostEntry, Stocks};
pub use room::{
    HALTS_KEPT_MAX, Halt, Listing, ListingState, ListingTally, Lost, LostReason, Outcomes,
    PLAN_POINTS_MAX, PlanPoint, PlanShape, PlatformLost, Policy, ROOM_LISTINGS_MAX, Room,
    RoomState, SERIES_BUCKET_MS, SERIES_POINTS_MAX, SHOW_MS_MAX, Series, corners_over,
};
pub use show::{CURVE_POINTS, SHOWS_KEPT_MAX, ShowRecord, average_curve, history_plan};
pub use types::{
    ACKNOWLEDGER_CHARS_MAX, Allocation, Exclusive, ID_CHARS_MAX, InvalidValue, LINE_QTY_MAX, Line,
    Lines, ListingAck, ListingId, ORDER_LINES_MAX, OrderId, OrderRequest, OrderStatus, OrderView,
    Platform, PlatformCount, Qty, RestockId, RoomId, STOCK_QTY_MAX, SkuId, SkuSettings, SkuUpdate,
    SkuView, Stock, SyncMark, stock_qty,
};
pub use values::{LedgerImage, OrderImage, SkuImage};

use crate::clock::Timestamp;
use order::{Action, OrderEntry, OrderStripe, Origin, Step, is_finished};
use sku::{Movement, Rules, SkuEntry, SkuSlot, put_sku_entry, sku_view};
use stripe::{Padded, SkuGuards, SkuKey, SkuTable, stripe_of};

/// SKU lock stripes: a power of two, enough that 2 cores rarely meet on one stripe unless they
/// sell the same SKU.
pub const SKU_STRIPES_COUNT: usize = 64;
/// Order lock stripes; orders are spread by id, so hot SKUs do not make hot order stripes.
/// Many, because a stripe's tables grow by doubling, inside the request that fills them: with
/// millions of remembered orders, 64 stripes made each doubling a copy of tens of megabytes
/// (a p999 of 61 ms under batches, against 30 ms with 1,024; docs/BENCHMARKS.md).
pub const ORDER_STRIPES_COUNT: usize = 1024;
/// Most expiries handled under one order stripe lock before it is released and taken again,
/// so a backlog of expiries never stalls orders on that stripe for long.
pub const EXPIRE_BATCH_MAX: usize = 256;
/// Most orders forgotten under one order stripe lock before it is released and taken again.
pub const FORGET_BATCH_MAX: usize = 256;

const _: () = assert!(SKU_STRIPES_COUNT.is_power_of_two());
const _: () = assert!(ORDER_STRIPES_COUNT.is_power_of_two());

/// Settings of the ledger as a whole.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// How long a lock lasts when the SKU sets no TTL of its own.
    pub lock_ttl: Duration,
    /// How long a settled order (cancelled, expired, refunded) is remembered, so a retry is
    /// answered as the first call was.
    pub idempotency_window: Duration,
    /// How long a sold order is remembered after its sale: it may be refunded until then
    /// (returns come days later), and a paid order sent again meanwhile is a retry, not a
    /// second sale. At least the idempotency window.
    pub refund_window: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            lock_ttl: Duration::from_secs(15 * 60),
            idempotency_window: Duration::from_secs(24 * 60 * 60),
            refund_window: Duration::from_secs(15 * 24 * 60 * 60),
        }
    }
}

/// Which finished orders to forget: settled ones (cancelled, expired, refunded) finished
/// before `settled_before`, sold ones sold before `sold_before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forget {
    pub settled_before: Timestamp,
    pub sold_before: Timestamp,
}

impl Forget {
    /// What is due at `now`: an order finished exactly a window ago is forgotten.
    pub fn at(now: Timestamp, idempotency_window: Duration, refund_window: Duration) -> Forget {
        let before = |window: Duration| {
            let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
            match now.as_millis().checked_sub(window_ms) {
                Some(due) => Timestamp::from_millis(due.saturating_add(1)),
                None => Timestamp::from_millis(0),
            }
        };
        Forget {
            settled_before: before(idempotency_window),
            sold_before: before(refund_window),
        }
    }
}

/// The answer to an order operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The order as this operation left it (for a replay: as the first call left it).
    pub order: OrderView,
    /// What changed; `None` when nothing did.
    pub fact: Option<Fact>,
    /// The same call was made before: this is its answer again, and nothing changed.
    pub replayed: bool,
}

/// How many SKUs and orders the ledger holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LedgerCounts {
    pub skus: u64,
    pub orders: u64,
    pub orders_locked: u64,
}

type Hasher = foldhash::fast::RandomState;

/// What moving an order's lines did.
struct Moved {
    /// The stock of each line's SKU after the move, in line order.
    stocks: Stocks,
    /// Each line's room listing consumption after the move.
    consumed: Consumed,
    /// The shortest lock TTL the order's SKUs set, if any sets one.
    lock_ttl_ms: Option<u64>,
}

/// The in-memory stock ledger. Share it behind an `Arc`; every method takes `&self`.
pub struct Ledger {
    config: LedgerConfig,
    /// Hashes ids for both the stripe and the slot; seeded at random so clients cannot aim
    /// many ids at one stripe.
    hasher: Hasher,
    skus: Box<[Padded<Mutex<SkuTable>>]>,
    orders: Box<[Padded<Mutex<OrderStripe>>]>,
    /// Where each fact goes as it happens (the journal); unset while replaying.
    sink: OnceLock<Arc<dyn FactSink>>,
    /// Every room by id. Taken last (after any stripe) and never held while taking another
    /// lock.
    rooms: RwLock<BTreeMap<RoomId, Arc<Room>>>,
    /// Serialises room changes, which touch several SKUs and the room map; taken first.
    room_writes: Mutex<()>,
    /// Counts the cuts snapshots took. An order operation reads it inside its SKU critical
    /// section, so it knows whether its fact comes after the newest cut, and then keeps the
    /// order as it was for the snapshot copying its stripe (see `image`).
    snapshot_generation: std::sync::atomic::AtomicU32,
    /// The longest any lock was held by the last export, in nanoseconds: the pause a
    /// snapshot imposes on the operations that need that lock.
    export_longest_hold_ns: std::sync::atomic::AtomicU64,
    /// Units refused since the last [`Ledger::flush_lost`], by room and SKU: counted as they
    /// happen, in the journal (and in the tallies) once flushed. Taken after any stripe.
    lost_pending: Mutex<HashMap<(RoomId, SkuId), Lost>>,
    /// The shows (room, start) whose end is in the SKUs' histories already: looked up here
    /// first so the sweeper does not lock their SKUs again every time.
    shows_ended: Mutex<std::collections::HashSet<(RoomId, Timestamp, Timestamp)>>,
}

/// Where facts go the moment they happen. `append` is called with the stripes of the change
/// still held, so the facts of one SKU arrive in the order they were applied, and a cut
/// taken with every stripe held sees exactly the facts appended so far. It must not block.
pub trait FactSink: Send + Sync {
    fn append(&self, fact: &Fact);
}

impl Ledger {
    pub fn new(config: LedgerConfig) -> Self {
        let skus = (0..SKU_STRIPES_COUNT)
            .map(|_| Padded(Mutex::new(SkuTable::default())))
            .collect();
        let orders = (0..ORDER_STRIPES_COUNT)
            .map(|_| Padded(Mutex::new(OrderStripe::default())))
            .collect();
        Ledger {
            config,
            hasher: Hasher::default(),
            skus,
            orders,
            sink: OnceLock::new(),
            rooms: RwLock::new(BTreeMap::new()),
            room_writes: Mutex::new(()),
            snapshot_generation: std::sync::atomic::AtomicU32::new(0),
            export_longest_hold_ns: std::sync::atomic::AtomicU64::new(0),
            lost_pending: Mutex::new(HashMap::new()),
            shows_ended: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Sends every fact from now on to `sink`. Replay happens before, without one.
    /// Returns `false` when a sink was attached already.
    pub fn attach(&self, sink: Arc<dyn FactSink>) -> bool {
        self.sink.set(sink).is_ok()
    }

    fn snapshot_generation(&self) -> u32 {
        self.snapshot_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn record(&self, fact: &Fact) {
        if let Some(sink) = self.sink.get() {
            sink.append(fact);
        }
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    fn sku_key<'a>(&self, sku: &'a SkuId) -> SkuKey<'a> {
        let hash = self.hasher.hash_one(sku);
        SkuKey {
            sku,
            hash,
            stripe: stripe_of(hash, SKU_STRIPES_COUNT),
        }
    }

    fn line_keys<'a>(&self, lines: &'a Lines) -> SmallVec<[SkuKey<'a>; 1]> {
        lines.iter().map(|line| self.sku_key(&line.sku)).collect()
    }

    /// The order id's hash and its stripe.
    fn order_key(&self, order_id: &OrderId) -> (u64, &Mutex<OrderStripe>) {
        let hash = self.hasher.hash_one(order_id);
        (hash, &self.orders[stripe_of(hash, ORDER_STRIPES_COUNT)].0)
    }

    /// Locks the stripes of every SKU in `keys`, in ascending index order.
    fn lock_skus(&self, keys: &[SkuKey<'_>]) -> SkuGuards<'_> {
        let mut stripes: SmallVec<[usize; 4]> = keys.iter().map(|key| key.stripe).collect();
        if 1 < stripes.len() {
            stripes.sort_unstable();
            stripes.dedup();
        }
        let guards = stripes
            .into_iter()
            .map(|index| (index, self.skus[index].0.lock()))
            .collect();
        SkuGuards {
            guards,
            generation: self.snapshot_generation(),
        }
    }

    /// Moves every line of an order, all or nothing: plans and checks every line first, then
    /// commits every line. `taken_versions` are each line's SKU version right after the
    /// order last took its units (empty when unknown): a room's tally gives back on release
    /// only what it counted, and a tally created since never counted them.
    #[allow(clippy::too_many_arguments)]
    fn move_lines(
        &self,
        skus: &mut SkuGuards<'_>,
        keys: &[SkuKey<'_>],
        order: &OrderRequest,
        taken_versions: &[u64],
        (movement, outcome): (Movement, OrderStatus),
        rules: Rules,
        now: Timestamp,
    ) -> Result<Moved, LedgerError> {
        let (lines, platform) = (&order.lines, &order.platform);
        let mut plans = SmallVec::<[_; 1]>::new();
        let mut lock_ttl_ms: Option<u64> = None;
        for (line, key) in lines.iter().zip(keys) {
            let entry = skus.entry(key).ok_or_else(|| LedgerError::SkuNotFound {
                sku: line.sku.clone(),
            })?;
            let qty = line.qty.get();
            if rules == Rules::Enforce && movement.takes_available() {
                let mut refused = entry.check_take(&line.sku, platform, qty).err();
                if let Some(room) = &order.room
                    && refused.is_none()
                    && entry.listing(room).is_some_and(|tally| tally.halted)
                {
                    refused = Some(LedgerError::ListingHalted {
                        room: room.clone(),
                        sku: line.sku.clone(),
                    });
                }
                if let Some(error) = refused {
                    return Err(error);
                }
            }
            let plan = entry.plan(platform, movement, qty).ok_or_else(|| {
                LedgerError::Invariant(format!(
                    "{movement:?} of {qty} would break the stock identity of sku {}",
                    line.sku
                ))
            })?;
            if let Some(ttl) = entry.settings.lock_ttl_ms {
                lock_ttl_ms = Some(lock_ttl_ms.map_or(ttl, |shortest| shortest.min(ttl)));
            }
            plans.push(plan);
        }
        let mut stocks = Stocks::new();
        let mut consumed = Consumed::new();
        let lines = keys.iter().zip(lines.iter()).zip(plans).enumerate();
        for (index, ((key, line), (quantities, tally))) in lines {
            let entry = skus
                .entry_mut(key)
                .expect("found in the planning pass under the same guards");
            entry.commit(quantities, tally, now);
            let mut listing_consumed = None;
            if let Some(room) = &order.room
                && let Some(listing) = entry.listing_mut(room)
            {
                let (taken, mut released) = movement.consumption(line.qty.get());
                let counted = taken_versions
                    .get(index)
                    .is_none_or(|version| listing.generation < *version);
                if !counted {
                    released = 0;
                }
                listing.consume(now, taken, released);
                listing.count_outcome(outcome, line.qty.get());
                listing_consumed = Some(listing.consumed);
            }
            if entry.quantities.available() == Some(0) {
                for listing in &mut entry.listings {
                    listing.note_sold_out(now);
                }
            }
            consumed.push(listing_consumed);
            stocks.push(entry.stock(key.sku));
        }
        Ok(Moved {
            stocks,
            consumed,
            lock_ttl_ms,
        })
    }

    /// Locks the SKUs of `order` and moves its lines under the business rules. A refusal
    /// that is a sale lost is counted (`count_lost`) once the SKU locks are released.
    fn take_lines<'a>(
        &'a self,
        keys: &[SkuKey<'_>],
        order: &OrderRequest,
        taken_versions: &[u64],
        movement: (Movement, OrderStatus),
        now: Timestamp,
    ) -> Result<(SkuGuards<'a>, Moved), LedgerError> {
        let mut skus = self.lock_skus(keys);
        match self.move_lines(
            &mut skus,
            keys,
            order,
            taken_versions,
            movement,
            Rules::Enforce,
            now,
        ) {
            Ok(moved) => Ok((skus, moved)),
            Err(error) => {
                drop(skus);
                self.count_lost(order, &error);
                Err(error)
            }
        }
    }

    /// Places an order: locks its units until the lock expires.
    pub fn reserve(&self, now: Timestamp, request: OrderRequest) -> Result<Answer, LedgerError> {
        let (order_hash, stripe) = self.order_key(&request.order_id);
        let mut stripe = stripe.lock();
        if let Some(existing) = stripe.get(order_hash, &request.order_id) {
            return replay_creation(existing, &request);
        }
        let keys = self.line_keys(&request.lines);
        let (skus, moved) = self.take_lines(
            &keys,
            &request,
            &[],
            (Movement::Lock, OrderStatus::Locked),
            now,
        )?;
        let taken_versions = versions(&moved.stocks);
        drop(keys);
        let lock_ttl = moved
            .lock_ttl_ms
            .map_or(self.config.lock_ttl, Duration::from_millis);
        let expires_at = now.saturating_add(lock_ttl);
        let order = Arc::new(request);
        let fact = Fact::OrderReserved {
            at: now,
            order: order.clone(),
            expires_at,
            stocks: moved.stocks,
            consumed: moved.consumed,
        };
        self.record(&fact);
        let generation = self.snapshot_generation();
        drop(skus);
        stripe.keep_before_cut(order_hash, &order.order_id, generation);
        let entry = OrderEntry {
            born: generation,
            taken_versions,
            order,
            status: OrderStatus::Locked,
            origin: Origin::Reserve,
            created_at: now,
            expires_at,
            updated_at: now,
        };
        let view = entry.view(OrderStatus::Locked);
        stripe.insert(order_hash, entry);
        Ok(Answer {
            order: view,
            fact: Some(fact),
            replayed: false,
        })
    }

    /// Places a paid order: takes its units straight to `sold`. For an order already
    /// reserved with the same content, this is its payment.
    pub fn sell(&self, now: Timestamp, request: OrderRequest) -> Result<Answer, LedgerError> {
        let (order_hash, stripe) = self.order_key(&request.order_id);
        let mut stripe = stripe.lock();
        if let Some(existing) = stripe.get(order_hash, &request.order_id) {
            if existing.origin == Origin::Sell || !existing.same_content(&request) {
                return replay_creation(existing, &request);
            }
            // The payment of an order reserved earlier with the same content.
            return self.transition_locked(
                &mut stripe,
                order_hash,
                now,
                &request.order_id,
                Action::Confirm,
            );
        }
        let keys = self.line_keys(&request.lines);
        let (skus, moved) = self.take_lines(
            &keys,
            &request,
            &[],
            (Movement::Sell, OrderStatus::Sold),
            now,
        )?;
        let taken_versions = versions(&moved.stocks);
        drop(keys);
        let order = Arc::new(request);
        let fact = Fact::OrderSold {
            at: now,
            order: order.clone(),
            stocks: moved.stocks,
            consumed: moved.consumed,
        };
        self.record(&fact);
        let generation = self.snapshot_generation();
        drop(skus);
        stripe.keep_before_cut(order_hash, &order.order_id, generation);
        let entry = OrderEntry {
            born: generation,
            taken_versions,
            order,
            status: OrderStatus::Sold,
            origin: Origin::Sell,
            created_at: now,
            expires_at: now,
            updated_at: now,
        };
        let view = entry.view(OrderStatus::Sold);
        stripe.insert(order_hash, entry);
        Ok(Answer {
            order: view,
            fact: Some(fact),
            replayed: false,
        })
    }

    /// Records the payment of a locked order: its units move from `locked` to `sold`.
    pub fn confirm(&self, now: Timestamp, order_id: &OrderId) -> Result<Answer, LedgerError> {
        self.transition(now, order_id, Action::Confirm)
    }

    /// Cancels an unpaid order: its units go back to `available`.
    pub fn cancel(&self, now: Timestamp, order_id: &OrderId) -> Result<Answer, LedgerError> {
        self.transition(now, order_id, Action::Cancel)
    }

    /// Refunds a paid order: its units go back to `available`.
    pub fn refund(&self, now: Timestamp, order_id: &OrderId) -> Result<Answer, LedgerError> {
        self.transition(now, order_id, Action::Refund)
    }

    fn transition(
        &self,
        now: Timestamp,
        order_id: &OrderId,
        action: Action,
    ) -> Result<Answer, LedgerError> {
        let (order_hash, stripe) = self.order_key(order_id);
        let mut stripe = stripe.lock();
        self.transition_locked(&mut stripe, order_hash, now, order_id, action)
    }

    fn transition_locked(
        &self,
        stripe: &mut OrderStripe,
        order_hash: u64,
        now: Timestamp,
        order_id: &OrderId,
        action: Action,
    ) -> Result<Answer, LedgerError> {
        let due = stripe
            .get(order_hash, order_id)
            .is_some_and(|entry| entry.status == OrderStatus::Locked && entry.expires_at <= now);
        if due && matches!(action, Action::Confirm | Action::Cancel) {
            // The lock ran out and the sweeper has not come by yet: it expires now, exactly as
            // the sweeper would have expired it, and the action meets an expired order.
            self.transition_locked(stripe, order_hash, now, order_id, Action::Expire)?;
        }
        let Some(entry) = stripe.get_mut(order_hash, order_id) else {
            return Err(LedgerError::OrderNotFound {
                order_id: order_id.clone(),
            });
        };
        let step = match action.step(entry.status) {
            Step::Move(step) => step,
            Step::Replay(status) => {
                return Ok(Answer {
                    order: entry.view(status),
                    fact: None,
                    replayed: true,
                });
            }
            Step::Nothing => {
                return Ok(Answer {
                    order: entry.view(entry.status),
                    fact: None,
                    replayed: false,
                });
            }
            Step::Refuse => {
                return Err(LedgerError::InvalidTransition {
                    order_id: order_id.clone(),
                    status: entry.status,
                    action: action.verb(),
                });
            }
        };
        let order = entry.order.clone();
        let keys = self.line_keys(&order.lines);
        // A payment after the lock expired that finds the units gone is a sale lost too.
        let (skus, moved) = self
            .take_lines(
                &keys,
                &order,
                &entry.taken_versions,
                (step.movement, step.status),
                now,
            )
            .map_err(|error| match (step.retaken, error) {
                (true, LedgerError::Invariant(message)) => LedgerError::Invariant(message),
                (true, _) => LedgerError::LockExpired {
                    order_id: order_id.clone(),
                },
                (false, error) => error,
            })?;
        drop(keys);
        let taken_versions = step
            .movement
            .takes_available()
            .then(|| versions(&moved.stocks));
        let fact = transition_fact(now, order, &step, moved);
        self.record(&fact);
        let generation = self.snapshot_generation();
        drop(skus);
        // A snapshot whose cut came before this fact must see the order as it was.
        stripe.keep_before_cut(order_hash, order_id, generation);
        let entry = stripe
            .get_mut(order_hash, order_id)
            .expect("found above under the same stripe lock");
        if let Some(taken_versions) = taken_versions {
            entry.taken_versions = taken_versions;
        }
        let was_locked = entry.status == OrderStatus::Locked;
        entry.status = step.status;
        entry.updated_at = now;
        let view = entry.view(step.status);
        if was_locked {
            stripe.unlocked();
        }
        if is_finished(step.status) {
            stripe.finish(order_id, step.status, now);
        }
        Ok(Answer {
            order: view,
            fact: Some(fact),
            replayed: false,
        })
    }

    /// Expires every lock whose `expires_at` is not after `now`, and returns the facts.
    pub fn expire_due(&self, now: Timestamp) -> Vec<Fact> {
        let mut facts = Vec::new();
        for stripe in self.orders.iter() {
            while self.expire_due_in(&mut stripe.0.lock(), now, &mut facts) {}
        }
        facts
    }

    /// Expires up to [`EXPIRE_BATCH_MAX`] due locks of one stripe; returns whether more may be
    /// due.
    fn expire_due_in(
        &self,
        stripe: &mut OrderStripe,
        now: Timestamp,
        facts: &mut Vec<Fact>,
    ) -> bool {
        for _ in 0..EXPIRE_BATCH_MAX {
            let due = stripe
                .expiries
                .peek()
                .is_some_and(|expiry| expiry.expires_at <= now);
            if !due {
                return false;
            }
            let Some(expiry) = stripe.expiries.pop() else {
                return false;
            };
            let order_hash = self.hasher.hash_one(&expiry.order_id);
            if !stripe.is_pending(order_hash, &expiry) {
                continue;
            }
            match self.transition_locked(stripe, order_hash, now, &expiry.order_id, Action::Expire)
            {
                Ok(Answer {
                    fact: Some(fact), ..
                }) => facts.push(fact),
                Ok(_) => {}
                Err(error) => {
                    debug_assert!(false, "expiry of {} failed: {error}", expiry.order_id);
                    tracing::error!(order_id = %expiry.order_id, %error, "Lock expiry failed.");
                }
            }
        }
        true
    }

    /// The earliest lock expiry still pending, if any: the sweeper's next deadline. Entries of
    /// locks already paid, cancelled or expired are dropped on the way.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.orders
            .iter()
            .filter_map(|stripe| {
                let mut stripe = stripe.0.lock();
                while let Some(expiry) = stripe.expiries.peek() {
                    let order_hash = self.hasher.hash_one(&expiry.order_id);
                    if stripe.is_pending(order_hash, expiry) {
                        return Some(expiry.expires_at);
                    }
                    stripe.expiries.pop();
                }
                None
            })
            .min()
    }

    /// Forgets settled orders older than the idempotency window and sold ones older than the
    /// refund window; returns how many. Each stripe is held for at most [`FORGET_BATCH_MAX`]
    /// orders at a time, so a day's backlog never stalls orders on it for long. When it
    /// forgot any, it records the cut-offs it used (`Fact::OrdersForgotten`), after the
    /// forgetting: every node of a cluster, and a replay, then forgets the same orders at the
    /// same place in the log, whatever its own windows.
    pub fn forget_finished(&self, now: Timestamp) -> u64 {
        let cutoffs = Forget::at(
            now,
            self.config.idempotency_window,
            self.config.refund_window,
        );
        let forgotten_count = self.forget_before(cutoffs);
        if 0 < forgotten_count {
            self.record(&Fact::OrdersForgotten {
                at: now,
                settled_before: cutoffs.settled_before,
                sold_before: cutoffs.sold_before,
            });
        }
        forgotten_count
    }

    /// Forgets the finished orders `cutoffs` names.
    pub(super) fn forget_before(&self, cutoffs: Forget) -> u64 {
        let mut forgotten_count = 0;
        for stripe in self.orders.iter() {
            loop {
                let mut stripe = stripe.0.lock();
                let (forgotten, more) = self.forget_due_in(&mut stripe, cutoffs);
                forgotten_count += forgotten;
                if !more {
                    break;
                }
            }
        }
        forgotten_count
    }

    /// Forgets up to [`FORGET_BATCH_MAX`] due orders of one stripe; returns how many, and
    /// whether more may be due.
    fn forget_due_in(&self, stripe: &mut OrderStripe, cutoffs: Forget) -> (u64, bool) {
        let mut forgotten_count = 0;
        for _ in 0..FORGET_BATCH_MAX {
            let settled_due = stripe
                .finished
                .front()
                .is_some_and(|(finished_at, _)| *finished_at < cutoffs.settled_before);
            let sold_due = stripe
                .sold
                .front()
                .is_some_and(|(sold_at, _)| *sold_at < cutoffs.sold_before);
            let (queue, sold) = match (settled_due, sold_due) {
                (true, _) => (&mut stripe.finished, false),
                (false, true) => (&mut stripe.sold, true),
                (false, false) => return (forgotten_count, false),
            };
            let Some((finished_at, order_id)) = queue.pop_front() else {
                return (forgotten_count, false);
            };
            let order_hash = self.hasher.hash_one(&order_id);
            // Skipped when the order moved on since this entry was queued (a sold order
            // refunded, an id forgotten and placed again).
            let due = stripe.get(order_hash, &order_id).is_some_and(|entry| {
                let in_this_queue = if sold {
                    entry.status == OrderStatus::Sold
                } else {
                    is_finished(entry.status) && entry.status != OrderStatus::Sold
                };
                in_this_queue && entry.updated_at == finished_at
            });
            if due {
                stripe.keep_before_cut(order_hash, &order_id, self.snapshot_generation());
                stripe.remove(order_hash, &order_id);
                forgotten_count += 1;
            }
        }
        (forgotten_count, true)
    }

    /// Creates a SKU or changes its settings, `total` or `reserved`.
    pub fn put_sku(
        &self,
        now: Timestamp,
        sku: &SkuId,
        update: SkuUpdate,
    ) -> Result<Fact, LedgerError> {
        let key = self.sku_key(sku);
        let mut table = self.skus[key.stripe].0.lock();
        let generation = self.snapshot_generation();
        let created = table.find(&key).is_none();
        if created {
            let slot = SkuSlot {
                sku: sku.clone(),
                hash: key.hash,
                entry: SkuEntry::new(now),
            };
            table.insert(slot, generation);
        }
        let entry = table
            .find_mut(&key, generation)
            .expect("present or just inserted");
        let result = put_sku_entry(entry, sku, update, now);
        match &result {
            Ok(fact) => self.record(fact),
            Err(_) => {
                if created {
                    table.remove(&key);
                }
            }
        }
        result
    }

    /// Adds `qty` units to `total`.
    pub fn restock(&self, now: Timestamp, sku: &SkuId, qty: u64) -> Result<Fact, LedgerError> {
        self.on_sku(sku, |entry| {
            let fact = restock_entry(entry, sku, qty, None, now)?;
            self.record(&fact);
            self.allot_restocked(entry, sku, qty, now);
            Ok(fact)
        })
    }

    /// Adds `qty` units to `total` once per `restock_id`: a retry of a restock this SKU
    /// remembers changes nothing and returns `None`; the same id with another quantity is
    /// `restock_conflict`.
    pub fn restock_once(
        &self,
        now: Timestamp,
        sku: &SkuId,
        qty: u64,
        restock_id: RestockId,
    ) -> Result<Option<Fact>, LedgerError> {
        self.on_sku(sku, |entry| {
            self.restock_entry_once(entry, now, sku, qty, restock_id)
        })
    }

    fn restock_entry_once(
        &self,
        entry: &mut SkuEntry,
        now: Timestamp,
        sku: &SkuId,
        qty: u64,
        restock_id: RestockId,
    ) -> Result<Option<Fact>, LedgerError> {
        if let Some((_, first_qty)) = entry.restocks.iter().find(|(id, _)| *id == restock_id) {
            if *first_qty == qty {
                return Ok(None);
            }
            return Err(LedgerError::RestockConflict { restock_id });
        }
        let fact = restock_entry(entry, sku, qty, Some(restock_id), now)?;
        self.record(&fact);
        self.allot_restocked(entry, sku, qty, now);
        Ok(Some(fact))
    }

    /// Stops new orders for a SKU until [`Ledger::resume`]. Payments of existing locks and
    /// refunds still go through.
    pub fn halt(&self, now: Timestamp, sku: &SkuId) -> Result<Fact, LedgerError> {
        self.set_halted(now, sku, true)
    }

    pub fn resume(&self, now: Timestamp, sku: &SkuId) -> Result<Fact, LedgerError> {
        self.set_halted(now, sku, false)
    }

    fn set_halted(&self, now: Timestamp, sku: &SkuId, halted: bool) -> Result<Fact, LedgerError> {
        self.with_sku(sku, |entry| {
            entry.halted = halted;
            entry.touch(now);
            let stock = entry.stock(sku);
            Ok(if halted {
                Fact::Halted { at: now, stock }
            } else {
                Fact::Resumed { at: now, stock }
            })
        })
    }

    /// Runs `operation` on one SKU under its stripe lock and records the fact it returns.
    fn with_sku(
        &self,
        sku: &SkuId,
        operation: impl FnOnce(&mut SkuEntry) -> Result<Fact, LedgerError>,
    ) -> Result<Fact, LedgerError> {
        self.on_sku(sku, |entry| {
            let fact = operation(entry)?;
            self.record(&fact);
            Ok(fact)
        })
    }

    /// Runs `operation` on `sku`'s entry with its stripe held (`sku_not_found` when there is
    /// none); what it records is in order with the SKU's other changes.
    fn on_sku<T>(
        &self,
        sku: &SkuId,
        operation: impl FnOnce(&mut SkuEntry) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let key = self.sku_key(sku);
        let mut table = self.skus[key.stripe].0.lock();
        let generation = self.snapshot_generation();
        let entry = table
            .find_mut(&key, generation)
            .ok_or_else(|| LedgerError::SkuNotFound { sku: sku.clone() })?;
        operation(entry)
    }

    /// Creates a room or changes its schedule and line-up. Every listed SKU must exist. A
    /// listing that stays keeps what it consumed; a listing dropped from the line-up forgets it.
    pub fn put_room(&self, now: Timestamp, room: Room) -> Result<Fact, LedgerError> {
        room.validate().map_err(|error| LedgerError::InvalidRoom {
            room: room.id.clone(),
            reason: error.to_string(),
        })?;
        let fact = self.put_room_at(now, Arc::new(room), true)?;
        Ok(fact)
    }

    /// Changes one listing's forecast, keeping everything else of the room as it is: the
    /// read, the change and the write happen under the room lock, so concurrent edits and
    /// room changes are never lost.
    pub fn set_forecast(
        &self,
        now: Timestamp,
        room: &RoomId,
        sku: &SkuId,
        forecast: u64,
    ) -> Result<Fact, LedgerError> {
        let _writing = self.room_writes.lock();
        let mut spec = self
            .rooms
            .read()
            .get(room)
            .map(|spec| spec.as_ref().clone())
            .ok_or_else(|| LedgerError::RoomNotFound { room: room.clone() })?;
        let listing = spec
            .listings
            .iter_mut()
            .find(|listing| &listing.sku == sku)
            .ok_or_else(|| LedgerError::ListingNotFound {
                room: room.clone(),
                sku: sku.clone(),
            })?;
        listing.forecast = forecast;
        spec.validate().map_err(|error| LedgerError::InvalidRoom {
            room: room.clone(),
            reason: error.to_string(),
        })?;
        self.put_room_writing(now, Arc::new(spec), true)
    }

    /// Puts a room; `record` is false when replaying.
    fn put_room_at(
        &self,
        now: Timestamp,
        room: Arc<Room>,
        record: bool,
    ) -> Result<Fact, LedgerError> {
        let _writing = self.room_writes.lock();
        self.put_room_writing(now, room, record)
    }

    /// Puts a room, the caller holding `room_writes`.
    fn put_room_writing(
        &self,
        now: Timestamp,
        room: Arc<Room>,
        record: bool,
    ) -> Result<Fact, LedgerError> {
        let previous = self.rooms.read().get(&room.id).cloned();
        let mut skus: Vec<&SkuId> = room.listings.iter().map(|listing| &listing.sku).collect();
        if let Some(previous) = &previous {
            for listing in &previous.listings {
                if !skus.contains(&&listing.sku) {
                    skus.push(&listing.sku);
                }
            }
        }
        let keys: Vec<SkuKey<'_>> = skus.iter().map(|sku| self.sku_key(sku)).collect();
        let mut guards = self.lock_skus(&keys);
        for (key, listing) in keys.iter().zip(&room.listings) {
            if guards.entry(key).is_none() {
                return Err(LedgerError::SkuNotFound {
                    sku: listing.sku.clone(),
                });
            }
        }
        for (index, key) in keys.iter().enumerate() {
            let Some(entry) = guards.entry_mut(key) else {
                continue;
            };
            if index < room.listings.len() {
                match entry.listing_mut(&room.id) {
                    Some(tally) => tally.reschedule(&room, now),
                    None => {
                        let tally = ListingTally::new(&room, entry.version);
                        entry.listings.push(tally);
                    }
                }
            } else {
                entry.listings.retain(|tally| tally.room != room.id);
            }
        }
        let fact = Fact::RoomPut {
            at: now,
            room: room.clone(),
        };
        // Inserted and recorded under the room map's lock, which a snapshot holds across its
        // cut: the image has the room exactly when its fact is before the cut.
        let mut rooms = self.rooms.write();
        rooms.insert(room.id.clone(), room);
        if record {
            self.record(&fact);
        }
        drop(rooms);
        drop(guards);
        Ok(fact)
    }

    /// Refuses orders naming `room` for `sku` until [`Ledger::resume_listing`]. `auto` when
    /// the alert engine halts it.
    pub fn halt_listing(
        &self,
        now: Timestamp,
        room: &RoomId,
        sku: &SkuId,
        auto: bool,
        by: Option<&str>,
    ) -> Result<Fact, LedgerError> {
        self.set_listing_halted(now, room, sku, Some(auto), by, true)
    }

    pub fn resume_listing(
        &self,
        now: Timestamp,
        room: &RoomId,
        sku: &SkuId,
        by: Option<&str>,
    ) -> Result<Fact, LedgerError> {
        self.set_listing_halted(now, room, sku, None, by, true)
    }

    /// Halts (`Some(auto)`) or resumes (`None`) a listing, by `by` when known; `record` is
    /// false when replaying.
    fn set_listing_halted(
        &self,
        now: Timestamp,
        room: &RoomId,
        sku: &SkuId,
        halt: Option<bool>,
        by: Option<&str>,
        record: bool,
    ) -> Result<Fact, LedgerError> {
        let listed = self
            .rooms
            .read()
            .get(room)
            .map(|spec| spec.listing(sku).is_some());
        match listed {
            None => return Err(LedgerError::RoomNotFound { room: room.clone() }),
            Some(false) => {
                return Err(LedgerError::ListingNotFound {
                    room: room.clone(),
                    sku: sku.clone(),
                });
            }
            Some(true) => {}
        }
        let key = self.sku_key(sku);
        let mut table = self.skus[key.stripe].0.lock();
        let generation = self.snapshot_generation();
        let tally = table
            .find_mut(&key, generation)
            .and_then(|entry| entry.listing_mut(room))
            .ok_or_else(|| LedgerError::ListingNotFound {
                room: room.clone(),
                sku: sku.clone(),
            })?;
        tally.set_halted(now, halt, by);
        let by = by.map(str::to_owned);
        let fact = match halt {
            Some(auto) => Fact::ListingHalted {
                at: now,
                room: room.clone(),
                sku: sku.clone(),
                auto,
                by,
            },
            None => Fact::ListingResumed {
                at: now,
                room: room.clone(),
                sku: sku.clone(),
                by,
            },
        };
        if record {
            self.record(&fact);
        }
        Ok(fact)
    }

    /// Counts a refused order as lost demand, when it names a room and was refused for want
    /// of stock or a halt: every line's units, on the listing of its SKU in that room.
    fn count_lost(&self, order: &OrderRequest, error: &LedgerError) {
        let reason = match error {
            LedgerError::InsufficientStock { .. } | LedgerError::AllotmentExhausted { .. } => {
                LostReason::InsufficientStock
            }
            LedgerError::Halted { .. } | LedgerError::ListingHalted { .. } => LostReason::Halted,
            _ => return,
        };
        let Some(room) = &order.room else {
            return;
        };
        let mut pending = self.lost_pending.lock();
        for line in order.lines.iter() {
            pending
                .entry((room.clone(), line.sku.clone()))
                .or_default()
                .add(&order.platform, reason, line.qty.get());
        }
    }

    /// Moves the units refused since the last call into the tallies of the listings that
    /// still list their SKUs, as one fact for the journal; `None` when nothing was refused.
    pub fn flush_lost(&self, now: Timestamp) -> Option<Fact> {
        let pending = std::mem::take(&mut *self.lost_pending.lock());
        if pending.is_empty() {
            return None;
        }
        let mut pending: Vec<((RoomId, SkuId), Lost)> = pending.into_iter().collect();
        pending.sort_by(|a, b| a.0.cmp(&b.0));
        let keys: Vec<SkuKey<'_>> = pending
            .iter()
            .map(|((_, sku), _)| self.sku_key(sku))
            .collect();
        let mut skus = self.lock_skus(&keys);
        let mut entries = Vec::new();
        for (((room, sku), lost), key) in pending.iter().zip(&keys) {
            if let Some(tally) = skus
                .entry_mut(key)
                .and_then(|entry| entry.listing_mut(room))
            {
                tally.add_lost(now, lost);
                entries.push(LostEntry {
                    room: room.clone(),
                    sku: sku.clone(),
                    lost: lost.clone(),
                });
            }
        }
        if entries.is_empty() {
            return None;
        }
        let fact = Fact::LostDemand { at: now, entries };
        self.record(&fact);
        Some(fact)
    }

    /// Ends every show whose end time has passed and whose end is not recorded yet: each of
    /// its listings leaves a [`ShowRecord`] in its SKU's history, one fact per show.
    pub fn end_shows(&self, now: Timestamp) -> Vec<Fact> {
        let ended: Vec<Arc<Room>> = {
            let recorded = self.shows_ended.lock();
            self.rooms
                .read()
                .values()
                .filter(|room| {
                    room.ends_at <= now
                        && !room.listings.is_empty()
                        && !recorded.contains(&(room.id.clone(), room.starts_at, room.ends_at))
                })
                .cloned()
                .collect()
        };
        let mut facts = Vec::new();
        for room in ended {
            let keys: Vec<SkuKey<'_>> = room
                .listings
                .iter()
                .map(|listing| self.sku_key(&listing.sku))
                .collect();
            let mut skus = self.lock_skus(&keys);
            // The room may have moved to another schedule since it was read: a tally on
            // another schedule is another show.
            let current = self
                .rooms
                .read()
                .get(&room.id)
                .is_some_and(|now_room| Arc::ptr_eq(now_room, &room));
            let mut records = Vec::new();
            let mut known = false;
            for (listing, key) in room.listings.iter().zip(&keys) {
                let Some(entry) = skus.entry(key) else {
                    continue;
                };
                let Some(tally) = entry.listing(&room.id) else {
                    continue;
                };
                let record = ShowRecord::of(&room, listing, tally);
                known |= entry.shows.iter().any(|kept| kept.same_show(&record));
                records.push((key, record));
            }
            if current && !known && !records.is_empty() {
                for (key, record) in &records {
                    if let Some(entry) = skus.entry_mut(key) {
                        show::remember(&mut entry.shows, record.clone());
                    }
                }
                let records = records
                    .into_iter()
                    .map(|(key, record)| (key.sku.clone(), record))
                    .collect();
                let fact = Fact::ShowEnded { at: now, records };
                self.record(&fact);
                facts.push(fact);
            }
            drop(skus);
            self.shows_ended
                .lock()
                .insert((room.id.clone(), room.starts_at, room.ends_at));
        }
        facts
    }

    /// The latest finished shows of `sku`, oldest first.
    pub fn shows(&self, sku: &SkuId) -> Option<Vec<ShowRecord>> {
        let key = self.sku_key(sku);
        let table = self.skus[key.stripe].0.lock();
        table.find(&key).map(|slot| slot.shows.clone())
    }

    /// Records that time passed, for the alert engine: nothing in the ledger moves.
    pub fn tick(&self, now: Timestamp) -> Fact {
        let fact = Fact::Tick { at: now };
        self.record(&fact);
        fact
    }

    /// Records that `by` acknowledged alert `id`, for the alert engine and the notifier:
    /// nothing in the ledger moves. Whether there is such an alert is theirs to know.
    pub fn acknowledge_alert(&self, now: Timestamp, id: u64, by: &str) -> Fact {
        let fact = Fact::AlertAcknowledged {
            at: now,
            id,
            by: by.to_owned(),
        };
        self.record(&fact);
        fact
    }

    /// Every room, by id.
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        self.rooms.read().values().cloned().collect()
    }

    /// One room's schedule and line-up.
    pub fn rooms_get(&self, room: &RoomId) -> Option<Arc<Room>> {
        self.rooms.read().get(room).cloned()
    }

    /// One listing of a room with its tally and stock.
    pub fn listing(&self, room: &RoomId, sku: &SkuId) -> Option<ListingState> {
        let listing = self.rooms.read().get(room)?.listing(sku)?.clone();
        let key = self.sku_key(sku);
        let table = self.skus[key.stripe].0.lock();
        let entry = table.find(&key)?;
        Some(ListingState {
            tally: entry.listing(room)?.clone(),
            stock: entry.stock(sku),
            listing,
        })
    }

    /// A room with every listing's tally and stock, each read under its SKU's stripe.
    pub fn room(&self, room: &RoomId) -> Option<RoomState> {
        let spec = self.rooms.read().get(room).cloned()?;
        let listings = spec
            .listings
            .iter()
            .filter_map(|listing| {
                let key = self.sku_key(&listing.sku);
                let table = self.skus[key.stripe].0.lock();
                let entry = table.find(&key)?;
                Some(ListingState {
                    listing: listing.clone(),
                    tally: entry.listing(room)?.clone(),
                    stock: entry.stock(&listing.sku),
                })
            })
            .collect();
        Some(RoomState {
            room: spec,
            listings,
        })
    }

    pub fn sku(&self, sku: &SkuId) -> Option<SkuView> {
        let key = self.sku_key(sku);
        let table = self.skus[key.stripe].0.lock();
        table.find(&key).map(|entry| sku_view(sku, entry))
    }

    pub fn skus(&self) -> Vec<SkuView> {
        self.skus_after(None, usize::MAX)
    }

    /// At most `limit` SKUs whose id sorts after `after`, sorted by id: one page of a listing.
    pub fn skus_after(&self, after: Option<&SkuId>, limit: usize) -> Vec<SkuView> {
        let mut views: Vec<SkuView> = self
            .skus
            .iter()
            .flat_map(|stripe| {
                let table = stripe.0.lock();
                table
                    .iter()
                    .filter(|slot| after.is_none_or(|after| *after < slot.sku))
                    .map(|slot| sku_view(&slot.sku, &slot.entry))
                    .collect::<Vec<_>>()
            })
            .collect();
        views.sort_by(|a, b| a.stock.sku.cmp(&b.stock.sku));
        views.truncate(limit);
        views
    }

    pub fn order(&self, order_id: &OrderId) -> Option<OrderView> {
        let (order_hash, stripe) = self.order_key(order_id);
        let stripe = stripe.lock();
        stripe
            .get(order_hash, order_id)
            .map(|entry| entry.view(entry.status))
    }

    pub fn counts(&self) -> LedgerCounts {
        let mut counts = LedgerCounts::default();
        for stripe in self.skus.iter() {
            counts.skus += stripe.0.lock().len() as u64;
        }
        for stripe in self.orders.iter() {
            let stripe = stripe.0.lock();
            counts.orders += stripe.len() as u64;
            counts.orders_locked += stripe.locked_count() as u64;
        }
        counts
    }
}

fn restock_entry(
    entry: &mut SkuEntry,
    sku: &SkuId,
    qty: u64,
    restock_id: Option<RestockId>,
    now: Timestamp,
) -> Result<Fact, LedgerError> {
    let total = entry
        .quantities
        .total
        .checked_add(qty)
        .filter(|total| *total <= STOCK_QTY_MAX)
        .ok_or_else(|| LedgerError::InvalidStock {
            sku: sku.clone(),
            reason: format!("total would exceed {STOCK_QTY_MAX}"),
        })?;
    entry.quantities.total = total;
    if let Some(restock_id) = &restock_id {
        entry.remember_restock(restock_id.clone(), qty);
    }
    entry.touch(now);
    Ok(Fact::Restocked {
        at: now,
        qty,
        restock_id,
        stock: entry.stock(sku),
    })
}

fn transition_fact(
    now: Timestamp,
    order: Arc<OrderRequest>,
    step: &order::Move,
    moved: Moved,
) -> Fact {
    let (stocks, consumed) = (moved.stocks, moved.consumed);
    match step.status {
        OrderStatus::Sold => Fact::OrderConfirmed {
            at: now,
            order,
            retaken: step.retaken,
            stocks,
            consumed,
        },
        OrderStatus::Cancelled => Fact::OrderCancelled {
            at: now,
            order,
            stocks,
            consumed,
        },
        OrderStatus::Expired => Fact::OrderExpired {
            at: now,
            order,
            stocks,
            consumed,
        },
        OrderStatus::Refunded => Fact::OrderRefunded {
            at: now,
            order,
            stocks,
            consumed,
        },
        OrderStatus::Locked => unreachable!("no action moves an order back to locked"),
    }
}

/// Each line's SKU version in `stocks`, the stocks an order's move left.
fn versions(stocks: &Stocks) -> SmallVec<[u64; 1]> {
    stocks.iter().map(|stock| stock.version).collect()
}

/// The answer to a repeated reserve or sell.
fn replay_creation(existing: &OrderEntry, request: &OrderRequest) -> Result<Answer, LedgerError> {
    if !existing.same_content(request) {
        return Err(LedgerError::OrderConflict {
            order_id: request.order_id.clone(),
        });
    }
    let status = match existing.origin {
        Origin::Reserve => OrderStatus::Locked,
        Origin::Sell => OrderStatus::Sold,
    };
    Ok(Answer {
        order: existing.view(status),
        fact: None,
        replayed: true,
    })
}
