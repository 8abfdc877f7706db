//! Order routes: place (reserve or sell), confirm, cancel, refund, read, and the batch form
//! for high-rate ingestion. Every route goes through [`execute`], so a batch item behaves
//! exactly as the same call alone.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::dto::{
    BatchItem, BatchOp, BatchRequest, BatchResponse, BatchResult, OrderRequestBody, OrderResponse,
};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath, decode_json};
use super::metrics::Op;
use crate::ledger::{Answer, Fact, LedgerError, OrderId, OrderView};

/// Most operations in one batch request: enough to amortise a round trip many times over,
/// small enough that one request never holds a connection for long.
pub(crate) const BATCH_OPS_MAX: usize = 10_000;
/// Operations of a batch run in one go before the handler yields to the other tasks: a
/// quarter of a millisecond or so.
const BATCH_OPS_PER_POLL_MAX: usize = 256;

fn order_id(raw: &str) -> Result<OrderId, ApiError> {
    Ok(OrderId::new(raw)?)
}

/// An answered order operation: its status and the order as it left it.
pub(super) struct Done {
    pub(super) status: StatusCode,
    pub(super) order: OrderView,
    pub(super) replayed: bool,
}

/// What running one order operation gave.
pub(super) struct Outcome {
    pub(super) result: Result<Done, ApiError>,
    /// The ledger decided it, done or refused: the answer rests on the ledger's state, so it
    /// is given only once that state is durable. A request refused before it reached the
    /// ledger (a bad field) rests on nothing.
    pub(super) decided: bool,
}

/// Runs one order operation and records it in the metrics.
pub(super) fn execute(shared: &AppState, op: BatchOp) -> Outcome {
    let (kind, result) = run(shared, op);
    let decided = result.is_ok();
    let result = match result.and_then(|decision| decision.map_err(ApiError::from)) {
        Ok(answer) => {
            if answer.replayed {
                shared.metrics.order_replayed(kind);
            } else if answer.fact.is_some() {
                shared.metrics.order_accepted(kind);
            }
            let created = matches!(
                answer.fact,
                Some(Fact::OrderReserved { .. } | Fact::OrderSold { .. })
            );
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(Done {
                status,
                order: answer.order,
                replayed: answer.replayed,
            })
        }
        Err(error) => {
            shared.metrics.order_refused(kind, error.code);
            Err(error)
        }
    };
    Outcome { result, decided }
}

/// Checks an operation and hands it to the ledger: the outer error is a refusal before the
/// ledger saw it, the inner result the ledger's decision.
type Decision = Result<Result<Answer, LedgerError>, ApiError>;

fn run(shared: &AppState, op: BatchOp) -> (Op, Decision) {
    let now = shared.now();
    let ledger = &shared.ledger;
    match op {
        BatchOp::Reserve(body) if !body.paid => (
            Op::reserve,
            body.into_request()
                .map(|request| ledger.reserve(now, request)),
        ),
        BatchOp::Reserve(body) | BatchOp::Sell(body) => (
            Op::sell,
            body.into_request().map(|request| ledger.sell(now, request)),
        ),
        BatchOp::Confirm { order_id: raw } => (
            Op::confirm,
            order_id(&raw).map(|id| ledger.confirm(now, &id)),
        ),
        BatchOp::Cancel { order_id: raw } => {
            (Op::cancel, order_id(&raw).map(|id| ledger.cancel(now, &id)))
        }
        BatchOp::Refund { order_id: raw } => {
            (Op::refund, order_id(&raw).map(|id| ledger.refund(now, &id)))
        }
    }
}

/// Runs one operation and answers once its change is durable.
async fn one(shared: &AppState, op: BatchOp) -> Response {
    if let Err(error) = shared.writable() {
        return error.into_response();
    }
    let outcome = execute(shared, op);
    if outcome.decided
        && let Err(error) = shared.durable().await
    {
        return error.into_response();
    }
    respond(outcome.result)
}

fn respond(result: Result<Done, ApiError>) -> Response {
    match result {
        Ok(done) => (
            done.status,
            Json(OrderResponse::new(&done.order, done.replayed)),
        )
            .into_response(),
        Err(error) => error.into_response(),
    }
}

#[utoipa::path(post, path = "/api/v1/orders", tag = "orders",
    request_body = OrderRequestBody,
    responses(
        (status = 201, description = "Locked (or sold, when `paid`)", body = OrderResponse),
        (status = 200, description = "The same order again: the first answer, nothing changed", body = OrderResponse),
        (status = 404, description = "A SKU does not exist", body = ErrorBody),
        (status = 409, description = "`insufficient_stock`, `halted`, `platform_quota_exceeded`, `allotment_exhausted` or `order_conflict`", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody)))]
pub(crate) async fn place(
    State(shared): State<AppState>,
    ApiJson(body): ApiJson<OrderRequestBody>,
) -> Response {
    one(&shared, BatchOp::Reserve(body)).await
}

#[utoipa::path(post, path = "/api/v1/orders/{order_id}/confirm", tag = "orders",
    params(("order_id" = String, Path, description = "The platform's order id")),
    responses(
        (status = 200, description = "Paid: the units are sold", body = OrderResponse),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "`lock_expired` or `invalid_transition`", body = ErrorBody)))]
pub(crate) async fn confirm(
    State(shared): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Response {
    one(&shared, BatchOp::Confirm { order_id: raw }).await
}

#[utoipa::path(post, path = "/api/v1/orders/{order_id}/cancel", tag = "orders",
    params(("order_id" = String, Path, description = "The platform's order id")),
    responses(
        (status = 200, description = "Cancelled (or already expired): the units are available again", body = OrderResponse),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: the order is paid", body = ErrorBody)))]
pub(crate) async fn cancel(
    State(shared): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Response {
    one(&shared, BatchOp::Cancel { order_id: raw }).await
}

#[utoipa::path(post, path = "/api/v1/orders/{order_id}/refund", tag = "orders",
    params(("order_id" = String, Path, description = "The platform's order id")),
    responses(
        (status = 200, description = "Refunded: the units are available again", body = OrderResponse),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "`invalid_transition`: the order is not paid", body = ErrorBody)))]
pub(crate) async fn refund(
    State(shared): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Response {
    one(&shared, BatchOp::Refund { order_id: raw }).await
}

#[utoipa::path(get, path = "/api/v1/orders/{order_id}", tag = "orders",
    params(("order_id" = String, Path, description = "The platform's order id")),
    responses(
        (status = 200, description = "The order as it is now", body = OrderResponse),
        (status = 404, description = "No such order, or finished longer ago than the idempotency window", body = ErrorBody)))]
pub(crate) async fn get(
    State(shared): State<AppState>,
    ApiPath(raw): ApiPath<String>,
) -> Result<Response, ApiError> {
    let order_id = order_id(&raw)?;
    let view = shared
        .ledger
        .order(&order_id)
        .ok_or(LedgerError::OrderNotFound { order_id })?;
    Ok(Json(OrderResponse::new(&view, false)).into_response())
}

#[utoipa::path(post, path = "/api/v1/orders/batch", tag = "orders",
    request_body = BatchRequest,
    responses(
        (status = 200, description = "One result per operation, in order", body = BatchResponse),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 503, description = "`storage_unavailable`: the journal cannot write; retry", body = ErrorBody),
        (status = 422, description = "Not a batch, or more than 10,000 operations", body = ErrorBody)))]
pub(crate) async fn batch(
    State(shared): State<AppState>,
    ApiJson(body): ApiJson<BatchRequest>,
) -> Result<Response, ApiError> {
    if BATCH_OPS_MAX < body.ops.len() {
        return Err(ApiError::invalid(format!(
            "a batch has at most {BATCH_OPS_MAX} operations, got {}",
            body.ops.len()
        )));
    }
    shared.writable()?;
    let mut decided = false;
    let mut done: Vec<Result<Done, ApiError>> = Vec::with_capacity(body.ops.len());
    for (index, raw) in body.ops.iter().enumerate() {
        if 0 < index && index.is_multiple_of(BATCH_OPS_PER_POLL_MAX) {
            // A long batch lets the other tasks of this worker run now and then.
            tokio::task::yield_now().await;
        }
        let result = decode_json::<BatchItem>(raw.get().as_bytes())
            .and_then(BatchItem::into_op)
            .and_then(|op| {
                let outcome = execute(&shared, op);
                decided |= outcome.decided;
                outcome.result
            });
        done.push(result);
    }
    if decided {
        shared.durable().await?;
    }
    let results = done
        .iter()
        .map(|result| match result {
            Ok(done) => BatchResult {
                status: done.status.as_u16(),
                order: Some(OrderResponse::new(&done.order, done.replayed)),
                error: None,
            },
            Err(error) => BatchResult {
                status: error.status.as_u16(),
                order: None,
                error: Some(error.body().error),
            },
        })
        .collect();
    Ok(Json(BatchResponse { results }).into_response())
}
