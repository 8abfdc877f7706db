//! The allocation wire types of a SKU: its platform listings and how its pool is split
//! between them (`listings` and `allocation` in `PUT /api/v1/skus/{sku}`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::integral;
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
