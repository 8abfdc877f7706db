//! The plain values a snapshot keeps: a SKU, an order, the whole ledger. Types only, below
//! the stripes that keep them for a running snapshot (`order.rs`, `stripe.rs`) and the copy
//! that gathers them (`image.rs`).

use std::sync::Arc;

use super::room::{ListingTally, Room};
use super::show::ShowRecord;
use super::types::{OrderRequest, OrderStatus, Platform, RestockId, SkuSettings, Stock};
use crate::clock::Timestamp;

/// Every SKU and every remembered order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerImage {
    pub skus: Vec<SkuImage>,
    pub orders: Vec<OrderImage>,
    pub rooms: Vec<Arc<Room>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkuImage {
    pub stock: Stock,
    pub settings: SkuSettings,
    /// (platform, locked, sold) for every platform that ever took this SKU.
    pub platforms: Vec<(Platform, u64, u64)>,
    pub updated_at: Timestamp,
    /// The latest restock ids and quantities, oldest first.
    pub restocks: Vec<(RestockId, u64)>,
    /// What each room listing of this SKU consumed.
    pub listings: Vec<ListingTally>,
    /// The SKU's latest finished shows, oldest first.
    pub shows: Vec<ShowRecord>,
    /// What each platform last acknowledged of its listing.
    pub synced: Vec<super::types::SyncMark>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderImage {
    pub order: Arc<OrderRequest>,
    pub status: OrderStatus,
    /// Placed paid (`sell`) rather than reserved.
    pub sold_at_creation: bool,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub updated_at: Timestamp,
    /// Each line's SKU version right after the order last took its units; empty when
    /// unknown (snapshots written before it was kept).
    pub taken_versions: smallvec::SmallVec<[u64; 1]>,
}
