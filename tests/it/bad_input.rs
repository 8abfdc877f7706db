//! Bad input of every kind gets a clear JSON error with a stable code and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{TestServer, code};

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    body: String,
    status: StatusCode,
    code: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: &str,
    body: impl Into<String>,
    status: StatusCode,
    code: &'static str,
) -> Case {
    Case {
        name,
        method,
        path: path.to_owned(),
        body: body.into(),
        status,
        code,
    }
}

fn order_with(field: &str, value: serde_json::Value) -> String {
    let mut body = json!({"order_id": "o-new", "sku": "A", "qty": 1, "platform": "douyin"});
    body[field] = value;
    body.to_string()
}

#[tokio::test]
async fn every_bad_request_is_refused_clearly_and_changes_nothing() {
    // Goal: each kind of bad input maps to its status and code, and the ledger is unchanged.
    // Method: a table of bad requests against a server holding one SKU and one locked order;
    // the SKU and the health counts are compared before and after.
    let server = TestServer::start().await;
    server.sku("A", 10).await;
    server
        .post(
            "/api/v1/orders",
            json!({"order_id": "o-1", "sku": "A", "qty": 1, "platform": "douyin"}),
        )
        .await;
    let before_sku = server.stock("A").await;
    let (_, before_health) = server.get("/healthz").await;

    use StatusCode as S;
    let post = Method::POST;
    let put = Method::PUT;
    let long_id = "x".repeat(129);
    let oversized = format!(r#"{{"name":"{}"}}"#, "x".repeat(1024 * 1024 + 1));
    let cases = [
        case(
            "truncated JSON",
            post.clone(),
            "/api/v1/orders",
            r#"{"order_id":"#,
            S::BAD_REQUEST,
            "malformed_json",
        ),
        case(
            "not JSON",
            post.clone(),
            "/api/v1/orders",
            "order please",
            S::BAD_REQUEST,
            "malformed_json",
        ),
        case(
            "empty body",
            post.clone(),
            "/api/v1/orders",
            "",
            S::BAD_REQUEST,
            "malformed_json",
        ),
        case(
            "wrong JSON type",
            post.clone(),
            "/api/v1/orders",
            "[1,2,3]",
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "missing order_id",
            post.clone(),
            "/api/v1/orders",
            r#"{"sku":"A","qty":1,"platform":"douyin"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "missing qty",
            post.clone(),
            "/api/v1/orders",
            r#"{"order_id":"o-new","sku":"A","platform":"douyin"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "zero qty",
            post.clone(),
            "/api/v1/orders",
            order_with("qty", json!(0)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "negative qty",
            post.clone(),
            "/api/v1/orders",
            order_with("qty", json!(-5)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "absurd qty",
            post.clone(),
            "/api/v1/orders",
            order_with("qty", json!(1_000_000_001_i64)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "fractional qty",
            post.clone(),
            "/api/v1/orders",
            order_with("qty", json!(1.5)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "qty as a string",
            post.clone(),
            "/api/v1/orders",
            order_with("qty", json!("1")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "huge qty",
            post.clone(),
            "/api/v1/orders",
            r#"{"order_id":"o-new","sku":"A","qty":1e400,"platform":"douyin"}"#,
            S::BAD_REQUEST,
            "malformed_json",
        ),
        case(
            "empty order id",
            post.clone(),
            "/api/v1/orders",
            order_with("order_id", json!("")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "long order id",
            post.clone(),
            "/api/v1/orders",
            order_with("order_id", json!(long_id)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "control character in id",
            post.clone(),
            "/api/v1/orders",
            order_with("order_id", json!("o\u{7}1")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "empty platform",
            post.clone(),
            "/api/v1/orders",
            order_with("platform", json!("")),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "unknown field",
            post.clone(),
            "/api/v1/orders",
            order_with("qyt", json!(1)),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "sku and lines",
            post.clone(),
            "/api/v1/orders",
            order_with("lines", json!([{"sku":"A","qty":1}])),
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "no lines",
            post.clone(),
            "/api/v1/orders",
            r#"{"order_id":"o-new","lines":[],"platform":"douyin"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "a SKU twice",
            post.clone(),
            "/api/v1/orders",
            r#"{"order_id":"o-new","lines":[{"sku":"A","qty":1},{"sku":"A","qty":1}],"platform":"douyin"}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "unknown SKU",
            post.clone(),
            "/api/v1/orders",
            order_with("sku", json!("NOPE")),
            S::NOT_FOUND,
            "sku_not_found",
        ),
        case(
            "unknown SKU on a line",
            post.clone(),
            "/api/v1/orders",
            r#"{"order_id":"o-new","lines":[{"sku":"A","qty":1},{"sku":"NOPE","qty":1}],"platform":"douyin"}"#,
            S::NOT_FOUND,
            "sku_not_found",
        ),
        case(
            "reuse of an order id",
            post.clone(),
            "/api/v1/orders",
            order_with("order_id", json!("o-1")).replace(r#""qty":1"#, r#""qty":2"#),
            S::CONFLICT,
            "order_conflict",
        ),
        case(
            "unknown order",
            post.clone(),
            "/api/v1/orders/nobody/confirm",
            "",
            S::NOT_FOUND,
            "order_not_found",
        ),
        case(
            "refund of a locked order",
            post.clone(),
            "/api/v1/orders/o-1/refund",
            "",
            S::CONFLICT,
            "invalid_transition",
        ),
        case(
            "unknown order read",
            Method::GET,
            "/api/v1/orders/nobody",
            "",
            S::NOT_FOUND,
            "order_not_found",
        ),
        case(
            "unknown SKU read",
            Method::GET,
            "/api/v1/skus/NOPE",
            "",
            S::NOT_FOUND,
            "sku_not_found",
        ),
        case(
            "restock of an unknown SKU",
            post.clone(),
            "/api/v1/skus/NOPE/restock",
            r#"{"qty":1}"#,
            S::NOT_FOUND,
            "sku_not_found",
        ),
        case(
            "zero restock",
            post.clone(),
            "/api/v1/skus/A/restock",
            r#"{"qty":0}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "negative restock",
            post.clone(),
            "/api/v1/skus/A/restock",
            r#"{"qty":-3}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "negative total",
            put.clone(),
            "/api/v1/skus/A",
            r#"{"total":-1}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "absurd total",
            put.clone(),
            "/api/v1/skus/A",
            r#"{"total":100000000000000}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "negative quota",
            put.clone(),
            "/api/v1/skus/A",
            r#"{"quotas":{"douyin":-1}}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "long TTL",
            put.clone(),
            "/api/v1/skus/A",
            r#"{"lock_ttl_s":100000000}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "over-long SKU id",
            put.clone(),
            &format!("/api/v1/skus/{}", "s".repeat(129)),
            r#"{"total":1}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "control character in SKU id",
            put.clone(),
            "/api/v1/skus/A%0AB",
            r#"{"total":1}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "body over the limit",
            put.clone(),
            "/api/v1/skus/A",
            oversized,
            S::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        case(
            "batch that is not a batch",
            post.clone(),
            "/api/v1/orders/batch",
            r#"{"ops":7}"#,
            S::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        case(
            "unknown route",
            Method::GET,
            "/api/v1/teleport",
            "",
            S::NOT_FOUND,
            "not_found",
        ),
        case(
            "wrong method",
            Method::DELETE,
            "/api/v1/skus/A",
            "",
            S::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for case in cases {
        let (status, body) = server.send_raw(case.method, &case.path, case.body).await;
        assert_eq!(status, case.status, "{}: {body}", case.name);
        assert_eq!(code(&body), case.code, "{}: {body}", case.name);
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|message| !message.is_empty()),
            "{}: {body}",
            case.name
        );
    }
    assert_eq!(server.stock("A").await, before_sku);
    let (_, after_health) = server.get("/healthz").await;
    assert_eq!(after_health, before_health);
    server.stop().await;
}

#[tokio::test]
async fn a_deeply_nested_body_is_refused_without_harm() {
    // Goal: a hostile nesting depth is a clean error for that item, not a stack overflow.
    // Method: 100,000 nested arrays as one batch item (the decoder must descend into it to
    // find its end), then a normal request on the same server.
    let server = TestServer::start().await;
    server.sku("A", 1).await;
    let nested = format!(
        r#"{{"ops":[{}{}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (status, body) = server
        .send_raw(Method::POST, "/api/v1/orders/batch", nested)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["results"][0]["status"], 400);
    assert_eq!(body["results"][0]["error"]["code"], "malformed_json");
    let (status, _) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": "o-1", "sku": "A", "qty": 1, "platform": "douyin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(server.stock("A").await["available"], 0);
    server.stop().await;
}
