//! Facts: what a successful ledger operation changed, complete enough that applying the
//! facts in order to an empty ledger rebuilds the same state.
//!
//! Each fact carries the quantities of every SKU it touched *after* the change, so readers
//! (the push hub, the alert engine) need not read the ledger again, and replay can check that
//! it arrived where the live operation did. Each order fact carries the whole order (its
//! platform, room and lines), so a reader can attribute a payment or an expiry to its room.

use std::sync::Arc;

use smallvec::SmallVec;

use super::room::{Lost, Room};
use super::show::ShowRecord;
use super::types::{OrderId, OrderRequest, Platform, RestockId, RoomId, SkuId, SkuSettings, Stock};
use crate::clock::Timestamp;

/// Units refused to orders naming `room`, on its listing of `sku`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostEntry {
    pub room: RoomId,
    pub sku: SkuId,
    pub lost: Lost,
}

/// The stock of every SKU an order touched, after the change, in the order's line order.
pub type Stocks = SmallVec<[Stock; 1]>;

/// For each line of an order, in line order, what the listing of its SKU in the order's room
/// consumed after the change; `None` where the order names no room or the room does not list
/// the SKU. Readers that keep their own copy of the rooms (the alert engine, which must see
/// only durable state) take it from here. Not journaled: replay recomputes it, and a fact
/// read back from the journal has it empty.
pub type Consumed = SmallVec<[Option<u64>; 1]>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    /// A SKU was created or its settings or `total`/`reserved` changed.
    SkuPut {
        at: Timestamp,
        settings: SkuSettings,
        stock: Stock,
    },
    /// Units arrived: `total` grew by `qty`.
    Restocked {
        at: Timestamp,
        qty: u64,
        /// The client's id for it, when it gave one.
        restock_id: Option<RestockId>,
        stock: Stock,
    },
    /// New orders for the SKU are refused until it is resumed.
    Halted {
        at: Timestamp,
        stock: Stock,
    },
    Resumed {
        at: Timestamp,
        stock: Stock,
    },
    /// An order locked its units until `expires_at`.
    OrderReserved {
        at: Timestamp,
        order: Arc<OrderRequest>,
        expires_at: Timestamp,
        stocks: Stocks,
        consumed: Consumed,
    },
    /// A paid order took its units directly (`sell`).
    OrderSold {
        at: Timestamp,
        order: Arc<OrderRequest>,
        stocks: Stocks,
        consumed: Consumed,
    },
    /// A locked order was paid. `retaken` when its lock had expired and the payment took the
    /// units again from `available`.
    OrderConfirmed {
        at: Timestamp,
        order: Arc<OrderRequest>,
        retaken: bool,
        stocks: Stocks,
        consumed: Consumed,
    },
    OrderCancelled {
        at: Timestamp,
        order: Arc<OrderRequest>,
        stocks: Stocks,
        consumed: Consumed,
    },
    OrderExpired {
        at: Timestamp,
        order: Arc<OrderRequest>,
        stocks: Stocks,
        consumed: Consumed,
    },
    OrderRefunded {
        at: Timestamp,
        order: Arc<OrderRequest>,
        stocks: Stocks,
        consumed: Consumed,
    },
    /// A room was created or its schedule or line-up changed.
    RoomPut {
        at: Timestamp,
        room: Arc<Room>,
    },
    /// Orders naming the room are refused for the SKU until it is resumed; `auto` when the
    /// alert engine halted it at red.
    ListingHalted {
        at: Timestamp,
        room: RoomId,
        sku: SkuId,
        auto: bool,
        /// Who halted it, when known.
        by: Option<String>,
    },
    ListingResumed {
        at: Timestamp,
        room: RoomId,
        sku: SkuId,
        by: Option<String>,
    },
    /// Time passed: the alert engine re-evaluates every listing at `at`, since levels also
    /// move with time. Changes no stock; in the log so that every node of a cluster
    /// evaluates at the same points and decides the same levels.
    Tick {
        at: Timestamp,
    },
    /// An operator acknowledged alert `id`. Changes no stock; in the log so that every
    /// node's alert records agree.
    AlertAcknowledged {
        at: Timestamp,
        id: u64,
        by: String,
    },
    /// Orders naming rooms were refused for want of stock or a halt since the last such
    /// fact: demand the shows lost, added to the listings' tallies. Changes no stock.
    LostDemand {
        at: Timestamp,
        entries: Vec<LostEntry>,
    },
    /// A show ended: what each of its listings leaves in its SKU's history. Changes no
    /// stock.
    ShowEnded {
        at: Timestamp,
        records: Vec<(SkuId, ShowRecord)>,
    },
    /// The leader forgot the finished orders past their windows: settled ones finished
    /// before `settled_before`, sold ones sold before `sold_before`. Changes no stock; in the
    /// log so that every node forgets the same orders at the same point.
    OrdersForgotten {
        at: Timestamp,
        settled_before: Timestamp,
        sold_before: Timestamp,
    },
    /// `platform` acknowledged updates to its listings (channel sync). Changes no stock; in
    /// the log so every node knows what each listing was last told.
    ListingsSynced {
        at: Timestamp,
        platform: Platform,
        acks: Vec<super::types::ListingAck>,
    },
    /// An exclusive SKU's allotments changed: restocked units split by the shares, or units
    /// moved from one platform to another. Changes no stock.
    Allotted {
        at: Timestamp,
        sku: SkuId,
        /// Every allotment after the change.
        allotted: Vec<(Platform, u64)>,
        /// The move, when it was one: from, to, units, why.
        moved: Option<AllotmentMove>,
    },
}

/// Units of an exclusive SKU moved from one platform's allotment to another's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllotmentMove {
    pub from: Platform,
    pub to: Platform,
    pub qty: u64,
    pub reason: String,
}

impl Fact {
    pub fn at(&self) -> Timestamp {
        match self {
            Fact::SkuPut { at, .. }
            | Fact::Restocked { at, .. }
            | Fact::Halted { at, .. }
            | Fact::Resumed { at, .. }
            | Fact::OrderReserved { at, .. }
            | Fact::OrderSold { at, .. }
            | Fact::OrderConfirmed { at, .. }
            | Fact::OrderCancelled { at, .. }
            | Fact::OrderExpired { at, .. }
            | Fact::OrderRefunded { at, .. }
            | Fact::RoomPut { at, .. }
            | Fact::ListingHalted { at, .. }
            | Fact::ListingResumed { at, .. }
            | Fact::Tick { at }
            | Fact::AlertAcknowledged { at, .. }
            | Fact::LostDemand { at, .. }
            | Fact::ShowEnded { at, .. }
            | Fact::OrdersForgotten { at, .. }
            | Fact::ListingsSynced { at, .. }
            | Fact::Allotted { at, .. } => *at,
        }
    }

    /// The SKUs this fact changed, with their quantities after it.
    pub fn stocks(&self) -> &[Stock] {
        match self {
            Fact::SkuPut { stock, .. }
            | Fact::Restocked { stock, .. }
            | Fact::Halted { stock, .. }
            | Fact::Resumed { stock, .. } => std::slice::from_ref(stock),
            Fact::OrderReserved { stocks, .. }
            | Fact::OrderSold { stocks, .. }
            | Fact::OrderConfirmed { stocks, .. }
            | Fact::OrderCancelled { stocks, .. }
            | Fact::OrderExpired { stocks, .. }
            | Fact::OrderRefunded { stocks, .. } => stocks,
            Fact::RoomPut { .. }
            | Fact::ListingHalted { .. }
            | Fact::ListingResumed { .. }
            | Fact::Tick { .. }
            | Fact::AlertAcknowledged { .. }
            | Fact::LostDemand { .. }
            | Fact::ShowEnded { .. }
            | Fact::OrdersForgotten { .. }
            | Fact::ListingsSynced { .. }
            | Fact::Allotted { .. } => &[],
        }
    }

    /// Each order line's room listing consumption after the change (see [`Consumed`]);
    /// empty for other facts.
    pub fn consumed(&self) -> &[Option<u64>] {
        match self {
            Fact::OrderReserved { consumed, .. }
            | Fact::OrderSold { consumed, .. }
            | Fact::OrderConfirmed { consumed, .. }
            | Fact::OrderCancelled { consumed, .. }
            | Fact::OrderExpired { consumed, .. }
            | Fact::OrderRefunded { consumed, .. } => consumed,
            _ => &[],
        }
    }

    /// The order of an order fact and its lines' consumption, to fill in.
    pub(super) fn order_and_consumed_mut(&mut self) -> Option<(&OrderRequest, &mut Consumed)> {
        match self {
            Fact::OrderReserved {
                order, consumed, ..
            }
            | Fact::OrderSold {
                order, consumed, ..
            }
            | Fact::OrderConfirmed {
                order, consumed, ..
            }
            | Fact::OrderCancelled {
                order, consumed, ..
            }
            | Fact::OrderExpired {
                order, consumed, ..
            }
            | Fact::OrderRefunded {
                order, consumed, ..
            } => Some((order, consumed)),
            _ => None,
        }
    }

    /// The id of the order this fact belongs to, if any.
    pub fn order_id(&self) -> Option<&OrderId> {
        match self {
            Fact::SkuPut { .. }
            | Fact::Restocked { .. }
            | Fact::Halted { .. }
            | Fact::Resumed { .. }
            | Fact::RoomPut { .. }
            | Fact::ListingHalted { .. }
            | Fact::ListingResumed { .. }
            | Fact::Tick { .. }
            | Fact::AlertAcknowledged { .. }
            | Fact::LostDemand { .. }
            | Fact::ShowEnded { .. }
            | Fact::OrdersForgotten { .. }
            | Fact::ListingsSynced { .. }
            | Fact::Allotted { .. } => None,
            Fact::OrderReserved { order, .. }
            | Fact::OrderSold { order, .. }
            | Fact::OrderConfirmed { order, .. }
            | Fact::OrderCancelled { order, .. }
            | Fact::OrderExpired { order, .. }
            | Fact::OrderRefunded { order, .. } => Some(&order.order_id),
        }
    }

    /// A stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Fact::SkuPut { .. } => "sku_put",
            Fact::Restocked { .. } => "restocked",
            Fact::Halted { .. } => "halted",
            Fact::Resumed { .. } => "resumed",
            Fact::OrderReserved { .. } => "order_reserved",
            Fact::OrderSold { .. } => "order_sold",
            Fact::OrderConfirmed { .. } => "order_confirmed",
            Fact::OrderCancelled { .. } => "order_cancelled",
            Fact::OrderExpired { .. } => "order_expired",
            Fact::OrderRefunded { .. } => "order_refunded",
            Fact::RoomPut { .. } => "room_put",
            Fact::ListingHalted { .. } => "listing_halted",
            Fact::ListingResumed { .. } => "listing_resumed",
            Fact::Tick { .. } => "tick",
            Fact::AlertAcknowledged { .. } => "alert_acknowledged",
            Fact::LostDemand { .. } => "lost_demand",
            Fact::ShowEnded { .. } => "show_ended",
            Fact::OrdersForgotten { .. } => "orders_forgotten",
            Fact::ListingsSynced { .. } => "listings_synced",
            Fact::Allotted { .. } => "allotted",
        }
    }
}
