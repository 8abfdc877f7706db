//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::Json;
use utoipa::OpenApi;

use super::dto::{
    BatchRequest, BatchResponse, BatchResult, HealthResponse, LineBody, LineResponse,
    OrderRequestBody, OrderResponse, PlatformResponse, PutSkuRequest, RestockRequest,
    SkuListResponse, SkuResponse,
};
use super::error::{ErrorBody, ErrorDetail};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stockpulse",
        description = "Real-time stock ledger and alert server for live-stream commerce."
    ),
    paths(
        super::skus::list,
        super::skus::get,
        super::skus::put,
        super::skus::restock,
        super::skus::halt,
        super::skus::resume,
        super::rooms::list,
        super::rooms::get,
        super::rooms::put,
        super::rooms::halt,
        super::rooms::resume,
        super::rooms::forecast,
        super::alerts::list,
        super::alerts::acknowledge,
        super::alerts::deliveries,
        super::orders::place,
        super::orders::batch,
        super::orders::get,
        super::orders::confirm,
        super::orders::cancel,
        super::orders::refund,
        super::health,
        super::metrics_text,
        document,
    ),
    components(schemas(
        PutSkuRequest,
        RestockRequest,
        super::rooms::PutRoomRequest,
        super::rooms::ListingBody,
        super::rooms::PlanPointBody,
        super::rooms::PolicyBody,
        super::rooms::RoomListResponse,
        super::rooms::RoomSummary,
        super::rooms::ListingSummary,
        super::alerts::AckRequest,
        super::rooms::ForecastRequest,
        SkuResponse,
        SkuListResponse,
        PlatformResponse,
        LineBody,
        LineResponse,
        OrderRequestBody,
        OrderResponse,
        BatchRequest,
        BatchResponse,
        BatchResult,
        HealthResponse,
        ErrorBody,
        ErrorDetail,
    ))
)]
struct ApiDoc;

#[utoipa::path(get, path = "/api/openapi.json", tag = "service",
    responses((status = 200, description = "This document")))]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
