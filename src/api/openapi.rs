//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::AppState;
use super::dto::{LOCK_TTL_S_MAX, QUOTAS_MAX, SKU_NAME_CHARS_MAX};
use crate::ledger::{
    ACKNOWLEDGER_CHARS_MAX, ID_CHARS_MAX, LINE_QTY_MAX, ORDER_LINES_MAX, STOCK_QTY_MAX,
};

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
        super::skus::history,
        super::rooms::list,
        super::rooms::get,
        super::rooms::put,
        super::rooms::halt,
        super::rooms::resume,
        super::rooms::forecast,
        super::report::json,
        super::report::csv,
        super::alerts::list,
        super::alerts::acknowledge,
        super::alerts::deliveries,
        super::orders::place,
        super::orders::batch,
        super::orders::get,
        super::orders::confirm,
        super::orders::cancel,
        super::orders::refund,
        super::channels::status,
        super::channels::move_allotment,
        super::reconcile::reconcile,
        super::cluster::status,
        super::health,
        super::metrics_text,
        document,
        super::asyncapi::document,
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
pub(crate) async fn document(State(shared): State<AppState>) -> Json<Value> {
    let secured = shared.access.authority.is_some();
    let document = if secured {
        SECURED.get_or_init(|| contract(true))
    } else {
        OPEN.get_or_init(|| contract(false))
    };
    Json(document.clone())
}

static SECURED: OnceLock<Value> = OnceLock::new();
static OPEN: OnceLock<Value> = OnceLock::new();

/// Each operation's id, by method and path: what links and generated clients name it by.
const OPERATION_IDS: &[(&str, &str, &str)] = &[
    ("get", "/api/v1/skus", "listSkus"),
    ("get", "/api/v1/skus/{sku}", "getSku"),
    ("put", "/api/v1/skus/{sku}", "putSku"),
    ("post", "/api/v1/skus/{sku}/restock", "restockSku"),
    ("post", "/api/v1/skus/{sku}/halt", "haltSku"),
    ("post", "/api/v1/skus/{sku}/resume", "resumeSku"),
    ("get", "/api/v1/skus/{sku}/history", "getSkuHistory"),
    (
        "post",
        "/api/v1/skus/{sku}/allotments/move",
        "moveAllotment",
    ),
    ("get", "/api/v1/channels", "channelsStatus"),
    (
        "post",
        "/api/v1/channels/{platform}/reconcile",
        "reconcileChannel",
    ),
    ("get", "/api/v1/rooms", "listRooms"),
    ("get", "/api/v1/rooms/{room}", "getRoom"),
    ("put", "/api/v1/rooms/{room}", "putRoom"),
    (
        "post",
        "/api/v1/rooms/{room}/listings/{sku}/halt",
        "haltListing",
    ),
    (
        "post",
        "/api/v1/rooms/{room}/listings/{sku}/resume",
        "resumeListing",
    ),
    (
        "put",
        "/api/v1/rooms/{room}/listings/{sku}/forecast",
        "setForecast",
    ),
    ("get", "/api/v1/rooms/{room}/report", "getRoomReport"),
    ("get", "/api/v1/rooms/{room}/report.csv", "getRoomReportCsv"),
    ("get", "/api/v1/alerts", "listAlerts"),
    ("post", "/api/v1/alerts/{id}/ack", "acknowledgeAlert"),
    ("get", "/api/v1/deliveries", "listDeliveries"),
    ("post", "/api/v1/orders", "placeOrder"),
    ("post", "/api/v1/orders/batch", "placeBatch"),
    ("get", "/api/v1/orders/{order_id}", "getOrder"),
    ("post", "/api/v1/orders/{order_id}/confirm", "confirmOrder"),
    ("post", "/api/v1/orders/{order_id}/cancel", "cancelOrder"),
    ("post", "/api/v1/orders/{order_id}/refund", "refundOrder"),
    ("get", "/api/v1/cluster", "clusterStatus"),
    ("get", "/healthz", "health"),
    ("get", "/metrics", "metrics"),
    ("get", "/api/openapi.json", "openapi"),
    ("get", "/api/asyncapi.json", "asyncapi"),
];

/// The links from an operation's success to the operations it makes callable: (operation,
/// status, parameter, where its value comes from, the operations it feeds).
const LINKS: &[(&str, &str, &str, &str, &[&str])] = &[
    (
        "placeOrder",
        "201",
        "order_id",
        "$response.body#/order_id",
        &["getOrder", "confirmOrder", "cancelOrder", "refundOrder"],
    ),
    (
        "putSku",
        "200",
        "sku",
        "$response.body#/sku",
        &[
            "getSku",
            "restockSku",
            "haltSku",
            "resumeSku",
            "getSkuHistory",
            "moveAllotment",
        ],
    ),
    (
        "putRoom",
        "200",
        "room",
        "$request.path.room",
        &[
            "getRoom",
            "haltListing",
            "resumeListing",
            "setForecast",
            "getRoomReport",
        ],
    ),
];

/// The errors every route may answer, as reusable responses: (status, name, what it means
/// and which `code`s it carries).
const ERRORS: &[(&str, &str, &str)] = &[
    (
        "400",
        "BadRequest",
        "`malformed_json` (a body that is not JSON, or none where one is needed), `invalid_request` (a body that cannot be read, a path parameter of the wrong type) or `invalid_path` (a path that is not percent-encoded UTF-8)",
    ),
    (
        "401",
        "Unauthorized",
        "`unauthorized`: no credentials, or a token that is malformed, expired or badly signed (only when the server has an auth secret)",
    ),
    (
        "403",
        "Forbidden",
        "`forbidden`: the token's role or rooms do not allow this route, a signed webhook used outside `POST /api/v1/orders`, or, without a secret, a write from another site's page",
    ),
    (
        "404",
        "NotFound",
        "`sku_not_found`, `order_not_found`, `room_not_found`, `listing_not_found` or `alert_not_found`",
    ),
    (
        "413",
        "PayloadTooLarge",
        "`payload_too_large`: the body is over the configured limit (1 MiB by default)",
    ),
    (
        "421",
        "MisdirectedRequest",
        "`misdirected_host`: without an auth secret, the `Host` is a name that is neither `localhost` nor listed in `allowed_hosts`",
    ),
    (
        "422",
        "Invalid",
        "`invalid_request`: a missing, unknown or out-of-range field, parameter or path id",
    ),
    (
        "503",
        "Unavailable",
        "`storage_unavailable` (the journal cannot make the change durable: retry, with the same `order_id` for orders), `not_leader` (in a cluster, no node leads right now: retry), `outcome_unknown` (a write a standby forwarded may have run but its answer was lost: retry with the same `order_id` or `restock_id`), or, for a read on a standby, `stale` (the node has not reached the log for over 10 s: read from another node). A standby's answers carry `X-Stockpulse-Lag`, the log messages it is behind",
    ),
];

/// The API's document: what the handlers' annotations generate, completed with what they
/// cannot say: every status each route can answer, the constraints of ids, operation ids and
/// the links between operations, and, when the server has an auth secret, how to
/// authenticate and which roles each route takes.
fn contract(secured: bool) -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let components = &mut document["components"];
    components["schemas"]["Id"] = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": ID_CHARS_MAX,
        "pattern": "^[^\\x00-\\x1F\\x7F-\\x9F]+$",
        "description": "1 to 128 characters, none of them a control character; in a path, percent-encoded",
    });
    for (status, name, meaning) in ERRORS {
        components["responses"][*name] = json!({
            "description": format!("{status}: {meaning}"),
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
        });
    }
    if secured {
        components["securitySchemes"] = json!({
            "bearer": {"type": "http", "scheme": "bearer", "description": "A token signed with the server's secret (`stockpulse token`), as `Authorization: Bearer …`"},
            "token": {"type": "apiKey", "in": "query", "name": "token", "description": "The same token as a `token` query parameter, for pages and `/ws`"},
            "platform": {"type": "apiKey", "in": "header", "name": "x-stockpulse-platform", "description": "A platform's signed order webhook: the platform's name, with `x-stockpulse-timestamp` and `x-stockpulse-signature` (HMAC-SHA256 of the timestamp and the body with the platform's secret); places that platform's orders only. Read only when the request carries no token: a token, when present, decides"},
            "timestamp": {"type": "apiKey", "in": "header", "name": "x-stockpulse-timestamp"},
            "signature": {"type": "apiKey", "in": "header", "name": "x-stockpulse-signature"},
        });
    }
    for (schema, property, constraint) in constraints() {
        if let Some(target) = document.pointer_mut(&format!(
            "/components/schemas/{schema}/properties/{property}"
        )) {
            match constraint {
                Constraint::Id => *target = json!({"$ref": "#/components/schemas/Id"}),
                Constraint::OptionalId => {
                    *target =
                        json!({"anyOf": [{"$ref": "#/components/schemas/Id"}, {"type": "null"}]});
                }
                Constraint::Merge(extra) => {
                    if let (Some(target), Some(extra)) = (target.as_object_mut(), extra.as_object())
                    {
                        for (key, value) in extra {
                            target.insert(key.clone(), value.clone());
                        }
                    }
                }
            }
        }
    }
    // One line (`sku` and `qty`) or several (`lines`), never both; a null is an absence.
    document["components"]["schemas"]["OrderRequestBody"]["oneOf"] = json!([
        {
            "title": "one line",
            "required": ["sku", "qty"],
            "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}, "lines": {"type": "null"}},
        },
        {
            "title": "several lines",
            "required": ["lines"],
            "properties": {"lines": {"type": "array"}, "sku": {"type": "null"}, "qty": {"type": "null"}},
        },
    ]);
    document["components"]["schemas"]["AllocationBody"] = super::allocation::allocation_schema();
    // Each item of a batch is checked on its own and answered in its own result, so the
    // batch takes any item; what an item should be is said in words.
    if let Some(ops) = document.pointer_mut("/components/schemas/BatchRequest/properties/ops") {
        *ops = json!({
            "type": "array",
            "maxItems": crate::api::orders::BATCH_OPS_MAX,
            "items": {
                "description": "An order operation: `op` (`reserve`, `sell`, `confirm`, `cancel` or `refund`) with the fields of `POST /api/v1/orders` (`reserve`, `sell`) or `order_id` alone (the others). An item that is not one is answered with its own 422 in `results`; the others are applied.",
            },
        });
    }
    let Some(paths) = document["paths"].as_object_mut() else {
        return document;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in item.iter_mut() {
            complete(path, method, operation, secured);
        }
    }
    for (id, example) in examples() {
        if let Some(content) = operation_mut(&mut document, id)
            .and_then(|operation| operation.pointer_mut("/requestBody/content/application~1json"))
        {
            content["example"] = example;
        }
    }
    for (from, status, parameter, source, targets) in LINKS {
        let Some(response) = operation_mut(&mut document, from)
            .and_then(|operation| operation.pointer_mut(&format!("/responses/{status}")))
        else {
            continue;
        };
        for target in *targets {
            response["links"][*target] = json!({
                "operationId": target,
                "parameters": {*parameter: source},
            });
        }
    }
    document
}

/// Completes one operation: its id, its path parameters' constraints, the errors it can
/// answer and, when secured, the roles it takes.
fn complete(path: &str, method: &str, operation: &mut Value, secured: bool) {
    if let Some((_, _, id)) = OPERATION_IDS
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
    {
        operation["operationId"] = json!(id);
    }
    let mut has_path_parameter = false;
    if let Some(parameters) = operation
        .get_mut("parameters")
        .and_then(Value::as_array_mut)
    {
        for parameter in parameters {
            if parameter["in"] == "path" {
                has_path_parameter = true;
                if parameter["schema"]["type"] == "string" {
                    parameter["schema"] = json!({"$ref": "#/components/schemas/Id"});
                }
            }
        }
    }
    let writes = method != "get";
    let has_body = operation.get("requestBody").is_some();
    let api = path.starts_with("/api/v1/");
    let mut errors = vec!["400", "421"];
    if api || path == "/metrics" {
        errors.extend(["401", "403"]);
    }
    if has_path_parameter {
        errors.extend(["404", "422"]);
    }
    if has_body {
        errors.extend(["413", "422"]);
    }
    if api
        && operation["parameters"]
            .as_array()
            .is_some_and(|parameters| {
                parameters
                    .iter()
                    .any(|parameter| parameter["in"] == "query")
            })
    {
        errors.push("422");
    }
    if writes {
        errors.extend(["503", "422"]);
    }
    for status in errors {
        if operation["responses"].get(status).is_none()
            && let Some((_, name, _)) = ERRORS.iter().find(|(code, _, _)| *code == status)
        {
            operation["responses"][status] =
                json!({"$ref": format!("#/components/responses/{name}")});
        }
    }
    if secured {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap_or(Method::GET);
        match super::access::roles(&method, path) {
            Some(roles) => {
                let mut ways = vec![json!({"bearer": roles}), json!({"token": roles})];
                if method == Method::POST && path == "/api/v1/orders" {
                    ways.push(json!({"platform": [], "timestamp": [], "signature": []}));
                }
                operation["security"] = Value::Array(ways);
                operation["x-roles"] = json!(roles);
            }
            None => operation["security"] = json!([{}]),
        }
    }
}

/// The operation named `id`, wherever it is.
fn operation_mut<'a>(document: &'a mut Value, id: &str) -> Option<&'a mut Value> {
    document["paths"]
        .as_object_mut()?
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .find(|operation| operation["operationId"] == id)
}

/// What a request field is held to, beyond its type.
enum Constraint {
    /// An id: [`ID_CHARS_MAX`] characters at most, no control character.
    Id,
    /// An id, or null (the same as leaving it out).
    OptionalId,
    /// These JSON Schema keywords, added to the field's schema.
    Merge(Value),
}

/// The constraints the handlers check on request fields, stated in the document so that a
/// client that follows it is refused nothing: (schema, property, constraint).
fn constraints() -> Vec<(&'static str, &'static str, Constraint)> {
    let qty = || json!({"minimum": 1, "maximum": LINE_QTY_MAX});
    let stock = || json!({"minimum": 0, "maximum": STOCK_QTY_MAX});
    vec![
        ("OrderRequestBody", "order_id", Constraint::Id),
        ("OrderRequestBody", "platform", Constraint::Id),
        ("OrderRequestBody", "qty", Constraint::Merge(qty())),
        ("OrderRequestBody", "room", Constraint::OptionalId),
        (
            "PutRoomRequest",
            "starts_at",
            Constraint::Merge(json!({"format": "date-time"})),
        ),
        (
            "PutRoomRequest",
            "ends_at",
            Constraint::Merge(json!({"format": "date-time"})),
        ),
        (
            "OrderRequestBody",
            "lines",
            Constraint::Merge(json!({"minItems": 1, "maxItems": ORDER_LINES_MAX})),
        ),
        ("LineBody", "sku", Constraint::Id),
        ("LineBody", "qty", Constraint::Merge(qty())),
        (
            "PutSkuRequest",
            "name",
            Constraint::Merge(json!({"maxLength": SKU_NAME_CHARS_MAX})),
        ),
        ("PutSkuRequest", "total", Constraint::Merge(stock())),
        ("PutSkuRequest", "reserved", Constraint::Merge(stock())),
        (
            "PutSkuRequest",
            "lock_ttl_s",
            Constraint::Merge(json!({"maximum": LOCK_TTL_S_MAX})),
        ),
        (
            "PutSkuRequest",
            "quotas",
            Constraint::Merge(json!({
                "maxProperties": QUOTAS_MAX,
                "propertyNames": {"$ref": "#/components/schemas/Id"},
                "additionalProperties": {"type": "integer", "minimum": 0, "maximum": STOCK_QTY_MAX},
            })),
        ),
        (
            "PutSkuRequest",
            "listings",
            Constraint::Merge(json!({
                "maxProperties": super::allocation::LISTINGS_MAX,
                "propertyNames": {"$ref": "#/components/schemas/Id"},
                "additionalProperties": {"$ref": "#/components/schemas/Id"},
            })),
        ),
        ("PlatformRow", "order_id", Constraint::Id),
        ("PlatformRow", "sku", Constraint::Id),
        ("PlatformRow", "qty", Constraint::Merge(stock())),
        ("MoveRequest", "from", Constraint::Id),
        ("MoveRequest", "to", Constraint::Id),
        (
            "MoveRequest",
            "qty",
            Constraint::Merge(json!({"minimum": 1, "maximum": STOCK_QTY_MAX})),
        ),
        (
            "RestockRequest",
            "qty",
            Constraint::Merge(json!({"minimum": 1, "maximum": STOCK_QTY_MAX})),
        ),
        ("RestockRequest", "restock_id", Constraint::OptionalId),
        (
            "ForecastRequest",
            "forecast",
            Constraint::Merge(json!({"minimum": 1, "maximum": STOCK_QTY_MAX})),
        ),
        (
            "AckRequest",
            "by",
            Constraint::Merge(
                json!({"minLength": 1, "maxLength": ACKNOWLEDGER_CHARS_MAX, "pattern": "^[^\\x00-\\x1F\\x7F-\\x9F]+$"}),
            ),
        ),
    ]
}

/// An example body for each operation that takes one, as a platform or a console sends it.
fn examples() -> Vec<(&'static str, Value)> {
    vec![
        (
            "putSku",
            json!({"name": "丝绒口红 #01", "total": 5000, "reserved": 200, "lock_ttl_s": 900, "quotas": {"douyin": 3000, "kuaishou": 1500},
                "listings": {"douyin": "3598112233", "kuaishou": "ks-889"},
                "allocation": {"mode": "exclusive", "shares": {"douyin": 0.6, "kuaishou": 0.4}, "floor": 50, "rebalance_every_s": 30}}),
        ),
        (
            "reconcileChannel",
            json!({"orders": [
                {"order_id": "6912345678901234567", "sku": "LIP-01", "qty": 2, "status": "paid"},
                {"order_id": "6912345678901234568", "sku": "LIP-01", "qty": 1, "status": "refunded"},
            ]}),
        ),
        (
            "moveAllotment",
            json!({"from": "kuaishou", "to": "douyin", "qty": 200, "reason": "douyin sells ahead of its plan"}),
        ),
        ("restockSku", json!({"qty": 800, "restock_id": "truck-7"})),
        (
            "putRoom",
            json!({
                "name": "双十一美妆专场",
                "starts_at": "2026-11-11T20:00:00Z",
                "ends_at": "2026-11-11T23:00:00Z",
                "listings": [
                    {"sku": "LIP-01", "forecast": 3000},
                    {"sku": "MASK-07", "forecast": 1200, "plan": [{"elapsed_s": 3600, "share": 0.5}], "policy": {"auto_halt": true}},
                ],
            }),
        ),
        ("setForecast", json!({"forecast": 3600})),
        ("haltListing", json!({"by": "运营-小王"})),
        ("resumeListing", json!({"by": "运营-小李"})),
        ("acknowledgeAlert", json!({"by": "运营-小李"})),
        (
            "placeOrder",
            json!({"order_id": "DY202611112001", "sku": "LIP-01", "qty": 2, "platform": "douyin", "room": "r1"}),
        ),
        (
            "placeBatch",
            json!({"ops": [
                {"op": "reserve", "order_id": "DY202611112002", "sku": "LIP-01", "qty": 1, "platform": "douyin", "room": "r1"},
                {"op": "sell", "order_id": "KS202611112003", "lines": [{"sku": "LIP-01", "qty": 1}, {"sku": "MASK-07", "qty": 3}], "platform": "kuaishou"},
                {"op": "confirm", "order_id": "DY202611112001"},
            ]}),
        ),
    ]
}
