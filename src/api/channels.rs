//! Channel routes: every platform listing's sync state, and moving units of an exclusive SKU
//! between platforms.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::integral;
use crate::ledger::{Platform, stock_qty};

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
