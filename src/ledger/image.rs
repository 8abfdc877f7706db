//! A whole ledger as plain values: what a snapshot saves and restores. `Ledger::export` takes
//! it at a consistent cut without stopping the ledger for long (copy on write for orders);
//! `Ledger::import` rebuilds a ledger from it and checks every invariant on the way in.

use super::order::{OrderEntry, OrderStripe, Origin};
use super::sku::{PlatformTally, Quantities, SkuEntry, SkuSlot};
use super::stripe::SkuTable;
use super::values::LedgerImage;
use super::{Ledger, LedgerConfig, Platform, ReplayError};

/// Orders copied under one stripe lock before it is released and taken again: at about
/// 200 ns an order (each a cache miss in a large ledger), a pause of some 200 µs for the
/// orders of that stripe.
pub(super) const SNAPSHOT_ORDERS_PER_HOLD_MAX: usize = 64;

impl Ledger {
    /// The whole ledger at one instant, without stopping it for long. The cut holds every
    /// SKU stripe and the room map just long enough to count one more snapshot generation,
    /// call `cut` and take the rooms (shared, not copied): every fact records under its SKUs'
    /// stripes, so `cut` reads exactly how many facts the image contains (the journal's
    /// sequence). SKUs and orders are copied afterwards, stripe by stripe, orders at most
    /// [`SNAPSHOT_ORDERS_PER_HOLD_MAX`] at a time; a SKU or an order an operation after the
    /// cut changes before its stripe is copied keeps, in its stripe, how it was at the cut,
    /// and the copy takes that instead (copy on write).
    // The hold times are the machine's real elapsed time, a measurement of the locks, not
    // domain time: no injected clock can stand in for them, and the ledger takes no tokio.
    #[allow(clippy::disallowed_types)]
    pub fn export<T>(&self, cut: impl FnOnce() -> T) -> (LedgerImage, T) {
        let cut_started = std::time::Instant::now();
        let sku_stripes: Vec<_> = self.skus.iter().map(|stripe| stripe.0.lock()).collect();
        let rooms = self.rooms.read();
        let generation = self
            .snapshot_generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        let position = cut();
        let mut image = LedgerImage {
            rooms: rooms.values().cloned().collect(),
            ..LedgerImage::default()
        };
        drop(rooms);
        drop(sku_stripes);
        let mut longest_hold = cut_started.elapsed();
        for stripe in self.skus.iter() {
            let mut table = stripe.0.lock();
            let hold_started = std::time::Instant::now();
            table.copy(generation, &mut image.skus);
            drop(table);
            longest_hold = longest_hold.max(hold_started.elapsed());
        }
        let orders_count: usize = self.orders.iter().map(|stripe| stripe.0.lock().len()).sum();
        image.orders.reserve(orders_count + orders_count / 16);
        // Each hold copies into this small buffer, warm from the last hold, and the copy
        // grows the big vector only once the lock is released: no allocation under it.
        let mut chunk = Vec::with_capacity(SNAPSHOT_ORDERS_PER_HOLD_MAX);
        for stripe in self.orders.iter() {
            let mut copied = Vec::new();
            let mut next = Some(0);
            let before_cut = loop {
                let mut held = stripe.0.lock();
                let hold_started = std::time::Instant::now();
                next = next.and_then(|start| {
                    held.copy_orders(generation, start, SNAPSHOT_ORDERS_PER_HOLD_MAX, &mut chunk)
                });
                let finished = next.is_none().then(|| held.finish_copy(generation));
                drop(held);
                longest_hold = longest_hold.max(hold_started.elapsed());
                copied.append(&mut chunk);
                if let Some(before_cut) = finished {
                    break before_cut;
                }
            };
            copied.retain(|order| !before_cut.contains_key(&order.order.order_id));
            image.orders.extend(copied);
            image.orders.extend(before_cut.into_values().flatten());
        }
        // The order of the image is the same for the same ledger, however it came about:
        // keys are unique, so an unstable sort is enough.
        image
            .skus
            .sort_unstable_by(|a, b| a.stock.sku.cmp(&b.stock.sku));
        image.orders.sort_unstable_by(|a, b| {
            (a.updated_at, &a.order.order_id).cmp(&(b.updated_at, &b.order.order_id))
        });
        self.export_longest_hold_ns.store(
            u64::try_from(longest_hold.as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        (image, position)
    }

    /// The longest the last export held a lock (the SKU stripes at its cut, or one order
    /// stripe while copying): the longest an operation can have waited on it.
    pub fn last_export_longest_hold(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(
            self.export_longest_hold_ns
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Checks that every room listing has its tally in its SKU, on the room's schedule, and
    /// that every tally belongs to a listing.
    fn check_listings(&self) -> Result<(), ReplayError> {
        let rooms = self.rooms.read();
        let mut tallies = 0usize;
        for stripe in self.skus.iter() {
            let table = stripe.0.lock();
            for slot in table.iter() {
                for tally in &slot.entry.listings {
                    tallies += 1;
                    let expected = rooms
                        .get(&tally.room)
                        .filter(|room| room.listing(&slot.sku).is_some())
                        .map(|room| super::room::Series::for_room(room));
                    let fits = expected.is_some_and(|series| {
                        series.starts_at == tally.series.starts_at
                            && series.bucket_ms == tally.series.bucket_ms
                            && series.buckets == tally.series.buckets
                    });
                    if !fits {
                        return Err(ReplayError::Refused {
                            kind: "snapshot",
                            reason: format!(
                                "sku {} has a tally for room {} that does not list it on that schedule",
                                slot.sku, tally.room
                            ),
                        });
                    }
                }
            }
        }
        let listings: usize = rooms.values().map(|room| room.listings.len()).sum();
        if listings != tallies {
            return Err(ReplayError::Refused {
                kind: "snapshot",
                reason: format!("{listings} room listings but {tallies} tallies"),
            });
        }
        Ok(())
    }

    /// A ledger holding exactly `image`, refused when the image breaks an invariant.
    pub fn import(config: LedgerConfig, image: LedgerImage) -> Result<Ledger, ReplayError> {
        let ledger = Ledger::new(config);
        for sku in image.skus {
            let quantities = Quantities {
                total: sku.stock.total,
                reserved: sku.stock.reserved,
                locked: sku.stock.locked,
                sold: sku.stock.sold,
            };
            let sum = |part: fn(&(Platform, u64, u64)) -> u64| {
                sku.platforms
                    .iter()
                    .try_fold(0u64, |total, tally| total.checked_add(part(tally)))
            };
            let consistent = quantities.available() == Some(sku.stock.available)
                && sum(|tally| tally.1) == Some(quantities.locked)
                && sum(|tally| tally.2) == Some(quantities.sold);
            if !consistent {
                return Err(ReplayError::StockMismatch {
                    kind: "snapshot",
                    sku: sku.stock.sku.clone(),
                    expected: "available = total - reserved - locked - sold, tallies summing up"
                        .to_owned(),
                    actual: format!("{:?} with platforms {:?}", sku.stock, sku.platforms),
                });
            }
            let entry = SkuEntry {
                quantities,
                halted: sku.stock.halted,
                settings: sku.settings,
                platforms: sku
                    .platforms
                    .into_iter()
                    .map(|(platform, locked, sold)| PlatformTally {
                        platform,
                        locked,
                        sold,
                    })
                    .collect(),
                version: sku.stock.version,
                updated_at: sku.updated_at,
                restocks: sku
                    .restocks
                    .into_iter()
                    .rev()
                    .take(super::sku::RESTOCKS_REMEMBERED_MAX)
                    .rev()
                    .collect(),
                listings: sku.listings,
                shows: sku.shows,
                synced: sku.synced,
            };
            let key = ledger.sku_key(&sku.stock.sku);
            let mut table: parking_lot::MutexGuard<'_, SkuTable> = ledger.skus[key.stripe].0.lock();
            if table.find(&key).is_some() {
                return Err(ReplayError::StockMismatch {
                    kind: "snapshot",
                    sku: sku.stock.sku.clone(),
                    expected: "one entry per SKU".to_owned(),
                    actual: "a SKU listed twice".to_owned(),
                });
            }
            table.insert(
                SkuSlot {
                    sku: sku.stock.sku.clone(),
                    hash: key.hash,
                    entry,
                },
                0,
            );
        }
        let mut rooms = ledger.rooms.write();
        for room in image.rooms {
            rooms.insert(room.id.clone(), room);
        }
        drop(rooms);
        ledger.check_listings()?;
        for order in image.orders {
            let (order_hash, stripe) = ledger.order_key(&order.order.order_id);
            let mut stripe: parking_lot::MutexGuard<'_, OrderStripe> = stripe.lock();
            if stripe.get(order_hash, &order.order.order_id).is_some() {
                return Err(ReplayError::BadTransition {
                    kind: "snapshot",
                    order_id: order.order.order_id.clone(),
                    status: order.status,
                });
            }
            stripe.insert(
                order_hash,
                OrderEntry {
                    born: 0,
                    taken_versions: order.taken_versions,
                    order: order.order,
                    status: order.status,
                    origin: if order.sold_at_creation {
                        Origin::Sell
                    } else {
                        Origin::Reserve
                    },
                    created_at: order.created_at,
                    expires_at: order.expires_at,
                    updated_at: order.updated_at,
                },
            );
        }
        Ok(ledger)
    }
}
