//! The channel wire types of a SKU: its platform listings and how its pool is split
//! between them (`listings` and `allocation` in `PUT /api/v1/skus/{sku}`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::dto::integral;
use super::error::ApiError;
use crate::ledger::{Allocation, ListingId, Platform, stock_qty};

/// Most platform listings on one SKU.
pub(crate) const LISTINGS_MAX: usize = 32;

/// How a SKU's available units are split between its platform listings.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum AllocationBody {
    /// Every listing shows what its platform could still take: its quota's headroom, capped
    /// by `available - buffer`. Two platforms can sell the same last units.
    Shared {
        /// Units no listing shows, kept against two platforms selling the same last units.
        #[serde(default, deserialize_with = "integral::deserialize")]
        buffer: i64,
    },
}

impl AllocationBody {
    pub(crate) fn into_allocation(self) -> Result<Allocation, ApiError> {
        Ok(match self {
            AllocationBody::Shared { buffer } => Allocation::Shared {
                buffer: stock_qty("buffer", buffer)?,
            },
        })
    }
}

impl From<&Allocation> for AllocationBody {
    fn from(allocation: &Allocation) -> Self {
        match allocation {
            Allocation::Shared { buffer } => AllocationBody::Shared {
                buffer: i64::try_from(*buffer).unwrap_or(i64::MAX),
            },
        }
    }
}

/// `AllocationBody` as the API's document states it: one mode today, its fields closed.
pub(crate) fn allocation_schema() -> serde_json::Value {
    serde_json::json!({
        "description": "How a SKU's available units are split between its platform listings. `shared`: every listing shows what its platform could still take (its quota's headroom), capped by `available - buffer`.",
        "type": "object",
        "required": ["mode"],
        "properties": {
            "mode": {"type": "string", "enum": ["shared"]},
            "buffer": {
                "type": "integer", "minimum": 0, "maximum": crate::ledger::STOCK_QTY_MAX, "default": 0,
                "description": "Units no listing shows, kept against two platforms selling the same last units",
            },
        },
        "additionalProperties": false,
    })
}

/// `listings` of a SKU update: platform → the platform's listing id.
pub(crate) fn listings(
    listings: BTreeMap<String, String>,
) -> Result<Vec<(Platform, ListingId)>, ApiError> {
    if LISTINGS_MAX < listings.len() {
        return Err(ApiError::invalid(format!(
            "a SKU has at most {LISTINGS_MAX} listings, got {}",
            listings.len()
        )));
    }
    listings
        .into_iter()
        .map(|(platform, listing)| Ok((Platform::new(&platform)?, ListingId::new(&listing)?)))
        .collect()
}

/// Every platform listing with its sync state.
#[derive(Serialize, ToSchema)]
pub(crate) struct ChannelsResponse {
    pub(crate) listings: Vec<ListingSyncResponse>,
}

/// One platform listing: what it should show, what its platform last acknowledged, and how
/// delivery goes.
#[derive(Serialize, ToSchema)]
pub(crate) struct ListingSyncResponse {
    pub(crate) platform: String,
    pub(crate) listing: String,
    pub(crate) sku: String,
    /// Whether a connector is configured for the platform; without one, nothing is sent.
    pub(crate) connected: bool,
    /// What the listing should show now.
    pub(crate) target: u64,
    /// The log sequence of the change that set `target`: the update's `version`.
    pub(crate) version: u64,
    /// Why `target` last changed: `sale`, `release`, `restock`, `rebalance`, `halt`,
    /// `resume` or `resync`.
    pub(crate) reason: &'static str,
    /// What the listing shows by our account: the last acknowledged number less what its
    /// platform took since; absent before anything was acknowledged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) shown: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) acknowledged: Option<AcknowledgedResponse>,
    /// The platform's own number, as its receiver last reported it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reported: Option<u64>,
    /// Whether the platform has acknowledged `target`.
    pub(crate) synced: bool,
    /// How long the listing has waited for its platform, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unsynced_ms: Option<u64>,
    /// Attempts failed in a row, and the last failure.
    pub(crate) failures: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct AcknowledgedResponse {
    pub(crate) quantity: u64,
    pub(crate) version: u64,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) at: super::dto::Rfc3339,
}

#[utoipa::path(get, path = "/api/v1/channels", tag = "channels",
    responses((status = 200, description = "Every platform listing with its sync state", body = ChannelsResponse)))]
pub(crate) async fn status(State(shared): State<AppState>) -> Json<ChannelsResponse> {
    let now = shared.now();
    let listings = shared
        .channels
        .status()
        .into_iter()
        .map(|status| {
            let sync = status.sync;
            ListingSyncResponse {
                platform: status.platform.to_string(),
                listing: status.listing.to_string(),
                sku: sync.sku.to_string(),
                connected: status.connected,
                target: sync.target,
                version: sync.version,
                reason: sync.reason.as_str(),
                shown: status.shown,
                acknowledged: sync.acknowledged.map(|acknowledged| AcknowledgedResponse {
                    quantity: acknowledged.quantity,
                    version: acknowledged.version,
                    at: super::dto::rfc3339(acknowledged.at),
                }),
                reported: sync.reported,
                synced: sync.unsynced_since.is_none(),
                unsynced_ms: sync
                    .unsynced_since
                    .map(|since| now.as_millis().saturating_sub(since.as_millis())),
                failures: sync.failures,
                last_error: sync.last_error,
            }
        })
        .collect();
    Json(ChannelsResponse { listings })
}
