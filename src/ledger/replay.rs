//! Replay: [`Ledger::apply`] re-does what a fact records, with the same movement code the live
//! operations use, and checks that every SKU ends exactly where the fact says it did.

use smallvec::SmallVec;

use super::order::{OrderEntry, Origin, ReplayStep, is_finished};
use super::sku::{Movement, Quantities, Rules, SkuEntry, SkuSlot};
use super::{
    Fact, Ledger, LedgerError, Lines, OrderId, OrderRequest, OrderStatus, ReplayError, SkuId, Stock,
};
use crate::clock::Timestamp;

impl Ledger {
    /// `fact` as the live operation reported it: with each order line's room listing
    /// consumption (`Fact::consumed`, which the journal does not keep) read from this ledger.
    /// Call it right after [`Ledger::apply`] of `fact`, with nothing else changing the ledger
    /// in between: a standby applying the replicated log does, one fact at a time.
    pub fn with_consumed(&self, mut fact: Fact) -> Fact {
        if let Some((order, consumed)) = fact.order_and_consumed_mut() {
            consumed.clear();
            for line in order.lines.iter() {
                let listing_consumed = order.room.as_ref().and_then(|room| {
                    let key = self.sku_key(&line.sku);
                    let table = self.skus[key.stripe].0.lock();
                    table
                        .find(&key)
                        .and_then(|entry| entry.listing(room))
                        .map(|tally| tally.consumed)
                });
                consumed.push(listing_consumed);
            }
        }
        fact
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
                let key = self.sku_key(&stock.sku);
                let mut table = self.skus[key.stripe].0.lock();
                // Replay is never concurrent with a snapshot (as for orders, `born: 0`):
                // generation 0, nothing to keep for one.
                if table.find(&key).is_none() {
                    let slot = SkuSlot {
                        sku: stock.sku.clone(),
                        hash: key.hash,
                        entry: SkuEntry::new(*at),
                    };
                    table.insert(slot, 0);
                }
                let entry = table.find_mut(&key, 0).expect("present or just inserted");
                let quantities = Quantities {
                    total: stock.total,
                    reserved: stock.reserved,
                    ..entry.quantities
                };
                if quantities.available().is_none() {
                    return Err(ReplayError::StockMismatch {
                        kind: fact.kind(),
                        sku: stock.sku.clone(),
                        expected: format!("{stock:?}"),
                        actual: format!("total below reserved + locked + sold: {quantities:?}"),
                    });
                }
                let renamed = settings.listings != entry.settings.listings;
                entry.settings = settings.clone();
                if renamed {
                    // As live: acknowledgements of listings no longer named are forgotten.
                    entry.forget_unnamed_marks();
                }
                entry.quantities = quantities;
                entry.touch(*at);
                check_stock(fact, entry, stock)
            }
            Fact::Restocked {
                at,
                qty,
                restock_id,
                stock,
            } => self.apply_to_sku(fact, stock, |entry| {
                entry.quantities.total = entry.quantities.total.saturating_add(*qty);
                if let Some(restock_id) = restock_id {
                    entry.remember_restock(restock_id.clone(), *qty);
                }
                entry.touch(*at);
            }),
            Fact::Halted { at, stock } | Fact::Resumed { at, stock } => {
                let halted = matches!(fact, Fact::Halted { .. });
                self.apply_to_sku(fact, stock, |entry| {
                    entry.halted = halted;
                    entry.touch(*at);
                })
            }
            Fact::RoomPut { at, room } => self
                .put_room_at(*at, room.clone(), false)
                .map(drop)
                .map_err(|error| ReplayError::Refused {
                    kind: fact.kind(),
                    reason: error.to_string(),
                }),
            Fact::ListingHalted {
                at, room, sku, by, ..
            }
            | Fact::ListingResumed { at, room, sku, by } => {
                let halt = match fact {
                    Fact::ListingHalted { auto, .. } => Some(*auto),
                    _ => None,
                };
                self.set_listing_halted(*at, room, sku, halt, by.as_deref(), false)
                    .map(drop)
                    .map_err(|error| ReplayError::Refused {
                        kind: fact.kind(),
                        reason: error.to_string(),
                    })
            }
            // The alert engine's facts: nothing in the ledger moves.
            Fact::Tick { .. } | Fact::AlertAcknowledged { .. } => Ok(()),
            Fact::ShowEnded { records, .. } => {
                for (sku, record) in records {
                    self.replay_on_sku(sku, |entry| {
                        super::show::remember(&mut entry.shows, record.clone());
                    });
                }
                Ok(())
            }
            Fact::Allotted { sku, allotted, .. } => {
                self.replay_on_sku(sku, |entry| entry.set_allotted(allotted.clone()));
                Ok(())
            }
            Fact::ListingsSynced {
                at, platform, acks, ..
            } => {
                self.replay_synced(*at, platform, acks);
                Ok(())
            }
            Fact::OrdersForgotten {
                settled_before,
                sold_before,
                ..
            } => {
                self.forget_before(super::Forget {
                    settled_before: *settled_before,
                    sold_before: *sold_before,
                });
                Ok(())
            }
            Fact::LostDemand { at, entries } => {
                // A listing removed since keeps no count, as when the fact was made.
                for entry in entries {
                    self.replay_on_sku(&entry.sku, |sku| {
                        if let Some(tally) = sku.listing_mut(&entry.room) {
                            tally.add_lost(*at, &entry.lost);
                        }
                    });
                }
                Ok(())
            }
            Fact::OrderReserved {
                at,
                order,
                expires_at,
                stocks,
                ..
            } => self.apply_creation(
                fact,
                OrderEntry {
                    born: 0,
                    taken_versions: SmallVec::new(),
                    order: order.clone(),
                    status: OrderStatus::Locked,
                    origin: Origin::Reserve,
                    created_at: *at,
                    expires_at: *expires_at,
                    updated_at: *at,
                },
                stocks,
            ),
            Fact::OrderSold {
                at, order, stocks, ..
            } => self.apply_creation(
                fact,
                OrderEntry {
                    born: 0,
                    taken_versions: SmallVec::new(),
                    order: order.clone(),
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
                order,
                retaken,
                stocks,
                ..
            } => {
                let step = if *retaken {
                    ReplayStep::Retake
                } else {
                    ReplayStep::Confirm
                };
                self.apply_transition(fact, *at, &order.order_id, step, stocks)
            }
            Fact::OrderCancelled {
                at, order, stocks, ..
            } => self.apply_transition(fact, *at, &order.order_id, ReplayStep::Cancel, stocks),
            Fact::OrderExpired {
                at, order, stocks, ..
            } => self.apply_transition(fact, *at, &order.order_id, ReplayStep::Expire, stocks),
            Fact::OrderRefunded {
                at, order, stocks, ..
            } => self.apply_transition(fact, *at, &order.order_id, ReplayStep::Refund, stocks),
        }
    }

    /// Changes the SKU's entry, when the ledger has it: for facts that change no stock and
    /// whose SKU may be gone since (a show's record, lost demand).
    pub(super) fn replay_on_sku(&self, sku: &SkuId, change: impl FnOnce(&mut SkuEntry)) {
        let key = self.sku_key(sku);
        let mut table = self.skus[key.stripe].0.lock();
        if let Some(entry) = table.find_mut(&key, 0) {
            change(entry);
        }
    }

    fn apply_to_sku(
        &self,
        fact: &Fact,
        stock: &Stock,
        change: impl FnOnce(&mut SkuEntry),
    ) -> Result<(), ReplayError> {
        let key = self.sku_key(&stock.sku);
        let mut table = self.skus[key.stripe].0.lock();
        let entry = table
            .find_mut(&key, 0)
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
        entry: OrderEntry,
        stocks: &[Stock],
    ) -> Result<(), ReplayError> {
        let order_id = &entry.order.order_id;
        let (order_hash, stripe) = self.order_key(order_id);
        let mut stripe = stripe.lock();
        // A finished order under the same id was forgotten after the idempotency window
        // before this one was placed (the forgetting's fact comes after the orders placed
        // meanwhile); a locked one cannot have been.
        if let Some(existing) = stripe.get(order_hash, order_id) {
            if !is_finished(existing.status) {
                return Err(ReplayError::BadTransition {
                    kind: fact.kind(),
                    order_id: order_id.clone(),
                    status: existing.status,
                });
            }
            stripe.remove(order_hash, order_id);
        }
        let movement = match entry.origin {
            Origin::Reserve => (Movement::Lock, OrderStatus::Locked),
            Origin::Sell => (Movement::Sell, OrderStatus::Sold),
        };
        let mut entry = entry;
        entry.taken_versions =
            self.apply_moves(fact, &entry.order, &[], movement, entry.created_at, stocks)?;
        stripe.insert(order_hash, entry);
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
        let (order_hash, stripe) = self.order_key(order_id);
        let mut stripe = stripe.lock();
        let entry =
            stripe
                .get_mut(order_hash, order_id)
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
        let order = entry.order.clone();
        let taken_versions = self.apply_moves(
            fact,
            &order,
            &entry.taken_versions,
            (movement, to),
            at,
            stocks,
        )?;
        if movement.takes_available() {
            entry.taken_versions = taken_versions;
        }
        entry.status = to;
        entry.updated_at = at;
        if from == OrderStatus::Locked {
            stripe.unlocked();
        }
        stripe.finish(order_id, to, at);
        Ok(())
    }

    /// Re-does an order's move and returns each line's SKU version after it.
    fn apply_moves(
        &self,
        fact: &Fact,
        order: &OrderRequest,
        taken_versions: &[u64],
        movement: (Movement, OrderStatus),
        at: Timestamp,
        stocks: &[Stock],
    ) -> Result<SmallVec<[u64; 1]>, ReplayError> {
        let keys = self.line_keys(&order.lines);
        let mut skus = self.lock_skus(&keys);
        let moved = self
            .move_lines(
                &mut skus,
                &keys,
                order,
                taken_versions,
                movement,
                Rules::Replay,
                at,
            )
            .map_err(|error| match error {
                LedgerError::SkuNotFound { sku } => ReplayError::UnknownSku {
                    kind: fact.kind(),
                    sku,
                },
                error => ReplayError::StockMismatch {
                    kind: fact.kind(),
                    sku: first_sku(&order.lines),
                    expected: format!("{stocks:?}"),
                    actual: error.to_string(),
                },
            })?;
        for (actual, expected) in moved.stocks.iter().zip(stocks) {
            if actual != expected {
                return Err(ReplayError::StockMismatch {
                    kind: fact.kind(),
                    sku: actual.sku.clone(),
                    expected: format!("{expected:?}"),
                    actual: format!("{actual:?}"),
                });
            }
        }
        Ok(moved.stocks.iter().map(|stock| stock.version).collect())
    }
}

fn first_sku(lines: &Lines) -> SkuId {
    lines
        .iter()
        .next()
        .map(|line| line.sku.clone())
        .expect("an order has at least one line")
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
