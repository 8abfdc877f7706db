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
use crate::ledger::{Allocation, Exclusive, ListingId, Platform, stock_qty};

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
    /// Each platform with a share holds units no other platform can take.
    Exclusive {
        /// Each platform's share of the pool, between 0 and 1, at most 1 in all (to the
        /// thousandth).
        shares: BTreeMap<String, f64>,
        /// A move never leaves a platform fewer unsold units than this.
        #[serde(default, deserialize_with = "integral::deserialize")]
        floor: i64,
        /// While a show that lists the SKU is live, move unsold units from a platform that
        /// will not sell its allotment to one that will run out, at most this often, in
        /// seconds; 0 never moves on its own. Default 30.
        #[serde(default = "rebalance_every_s_default")]
        rebalance_every_s: u64,
        /// What each platform may hold in all (taken + unsold): kept by the server.
        #[serde(default, skip_deserializing)]
        allotted: BTreeMap<String, u64>,
    },
}

impl AllocationBody {
    pub(crate) fn into_allocation(self) -> Result<Allocation, ApiError> {
        Ok(match self {
            AllocationBody::Shared { buffer } => Allocation::Shared {
                buffer: stock_qty("buffer", buffer)?,
            },
            AllocationBody::Exclusive {
                shares,
                floor,
                rebalance_every_s,
                ..
            } => Allocation::Exclusive(Exclusive {
                shares: thousandths(shares)?,
                floor: stock_qty("floor", floor)?,
                rebalance_every_s: every(rebalance_every_s)?,
                allotted: Vec::new(),
            }),
        })
    }
}

fn rebalance_every_s_default() -> u64 {
    30
}

/// The longest wait between two moves a rebalance interval may ask for: a day.
const REBALANCE_EVERY_S_MAX: u64 = 24 * 3600;

fn every(rebalance_every_s: u64) -> Result<u64, ApiError> {
    if REBALANCE_EVERY_S_MAX < rebalance_every_s {
        return Err(ApiError::invalid(format!(
            "rebalance_every_s must be at most {REBALANCE_EVERY_S_MAX}, got {rebalance_every_s}"
        )));
    }
    Ok(rebalance_every_s)
}

/// Shares as thousandths, each between 0 and 1 and at most 1 in all.
fn thousandths(shares: BTreeMap<String, f64>) -> Result<Vec<(Platform, u32)>, ApiError> {
    if shares.is_empty() || LISTINGS_MAX < shares.len() {
        return Err(ApiError::invalid(format!(
            "an exclusive allocation names 1 to {LISTINGS_MAX} shares, got {}",
            shares.len()
        )));
    }
    let mut parts = Vec::with_capacity(shares.len());
    for (platform, share) in shares {
        if !(0.0..=1.0).contains(&share) {
            return Err(ApiError::invalid(format!(
                "the share of {platform} must be between 0 and 1, got {share}"
            )));
        }
        parts.push((Platform::new(&platform)?, (share * 1000.0).round() as u32));
    }
    let total: u32 = parts.iter().map(|(_, share)| share).sum();
    if 1000 < total {
        return Err(ApiError::invalid(format!(
            "shares add up to {}, more than 1",
            f64::from(total) / 1000.0
        )));
    }
    Ok(parts)
}

impl From<&Allocation> for AllocationBody {
    fn from(allocation: &Allocation) -> Self {
        let by_name = |values: &[(Platform, u64)]| {
            values
                .iter()
                .map(|(platform, value)| (platform.to_string(), *value))
                .collect()
        };
        match allocation {
            Allocation::Shared { buffer } => AllocationBody::Shared {
                buffer: i64::try_from(*buffer).unwrap_or(i64::MAX),
            },
            Allocation::Exclusive(exclusive) => AllocationBody::Exclusive {
                shares: exclusive
                    .shares
                    .iter()
                    .map(|(platform, share)| (platform.to_string(), f64::from(*share) / 1000.0))
                    .collect(),
                floor: i64::try_from(exclusive.floor).unwrap_or(i64::MAX),
                rebalance_every_s: exclusive.rebalance_every_s,
                allotted: by_name(&exclusive.allotted),
            },
        }
    }
}

/// `AllocationBody` as the API's document states it: one mode today, its fields closed.
pub(crate) fn allocation_schema() -> serde_json::Value {
    let units = |description: &str| {
        serde_json::json!({
            "type": "integer", "minimum": 0, "maximum": crate::ledger::STOCK_QTY_MAX,
            "default": 0, "description": description,
        })
    };
    serde_json::json!({
        "description": "How a SKU's available units are split between its platform listings. `shared`: every listing shows what its platform could still take (its quota's headroom), capped by `available - buffer`. `exclusive`: each platform with a share holds units no other platform can take; its listing shows what its allotment leaves unsold.",
        "oneOf": [
            {
                "title": "shared",
                "type": "object",
                "required": ["mode"],
                "properties": {
                    "mode": {"type": "string", "const": "shared"},
                    "buffer": units("Units no listing shows, kept against two platforms selling the same last units"),
                },
                "additionalProperties": false,
            },
            {
                "title": "exclusive",
                "type": "object",
                "required": ["mode", "shares"],
                "properties": {
                    "mode": {"type": "string", "const": "exclusive"},
                    "shares": {
                        "type": "object", "minProperties": 1, "maxProperties": LISTINGS_MAX,
                        "propertyNames": {"$ref": "#/components/schemas/Id"},
                        "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                        "description": "Each platform's share of the pool, at most 1 in all (to the thousandth); a request whose shares add up to more is refused with 422",
                    },
                    "floor": units("A move between platforms never leaves a platform fewer unsold units than this"),
                    "rebalance_every_s": {
                        "type": "integer", "minimum": 0, "maximum": REBALANCE_EVERY_S_MAX, "default": 30,
                        "description": "While a show that lists the SKU is live, move unsold units from a platform that will not sell its allotment to one that will run out, at most this often; 0 never moves on its own",
                    },
                    "allotted": {
                        "type": "object", "readOnly": true,
                        "additionalProperties": {"type": "integer", "minimum": 0},
                        "description": "What each platform may hold in all (taken and unsold): kept by the server, never sent",
                    },
                },
                "additionalProperties": false,
            },
        ],
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

/// Move unsold units of an exclusive SKU from one platform's allotment to another's.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveRequest {
    pub(crate) from: String,
    pub(crate) to: String,
    #[serde(deserialize_with = "integral::deserialize")]
    pub(crate) qty: i64,
    /// Why, for the move's record (at most 256 characters).
    pub(crate) reason: Option<String>,
}

/// Longest reason a move keeps, in characters.
const MOVE_REASON_CHARS_MAX: usize = 256;

#[utoipa::path(post, path = "/api/v1/skus/{sku}/allotments/move", tag = "channels",
    params(("sku" = String, Path, description = "SKU id")),
    request_body = MoveRequest,
    responses(
        (status = 200, description = "The SKU after the move", body = super::dto::SkuResponse),
        (status = 404, description = "No such SKU", body = super::error::ErrorBody),
        (status = 409, description = "`invalid_stock`: the allocation is not exclusive, a platform has no share, or `from` has fewer unsold units above its floor than `qty`", body = super::error::ErrorBody),
        (status = 422, description = "Invalid field", body = super::error::ErrorBody)))]
pub(crate) async fn move_allotment(
    State(shared): State<AppState>,
    super::extract::ApiPath(sku): super::extract::ApiPath<String>,
    super::extract::ApiJson(body): super::extract::ApiJson<MoveRequest>,
) -> Result<Json<super::dto::SkuResponse>, ApiError> {
    let sku = crate::ledger::SkuId::new(&sku)?;
    let qty = stock_qty("qty", body.qty)?;
    let reason = body
        .reason
        .unwrap_or_else(|| "moved by an operator".to_owned());
    if MOVE_REASON_CHARS_MAX < reason.chars().count() || reason.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "reason must be at most {MOVE_REASON_CHARS_MAX} characters without control characters"
        )));
    }
    let moved = crate::ledger::AllotmentMove {
        from: Platform::new(&body.from)?,
        to: Platform::new(&body.to)?,
        qty,
        reason,
    };
    shared.writable()?;
    shared.ledger.move_allotment(shared.now(), &sku, moved)?;
    let view = shared
        .ledger
        .sku(&sku)
        .ok_or(crate::ledger::LedgerError::SkuNotFound { sku })?;
    shared.durable().await?;
    Ok(Json(view.into()))
}
