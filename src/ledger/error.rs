//! Why a ledger operation was refused. A refused operation changed nothing.

use super::types::{OrderId, OrderStatus, Platform, RestockId, RoomId, SkuId};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("sku {sku} does not exist")]
    SkuNotFound { sku: SkuId },
    #[error("order {order_id} does not exist")]
    OrderNotFound { order_id: OrderId },
    #[error("sku {sku} has {available} available, {requested} requested")]
    InsufficientStock {
        sku: SkuId,
        available: u64,
        requested: u64,
    },
    #[error("sku {sku} is halted")]
    Halted { sku: SkuId },
    #[error("sku {sku} is halted in room {room}")]
    ListingHalted { room: RoomId, sku: SkuId },
    #[error("room {room}: {reason}")]
    InvalidRoom { room: RoomId, reason: String },
    #[error("room {room} does not exist")]
    RoomNotFound { room: RoomId },
    #[error("room {room} does not list sku {sku}")]
    ListingNotFound { room: RoomId, sku: SkuId },
    #[error(
        "platform {platform} may hold {quota} of sku {sku} and holds {held}; {requested} requested"
    )]
    PlatformQuotaExceeded {
        sku: SkuId,
        platform: Platform,
        quota: u64,
        held: u64,
        requested: u64,
    },
    #[error(
        "platform {platform} has {left} units of sku {sku} allotted and unsold; {requested} requested"
    )]
    AllotmentExhausted {
        sku: SkuId,
        platform: Platform,
        left: u64,
        requested: u64,
    },
    #[error("order {order_id} exists with different content")]
    OrderConflict { order_id: OrderId },
    #[error("restock {restock_id} was made with another quantity")]
    RestockConflict { restock_id: RestockId },
    #[error("the lock of order {order_id} expired and its units are no longer available")]
    LockExpired { order_id: OrderId },
    #[error("order {order_id} is {status}; it cannot be {action}", status = status.as_str())]
    InvalidTransition {
        order_id: OrderId,
        status: OrderStatus,
        action: &'static str,
    },
    #[error("sku {sku}: {reason}")]
    InvalidStock { sku: SkuId, reason: String },
    /// A programmer error caught by a post-condition check: the operation was refused to keep
    /// the ledger consistent.
    #[error("internal consistency check failed: {0}")]
    Invariant(String),
}

impl LedgerError {
    /// The stable machine-readable code shared by HTTP bodies, logs and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::SkuNotFound { .. } => "sku_not_found",
            LedgerError::OrderNotFound { .. } => "order_not_found",
            LedgerError::InsufficientStock { .. } => "insufficient_stock",
            LedgerError::Halted { .. } | LedgerError::ListingHalted { .. } => "halted",
            LedgerError::RoomNotFound { .. } => "room_not_found",
            LedgerError::InvalidRoom { .. } => "invalid_room",
            LedgerError::ListingNotFound { .. } => "listing_not_found",
            LedgerError::PlatformQuotaExceeded { .. } => "platform_quota_exceeded",
            LedgerError::AllotmentExhausted { .. } => "allotment_exhausted",
            LedgerError::OrderConflict { .. } => "order_conflict",
            LedgerError::RestockConflict { .. } => "restock_conflict",
            LedgerError::LockExpired { .. } => "lock_expired",
            LedgerError::InvalidTransition { .. } => "invalid_transition",
            LedgerError::InvalidStock { .. } => "invalid_stock",
            LedgerError::Invariant(_) => "internal",
        }
    }
}

/// Why a fact could not be replayed: the facts do not belong to this ledger's history.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    #[error("{kind} names sku {sku}, which does not exist")]
    UnknownSku { kind: &'static str, sku: SkuId },
    #[error("{kind} names order {order_id}, which does not exist")]
    UnknownOrder {
        kind: &'static str,
        order_id: OrderId,
    },
    #[error("{kind} of order {order_id} does not follow from its status {status}", status = status.as_str())]
    BadTransition {
        kind: &'static str,
        order_id: OrderId,
        status: OrderStatus,
    },
    #[error("{kind} could not be re-done: {reason}")]
    Refused { kind: &'static str, reason: String },
    #[error("{kind} left sku {sku} at {actual:?}, the fact says {expected:?}")]
    StockMismatch {
        kind: &'static str,
        sku: SkuId,
        expected: String,
        actual: String,
    },
}
