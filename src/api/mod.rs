//! The HTTP edge: routes, JSON in and out, errors, metrics and the OpenAPI document.
//!
//! The only module that knows HTTP and JSON. It converts wire types to ledger types by hand
//! (`dto`), calls the ledger, and maps ledger errors to statuses and stable codes (`error`).
//! It never holds a ledger lock itself: every ledger call is synchronous and returns before
//! the handler awaits anything.

mod access;
mod alerts;
mod allocation;
mod asyncapi;
mod channels;
mod cluster;
mod dto;
mod error;
mod extract;
mod integral;
mod metrics;
mod openapi;
mod orders;
mod reconcile;
mod report;
mod rooms;
mod skus;
mod web;
mod ws;

use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::clock::{Clock, Timestamp};
use crate::hub::Hub;
use crate::journal::Journal;
use crate::ledger::Ledger;
pub(crate) use access::Access;
pub use asyncapi::asyncapi;
pub(crate) use cluster::{answer_forwarded, answer_status};
use dto::HealthResponse;
use error::ApiError;
pub(crate) use metrics::Metrics;
pub(crate) use ws::decode_client_message;

/// Decodes and checks each kind of JSON body the API takes, as its handler would: an
/// order, a batch, a SKU update, a room. For the property tests and the fuzz targets.
pub(crate) fn decode_bodies(bytes: &[u8]) -> [bool; 4] {
    let order = serde_json::from_slice::<dto::OrderRequestBody>(bytes)
        .ok()
        .is_some_and(|body| body.into_request().is_ok());
    let batch = serde_json::from_slice::<dto::BatchRequest>(bytes).is_ok();
    let sku = serde_json::from_slice::<dto::PutSkuRequest>(bytes)
        .ok()
        .is_some_and(|body| body.into_update().is_ok());
    let room = rooms::decode_room(bytes);
    [order, batch, sku, room]
}

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) journal: Arc<Journal>,
    pub(crate) hub: Arc<Hub>,
    pub(crate) engine: Arc<crate::alert::Engine>,
    pub(crate) notifier: Arc<crate::notify::Notifier>,
    pub(crate) channels: Arc<crate::channels::Channels>,
    pub(crate) access: Access,
    /// The largest request body, for the routes that read a body themselves.
    pub(crate) body_limit_bytes: usize,
    /// Connections open and refused at the edge.
    pub(crate) edge: Arc<crate::edge::EdgeCounters>,
    /// Cancelled when the server stops: WebSocket sessions close with 1001 (going away).
    pub(crate) shutdown: tokio_util::sync::CancellationToken,
    /// This node's place in the cluster; `None` when it runs alone.
    pub(crate) cluster: Option<crate::cluster::Cluster>,
}

/// How long a write waits for the journal before it answers 503: long enough for any
/// healthy disk, short enough that a client retries instead of hanging.
pub(super) const DURABLE_WAIT_MAX: Duration = Duration::from_secs(5);

impl Shared {
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Refuses a write up front while the disk refuses the journal's, or is so far behind
    /// that more waiting facts would only grow memory.
    fn writable(&self) -> Result<(), ApiError> {
        if let Some(cluster) = &self.cluster
            && !cluster.leading()
        {
            // Only the log changes a standby's ledger: what reaches this far on one (a
            // WebSocket command, a forwarded write after leadership moved) is refused.
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_leader",
                "this node does not lead the cluster; retry on the leader or over HTTP",
            ));
        }
        if !self.journal.healthy() {
            return Err(storage_unavailable());
        }
        if self.journal.backlogged() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the journal is too far behind the load; nothing was changed, retry shortly",
            ));
        }
        Ok(())
    }

    /// Waits until everything this request changed is durable under the sync policy:
    /// synced under `always`, written to the file under `interval` and `never`.
    async fn durable(&self) -> Result<(), ApiError> {
        if self.journal.wait_durable(DURABLE_WAIT_MAX).await {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "the journal could not make this change durable in time; its outcome is \
                 unknown: retry with the same order_id (a retried order is answered from \
                 idempotency), and read the SKU before retrying a restock",
            ))
        }
    }
}

fn storage_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "storage_unavailable",
        "the journal cannot write to disk; nothing was changed, retry later",
    )
}

pub(crate) type AppState = Arc<Shared>;

/// The whole HTTP application.
pub(crate) fn router(shared: AppState, body_limit_bytes: usize) -> Router {
    let api = Router::new()
        .route("/skus", get(skus::list))
        .route("/skus/{sku}", get(skus::get).put(skus::put))
        .route("/skus/{sku}/restock", post(skus::restock))
        .route("/skus/{sku}/history", get(skus::history))
        .route("/skus/{sku}/halt", post(skus::halt))
        .route("/skus/{sku}/resume", post(skus::resume))
        .route(
            "/skus/{sku}/allotments/move",
            post(channels::move_allotment),
        )
        .route("/rooms", get(rooms::list))
        .route("/rooms/{room}", get(rooms::get).put(rooms::put))
        .route("/rooms/{room}/report", get(report::json))
        .route("/rooms/{room}/report.csv", get(report::csv))
        .route("/rooms/{room}/listings/{sku}/halt", post(rooms::halt))
        .route("/rooms/{room}/listings/{sku}/resume", post(rooms::resume))
        .route(
            "/rooms/{room}/listings/{sku}/forecast",
            put(rooms::forecast),
        )
        .route("/alerts", get(alerts::list))
        .route("/alerts/{id}/ack", post(alerts::acknowledge))
        .route("/deliveries", get(alerts::deliveries))
        .route("/orders", post(orders::place))
        .route("/orders/batch", post(orders::batch))
        .route("/orders/{order_id}", get(orders::get))
        .route("/orders/{order_id}/confirm", post(orders::confirm))
        .route("/orders/{order_id}/cancel", post(orders::cancel))
        .route("/orders/{order_id}/refund", post(orders::refund))
        .route("/channels", get(channels::status))
        .route("/channels/{platform}/reconcile", post(reconcile::reconcile))
        .route("/cluster", get(cluster::status));
    Router::new()
        .nest("/api/v1", api)
        .route("/api/openapi.json", get(openapi::document))
        .route("/api/asyncapi.json", get(asyncapi::document))
        .route("/ws", get(ws::upgrade))
        .route("/", get(web::screen))
        .route("/host", get(web::host))
        .route("/console", get(web::console))
        .route("/report", get(web::report))
        .route("/web/{*path}", get(web::asset))
        .route("/favicon.ico", get(web::icon))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(shared.clone(), edge))
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .with_state(shared)
}

/// Around every route, in one layer: credentials and the route's permission
/// (`access::admit`), then the request served here or, on a standby, forwarded to the leader
/// (`cluster::forward_or_serve`), and the time it took, by route, for `/metrics`.
async fn edge(State(shared): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = match access::admit(&shared, request).await {
        Ok(request) => cluster::forward_or_serve(&shared, request, next).await,
        Err(refused) => refused,
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    shared
        .metrics
        .request_finished(method.as_str(), route, started.elapsed().as_secs_f64());
    response
}

#[utoipa::path(get, path = "/healthz", tag = "service",
    responses((status = 200, description = "The server is up", body = HealthResponse)))]
pub(crate) async fn health(State(shared): State<AppState>) -> Json<HealthResponse> {
    let counts = shared.ledger.counts();
    Json(HealthResponse {
        status: "ok",
        skus: counts.skus,
        orders: counts.orders,
        orders_locked: counts.orders_locked,
    })
}

#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "OpenMetrics text exposition", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub(crate) async fn metrics_text(State(shared): State<AppState>) -> Response {
    if let Some(cluster) = &shared.cluster {
        let nodes = cluster::gather(cluster).await;
        shared.metrics.cluster(&cluster.status(), &nodes);
    }
    shared
        .metrics
        .channels(&shared.channels.stats(shared.now()));
    let text = shared.metrics.render(
        shared.ledger.counts(),
        shared.journal.stats(),
        shared.hub.stats(),
        &shared.notifier.counters,
        &shared.edge,
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
