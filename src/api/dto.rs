//! The wire types of the HTTP API and their conversion to and from the ledger's types.
//!
//! The ledger never derives `Serialize`: these types are the JSON contract, converted by hand,
//! so a change inside the ledger cannot change the API by accident.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::allocation::AllocationBody;
use super::error::ApiError;
use super::integral;
use crate::ledger::{
    Line, Lines, OrderId, OrderRequest, OrderView, Platform, Qty, RoomId, SkuId, SkuUpdate,
    SkuView, Stock, stock_qty,
};

/// Longest SKU name accepted, in characters.
pub(crate) const SKU_NAME_CHARS_MAX: usize = 256;
/// Longest lock TTL a SKU may set: one day.
pub(crate) const LOCK_TTL_S_MAX: u64 = 24 * 60 * 60;
/// Most platform quotas on one SKU.
pub(crate) const QUOTAS_MAX: usize = 32;

pub(crate) use crate::clock::{Rfc3339, rfc3339};

/// Create or update a SKU. Every field is optional on update; a new SKU starts at zero.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PutSkuRequest {
    pub(crate) name: Option<String>,
    /// Physical units on hand for this sale.
    #[serde(default, deserialize_with = "integral::option::deserialize")]
    pub(crate) total: Option<i64>,
    /// Units held back and never sellable (VIP allocations, gifts, safety stock).
    #[serde(default, deserialize_with = "integral::option::deserialize")]
    pub(crate) reserved: Option<i64>,
    /// How long a lock on this SKU lasts, in seconds; `0` goes back to the server default.
    #[serde(default, deserialize_with = "integral::unsigned::deserialize")]
    pub(crate) lock_ttl_s: Option<u64>,
    /// The most each platform may hold (locked + sold); replaces every quota when given.
    #[serde(default, deserialize_with = "integral::map::deserialize")]
    pub(crate) quotas: Option<BTreeMap<String, i64>>,
    /// Each platform's listing id of this SKU (`{"douyin": "3598…"}`): what channel sync
    /// keeps at the number the pool can honour; replaces every listing when given.
    pub(crate) listings: Option<BTreeMap<String, String>>,
    /// How the pool is split between the listings; `{"mode": "shared", "buffer": 0}` for a
    /// new SKU.
    pub(crate) allocation: Option<AllocationBody>,
}

impl PutSkuRequest {
    pub(crate) fn into_update(self) -> Result<SkuUpdate, ApiError> {
        if let Some(name) = &self.name
            && SKU_NAME_CHARS_MAX < name.chars().count()
        {
            return Err(ApiError::invalid(format!(
                "name is {} characters long; the limit is {SKU_NAME_CHARS_MAX}",
                name.chars().count()
            )));
        }
        let lock_ttl_ms = match self.lock_ttl_s {
            None => None,
            Some(0) => Some(None),
            Some(seconds) if seconds <= LOCK_TTL_S_MAX => Some(Some(seconds * 1000)),
            Some(seconds) => {
                return Err(ApiError::invalid(format!(
                    "lock_ttl_s must be at most {LOCK_TTL_S_MAX}, got {seconds}"
                )));
            }
        };
        let quotas = match self.quotas {
            None => None,
            Some(quotas) if QUOTAS_MAX < quotas.len() => {
                return Err(ApiError::invalid(format!(
                    "a SKU has at most {QUOTAS_MAX} quotas, got {}",
                    quotas.len()
                )));
            }
            Some(quotas) => Some(
                quotas
                    .into_iter()
                    .map(|(platform, quota)| {
                        Ok((Platform::new(&platform)?, stock_qty("quota", quota)?))
                    })
                    .collect::<Result<Vec<_>, ApiError>>()?,
            ),
        };
        Ok(SkuUpdate {
            name: self.name,
            total: self
                .total
                .map(|total| stock_qty("total", total))
                .transpose()?,
            reserved: self
                .reserved
                .map(|reserved| stock_qty("reserved", reserved))
                .transpose()?,
            lock_ttl_ms,
            quotas,
            listings: self.listings.map(super::allocation::listings).transpose()?,
            allocation: self
                .allocation
                .map(AllocationBody::into_allocation)
                .transpose()?,
        })
    }
}

/// Add units to a SKU's `total`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RestockRequest {
    #[serde(deserialize_with = "integral::deserialize")]
    pub(crate) qty: i64,
    /// Your id for this restock: sent again (after a timeout or a 503), it is applied once.
    /// The SKU remembers its latest 64.
    pub(crate) restock_id: Option<String>,
}

/// A SKU's stock and settings.
#[derive(Serialize, ToSchema)]
pub(crate) struct SkuResponse {
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) total: u64,
    pub(crate) reserved: u64,
    pub(crate) locked: u64,
    pub(crate) sold: u64,
    /// `total - reserved - locked - sold`, never negative.
    pub(crate) available: u64,
    pub(crate) halted: bool,
    /// The lock TTL this SKU sets, in seconds; absent when it uses the server default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) lock_ttl_s: Option<u64>,
    /// Locked and sold per platform, with each platform's quota and listing.
    pub(crate) platforms: Vec<PlatformResponse>,
    pub(crate) allocation: AllocationBody,
    /// Bumped by every change: of two reports of one SKU, the higher version is newer.
    pub(crate) version: u64,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) updated_at: Rfc3339,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct PlatformResponse {
    pub(crate) platform: String,
    pub(crate) locked: u64,
    pub(crate) sold: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) quota: Option<u64>,
    /// The platform's listing id of this SKU; a platform without one is not synced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) listing: Option<String>,
}

impl From<SkuView> for SkuResponse {
    fn from(view: SkuView) -> Self {
        let Stock {
            sku,
            total,
            reserved,
            locked,
            sold,
            available,
            halted,
            version,
        } = view.stock;
        SkuResponse {
            sku: sku.to_string(),
            name: view.settings.name,
            total,
            reserved,
            locked,
            sold,
            available,
            halted,
            lock_ttl_s: view.settings.lock_ttl_ms.map(|millis| millis / 1000),
            platforms: view
                .platforms
                .into_iter()
                .map(|count| PlatformResponse {
                    platform: count.platform.to_string(),
                    locked: count.locked,
                    sold: count.sold,
                    quota: count.quota,
                    listing: count.listing.map(|listing| listing.to_string()),
                })
                .collect(),
            allocation: AllocationBody::from(&view.settings.allocation),
            version,
            updated_at: rfc3339(view.updated_at),
        }
    }
}

/// One page of the SKU listing.
#[derive(Serialize, ToSchema)]
pub(crate) struct SkuListResponse {
    pub(crate) skus: Vec<SkuResponse>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<String>,
}

/// Paging of the SKU listing.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct SkuListQuery {
    /// Only SKUs whose id sorts after this one.
    pub(crate) after: Option<String>,
    /// Most SKUs in the page: 1 to 10,000, default 1,000.
    #[param(minimum = 1, maximum = 10_000)]
    pub(crate) limit: Option<u32>,
}

/// One line of an order.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LineBody {
    pub(crate) sku: String,
    #[serde(deserialize_with = "integral::deserialize")]
    pub(crate) qty: i64,
}

/// An order: one line (`sku`, `qty`) or several (`lines`), never both.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrderRequestBody {
    /// The platform's order id: the idempotency key.
    pub(crate) order_id: String,
    pub(crate) sku: Option<String>,
    #[serde(default, deserialize_with = "integral::option::deserialize")]
    pub(crate) qty: Option<i64>,
    pub(crate) lines: Option<Vec<LineBody>>,
    /// The platform the order came from (`douyin`, `kuaishou`, `taobao`, ...).
    pub(crate) platform: String,
    /// The live room the order was placed in, when known.
    pub(crate) room: Option<String>,
    /// `true` for a paid order: its units go straight to `sold` (reserve and confirm at once).
    #[serde(default)]
    pub(crate) paid: bool,
}

impl OrderRequestBody {
    pub(crate) fn into_request(self) -> Result<OrderRequest, ApiError> {
        let lines = match (self.sku, self.qty, self.lines) {
            (Some(sku), Some(qty), None) => Lines::one(SkuId::new(&sku)?, Qty::new(qty)?),
            (None, None, Some(lines)) => Lines::new(
                lines
                    .into_iter()
                    .map(|line| {
                        Ok(Line {
                            sku: SkuId::new(&line.sku)?,
                            qty: Qty::new(line.qty)?,
                        })
                    })
                    .collect::<Result<Vec<_>, ApiError>>()?,
            )?,
            (None, None, None) => {
                return Err(ApiError::invalid(
                    "an order needs `sku` and `qty`, or `lines`",
                ));
            }
            (Some(_), None, None) => return Err(ApiError::invalid("missing field `qty`")),
            (None, Some(_), None) => return Err(ApiError::invalid("missing field `sku`")),
            (_, _, Some(_)) => {
                return Err(ApiError::invalid(
                    "an order has `sku` and `qty` or `lines`, not both",
                ));
            }
        };
        Ok(OrderRequest {
            order_id: OrderId::new(&self.order_id)?,
            platform: Platform::new(&self.platform)?,
            room: self.room.as_deref().map(RoomId::new).transpose()?,
            lines,
        })
    }
}

/// An order as an operation left it. Borrows from the ledger's view of the order, so writing
/// an answer copies no id.
#[derive(Serialize, ToSchema)]
pub(crate) struct OrderResponse<'a> {
    pub(crate) order_id: &'a str,
    /// `locked`, `sold`, `cancelled`, `expired` or `refunded`.
    pub(crate) status: &'static str,
    pub(crate) platform: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) room: Option<&'a str>,
    pub(crate) lines: Vec<LineResponse<'a>>,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) created_at: Rfc3339,
    /// When the lock runs out; present while the order is locked.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub(crate) expires_at: Option<Rfc3339>,
    #[schema(value_type = String, format = DateTime)]
    pub(crate) updated_at: Rfc3339,
    /// The same call was made before: this is its answer again, and nothing changed.
    pub(crate) replayed: bool,
}

/// One line of an order, in an answer.
#[derive(Serialize, ToSchema)]
pub(crate) struct LineResponse<'a> {
    pub(crate) sku: &'a str,
    pub(crate) qty: u64,
}

impl<'a> OrderResponse<'a> {
    pub(crate) fn new(view: &'a OrderView, replayed: bool) -> Self {
        let locked = view.status == crate::ledger::OrderStatus::Locked;
        OrderResponse {
            order_id: view.order_id.as_str(),
            status: view.status.as_str(),
            platform: view.platform.as_str(),
            room: view.room.as_ref().map(|room| room.as_str()),
            lines: view
                .lines
                .iter()
                .map(|line| LineResponse {
                    sku: line.sku.as_str(),
                    qty: line.qty.get(),
                })
                .collect(),
            created_at: Rfc3339(view.created_at),
            expires_at: locked.then_some(Rfc3339(view.expires_at)),
            updated_at: Rfc3339(view.updated_at),
            replayed,
        }
    }
}

/// Many order operations in one request, each applied on its own (not as a transaction).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchRequest {
    /// Each item is an order body with an `op`: `reserve` and `sell` take the fields of
    /// `POST /api/v1/orders`; `confirm`, `cancel` and `refund` take `order_id`.
    #[schema(value_type = Vec<Object>)]
    pub(crate) ops: Vec<Box<serde_json::value::RawValue>>,
}

/// One operation of a batch.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum BatchOp {
    /// A `reserve`; with `"paid": true`, a `sell`, as in `POST /api/v1/orders`.
    Reserve(OrderRequestBody),
    Sell(OrderRequestBody),
    Confirm {
        order_id: String,
    },
    Cancel {
        order_id: String,
    },
    Refund {
        order_id: String,
    },
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum BatchOpKind {
    Reserve,
    Sell,
    Confirm,
    Cancel,
    Refund,
}

/// One operation of a batch as it arrives: every field of every kind, checked against the
/// `op` afterwards. A flat struct rather than a tagged enum, so serde decodes it in one pass
/// instead of buffering each item first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchItem {
    op: BatchOpKind,
    order_id: String,
    sku: Option<String>,
    #[serde(default, deserialize_with = "integral::option::deserialize")]
    qty: Option<i64>,
    lines: Option<Vec<LineBody>>,
    platform: Option<String>,
    room: Option<String>,
    paid: Option<bool>,
}

impl BatchItem {
    pub(crate) fn into_op(self) -> Result<BatchOp, ApiError> {
        let BatchItem {
            op,
            order_id,
            sku,
            qty,
            lines,
            platform,
            room,
            paid,
        } = self;
        if matches!(op, BatchOpKind::Reserve | BatchOpKind::Sell) {
            let platform = platform.ok_or_else(|| ApiError::invalid("missing field `platform`"))?;
            let body = OrderRequestBody {
                order_id,
                sku,
                qty,
                lines,
                platform,
                room,
                paid: paid.unwrap_or(false),
            };
            return Ok(match op {
                BatchOpKind::Sell => BatchOp::Sell(body),
                _ => BatchOp::Reserve(body),
            });
        }
        if sku.is_some()
            || qty.is_some()
            || lines.is_some()
            || platform.is_some()
            || room.is_some()
            || paid.is_some()
        {
            return Err(ApiError::invalid(
                "confirm, cancel and refund take only `order_id`",
            ));
        }
        Ok(match op {
            BatchOpKind::Confirm => BatchOp::Confirm { order_id },
            BatchOpKind::Cancel => BatchOp::Cancel { order_id },
            _ => BatchOp::Refund { order_id },
        })
    }
}

/// The result of each operation of a batch, in the order given.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchResponse<'a> {
    pub(crate) results: Vec<BatchResult<'a>>,
}

/// The HTTP status the operation would have had alone, and its order or its error.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchResult<'a> {
    pub(crate) status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) order: Option<OrderResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<super::error::ErrorDetail>,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct HealthResponse {
    pub(crate) status: &'static str,
    pub(crate) skus: u64,
    pub(crate) orders: u64,
    pub(crate) orders_locked: u64,
}

#[cfg(test)]
mod tests {
    use crate::clock::Timestamp;
    use proptest::prelude::*;
    use time::OffsetDateTime;
    use time::macros::format_description;

    use super::*;

    proptest! {
        #[test]
        fn rfc3339_matches_the_time_crate(millis in 0u64..253_402_300_800_000) {
            // Goal: the hand-written formatter writes what the `time` crate writes.
            // Method: any millisecond from 1970 to the end of year 9999, both formatters.
            let format = format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            let expected = OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000)
                .expect("in range")
                .format(&format)
                .expect("formattable");
            prop_assert_eq!(Rfc3339(Timestamp::from_millis(millis)).to_string(), expected);
        }
    }

    #[test]
    fn rfc3339_edges() {
        // Goal: the epoch, a leap day and the last millisecond of a year come out right.
        for (millis, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (1_798_761_599_999, "2026-12-31T23:59:59.999Z"),
        ] {
            assert_eq!(Rfc3339(Timestamp::from_millis(millis)).to_string(), text);
        }
    }
}
