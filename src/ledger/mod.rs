//! The stock ledger: every SKU's quantities and every order's life cycle, in memory.
//!
//! Pure and synchronous: no tokio, no I/O, no wire formats. Time comes in as `now`. Each
//! successful operation returns a [`Fact`] that fully describes the change; [`Ledger::apply`]
//! replays facts, so the journal can rebuild the ledger from them.
//!
//! # Locking
//!
//! SKUs live in [`SKU_STRIPES_COUNT`] lock stripes and orders in [`ORDER_STRIPES_COUNT`], each a
//! `parking_lot::Mutex` around a hash map, chosen by hashing the id. An order operation locks
//! its order's stripe, then the stripes of its SKUs in ascending stripe index, so two
//! multi-line orders can never wait on each other in a cycle. Nothing takes an order stripe
//! while holding a SKU stripe. Every critical section is short and never blocks on anything
//! but another stripe. There is no global lock.
//!
//! A hand-written stripe array rather than a concurrent map: an order must hold several SKU
//! entries at once (all lines or none), and each order stripe keeps its own expiry heap and
//! idempotency queue beside the map.

mod error;
mod fact;
mod types;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use smallvec::SmallVec;

pub use error::{LedgerError, ReplayError};
pub use fact::{Fact, Stocks};
pub use types::{
    ID_BYTES_MAX, InvalidValue, LINE_QTY_MAX, Line, Lines, ORDER_LINES_MAX, OrderId, OrderRequest,
    OrderStatus, OrderView, Platform, PlatformCount, Qty, RoomId, STOCK_QTY_MAX, SkuId,
    SkuSettings, SkuUpdate, SkuView, Stock, stock_qty,
};

use crate::clock::Timestamp;

/// SKU lock stripes: a power of two, enough that 2 cores rarely meet on one stripe unless they
/// sell the same SKU.
pub const SKU_STRIPES_COUNT: usize = 64;
/// Order lock stripes; orders are spread by id, so hot SKUs do not make hot order stripes.
pub const ORDER_STRIPES_COUNT: usize = 64;
/// Most expiries handled under one order stripe lock before it is released and taken again,
/// so a backlog of expiries never stalls orders on that stripe for long.
pub const EXPIRE_BATCH_MAX: usize = 256;

const _: () = assert!(SKU_STRIPES_COUNT.is_power_of_two());
const _: () = assert!(ORDER_STRIPES_COUNT.is_power_of_two());

/// Settings of the ledger as a whole.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// How long a lock lasts when the SKU sets no TTL of its own.
    pub lock_ttl: Duration,
    /// How long a finished order is remembered, so a retry is answered as the first call was.
    pub idempotency_window: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            lock_ttl: Duration::from_secs(15 * 60),
            idempotency_window: Duration::from_secs(24 * 60 * 60),
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

/// Pads a stripe to its own cache lines so two cores locking neighbouring stripes do not
/// fight over one line.
#[repr(align(128))]
struct Padded<T>(T);

type Hasher = foldhash::fast::RandomState;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Quantities {
    total: u64,
    reserved: u64,
    locked: u64,
    sold: u64,
}

impl Quantities {
    /// `total - reserved - locked - sold`, or `None` when the invariant does not hold.
    fn available(self) -> Option<u64> {
        self.total
            .checked_sub(self.reserved)?
            .checked_sub(self.locked)?
            .checked_sub(self.sold)
    }
}

/// What an order operation does to each of its lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Movement {
    /// `available` → `locked`.
    Lock,
    /// `locked` → `available`.
    Unlock,
    /// `locked` → `sold`.
    LockToSold,
    /// `available` → `sold`.
    Sell,
    /// `sold` → `available`.
    Refund,
}

impl Movement {
    fn takes_available(self) -> bool {
        matches!(self, Movement::Lock | Movement::Sell)
    }

    /// The new `(locked, sold)` pair, or `None` on underflow or overflow.
    fn apply(self, locked: u64, sold: u64, qty: u64) -> Option<(u64, u64)> {
        Some(match self {
            Movement::Lock => (locked.checked_add(qty)?, sold),
            Movement::Unlock => (locked.checked_sub(qty)?, sold),
            Movement::LockToSold => (locked.checked_sub(qty)?, sold.checked_add(qty)?),
            Movement::Sell => (locked, sold.checked_add(qty)?),
            Movement::Refund => (locked, sold.checked_sub(qty)?),
        })
    }
}

/// Whether the business rules (halt, available stock, quota) are enforced: live operations
/// enforce them, replay only re-does what was already decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rules {
    Enforce,
    Replay,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct PlatformTally {
    platform: Platform,
    locked: u64,
    sold: u64,
}

struct SkuEntry {
    quantities: Quantities,
    halted: bool,
    settings: SkuSettings,
    /// One entry per platform that ever took this SKU; a handful, so a vector beats a map.
    platforms: SmallVec<[PlatformTally; 4]>,
    version: u64,
    updated_at: Timestamp,
}

impl SkuEntry {
    fn new(now: Timestamp) -> Self {
        SkuEntry {
            quantities: Quantities::default(),
            halted: false,
            settings: SkuSettings {
                name: String::new(),
                lock_ttl_ms: None,
                quotas: Vec::new(),
            },
            platforms: SmallVec::new(),
            version: 0,
            updated_at: now,
        }
    }

    fn stock(&self, sku: &SkuId) -> Stock {
        let quantities = self.quantities;
        Stock {
            sku: sku.clone(),
            total: quantities.total,
            reserved: quantities.reserved,
            locked: quantities.locked,
            sold: quantities.sold,
            available: quantities.available().unwrap_or(0),
            halted: self.halted,
            version: self.version,
        }
    }

    fn tally(&self, platform: &Platform) -> Option<&PlatformTally> {
        self.platforms
            .iter()
            .find(|tally| &tally.platform == platform)
    }

    fn quota(&self, platform: &Platform) -> Option<u64> {
        self.settings
            .quotas
            .iter()
            .find(|(quota_platform, _)| quota_platform == platform)
            .map(|(_, quota)| *quota)
    }

    /// Refuses a take that the halt, the available stock or the platform's quota forbid.
    fn check_take(&self, sku: &SkuId, platform: &Platform, qty: u64) -> Result<(), LedgerError> {
        if self.halted {
            return Err(LedgerError::Halted { sku: sku.clone() });
        }
        let available = self.quantities.available().unwrap_or(0);
        if available < qty {
            return Err(LedgerError::InsufficientStock {
                sku: sku.clone(),
                available,
                requested: qty,
            });
        }
        if let Some(quota) = self.quota(platform) {
            let held = self
                .tally(platform)
                .map_or(0, |tally| tally.locked + tally.sold);
            if quota < held + qty {
                return Err(LedgerError::PlatformQuotaExceeded {
                    sku: sku.clone(),
                    platform: platform.clone(),
                    quota,
                    held,
                    requested: qty,
                });
            }
        }
        Ok(())
    }

    /// The quantities and platform tally after `movement`, checked against the invariant.
    fn plan(
        &self,
        platform: &Platform,
        movement: Movement,
        qty: u64,
    ) -> Option<(Quantities, PlatformTally)> {
        let quantities = self.quantities;
        let (locked, sold) = movement.apply(quantities.locked, quantities.sold, qty)?;
        let next = Quantities {
            locked,
            sold,
            ..quantities
        };
        next.available()?;
        let (tally_locked, tally_sold) = match self.tally(platform) {
            Some(tally) => (tally.locked, tally.sold),
            None => (0, 0),
        };
        let (tally_locked, tally_sold) = movement.apply(tally_locked, tally_sold, qty)?;
        let tally = PlatformTally {
            platform: platform.clone(),
            locked: tally_locked,
            sold: tally_sold,
        };
        Some((next, tally))
    }

    fn commit(&mut self, quantities: Quantities, tally: PlatformTally, now: Timestamp) {
        self.quantities = quantities;
        match self
            .platforms
            .iter_mut()
            .find(|existing| existing.platform == tally.platform)
        {
            Some(existing) => *existing = tally,
            None => self.platforms.push(tally),
        }
        self.touch(now);
    }

    fn touch(&mut self, now: Timestamp) {
        self.version += 1;
        self.updated_at = now;
        debug_assert!(self.quantities.available().is_some());
        debug_assert_eq!(
            self.platforms.iter().map(|tally| tally.locked).sum::<u64>(),
            self.quantities.locked
        );
        debug_assert_eq!(
            self.platforms.iter().map(|tally| tally.sold).sum::<u64>(),
            self.quantities.sold
        );
    }
}

type SkuMap = HashMap<SkuId, SkuEntry, Hasher>;

/// Which request created an order, so a retry of it gets the first answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Reserve,
    Sell,
}

struct OrderEntry {
    platform: Platform,
    room: Option<RoomId>,
    lines: Lines,
    status: OrderStatus,
    origin: Origin,
    created_at: Timestamp,
    expires_at: Timestamp,
    updated_at: Timestamp,
}

impl OrderEntry {
    fn same_content(&self, request: &OrderRequest) -> bool {
        self.platform == request.platform
            && self.room == request.room
            && self.lines == request.lines
    }

    fn view(&self, order_id: &OrderId, status: OrderStatus) -> OrderView {
        OrderView {
            order_id: order_id.clone(),
            platform: self.platform.clone(),
            room: self.room.clone(),
            lines: self.lines.clone(),
            status,
            created_at: self.created_at,
            expires_at: self.expires_at,
            updated_at: self.updated_at,
        }
    }
}

fn is_finished(status: OrderStatus) -> bool {
    !matches!(status, OrderStatus::Locked)
}

#[derive(Default)]
struct OrderStripe {
    orders: HashMap<OrderId, OrderEntry, Hasher>,
    /// Locks by expiry, earliest first. Entries whose order moved on are skipped when popped.
    expiries: BinaryHeap<Reverse<(Timestamp, OrderId)>>,
    /// Finished orders by the time they finished, oldest first, to forget them after the
    /// idempotency window. Entries whose order changed since are skipped when popped.
    finished: VecDeque<(Timestamp, OrderId)>,
}

impl OrderStripe {
    fn finish(&mut self, order_id: &OrderId, now: Timestamp) {
        self.finished.push_back((now, order_id.clone()));
    }
}

/// The SKU stripes one operation holds, taken in ascending index order.
struct SkuGuards<'a> {
    guards: SmallVec<[(usize, MutexGuard<'a, SkuMap>); 2]>,
}

impl SkuGuards<'_> {
    fn entry(&self, stripe: usize, sku: &SkuId) -> Option<&SkuEntry> {
        self.guards
            .iter()
            .find(|(index, _)| *index == stripe)
            .and_then(|(_, map)| map.get(sku))
    }

    fn entry_mut(&mut self, stripe: usize, sku: &SkuId) -> Option<&mut SkuEntry> {
        self.guards
            .iter_mut()
            .find(|(index, _)| *index == stripe)
            .and_then(|(_, map)| map.get_mut(sku))
    }
}

/// The in-memory stock ledger. Share it behind an `Arc`; every method takes `&self`.
pub struct Ledger {
    config: LedgerConfig,
    /// Picks stripes; seeded at random so clients cannot aim many ids at one stripe.
    hasher: Hasher,
    skus: Box<[Padded<Mutex<SkuMap>>]>,
    orders: Box<[Padded<Mutex<OrderStripe>>]>,
}

impl Ledger {
    pub fn new(config: LedgerConfig) -> Self {
        let hasher = Hasher::default();
        let skus = (0..SKU_STRIPES_COUNT)
            .map(|_| Padded(Mutex::new(SkuMap::with_hasher(hasher.clone()))))
            .collect();
        let orders = (0..ORDER_STRIPES_COUNT)
            .map(|_| {
                Padded(Mutex::new(OrderStripe {
                    orders: HashMap::with_hasher(hasher.clone()),
                    ..OrderStripe::default()
                }))
            })
            .collect();
        Ledger {
            config,
            hasher,
            skus,
            orders,
        }
    }

    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    fn sku_stripe(&self, sku: &SkuId) -> usize {
        (self.hasher.hash_one(sku) as usize) & (SKU_STRIPES_COUNT - 1)
    }

    fn order_stripe(&self, order_id: &OrderId) -> &Mutex<OrderStripe> {
        let index = (self.hasher.hash_one(order_id) as usize) & (ORDER_STRIPES_COUNT - 1);
        &self.orders[index].0
    }

    /// Locks the stripes of every SKU on `lines`, in ascending index order.
    fn lock_skus(&self, lines: &Lines) -> SkuGuards<'_> {
        let mut stripes: SmallVec<[usize; 4]> = lines
            .iter()
            .map(|line| self.sku_stripe(&line.sku))
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        SkuGuards {
            guards: stripes
                .into_iter()
                .map(|index| (index, self.skus[index].0.lock()))
                .collect(),
        }
    }

    /// Moves every line of an order, all or nothing, and returns the stocks after.
    fn move_lines(
        &self,
        skus: &mut SkuGuards<'_>,
        platform: &Platform,
        lines: &Lines,
        movement: Movement,
        rules: Rules,
        now: Timestamp,
    ) -> Result<Stocks, LedgerError> {
        let mut plans: SmallVec<[(usize, Quantities, PlatformTally); 1]> = SmallVec::new();
        for line in lines {
            let stripe = self.sku_stripe(&line.sku);
            let entry = skus
                .entry(stripe, &line.sku)
                .ok_or_else(|| LedgerError::SkuNotFound {
                    sku: line.sku.clone(),
                })?;
            let qty = line.qty.get();
            if rules == Rules::Enforce && movement.takes_available() {
                entry.check_take(&line.sku, platform, qty)?;
            }
            let (quantities, tally) = entry.plan(platform, movement, qty).ok_or_else(|| {
                LedgerError::Invariant(format!(
                    "{movement:?} of {qty} would break the stock identity of sku {}",
                    line.sku
                ))
            })?;
            plans.push((stripe, quantities, tally));
        }
        let mut stocks = Stocks::new();
        for (line, (stripe, quantities, tally)) in lines.iter().zip(plans) {
            let entry = skus
                .entry_mut(stripe, &line.sku)
                .expect("checked in the planning pass under the same guards");
            entry.commit(quantities, tally, now);
            stocks.push(entry.stock(&line.sku));
        }
        Ok(stocks)
    }

    fn lock_ttl(&self, skus: &SkuGuards<'_>, lines: &Lines) -> Duration {
        lines
            .iter()
            .filter_map(|line| skus.entry(self.sku_stripe(&line.sku), &line.sku))
            .filter_map(|entry| entry.settings.lock_ttl_ms)
            .map(Duration::from_millis)
            .min()
            .unwrap_or(self.config.lock_ttl)
    }

    /// Places an order: locks its units until the lock expires.
    pub fn reserve(&self, now: Timestamp, request: OrderRequest) -> Result<Answer, LedgerError> {
        let mut stripe = self.order_stripe(&request.order_id).lock();
        if let Some(existing) = stripe.orders.get(&request.order_id) {
            return replay_creation(existing, &request);
        }
        let mut skus = self.lock_skus(&request.lines);
        let expires_at = now.saturating_add(self.lock_ttl(&skus, &request.lines));
        let stocks = self.move_lines(
            &mut skus,
            &request.platform,
            &request.lines,
            Movement::Lock,
            Rules::Enforce,
            now,
        )?;
        drop(skus);
        let entry = OrderEntry {
            platform: request.platform,
            room: request.room,
            lines: request.lines,
            status: OrderStatus::Locked,
            origin: Origin::Reserve,
            created_at: now,
            expires_at,
            updated_at: now,
        };
        let order = entry.view(&request.order_id, OrderStatus::Locked);
        stripe
            .expiries
            .push(Reverse((expires_at, request.order_id.clone())));
        stripe.orders.insert(request.order_id, entry);
        drop(stripe);
        let fact = Fact::OrderReserved {
            at: now,
            order_id: order.order_id.clone(),
            platform: order.platform.clone(),
            room: order.room.clone(),
            lines: order.lines.clone(),
            expires_at,
            stocks,
        };
        Ok(Answer {
            order,
            fact: Some(fact),
            replayed: false,
        })
    }

    /// Places a paid order: takes its units straight to `sold`. For an order already
    /// reserved with the same content, this is its payment.
    pub fn sell(&self, now: Timestamp, request: OrderRequest) -> Result<Answer, LedgerError> {
        let mut stripe = self.order_stripe(&request.order_id).lock();
        if let Some(existing) = stripe.orders.get(&request.order_id) {
            if existing.origin == Origin::Sell || !existing.same_content(&request) {
                return replay_creation(existing, &request);
            }
            // The payment of an order reserved earlier with the same content.
            return self.transition_locked(&mut stripe, now, &request.order_id, Action::Confirm);
        }
        let mut skus = self.lock_skus(&request.lines);
        let stocks = self.move_lines(
            &mut skus,
            &request.platform,
            &request.lines,
            Movement::Sell,
            Rules::Enforce,
            now,
        )?;
        drop(skus);
        let entry = OrderEntry {
            platform: request.platform,
            room: request.room,
            lines: request.lines,
            status: OrderStatus::Sold,
            origin: Origin::Sell,
            created_at: now,
            expires_at: now,
            updated_at: now,
        };
        let order = entry.view(&request.order_id, OrderStatus::Sold);
        stripe.finish(&request.order_id, now);
        stripe.orders.insert(request.order_id, entry);
        drop(stripe);
        let fact = Fact::OrderSold {
            at: now,
            order_id: order.order_id.clone(),
            platform: order.platform.clone(),
            room: order.room.clone(),
            lines: order.lines.clone(),
            stocks,
        };
        Ok(Answer {
            order,
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
        let mut stripe = self.order_stripe(order_id).lock();
        self.transition_locked(&mut stripe, now, order_id, action)
    }

    fn transition_locked(
        &self,
        stripe: &mut OrderStripe,
        now: Timestamp,
        order_id: &OrderId,
        action: Action,
    ) -> Result<Answer, LedgerError> {
        let Some(entry) = stripe.orders.get_mut(order_id) else {
            return Err(LedgerError::OrderNotFound {
                order_id: order_id.clone(),
            });
        };
        let step = match action.step(entry.status) {
            Step::Move(step) => step,
            Step::Replay(status) => {
                return Ok(Answer {
                    order: entry.view(order_id, status),
                    fact: None,
                    replayed: true,
                });
            }
            Step::Nothing => {
                return Ok(Answer {
                    order: entry.view(order_id, entry.status),
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
        let mut skus = self.lock_skus(&entry.lines);
        let stocks = self
            .move_lines(
                &mut skus,
                &entry.platform,
                &entry.lines,
                step.movement,
                Rules::Enforce,
                now,
            )
            .map_err(|error| match (step.retaken, error) {
                (true, LedgerError::Invariant(message)) => LedgerError::Invariant(message),
                (true, _) => LedgerError::LockExpired {
                    order_id: order_id.clone(),
                },
                (false, error) => error,
            })?;
        drop(skus);
        entry.status = step.status;
        entry.updated_at = now;
        let order = entry.view(order_id, step.status);
        if is_finished(step.status) {
            stripe.finish(order_id, now);
        }
        let order_id = order_id.clone();
        let fact = match step.status {
            OrderStatus::Sold => Fact::OrderConfirmed {
                at: now,
                order_id,
                retaken: step.retaken,
                stocks,
            },
            OrderStatus::Cancelled => Fact::OrderCancelled {
                at: now,
                order_id,
                stocks,
            },
            OrderStatus::Expired => Fact::OrderExpired {
                at: now,
                order_id,
                stocks,
            },
            OrderStatus::Refunded => Fact::OrderRefunded {
                at: now,
                order_id,
                stocks,
            },
            OrderStatus::Locked => unreachable!("no action moves an order back to locked"),
        };
        Ok(Answer {
            order,
            fact: Some(fact),
            replayed: false,
        })
    }

    /// Expires every lock whose `expires_at` is not after `now`, and returns the facts.
    pub fn expire_due(&self, now: Timestamp) -> Vec<Fact> {
        let mut facts = Vec::new();
        for stripe in self.orders.iter() {
            loop {
                let mut stripe = stripe.0.lock();
                let mut handled_count = 0;
                while handled_count < EXPIRE_BATCH_MAX {
                    let Some(Reverse((expires_at, _))) = stripe.expiries.peek() else {
                        break;
                    };
                    if now < *expires_at {
                        break;
                    }
                    let Some(Reverse((expires_at, order_id))) = stripe.expiries.pop() else {
                        break;
                    };
                    handled_count += 1;
                    let current = stripe.orders.get(&order_id).is_some_and(|entry| {
                        entry.status == OrderStatus::Locked && entry.expires_at == expires_at
                    });
                    if !current {
                        continue;
                    }
                    match self.transition_locked(&mut stripe, now, &order_id, Action::Expire) {
                        Ok(Answer {
                            fact: Some(fact), ..
                        }) => facts.push(fact),
                        Ok(_) => {}
                        Err(error) => {
                            debug_assert!(false, "expiry of {order_id} failed: {error}");
                            tracing::error!(%order_id, %error, "Lock expiry failed.");
                        }
                    }
                }
                if handled_count < EXPIRE_BATCH_MAX {
                    break;
                }
            }
        }
        facts
    }

    /// The earliest lock expiry still pending, if any: the sweeper's next deadline. Entries of
    /// locks already paid, cancelled or expired are dropped on the way.
    pub fn next_expiry(&self) -> Option<Timestamp> {
        self.orders
            .iter()
            .filter_map(|stripe| {
                let mut stripe = stripe.0.lock();
                let stripe = &mut *stripe;
                while let Some(Reverse((expires_at, order_id))) = stripe.expiries.peek() {
                    let pending = stripe.orders.get(order_id).is_some_and(|entry| {
                        entry.status == OrderStatus::Locked && entry.expires_at == *expires_at
                    });
                    if pending {
                        return Some(*expires_at);
                    }
                    stripe.expiries.pop();
                }
                None
            })
            .min()
    }

    /// Forgets finished orders older than the idempotency window; returns how many.
    pub fn forget_finished(&self, now: Timestamp) -> u64 {
        let mut forgotten_count = 0;
        for stripe in self.orders.iter() {
            let mut stripe = stripe.0.lock();
            while let Some((finished_at, _)) = stripe.finished.front() {
                if now < finished_at.saturating_add(self.config.idempotency_window) {
                    break;
                }
                let Some((finished_at, order_id)) = stripe.finished.pop_front() else {
                    break;
                };
                let stale = stripe.orders.get(&order_id).is_some_and(|entry| {
                    is_finished(entry.status) && entry.updated_at == finished_at
                });
                if stale {
                    stripe.orders.remove(&order_id);
                    forgotten_count += 1;
                }
            }
        }
        forgotten_count
    }

    /// Creates a SKU or changes its settings, `total` or `reserved`.
    pub fn put_sku(
        &self,
        now: Timestamp,
        sku: &SkuId,
        update: SkuUpdate,
    ) -> Result<Fact, LedgerError> {
        let mut map = self.skus[self.sku_stripe(sku)].0.lock();
        let created = !map.contains_key(sku);
        let entry = map.entry(sku.clone()).or_insert_with(|| SkuEntry::new(now));
        let result = put_sku_entry(entry, sku, update, now);
        if result.is_err() && created {
            map.remove(sku);
        }
        result
    }

    /// Adds `qty` units to `total`.
    pub fn restock(&self, now: Timestamp, sku: &SkuId, qty: u64) -> Result<Fact, LedgerError> {
        self.with_sku(sku, |entry| {
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
            entry.touch(now);
            Ok(Fact::Restocked {
                at: now,
                qty,
                stock: entry.stock(sku),
            })
        })
    }

    /// Stops new orders for a SKU until [`Ledger::resume`]. Payments of existing locks and
    /// refunds still go through.
    pub fn halt(&self, now: Timestamp, sku: &SkuId) -> Result<Fact, LedgerError> {
        self.with_sku(sku, |entry| {
            entry.halted = true;
            entry.touch(now);
            Ok(Fact::Halted {
                at: now,
                stock: entry.stock(sku),
            })
        })
    }

    pub fn resume(&self, now: Timestamp, sku: &SkuId) -> Result<Fact, LedgerError> {
        self.with_sku(sku, |entry| {
            entry.halted = false;
            entry.touch(now);
            Ok(Fact::Resumed {
                at: now,
                stock: entry.stock(sku),
            })
        })
    }

    fn with_sku<T>(
        &self,
        sku: &SkuId,
        operation: impl FnOnce(&mut SkuEntry) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut map = self.skus[self.sku_stripe(sku)].0.lock();
        let entry = map
            .get_mut(sku)
            .ok_or_else(|| LedgerError::SkuNotFound { sku: sku.clone() })?;
        operation(entry)
    }

    pub fn sku(&self, sku: &SkuId) -> Option<SkuView> {
        let map = self.skus[self.sku_stripe(sku)].0.lock();
        map.get(sku).map(|entry| sku_view(sku, entry))
    }

    /// Every SKU, sorted by id.
    pub fn skus(&self) -> Vec<SkuView> {
        self.skus_after(None, usize::MAX)
    }

    /// At most `limit` SKUs whose id sorts after `after`, sorted by id: one page of a listing.
    pub fn skus_after(&self, after: Option<&SkuId>, limit: usize) -> Vec<SkuView> {
        let mut views: Vec<SkuView> = self
            .skus
            .iter()
            .flat_map(|stripe| {
                let map = stripe.0.lock();
                map.iter()
                    .filter(|(sku, _)| after.is_none_or(|after| after < *sku))
                    .map(|(sku, entry)| sku_view(sku, entry))
                    .collect::<Vec<_>>()
            })
            .collect();
        views.sort_by(|a, b| a.stock.sku.cmp(&b.stock.sku));
        views.truncate(limit);
        views
    }

    pub fn order(&self, order_id: &OrderId) -> Option<OrderView> {
        let stripe = self.order_stripe(order_id).lock();
        stripe
            .orders
            .get(order_id)
            .map(|entry| entry.view(order_id, entry.status))
    }

    pub fn counts(&self) -> LedgerCounts {
        let mut counts = LedgerCounts::default();
        for stripe in self.skus.iter() {
            counts.skus += stripe.0.lock().len() as u64;
        }
        for stripe in self.orders.iter() {
            let stripe = stripe.0.lock();
            counts.orders += stripe.orders.len() as u64;
            counts.orders_locked += stripe
                .orders
                .values()
                .filter(|entry| entry.status == OrderStatus::Locked)
                .count() as u64;
        }
        counts
    }

    /// Re-does what `fact` records, without re-deciding it, and checks that the SKUs end where
    /// the fact says they did.
    pub fn apply(&self, fact: &Fact) -> Result<(), ReplayError> {
        match fact {
            Fact::SkuPut {
                at,
                settings,
                stock,
            } => {
                let mut map = self.skus[self.sku_stripe(&stock.sku)].0.lock();
                let entry = map
                    .entry(stock.sku.clone())
                    .or_insert_with(|| SkuEntry::new(*at));
                entry.settings = settings.clone();
                entry.quantities.total = stock.total;
                entry.quantities.reserved = stock.reserved;
                entry.touch(*at);
                check_stock(fact, entry, stock)
            }
            Fact::Restocked { at, qty, stock } => self.apply_to_sku(fact, stock, |entry| {
                entry.quantities.total = entry.quantities.total.saturating_add(*qty);
                entry.touch(*at);
            }),
            Fact::Halted { at, stock } | Fact::Resumed { at, stock } => {
                let halted = matches!(fact, Fact::Halted { .. });
                self.apply_to_sku(fact, stock, |entry| {
                    entry.halted = halted;
                    entry.touch(*at);
                })
            }
            Fact::OrderReserved {
                at,
                order_id,
                platform,
                room,
                lines,
                expires_at,
                stocks,
            } => self.apply_creation(
                fact,
                *at,
                order_id,
                OrderEntry {
                    platform: platform.clone(),
                    room: room.clone(),
                    lines: lines.clone(),
                    status: OrderStatus::Locked,
                    origin: Origin::Reserve,
                    created_at: *at,
                    expires_at: *expires_at,
                    updated_at: *at,
                },
                stocks,
            ),
            Fact::OrderSold {
                at,
                order_id,
                platform,
                room,
                lines,
                stocks,
            } => self.apply_creation(
                fact,
                *at,
                order_id,
                OrderEntry {
                    platform: platform.clone(),
                    room: room.clone(),
                    lines: lines.clone(),
                    status: OrderStatus::Sold,
                    origin: Origin::Sell,
                    created_at: *at,
                    expires_at: *at,
                    updated_at: *at,
                },
                stocks,
            ),
            Fact::OrderConfirmed {
                at,
                order_id,
                retaken,
                stocks,
            } => {
                let action = if *retaken {
                    ReplayStep::Retake
                } else {
                    ReplayStep::Confirm
                };
                self.apply_transition(fact, *at, order_id, action, stocks)
            }
            Fact::OrderCancelled {
                at,
                order_id,
                stocks,
            } => self.apply_transition(fact, *at, order_id, ReplayStep::Cancel, stocks),
            Fact::OrderExpired {
                at,
                order_id,
                stocks,
            } => self.apply_transition(fact, *at, order_id, ReplayStep::Expire, stocks),
            Fact::OrderRefunded {
                at,
                order_id,
                stocks,
            } => self.apply_transition(fact, *at, order_id, ReplayStep::Refund, stocks),
        }
    }

    fn apply_to_sku(
        &self,
        fact: &Fact,
        stock: &Stock,
        change: impl FnOnce(&mut SkuEntry),
    ) -> Result<(), ReplayError> {
        let mut map = self.skus[self.sku_stripe(&stock.sku)].0.lock();
        let entry = map
            .get_mut(&stock.sku)
            .ok_or_else(|| ReplayError::UnknownSku {
                kind: fact.kind(),
                sku: stock.sku.clone(),
            })?;
        change(entry);
        check_stock(fact, entry, stock)
    }

    fn apply_creation(
        &self,
        fact: &Fact,
        at: Timestamp,
        order_id: &OrderId,
        entry: OrderEntry,
        stocks: &[Stock],
    ) -> Result<(), ReplayError> {
        let mut stripe = self.order_stripe(order_id).lock();
        // A finished order under the same id was forgotten after the idempotency window
        // before this one was placed (forgetting leaves no fact); a locked one cannot have been.
        if let Some(existing) = stripe.orders.get(order_id)
            && !is_finished(existing.status)
        {
            return Err(ReplayError::BadTransition {
                kind: fact.kind(),
                order_id: order_id.clone(),
                status: existing.status,
            });
        }
        let movement = match entry.origin {
            Origin::Reserve => Movement::Lock,
            Origin::Sell => Movement::Sell,
        };
        self.apply_moves(fact, &entry.platform, &entry.lines, movement, at, stocks)?;
        match entry.status {
            OrderStatus::Locked => stripe
                .expiries
                .push(Reverse((entry.expires_at, order_id.clone()))),
            _ => stripe.finish(order_id, at),
        }
        stripe.orders.insert(order_id.clone(), entry);
        Ok(())
    }

    fn apply_transition(
        &self,
        fact: &Fact,
        at: Timestamp,
        order_id: &OrderId,
        step: ReplayStep,
        stocks: &[Stock],
    ) -> Result<(), ReplayError> {
        let mut stripe = self.order_stripe(order_id).lock();
        let entry = stripe
            .orders
            .get_mut(order_id)
            .ok_or_else(|| ReplayError::UnknownOrder {
                kind: fact.kind(),
                order_id: order_id.clone(),
            })?;
        let (from, movement, to) = step.transition();
        if entry.status != from {
            return Err(ReplayError::BadTransition {
                kind: fact.kind(),
                order_id: order_id.clone(),
                status: entry.status,
            });
        }
        self.apply_moves(fact, &entry.platform, &entry.lines, movement, at, stocks)?;
        entry.status = to;
        entry.updated_at = at;
        stripe.finish(order_id, at);
        Ok(())
    }

    fn apply_moves(
        &self,
        fact: &Fact,
        platform: &Platform,
        lines: &Lines,
        movement: Movement,
        at: Timestamp,
        stocks: &[Stock],
    ) -> Result<(), ReplayError> {
        let mut skus = self.lock_skus(lines);
        let actual = self
            .move_lines(&mut skus, platform, lines, movement, Rules::Replay, at)
            .map_err(|error| match error {
                LedgerError::SkuNotFound { sku } => ReplayError::UnknownSku {
                    kind: fact.kind(),
                    sku,
                },
                error => ReplayError::StockMismatch {
                    kind: fact.kind(),
                    sku: lines
                        .iter()
                        .next()
                        .map(|line| line.sku.clone())
                        .unwrap_or_else(|| SkuId::new("?").expect("a one-character id is valid")),
                    expected: format!("{stocks:?}"),
                    actual: error.to_string(),
                },
            })?;
        for (actual, expected) in actual.iter().zip(stocks) {
            if actual != expected {
                return Err(ReplayError::StockMismatch {
                    kind: fact.kind(),
                    sku: actual.sku.clone(),
                    expected: format!("{expected:?}"),
                    actual: format!("{actual:?}"),
                });
            }
        }
        Ok(())
    }
}

fn check_stock(fact: &Fact, entry: &SkuEntry, expected: &Stock) -> Result<(), ReplayError> {
    let actual = entry.stock(&expected.sku);
    if &actual == expected {
        Ok(())
    } else {
        Err(ReplayError::StockMismatch {
            kind: fact.kind(),
            sku: expected.sku.clone(),
            expected: format!("{expected:?}"),
            actual: format!("{actual:?}"),
        })
    }
}

fn put_sku_entry(
    entry: &mut SkuEntry,
    sku: &SkuId,
    update: SkuUpdate,
    now: Timestamp,
) -> Result<Fact, LedgerError> {
    let mut quantities = entry.quantities;
    for (field, value) in [("total", update.total), ("reserved", update.reserved)] {
        if let Some(value) = value
            && STOCK_QTY_MAX < value
        {
            return Err(LedgerError::InvalidStock {
                sku: sku.clone(),
                reason: format!("{field} {value} is over the limit of {STOCK_QTY_MAX}"),
            });
        }
    }
    if let Some(total) = update.total {
        quantities.total = total;
    }
    if let Some(reserved) = update.reserved {
        quantities.reserved = reserved;
    }
    if quantities.available().is_none() {
        let committed = quantities
            .reserved
            .saturating_add(quantities.locked)
            .saturating_add(quantities.sold);
        return Err(LedgerError::InvalidStock {
            sku: sku.clone(),
            reason: format!(
                "total {} is below reserved {} + locked {} + sold {} = {committed}",
                quantities.total, quantities.reserved, quantities.locked, quantities.sold
            ),
        });
    }
    let mut settings = entry.settings.clone();
    if let Some(name) = update.name {
        settings.name = name;
    }
    if let Some(lock_ttl_ms) = update.lock_ttl_ms {
        settings.lock_ttl_ms = lock_ttl_ms;
    }
    if let Some(mut quotas) = update.quotas {
        quotas.sort();
        quotas.dedup_by(|a, b| a.0 == b.0);
        settings.quotas = quotas;
    }
    entry.quantities = quantities;
    entry.settings = settings;
    entry.touch(now);
    Ok(Fact::SkuPut {
        at: now,
        settings: entry.settings.clone(),
        stock: entry.stock(sku),
    })
}

fn sku_view(sku: &SkuId, entry: &SkuEntry) -> SkuView {
    let mut platforms: Vec<PlatformCount> = entry
        .platforms
        .iter()
        .map(|tally| PlatformCount {
            platform: tally.platform.clone(),
            locked: tally.locked,
            sold: tally.sold,
            quota: entry.quota(&tally.platform),
        })
        .collect();
    for (platform, quota) in &entry.settings.quotas {
        if entry.tally(platform).is_none() {
            platforms.push(PlatformCount {
                platform: platform.clone(),
                locked: 0,
                sold: 0,
                quota: Some(*quota),
            });
        }
    }
    platforms.sort_by(|a, b| a.platform.cmp(&b.platform));
    SkuView {
        stock: entry.stock(sku),
        settings: entry.settings.clone(),
        platforms,
        updated_at: entry.updated_at,
    }
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
        order: existing.view(&request.order_id, status),
        fact: None,
        replayed: true,
    })
}

/// An operation on an existing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Confirm,
    Cancel,
    Refund,
    Expire,
}

struct Move {
    movement: Movement,
    status: OrderStatus,
    /// A payment after expiry that takes the units again.
    retaken: bool,
}

enum Step {
    Move(Move),
    /// Already done by an earlier call: answer as it was answered, with this status.
    Replay(OrderStatus),
    /// Nothing to do, and not an error (cancelling an expired order).
    Nothing,
    Refuse,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Confirm => "confirmed",
            Action::Cancel => "cancelled",
            Action::Refund => "refunded",
            Action::Expire => "expired",
        }
    }

    fn step(self, status: OrderStatus) -> Step {
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
enum ReplayStep {
    Confirm,
    Retake,
    Cancel,
    Expire,
    Refund,
}

impl ReplayStep {
    /// The status before, the movement, and the status after.
    fn transition(self) -> (OrderStatus, Movement, OrderStatus) {
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
