//! One SKU's entry in the ledger: its quantities, settings and per-platform tallies, and the
//! arithmetic of moving units between `available`, `locked` and `sold`.

use std::collections::VecDeque;

use smallvec::SmallVec;

use super::error::LedgerError;
use super::fact::Fact;
use super::room::ListingTally;
use super::types::{
    ListingId, Platform, PlatformCount, RestockId, STOCK_QTY_MAX, SkuId, SkuSettings, SkuUpdate,
    SkuView, Stock,
};
use crate::clock::Timestamp;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Quantities {
    pub(super) total: u64,
    pub(super) reserved: u64,
    pub(super) locked: u64,
    pub(super) sold: u64,
}

impl Quantities {
    /// `total - reserved - locked - sold`, or `None` when the invariant does not hold.
    pub(super) fn available(self) -> Option<u64> {
        self.total
            .checked_sub(self.reserved)?
            .checked_sub(self.locked)?
            .checked_sub(self.sold)
    }
}

/// What an order operation does to each of its lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Movement {
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
    pub(super) fn takes_available(self) -> bool {
        matches!(self, Movement::Lock | Movement::Sell)
    }

    /// Units this movement adds to, and takes from, a listing's consumption (locked + sold).
    pub(super) fn consumption(self, qty: u64) -> (u64, u64) {
        match self {
            Movement::Lock | Movement::Sell => (qty, 0),
            Movement::LockToSold => (0, 0),
            Movement::Unlock | Movement::Refund => (0, qty),
        }
    }

    /// The new `(locked, sold)` pair, or `None` on underflow or overflow.
    pub(super) fn apply(self, locked: u64, sold: u64, qty: u64) -> Option<(u64, u64)> {
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
pub(super) enum Rules {
    Enforce,
    Replay,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct PlatformTally {
    pub(super) platform: Platform,
    pub(super) locked: u64,
    pub(super) sold: u64,
}

pub(super) struct SkuEntry {
    pub(super) quantities: Quantities,
    pub(super) halted: bool,
    pub(super) settings: SkuSettings,
    /// One entry per platform that ever took this SKU; a handful, so a vector beats a map.
    pub(super) platforms: SmallVec<[PlatformTally; 4]>,
    pub(super) version: u64,
    pub(super) updated_at: Timestamp,
    /// The ids (and quantities) of this SKU's latest restocks, oldest first, at most
    /// [`RESTOCKS_REMEMBERED_MAX`]: a retried restock is recognised and applied once.
    pub(super) restocks: VecDeque<(RestockId, u64)>,
    /// What each room listing this SKU consumed; a handful at most.
    pub(super) listings: Vec<ListingTally>,
    /// The SKU's latest finished shows, oldest first.
    pub(super) shows: Vec<super::show::ShowRecord>,
    /// What each platform last acknowledged of its listing of this SKU.
    pub(super) synced: Vec<super::types::SyncMark>,
}

/// Restocks remembered per SKU for idempotency: a show restocks a SKU a handful of times.
pub(super) const RESTOCKS_REMEMBERED_MAX: usize = 64;

impl SkuEntry {
    pub(super) fn new(now: Timestamp) -> Self {
        SkuEntry {
            quantities: Quantities::default(),
            halted: false,
            settings: SkuSettings {
                name: String::new(),
                lock_ttl_ms: None,
                quotas: Vec::new(),
                listings: Vec::new(),
                allocation: super::types::Allocation::default(),
            },
            platforms: SmallVec::new(),
            version: 0,
            updated_at: now,
            restocks: VecDeque::new(),
            listings: Vec::new(),
            shows: Vec::new(),
            synced: Vec::new(),
        }
    }

    pub(super) fn stock(&self, sku: &SkuId) -> Stock {
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

    pub(super) fn listing(&self, room: &super::RoomId) -> Option<&ListingTally> {
        self.listings.iter().find(|tally| &tally.room == room)
    }

    pub(super) fn listing_mut(&mut self, room: &super::RoomId) -> Option<&mut ListingTally> {
        self.listings.iter_mut().find(|tally| &tally.room == room)
    }

    pub(super) fn tally(&self, platform: &Platform) -> Option<&PlatformTally> {
        self.platforms
            .iter()
            .find(|tally| &tally.platform == platform)
    }

    /// What a reader sees of one platform's use of this SKU.
    fn platform_count(&self, platform: &Platform, locked: u64, sold: u64) -> PlatformCount {
        PlatformCount {
            platform: platform.clone(),
            locked,
            sold,
            quota: self.quota(platform),
            listing: self.platform_listing(platform).cloned(),
        }
    }

    /// The platform's listing of this SKU, when it names one.
    pub(super) fn platform_listing(&self, platform: &Platform) -> Option<&ListingId> {
        self.settings
            .listings
            .iter()
            .find(|(listing_platform, _)| listing_platform == platform)
            .map(|(_, listing)| listing)
    }

    pub(super) fn quota(&self, platform: &Platform) -> Option<u64> {
        self.settings
            .quotas
            .iter()
            .find(|(quota_platform, _)| quota_platform == platform)
            .map(|(_, quota)| *quota)
    }

    /// Refuses a take that the halt, the available stock or the platform's quota forbid.
    pub(super) fn check_take(
        &self,
        sku: &SkuId,
        platform: &Platform,
        qty: u64,
    ) -> Result<(), LedgerError> {
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
        self.check_allotment(sku, platform, qty)?;
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
    pub(super) fn plan(
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

    pub(super) fn commit(&mut self, quantities: Quantities, tally: PlatformTally, now: Timestamp) {
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

    /// Remembers a restock id, forgetting the oldest beyond the limit.
    pub(super) fn remember_restock(&mut self, restock_id: RestockId, qty: u64) {
        if RESTOCKS_REMEMBERED_MAX <= self.restocks.len() {
            self.restocks.pop_front();
        }
        self.restocks.push_back((restock_id, qty));
    }

    pub(super) fn touch(&mut self, now: Timestamp) {
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

pub(super) fn put_sku_entry(
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
    if let Some(mut listings) = update.listings {
        listings.sort();
        listings.dedup_by(|a, b| a.0 == b.0);
        settings.listings = listings;
    }
    let renamed = settings.listings != entry.settings.listings;
    if let Some(allocation) = update.allocation {
        settings.allocation = allocation;
    }
    let pool = |quantities: Quantities| quantities.total.saturating_sub(quantities.reserved);
    let grew = pool(quantities).saturating_sub(pool(entry.quantities));
    entry.quantities = quantities;
    if let super::types::Allocation::Exclusive(exclusive) = &mut settings.allocation {
        entry.fit_allotments(exclusive, &entry.settings.allocation, grew);
    }
    entry.settings = settings;
    if renamed {
        entry.forget_unnamed_marks();
    }
    entry.touch(now);
    Ok(Fact::SkuPut {
        at: now,
        settings: entry.settings.clone(),
        stock: entry.stock(sku),
    })
}

pub(super) fn sku_view(sku: &SkuId, entry: &SkuEntry) -> SkuView {
    let mut platforms: Vec<PlatformCount> = entry
        .platforms
        .iter()
        .map(|tally| entry.platform_count(&tally.platform, tally.locked, tally.sold))
        .collect();
    let settings = &entry.settings;
    let named = settings.quotas.iter().map(|(platform, _)| platform);
    for platform in named.chain(settings.listings.iter().map(|(platform, _)| platform)) {
        if !platforms.iter().any(|count| &count.platform == platform) {
            platforms.push(entry.platform_count(platform, 0, 0));
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

/// A SKU as its stripe's table stores it.
pub(super) struct SkuSlot {
    pub(super) sku: SkuId,
    /// The id's hash, kept so the table can grow without hashing every id again.
    pub(super) hash: u64,
    pub(super) entry: SkuEntry,
}

impl SkuEntry {
    /// The SKU as a snapshot keeps it.
    pub(super) fn image(&self, sku: &SkuId) -> super::values::SkuImage {
        super::values::SkuImage {
            stock: self.stock(sku),
            settings: self.settings.clone(),
            platforms: self
                .platforms
                .iter()
                .map(|tally| (tally.platform.clone(), tally.locked, tally.sold))
                .collect(),
            updated_at: self.updated_at,
            restocks: self.restocks.iter().cloned().collect(),
            listings: self.listings.clone(),
            shows: self.shows.clone(),
            synced: self.synced.clone(),
        }
    }
}
