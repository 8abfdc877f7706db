//! Alert routes: the alert feed with each alert's state and deliveries, acknowledgement, and
//! the outbox's deliveries (dead letters included).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::ApiPath;
use crate::auth::Claims;
use crate::ledger::ACKNOWLEDGER_CHARS_MAX;
use crate::notify::{AlertState, AlertView, DeliveryState, DeliveryView};

/// The notifier could not answer: busy, stopped, or its store refused to write.
pub(super) fn unavailable(error: crate::notify::NotifyError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        error.to_string(),
    )
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlertQuery {
    /// `open`: only alerts not resolved (open or acknowledged).
    state: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct AlertListResponse {
    alerts: Vec<AlertView>,
}

#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    params(AlertQuery),
    responses((status = 200, description = "The latest 1,000 alerts, oldest first, each with its state (open, acknowledged, resolved) and deliveries (docs/ALERTS.md)")))]
pub(crate) async fn list(
    State(shared): State<AppState>,
    claims: Option<Extension<Claims>>,
    query: Result<Query<AlertQuery>, QueryRejection>,
) -> Result<Json<AlertListResponse>, ApiError> {
    let rooms = claims.and_then(|Extension(claims)| claims.rooms);
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let open_only = match query.state.as_deref() {
        None => false,
        Some("open") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "state must be open, got {other:?}"
            )));
        }
    };
    let mut alerts = shared.notifier.list(open_only).await.map_err(unavailable)?;
    if let Some(rooms) = rooms {
        // A screen or an operator of some rooms sees their alerts only.
        alerts.retain(|alert| {
            alert
                .alert
                .get("room")
                .and_then(|room| room.as_str())
                .is_some_and(|room| rooms.iter().any(|allowed| allowed == room))
        });
    }
    Ok(Json(AlertListResponse { alerts }))
}

/// Who acknowledges; optional (the token's subject otherwise).
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckRequest {
    by: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/alerts/{id}/ack", tag = "alerts",
    params(("id" = u64, Path, description = "Alert id")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "The alert, acknowledged (a second acknowledgement keeps the first): no more escalation"),
        (status = 404, description = "No such alert", body = ErrorBody)))]
pub(crate) async fn acknowledge(
    State(shared): State<AppState>,
    claims: Option<Extension<Claims>>,
    ApiPath(id): ApiPath<u64>,
    body: axum::body::Bytes,
) -> Result<Json<AlertView>, ApiError> {
    let claims = claims.map_or_else(Claims::open, |Extension(claims)| claims);
    let by = acting(&claims, &body)?;
    match acknowledge_alert(&shared, id, by, claims.rooms.clone()).await? {
        Some(alert) => Ok(Json(alert)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "alert_not_found",
            format!("alert {id} does not exist"),
        )),
    }
}

/// Who acts, from an optional body `{"by": "..."}` (an empty one is the token's subject,
/// "operator" without credentials): a name of 1 to [`ACKNOWLEDGER_CHARS_MAX`] characters
/// without control characters.
pub(super) fn acting(claims: &Claims, body: &[u8]) -> Result<String, ApiError> {
    let request: AckRequest = if body.iter().all(u8::is_ascii_whitespace) {
        AckRequest::default()
    } else {
        serde_json::from_slice(body)
            .map_err(|error| ApiError::invalid(format!("invalid body: {error}")))?
    };
    let by = request.by.unwrap_or_else(|| claims.sub.clone());
    if by.is_empty()
        || ACKNOWLEDGER_CHARS_MAX < by.chars().count()
        || by.chars().any(char::is_control)
    {
        return Err(ApiError::invalid(format!(
            "by must be 1 to {ACKNOWLEDGER_CHARS_MAX} characters without control characters"
        )));
    }
    Ok(by)
}

/// Acknowledges alert `id` for `by` (of one of `rooms`, when given): recorded in the
/// journal first, so that every node's alert engine and notifier take it in the same
/// place among the alerts; then the alert as it now stands. `None` when there is no such
/// alert; an alert already acknowledged or resolved is answered as it is.
pub(super) async fn acknowledge_alert(
    shared: &AppState,
    id: u64,
    by: String,
    rooms: Option<Vec<String>>,
) -> Result<Option<AlertView>, ApiError> {
    let Some(alert) = shared
        .notifier
        .get(id, rooms.clone())
        .await
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    if alert.state != AlertState::Open {
        return Ok(Some(alert));
    }
    shared.writable()?;
    let now = shared.now();
    shared.ledger.acknowledge_alert(now, id, &by);
    shared.durable().await?;
    shared
        .notifier
        .acknowledge(id, by, now, rooms)
        .await
        .map_err(unavailable)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryQuery {
    /// `pending`, `delivered` or `dead`.
    state: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct DeliveryListResponse {
    deliveries: Vec<DeliveryView>,
}

#[utoipa::path(get, path = "/api/v1/deliveries", tag = "alerts",
    params(DeliveryQuery),
    responses((status = 200, description = "Webhook deliveries with their attempts: pending, delivered, or dead-lettered")))]
pub(crate) async fn deliveries(
    State(shared): State<AppState>,
    query: Result<Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<DeliveryListResponse>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::invalid(rejection.body_text()))?;
    let state = match query.state.as_deref() {
        None => None,
        Some("pending") => Some(DeliveryState::Pending),
        Some("delivered") => Some(DeliveryState::Delivered),
        Some("dead") => Some(DeliveryState::Dead),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "state must be pending, delivered or dead, got {other:?}"
            )));
        }
    };
    let deliveries = shared
        .notifier
        .deliveries(state)
        .await
        .map_err(unavailable)?;
    Ok(Json(DeliveryListResponse { deliveries }))
}
