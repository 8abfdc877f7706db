//! The ledger as the journal has made it durable, for the readers that must never act on a
//! change a crash could take back: the alert engine (levels, alerts, webhooks, auto-halt),
//! room views and the push hub's snapshots. It holds every SKU's stock and every room with
//! its listings' tallies, and is kept from the facts, in journal order, as each batch becomes
//! durable (the journal calls [`DurableState::apply`] before it acknowledges anything in the
//! batch), so it is never ahead of the journal, and never behind an acknowledgement.
//!
//! Orders are not kept: what an order did to a listing travels in its fact (`consumed`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::fact::Fact;
use super::room::{ListingState, ListingTally, Room, RoomState};
use super::types::{OrderStatus, RoomId, SkuId, Stock};
use super::{FactSink, Ledger};

/// A room as the journal holds it: its spec and its listings' tallies.
struct DurableRoom {
    spec: Arc<Room>,
    tallies: HashMap<SkuId, ListingTally>,
}

#[derive(Default)]
struct Inner {
    stocks: HashMap<SkuId, Stock>,
    rooms: HashMap<RoomId, DurableRoom>,
}

/// See the module documentation. Every method takes its lock for a short copy.
pub struct DurableState {
    inner: Mutex<Inner>,
}

impl DurableState {
    /// The state of `ledger`, which must be quiescent and durable: right after recovery,
    /// before anything new happens.
    pub fn from_ledger(ledger: &Ledger) -> DurableState {
        let mut inner = Inner::default();
        for view in ledger.skus() {
            inner.stocks.insert(view.stock.sku.clone(), view.stock);
        }
        for spec in ledger.rooms() {
            let tallies = spec
                .listings
                .iter()
                .filter_map(|listing| {
                    let state = ledger.listing(&spec.id, &listing.sku)?;
                    Some((listing.sku.clone(), state.tally))
                })
                .collect();
            inner
                .rooms
                .insert(spec.id.clone(), DurableRoom { spec, tallies });
        }
        DurableState {
            inner: Mutex::new(inner),
        }
    }

    /// Takes in facts that just became durable, in journal order.
    pub fn apply(&self, facts: &[Fact]) {
        let mut inner = self.inner.lock();
        for fact in facts {
            inner.apply(fact);
        }
    }

    pub fn stock(&self, sku: &SkuId) -> Option<Stock> {
        self.inner.lock().stocks.get(sku).cloned()
    }

    /// Every room's spec, by id.
    pub fn rooms(&self) -> Vec<Arc<Room>> {
        let inner = self.inner.lock();
        let mut rooms: Vec<Arc<Room>> =
            inner.rooms.values().map(|room| room.spec.clone()).collect();
        rooms.sort_by(|a, b| a.id.cmp(&b.id));
        rooms
    }

    pub fn room_spec(&self, room: &RoomId) -> Option<Arc<Room>> {
        self.inner
            .lock()
            .rooms
            .get(room)
            .map(|room| room.spec.clone())
    }

    /// One listing of a room with its tally and its SKU's stock.
    pub fn listing(&self, room: &RoomId, sku: &SkuId) -> Option<ListingState> {
        let inner = self.inner.lock();
        let durable = inner.rooms.get(room)?;
        inner.listing_state(durable, sku)
    }

    /// A room with every listing's tally and stock, in line-up order.
    pub fn room(&self, room: &RoomId) -> Option<RoomState> {
        let inner = self.inner.lock();
        let durable = inner.rooms.get(room)?;
        let listings = durable
            .spec
            .listings
            .iter()
            .filter_map(|listing| inner.listing_state(durable, &listing.sku))
            .collect();
        Some(RoomState {
            room: durable.spec.clone(),
            listings,
        })
    }
}

impl Inner {
    fn listing_state(&self, durable: &DurableRoom, sku: &SkuId) -> Option<ListingState> {
        Some(ListingState {
            listing: durable.spec.listing(sku)?.clone(),
            tally: durable.tallies.get(sku)?.clone(),
            stock: self.stocks.get(sku)?.clone(),
        })
    }

    /// Does to this state what the ledger did when it made `fact`.
    fn apply(&mut self, fact: &Fact) {
        for stock in fact.stocks() {
            self.stocks.insert(stock.sku.clone(), stock.clone());
        }
        match fact {
            Fact::RoomPut { at, room } => {
                let previous = self.rooms.remove(&room.id);
                let mut before = previous.map(|room| room.tallies).unwrap_or_default();
                let tallies = room
                    .listings
                    .iter()
                    .map(|listing| {
                        // A listing that stays keeps its tally on the new schedule, as in the
                        // ledger; a new one starts from nothing.
                        let tally = match before.remove(&listing.sku) {
                            Some(mut tally) => {
                                tally.reschedule(room, *at);
                                tally
                            }
                            None => ListingTally::new(room, 0),
                        };
                        (listing.sku.clone(), tally)
                    })
                    .collect();
                self.rooms.insert(
                    room.id.clone(),
                    DurableRoom {
                        spec: room.clone(),
                        tallies,
                    },
                );
            }
            Fact::ListingHalted {
                at, room, sku, by, ..
            }
            | Fact::ListingResumed { at, room, sku, by } => {
                if let Some(tally) = self
                    .rooms
                    .get_mut(room)
                    .and_then(|durable| durable.tallies.get_mut(sku))
                {
                    let halt = match fact {
                        Fact::ListingHalted { auto, .. } => Some(*auto),
                        _ => None,
                    };
                    tally.set_halted(*at, halt, by.as_deref());
                }
            }
            Fact::LostDemand { at, entries } => {
                for entry in entries {
                    if let Some(tally) = self
                        .rooms
                        .get_mut(&entry.room)
                        .and_then(|durable| durable.tallies.get_mut(&entry.sku))
                    {
                        tally.add_lost(*at, &entry.lost);
                    }
                }
            }
            _ => self.apply_consumption(fact),
        }
    }

    /// An order's move, on the listings of its room that counted it, and on every listing of
    /// a SKU it left with nothing available.
    fn apply_consumption(&mut self, fact: &Fact) {
        let (Some(order), consumed) = (order_of(fact), fact.consumed()) else {
            return;
        };
        for stock in fact.stocks().iter().filter(|stock| stock.available == 0) {
            for durable in self.rooms.values_mut() {
                if let Some(tally) = durable.tallies.get_mut(&stock.sku) {
                    tally.note_sold_out(fact.at());
                }
            }
        }
        let Some(room) = &order.room else {
            return;
        };
        let Some(durable) = self.rooms.get_mut(room) else {
            return;
        };
        debug_assert_eq!(
            consumed.len(),
            order.lines.len(),
            "a live fact says its lines"
        );
        let outcome = match fact {
            Fact::OrderSold { .. } | Fact::OrderConfirmed { .. } => OrderStatus::Sold,
            Fact::OrderCancelled { .. } => OrderStatus::Cancelled,
            Fact::OrderExpired { .. } => OrderStatus::Expired,
            Fact::OrderRefunded { .. } => OrderStatus::Refunded,
            _ => OrderStatus::Locked,
        };
        for (line, consumed) in order.lines.iter().zip(consumed) {
            if let (Some(consumed), Some(tally)) = (consumed, durable.tallies.get_mut(&line.sku)) {
                tally.consumed = *consumed;
                tally.series.record(fact.at(), *consumed);
                tally.count_outcome(outcome, line.qty.get());
            }
        }
    }
}

fn order_of(fact: &Fact) -> Option<&super::types::OrderRequest> {
    match fact {
        Fact::OrderReserved { order, .. }
        | Fact::OrderSold { order, .. }
        | Fact::OrderConfirmed { order, .. }
        | Fact::OrderCancelled { order, .. }
        | Fact::OrderExpired { order, .. }
        | Fact::OrderRefunded { order, .. } => Some(order),
        _ => None,
    }
}

/// For a ledger without a journal (the engine's and the demo's tests), where a change counts
/// as durable once applied: the state follows the ledger fact by fact.
impl FactSink for DurableState {
    fn append(&self, fact: &Fact) {
        self.apply(std::slice::from_ref(fact));
    }
}
