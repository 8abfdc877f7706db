//! SKU routes: create or update, read, list, restock, halt and resume.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};

use super::AppState;
use super::dto::{PutSkuRequest, RestockRequest, SkuListQuery, SkuListResponse, SkuResponse};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use crate::ledger::{LedgerError, RestockId, SkuId, stock_qty};

fn sku_id(raw: &str) -> Result<SkuId, ApiError> {
    Ok(SkuId::new(raw)?)
}

fn read(shared: &AppState, sku: &SkuId) -> Result<Json<SkuResponse>, ApiError> {
    let view = shared
        .ledger
        .sku(sku)
        .ok_or_else(|| LedgerError::SkuNotFound { sku: sku.clone() })?;
    Ok(Json(view.into()))
}

/// Default page size of the SKU listing.
const LIST_LIMIT_DEFAULT: u32 = 1_000;
/// Largest page of the SKU listing.
const LIST_LIMIT_MAX: u32 = 10_000;

#[utoipa::path(get, path = "/api/v1/skus", tag = "skus",
    params(SkuListQuery),
    responses(
        (status = 200, description = "SKUs sorted by id, one page", body = SkuListResponse),
        (status = 422, description = "Bad paging", body = ErrorBody)))]
pub(crate) async fn list(
    State(shared): State<AppState>,
    query: Result<Query<SkuListQuery>, QueryRejection>,
) -> Result<Json<SkuListResponse>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let limit = query.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {LIST_LIMIT_MAX}, got {limit}"
        )));
    }
    let after = query.after.as_deref().map(sku_id).transpose()?;
    let limit = limit as usize;
    // One more than asked tells whether there is a next page.
    let mut views = shared.ledger.skus_after(after.as_ref(), limit + 1);
    let next = (limit < views.len()).then(|| {
        views.truncate(limit);
        views.last().map(|view| view.stock.sku.to_string())
    });
    let skus = views.into_iter().map(Into::into).collect();
    Ok(Json(SkuListResponse {
        skus,
        next: next.flatten(),
    }))
}

#[utoipa::path(get, path = "/api/v1/skus/{sku}", tag = "skus",
    params(("sku" = String, Path, description = "SKU id")),
    responses(
        (status = 200, description = "The SKU", body = SkuResponse),
        (status = 404, description = "No such SKU", body = ErrorBody)))]
pub(crate) async fn get(
    State(shared): State<AppState>,
    ApiPath(sku): ApiPath<String>,
) -> Result<Json<SkuResponse>, ApiError> {
    read(&shared, &sku_id(&sku)?)
}

#[utoipa::path(put, path = "/api/v1/skus/{sku}", tag = "skus",
    params(("sku" = String, Path, description = "SKU id")),
    request_body = PutSkuRequest,
    responses(
        (status = 200, description = "The SKU after the change", body = SkuResponse),
        (status = 409, description = "`invalid_stock`: `total` below reserved + locked + sold; `listing_taken`: another SKU names one of the listings", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody)))]
pub(crate) async fn put(
    State(shared): State<AppState>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<PutSkuRequest>,
) -> Result<Json<SkuResponse>, ApiError> {
    let sku = sku_id(&sku)?;
    let update = body.into_update()?;
    if let Some((platform, listing, owner)) = update
        .listings
        .as_deref()
        .and_then(|listings| shared.channels.taken_by_another(&sku, listings))
    {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "listing_taken",
            format!("{platform} listing {listing} is SKU {owner}'s: a listing sells one SKU"),
        ));
    }
    shared.writable()?;
    shared.ledger.put_sku(shared.now(), &sku, update)?;
    // The SKU as this change left it, answered once the change is durable.
    let answer = read(&shared, &sku)?;
    shared.durable().await?;
    Ok(answer)
}

#[utoipa::path(post, path = "/api/v1/skus/{sku}/restock", tag = "skus",
    params(("sku" = String, Path, description = "SKU id")),
    request_body = RestockRequest,
    responses(
        (status = 200, description = "The SKU after the restock", body = SkuResponse),
        (status = 404, description = "No such SKU", body = ErrorBody),
        (status = 409, description = "`restock_conflict`: the `restock_id` was used with another `qty`", body = ErrorBody),
        (status = 422, description = "`qty` not positive or too large", body = ErrorBody)))]
pub(crate) async fn restock(
    State(shared): State<AppState>,
    ApiPath(sku): ApiPath<String>,
    ApiJson(body): ApiJson<RestockRequest>,
) -> Result<Json<SkuResponse>, ApiError> {
    let sku = sku_id(&sku)?;
    let qty = stock_qty("qty", body.qty)?;
    if qty == 0 {
        return Err(ApiError::invalid("qty must be at least 1"));
    }
    let restock_id = body.restock_id.as_deref().map(RestockId::new).transpose()?;
    shared.writable()?;
    match restock_id {
        Some(restock_id) => {
            shared
                .ledger
                .restock_once(shared.now(), &sku, qty, restock_id)?;
        }
        None => {
            shared.ledger.restock(shared.now(), &sku, qty)?;
        }
    }
    // The SKU as this change left it, answered once the change is durable.
    let answer = read(&shared, &sku)?;
    shared.durable().await?;
    Ok(answer)
}

#[utoipa::path(post, path = "/api/v1/skus/{sku}/halt", tag = "skus",
    params(("sku" = String, Path, description = "SKU id")),
    responses(
        (status = 200, description = "New orders for the SKU are refused with `halted`", body = SkuResponse),
        (status = 404, description = "No such SKU", body = ErrorBody)))]
pub(crate) async fn halt(
    State(shared): State<AppState>,
    ApiPath(sku): ApiPath<String>,
) -> Result<Json<SkuResponse>, ApiError> {
    let sku = sku_id(&sku)?;
    shared.writable()?;
    shared.ledger.halt(shared.now(), &sku)?;
    // The SKU as this change left it, answered once the change is durable.
    let answer = read(&shared, &sku)?;
    shared.durable().await?;
    Ok(answer)
}

#[utoipa::path(post, path = "/api/v1/skus/{sku}/resume", tag = "skus",
    params(("sku" = String, Path, description = "SKU id")),
    responses(
        (status = 200, description = "The SKU takes orders again", body = SkuResponse),
        (status = 404, description = "No such SKU", body = ErrorBody)))]
pub(crate) async fn resume(
    State(shared): State<AppState>,
    ApiPath(sku): ApiPath<String>,
) -> Result<Json<SkuResponse>, ApiError> {
    let sku = sku_id(&sku)?;
    shared.writable()?;
    shared.ledger.resume(shared.now(), &sku)?;
    // The SKU as this change left it, answered once the change is durable.
    let answer = read(&shared, &sku)?;
    shared.durable().await?;
    Ok(answer)
}

/// Finished shows a suggested forecast averages.
const SUGGESTION_SHOWS: usize = 5;

/// One finished show of a SKU.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ShowView {
    room: String,
    /// The show's title.
    name: String,
    #[schema(value_type = String, format = DateTime)]
    starts_at: crate::clock::Rfc3339,
    #[schema(value_type = String, format = DateTime)]
    ends_at: crate::clock::Rfc3339,
    forecast: u64,
    /// Consumed during the show (locked + sold by orders naming the room).
    consumed: u64,
    /// Units refused to the show's orders (for want of stock, or halted).
    lost: u64,
    /// What buyers asked for: consumed + lost.
    demand: u64,
    /// When the SKU first had nothing available during the show.
    #[schema(value_type = Option<String>, format = DateTime)]
    sold_out_at: Option<crate::clock::Rfc3339>,
    /// consumed / forecast.
    accuracy: f64,
    /// The fastest rate of the show, units a minute, and when.
    peak_per_min: f64,
    #[schema(value_type = Option<String>, format = DateTime)]
    peak_at: Option<crate::clock::Rfc3339>,
    /// The share of `consumed` reached at each twentieth of the show (21 values from 0 to
    /// 1); empty when nothing was consumed.
    curve: Vec<f64>,
}

/// A SKU's finished shows, newest first, and the forecast they suggest.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct HistoryResponse {
    sku: String,
    shows: Vec<ShowView>,
    /// The mean demand (consumed + lost) of the latest five shows, rounded up; `null`
    /// without any.
    suggested_forecast: Option<u64>,
    /// How many shows the suggestion averages.
    suggested_from: usize,
}

#[utoipa::path(get, path = "/api/v1/skus/{sku}/history", tag = "skus",
    params(("sku" = String, Path, description = "SKU id")),
    responses(
        (status = 200, description = "The SKU's latest finished shows (at most 20), newest first, with their forecast, consumption, lost demand, peak and normalised curve, and a suggested forecast", body = HistoryResponse),
        (status = 404, description = "No such SKU", body = ErrorBody)))]
pub(crate) async fn history(
    State(shared): State<AppState>,
    ApiPath(sku): ApiPath<String>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let sku = sku_id(&sku)?;
    let shows = shared
        .ledger
        .shows(&sku)
        .ok_or_else(|| LedgerError::SkuNotFound { sku: sku.clone() })?;
    let recent: Vec<u64> = shows
        .iter()
        .rev()
        .take(SUGGESTION_SHOWS)
        .map(|show| show.consumed.saturating_add(show.lost))
        .collect();
    let suggested_forecast =
        (!recent.is_empty()).then(|| recent.iter().sum::<u64>().div_ceil(recent.len() as u64));
    let shows = shows
        .into_iter()
        .rev()
        .map(|show| ShowView {
            room: show.room.as_str().to_owned(),
            accuracy: show.consumed as f64 / show.forecast.max(1) as f64,
            peak_per_min: show.peak_per_min(),
            peak_at: show.peak_at.map(crate::clock::Rfc3339),
            demand: show.consumed.saturating_add(show.lost),
            sold_out_at: show.sold_out_at.map(crate::clock::Rfc3339),
            curve: show
                .curve
                .iter()
                .map(|share| f64::from(*share) / 1000.0)
                .collect(),
            name: show.name,
            starts_at: crate::clock::Rfc3339(show.starts_at),
            ends_at: crate::clock::Rfc3339(show.ends_at),
            forecast: show.forecast,
            consumed: show.consumed,
            lost: show.lost,
        })
        .collect();
    Ok(Json(HistoryResponse {
        sku: sku.to_string(),
        shows,
        suggested_forecast,
        suggested_from: recent.len(),
    }))
}
