//! The durable picture channel sync works from, and the sync state of every platform
//! listing.
//!
//! It is kept from the facts in journal order as each batch becomes durable (beside the
//! alert engine), so a listing is never told a number a crash could take back, and every
//! node of a cluster keeps the same picture: a listing's `version` is the log sequence of the
//! fact that last changed what it should show, the same on every node.

use std::collections::{BTreeSet, HashMap};

use smallvec::SmallVec;

use super::allocation::{self, PlatformUse, Pool};
use super::listing::{Acknowledged, ListingSync, Reason, Update};
use crate::clock::Timestamp;
use crate::ledger::{
    Allocation, Fact, Ledger, ListingAck, ListingId, Platform, RoomId, SkuId, SkuSettings,
};

/// One SKU as channel sync sees it.
#[derive(Default)]
struct SkuBook {
    available: u64,
    halted: bool,
    /// Rooms in which this SKU's listing is halted.
    halted_in: SmallVec<[RoomId; 1]>,
    quotas: Vec<(Platform, u64)>,
    listings: Vec<(Platform, ListingId)>,
    allocation: Allocation,
    /// Locked + sold per platform.
    consumed: SmallVec<[(Platform, u64); 4]>,
    /// The slots of its listings in the book.
    slots: SmallVec<[usize; 4]>,
}

impl SkuBook {
    fn consumed(&self, platform: &Platform) -> u64 {
        self.consumed
            .iter()
            .find(|(name, _)| name == platform)
            .map_or(0, |(_, units)| *units)
    }

    fn consume(&mut self, platform: &Platform, units: u64, taken: bool) {
        match self.consumed.iter_mut().find(|(name, _)| name == platform) {
            Some((_, consumed)) if taken => *consumed = consumed.saturating_add(units),
            Some((_, consumed)) => *consumed = consumed.saturating_sub(units),
            None if taken => self.consumed.push((platform.clone(), units)),
            None => {}
        }
    }

    fn settle(&mut self, settings: &SkuSettings) {
        self.quotas.clone_from(&settings.quotas);
        self.listings.clone_from(&settings.listings);
        self.allocation = settings.allocation.clone();
    }

    fn shows(&self, platform: &Platform) -> u64 {
        let (allotted, unallotted) = match &self.allocation {
            Allocation::Exclusive(exclusive) => {
                let unsold: u64 = exclusive
                    .allotted
                    .iter()
                    .map(|(name, allotted)| allotted.saturating_sub(self.consumed(name)))
                    .sum();
                let allotted = exclusive
                    .allotted
                    .iter()
                    .find(|(name, _)| name == platform)
                    .map(|(_, allotted)| *allotted);
                (allotted, self.available.saturating_sub(unsold))
            }
            Allocation::Shared { .. } => (None, 0),
        };
        let pool = Pool {
            available: self.available,
            halted: self.halted || !self.halted_in.is_empty(),
            unallotted,
        };
        let quota = self
            .quotas
            .iter()
            .find(|(name, _)| name == platform)
            .map(|(_, quota)| *quota);
        let using = PlatformUse {
            consumed: self.consumed(platform),
            quota,
            allotted,
        };
        allocation::shows(&self.allocation, &pool, using)
    }
}

/// What the rebalancer needs of one SKU (see [`Book::outlooks`]).
pub struct Outlooks {
    pub platforms: Vec<(Platform, super::rebalance::Outlook)>,
    pub floor: u64,
    pub every_ms: u64,
}

/// See the module documentation.
#[derive(Default)]
pub struct Book {
    skus: HashMap<SkuId, SkuBook>,
    /// Each platform's recent takes of each exclusive SKU.
    paces: HashMap<(SkuId, Platform), super::rebalance::Pace>,
    /// Every listing by slot (a SKU keeps its listings' slots, so a fact reaches them without
    /// a look-up); `None` once its SKU no longer names it.
    slots: Vec<Option<ListingSync>>,
    /// The slot of each listing, for acknowledgements.
    index: HashMap<(Platform, ListingId), usize>,
    /// Per platform, the slots whose target their platform has not acknowledged.
    dirty: HashMap<Platform, BTreeSet<usize>>,
}

impl Book {
    /// The picture of `ledger`, which must be quiescent and durable (right after recovery);
    /// every listing is to be synced in full.
    pub fn from_ledger(ledger: &Ledger, sequence: u64, now: Timestamp) -> Book {
        let mut book = Book::default();
        for view in ledger.skus() {
            let mut sku = SkuBook {
                available: view.stock.available,
                halted: view.stock.halted,
                ..SkuBook::default()
            };
            sku.settle(&view.settings);
            for count in &view.platforms {
                sku.consume(&count.platform, count.locked + count.sold, true);
            }
            book.skus.insert(view.stock.sku.clone(), sku);
            book.rename(&view.stock.sku);
        }
        for room in ledger.rooms() {
            for listing in &room.listings {
                let halted = ledger
                    .listing(&room.id, &listing.sku)
                    .is_some_and(|state| state.tally.halted);
                if let (true, Some(sku)) = (halted, book.skus.get_mut(&listing.sku)) {
                    sku.halted_in.push(room.id.clone());
                }
            }
        }
        let skus: Vec<SkuId> = book.skus.keys().cloned().collect();
        for sku in skus {
            book.retarget(&sku, sequence, Reason::Resync, now);
            for mark in ledger.synced(&sku) {
                let ack = ListingAck {
                    sku: sku.clone(),
                    listing: mark.listing,
                    version: mark.version,
                    quantity: mark.quantity,
                    consumed: mark.consumed,
                };
                book.acknowledge(&mark.platform, &ack, mark.at, Some(sequence));
            }
        }
        book
    }

    /// Takes in facts that just became durable; `first_sequence` is the first one's.
    pub fn apply(&mut self, first_sequence: u64, facts: &[Fact]) {
        for (offset, fact) in facts.iter().enumerate() {
            let sequence = first_sequence + offset as u64;
            if let Fact::ListingsSynced { at, platform, acks } = fact {
                for ack in acks {
                    self.acknowledge(platform, ack, *at, Some(sequence));
                }
                continue;
            }
            let renamed = matches!(fact, Fact::SkuPut { .. });
            for sku in self.take_in(fact) {
                if renamed {
                    self.rename(&sku);
                }
                self.retarget(&sku, sequence, reason(fact), fact.at());
            }
        }
    }

    /// Changes the picture by one fact; the SKUs whose listings may show another number.
    fn take_in(&mut self, fact: &Fact) -> SmallVec<[SkuId; 4]> {
        let mut touched: SmallVec<[SkuId; 4]> = SmallVec::new();
        for stock in fact.stocks() {
            let sku = self.skus.entry(stock.sku.clone()).or_default();
            sku.available = stock.available;
            sku.halted = stock.halted;
            touched.push(stock.sku.clone());
        }
        match fact {
            Fact::SkuPut {
                settings, stock, ..
            } => {
                if let Some(sku) = self.skus.get_mut(&stock.sku) {
                    sku.settle(settings);
                }
            }
            Fact::Allotted { sku, allotted, .. } => {
                if let Some(book) = self.skus.get_mut(sku) {
                    if let Allocation::Exclusive(exclusive) = &mut book.allocation {
                        exclusive.allotted.clone_from(allotted);
                    }
                    touched.push(sku.clone());
                }
            }
            Fact::ListingHalted { room, sku, .. } | Fact::ListingResumed { room, sku, .. } => {
                if let Some(book) = self.skus.get_mut(sku) {
                    book.halted_in.retain(|halting| halting != room);
                    if matches!(fact, Fact::ListingHalted { .. }) {
                        book.halted_in.push(room.clone());
                    }
                    touched.push(sku.clone());
                }
            }
            Fact::RoomPut { room, .. } => {
                for (id, book) in &mut self.skus {
                    let listed = room.listing(id).is_some();
                    if !listed && book.halted_in.contains(&room.id) {
                        book.halted_in.retain(|halting| halting != &room.id);
                        touched.push(id.clone());
                    }
                }
            }
            _ => self.take_order(fact),
        }
        touched
    }

    /// An order's move on its platform's consumption of each SKU it names.
    fn take_order(&mut self, fact: &Fact) {
        let (order, taken) = match fact {
            Fact::OrderReserved { order, .. } | Fact::OrderSold { order, .. } => (order, true),
            Fact::OrderConfirmed { order, retaken, .. } if *retaken => (order, true),
            Fact::OrderCancelled { order, .. }
            | Fact::OrderExpired { order, .. }
            | Fact::OrderRefunded { order, .. } => (order, false),
            _ => return,
        };
        for line in order.lines.iter() {
            if let Some(sku) = self.skus.get_mut(&line.sku) {
                sku.consume(&order.platform, line.qty.get(), taken);
                if taken && matches!(sku.allocation, Allocation::Exclusive(_)) {
                    self.paces
                        .entry((line.sku.clone(), order.platform.clone()))
                        .or_default()
                        .add(fact.at().as_millis(), line.qty.get());
                }
            }
        }
    }

    /// What the rebalancer needs of an exclusive SKU with automatic moves: each platform
    /// with a share and its outlook (pace over `span_ms` before `now_ms`), the floor, and
    /// the shortest time between two moves.
    pub fn outlooks(&self, sku: &SkuId, now_ms: u64, span_ms: u64) -> Option<Outlooks> {
        let book = self.skus.get(sku)?;
        let Allocation::Exclusive(exclusive) = &book.allocation else {
            return None;
        };
        if exclusive.rebalance_every_s == 0 || book.halted || !book.halted_in.is_empty() {
            return None;
        }
        let platforms = exclusive
            .allotted
            .iter()
            .map(|(platform, allotted)| {
                let per_ms = self
                    .paces
                    .get(&(sku.clone(), platform.clone()))
                    .map_or(0.0, |pace| pace.per_ms(now_ms, span_ms));
                let unsold = allotted.saturating_sub(book.consumed(platform));
                (
                    platform.clone(),
                    super::rebalance::Outlook { unsold, per_ms },
                )
            })
            .collect();
        Some(Outlooks {
            platforms,
            floor: exclusive.floor,
            every_ms: exclusive.rebalance_every_s.saturating_mul(1000),
        })
    }

    /// Gives each listing its SKU names a slot, and frees the slots of those it no longer
    /// names (they stop being synced).
    fn rename(&mut self, sku: &SkuId) {
        let Some(named) = self.skus.get(sku).map(|book| book.listings.clone()) else {
            return;
        };
        let mut slots: SmallVec<[usize; 4]> = SmallVec::new();
        for (platform, listing) in named {
            let key = (platform.clone(), listing.clone());
            let kept = self.index.get(&key).copied().filter(|slot| {
                self.slots[*slot]
                    .as_ref()
                    .is_some_and(|sync| &sync.sku == sku)
            });
            let slot = match kept {
                Some(slot) => slot,
                None => {
                    let slot = self.slots.len();
                    self.slots
                        .push(Some(ListingSync::new(platform, listing, sku.clone())));
                    if let Some(previous) = self.index.insert(key, slot) {
                        self.free(previous);
                    }
                    slot
                }
            };
            slots.push(slot);
        }
        let Some(book) = self.skus.get_mut(sku) else {
            return;
        };
        let dropped: SmallVec<[usize; 4]> = book
            .slots
            .iter()
            .copied()
            .filter(|slot| !slots.contains(slot))
            .collect();
        book.slots = slots;
        for slot in dropped {
            self.free(slot);
        }
    }

    /// Empties a slot no SKU names any more.
    fn free(&mut self, slot: usize) {
        let Some(sync) = self.slots[slot].take() else {
            return;
        };
        let key = (sync.platform, sync.listing);
        if self.index.get(&key) == Some(&slot) {
            self.index.remove(&key);
        }
        if let Some(dirty) = self.dirty.get_mut(&key.0) {
            dirty.remove(&slot);
        }
    }

    /// Sets each listing of `sku` to what it should show now; a listing whose number moved
    /// gets `version` and `reason` and is to be synced.
    fn retarget(&mut self, sku: &SkuId, version: u64, reason: Reason, now: Timestamp) {
        let Some(book) = self.skus.get(sku).filter(|book| !book.slots.is_empty()) else {
            return;
        };
        for &slot in &book.slots {
            let Some(sync) = self.slots[slot].as_mut() else {
                continue;
            };
            let target = book.shows(&sync.platform);
            let shown = sync.shown(book.consumed(&sync.platform));
            let resync = reason == Reason::Resync;
            // Settled when the listing shows its target by our account (a release changes
            // what it shows without changing the target, while halted for one).
            if !resync && sync.target == target && shown == Some(target) {
                continue;
            }
            let moved = sync.target != target || shown != Some(target) || sync.version == 0;
            if moved || resync {
                sync.version = version;
                sync.reason = if sync.acknowledged.is_none() {
                    Reason::Resync
                } else {
                    reason
                };
            }
            sync.target = target;
            sync.unsynced_since.get_or_insert(now);
            match self.dirty.get_mut(&sync.platform) {
                Some(dirty) => {
                    dirty.insert(slot);
                }
                None => {
                    self.dirty
                        .insert(sync.platform.clone(), BTreeSet::from([slot]));
                }
            }
        }
    }

    /// Up to `limit` updates for `platform`'s listings that wait for their platform and were
    /// not sent within `gap` before `now`, oldest version first; and when the next listing
    /// held back by `gap` may go.
    pub fn updates(
        &self,
        platform: &Platform,
        limit: usize,
        now: tokio::time::Instant,
        gap: std::time::Duration,
    ) -> (Vec<Update>, Option<tokio::time::Instant>) {
        let mut next_due: Option<tokio::time::Instant> = None;
        let mut ready: Vec<(u64, usize)> = Vec::new();
        for &slot in self.dirty.get(platform).into_iter().flatten() {
            let Some(sync) = self.slots[slot].as_ref() else {
                continue;
            };
            match sync.sent_at.map(|sent| sent + gap) {
                Some(due) if now < due => {
                    next_due = Some(next_due.map_or(due, |next| next.min(due)));
                }
                _ => ready.push((sync.version, slot)),
            }
        }
        ready.sort_unstable();
        let updates = ready
            .into_iter()
            .take(limit)
            .filter_map(|(_, slot)| self.update(slot))
            .collect();
        (updates, next_due)
    }

    /// The sync state of `platform`'s `listing`, when it is synced.
    fn sync_mut(&mut self, platform: &Platform, listing: &ListingId) -> Option<&mut ListingSync> {
        let slot = *self.index.get(&(platform.clone(), listing.clone()))?;
        self.slots[slot].as_mut()
    }

    /// `updates` went out at `now`.
    pub fn sent(&mut self, updates: &[Update], now: tokio::time::Instant) {
        for update in updates {
            if let Some(sync) = self.sync_mut(&update.platform, &update.listing) {
                sync.sent_at = Some(now);
            }
        }
    }

    fn update(&self, slot: usize) -> Option<Update> {
        let sync = self.slots[slot].as_ref()?;
        if let Some(in_doubt) = &sync.in_doubt {
            return Some(in_doubt.clone());
        }
        let consumed = self.skus.get(&sync.sku)?.consumed(&sync.platform);
        let delta = sync
            .shown(consumed)
            .map(|shown| sync.target as i64 - shown as i64);
        Some(Update {
            platform: sync.platform.clone(),
            sku: sync.sku.clone(),
            listing: sync.listing.clone(),
            quantity: sync.target,
            delta,
            acknowledged_version: sync.acknowledged.map(|acknowledged| acknowledged.version),
            version: sync.version,
            reason: sync.reason,
            consumed,
        })
    }

    /// The platform acknowledged `update` (and reported `reported`, when it did): the
    /// listing is synced unless its target moved meanwhile.
    pub fn acknowledged(
        &mut self,
        update: &Update,
        ack: &ListingAck,
        reported: Option<u64>,
        now: Timestamp,
    ) {
        self.acknowledge(&update.platform, ack, now, None);
        if let Some(sync) = self.sync_mut(&update.platform, &update.listing) {
            sync.reported = reported;
            sync.failures = 0;
            sync.last_error = None;
            sync.in_doubt = None;
        }
    }

    /// Keeps an acknowledgement (live, journaled at log position `sequence`, or kept by the
    /// ledger) unless a newer one was kept; the listing is synced when it acknowledged its
    /// current target. A listing's version is never left behind an acknowledgement another
    /// node made: it takes the acknowledged version when the target is the same, else the
    /// acknowledgement's own log position, so its next update is above what was applied.
    fn acknowledge(
        &mut self,
        platform: &Platform,
        ack: &ListingAck,
        at: Timestamp,
        sequence: Option<u64>,
    ) {
        let Some(&slot) = self.index.get(&(platform.clone(), ack.listing.clone())) else {
            return;
        };
        let Some(sync) = self.slots[slot].as_mut().filter(|sync| sync.sku == ack.sku) else {
            return;
        };
        if sync
            .acknowledged
            .is_some_and(|kept| ack.version < kept.version)
        {
            return;
        }
        sync.acknowledged = Some(Acknowledged {
            version: ack.version,
            quantity: ack.quantity,
            consumed: ack.consumed,
            at,
        });
        if sync.version < ack.version {
            sync.version = match sequence {
                Some(sequence) if sync.target != ack.quantity => sequence.max(ack.version),
                _ => ack.version,
            };
        }
        if sync.version == ack.version && sync.target == ack.quantity {
            sync.unsynced_since = None;
            if let Some(dirty) = self.dirty.get_mut(platform) {
                dirty.remove(&slot);
            }
        }
    }

    /// An attempt for `updates` failed with `error`; `in_doubt` when the platform may have
    /// applied them (no answer, a 5xx), so they go again as they are.
    pub fn failed(&mut self, updates: &[Update], error: &str, in_doubt: bool) {
        for update in updates {
            if let Some(sync) = self.sync_mut(&update.platform, &update.listing) {
                sync.failures = sync.failures.saturating_add(1);
                sync.last_error = Some(error.to_owned());
                // Only an answer clears an update in doubt: a 429 or a refusal of its
                // repeat says nothing of whether the first one was applied.
                if in_doubt {
                    sync.in_doubt = Some(update.clone());
                }
            }
        }
    }

    /// Every listing of `platform` is to be synced in full (start-up, a new leader, a
    /// platform that was unreachable).
    pub fn resync(&mut self, platform: &Platform, now: Timestamp) {
        let dirty = self.dirty.entry(platform.clone()).or_default();
        for (slot, sync) in self.slots.iter_mut().enumerate() {
            let Some(sync) = sync.as_mut().filter(|sync| &sync.platform == platform) else {
                continue;
            };
            sync.reason = Reason::Resync;
            sync.unsynced_since.get_or_insert(now);
            dirty.insert(slot);
        }
    }

    /// Every listing with its sync state, by platform and listing id.
    pub fn listings(&self) -> Vec<&ListingSync> {
        let mut listings: Vec<&ListingSync> = self.slots.iter().flatten().collect();
        listings.sort_by(|a, b| (&a.platform, &a.listing).cmp(&(&b.platform, &b.listing)));
        listings
    }

    /// The SKU that names `platform`'s `listing`, if one does.
    pub fn owner(&self, platform: &Platform, listing: &ListingId) -> Option<&SkuId> {
        let slot = *self.index.get(&(platform.clone(), listing.clone()))?;
        self.slots[slot].as_ref().map(|sync| &sync.sku)
    }

    /// What `platform` has taken of `sku` (locked + sold).
    pub fn consumed(&self, sku: &SkuId, platform: &Platform) -> u64 {
        self.skus.get(sku).map_or(0, |book| book.consumed(platform))
    }
}

/// The `reason` a fact gives the listings it moves.
fn reason(fact: &Fact) -> Reason {
    match fact {
        Fact::OrderReserved { .. } | Fact::OrderSold { .. } | Fact::OrderConfirmed { .. } => {
            Reason::Sale
        }
        Fact::OrderCancelled { .. } | Fact::OrderExpired { .. } | Fact::OrderRefunded { .. } => {
            Reason::Release
        }
        Fact::Halted { .. } | Fact::ListingHalted { .. } => Reason::Halt,
        Fact::Resumed { .. } | Fact::ListingResumed { .. } => Reason::Resume,
        Fact::Allotted { moved: Some(_), .. } => Reason::Rebalance,
        _ => Reason::Restock,
    }
}
