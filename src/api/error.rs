//! The one error type of the HTTP edge: a status, a stable code and a message, rendered as
//! `{"error":{"code":"...","message":"..."}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::ledger::{InvalidValue, LedgerError};

#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable and machine-readable: `insufficient_stock`, `halted`, `platform_quota_exceeded`,
    /// `order_conflict`, `restock_conflict`, `lock_expired`, `invalid_transition`, `invalid_stock`,
    /// `sku_not_found`, `order_not_found`, `not_found`, `method_not_allowed`, `malformed_json`,
    /// `invalid_request`, `payload_too_large`, `internal`.
    pub(crate) code: String,
    /// For people: what was wrong, with the numbers.
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// A request whose JSON is well formed but whose content is not acceptable.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
    }

    pub(crate) fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl From<InvalidValue> for ApiError {
    fn from(error: InvalidValue) -> Self {
        ApiError::invalid(error.to_string())
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        let status = match &error {
            LedgerError::SkuNotFound { .. }
            | LedgerError::OrderNotFound { .. }
            | LedgerError::RoomNotFound { .. }
            | LedgerError::ListingNotFound { .. } => StatusCode::NOT_FOUND,
            LedgerError::InvalidRoom { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            LedgerError::InsufficientStock { .. }
            | LedgerError::Halted { .. }
            | LedgerError::ListingHalted { .. }
            | LedgerError::PlatformQuotaExceeded { .. }
            | LedgerError::AllotmentExhausted { .. }
            | LedgerError::OrderConflict { .. }
            | LedgerError::RestockConflict { .. }
            | LedgerError::LockExpired { .. }
            | LedgerError::InvalidTransition { .. }
            | LedgerError::InvalidStock { .. } => StatusCode::CONFLICT,
            LedgerError::Invariant(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::error!(%error, "Ledger refused an operation to stay consistent.");
            return ApiError::new(status, error.code(), "internal error");
        }
        ApiError::new(status, error.code(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::debug!(code = self.code, message = %self.message, "Request refused.");
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}
