//! SKU routes and the service routes (`/healthz`, `/metrics`, `/api/openapi.json`).

use reqwest::StatusCode;
use serde_json::json;

use crate::support::{TestServer, code};

#[tokio::test]
async fn sku_is_created_updated_restocked_halted_and_listed() {
    // Goal: the SKU routes keep the stock identity and report every quantity.
    // Method: create, update, restock, halt and resume one SKU, reading it back each time.
    let server = TestServer::start().await;
    let (status, created) = server
        .put(
            "/api/v1/skus/LIP-01",
            json!({"name": "Velvet lipstick #01", "total": 100, "reserved": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(created["name"], "Velvet lipstick #01");
    assert_eq!(created["available"], 90);
    assert_eq!(created["updated_at"], "2026-11-25T12:00:00.000Z");

    let (status, updated) = server
        .put(
            "/api/v1/skus/LIP-01",
            json!({"reserved": 20, "lock_ttl_s": 60}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["total"], 100);
    assert_eq!(updated["available"], 80);
    assert_eq!(updated["lock_ttl_s"], 60);

    let (status, restocked) = server
        .post("/api/v1/skus/LIP-01/restock", json!({"qty": 50}))
        .await;
    assert_eq!(status, StatusCode::OK, "{restocked}");
    assert_eq!(restocked["total"], 150);
    assert_eq!(restocked["available"], 130);

    let (status, halted) = server.post("/api/v1/skus/LIP-01/halt", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(halted["halted"], true);
    let (status, refused) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": "o-1", "sku": "LIP-01", "qty": 1, "platform": "douyin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&refused), "halted");
    let (status, resumed) = server.post("/api/v1/skus/LIP-01/resume", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resumed["halted"], false);

    server.sku("EYE-02", 5).await;
    let (status, list) = server.get("/api/v1/skus").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["skus"]
        .as_array()
        .expect("skus array")
        .iter()
        .map(|sku| sku["sku"].as_str().expect("sku id"))
        .collect();
    assert_eq!(ids, ["EYE-02", "LIP-01"]);
    assert!(list.get("next").is_none());

    let (status, page) = server.get("/api/v1/skus?limit=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["skus"][0]["sku"], "EYE-02");
    assert_eq!(page["next"], "EYE-02");
    let (status, page) = server.get("/api/v1/skus?limit=1&after=EYE-02").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["skus"][0]["sku"], "LIP-01");
    assert!(page.get("next").is_none(), "{page}");
    let (status, refused) = server.get("/api/v1/skus?limit=0").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&refused), "invalid_request");
    server.stop().await;
}

#[tokio::test]
async fn total_below_what_is_committed_is_refused_and_changes_nothing() {
    // Goal: an update that would make `available` negative is a 409 and changes nothing.
    // Method: lock 8 of 10 units, then try to set total to 5 and reserved to 5.
    let server = TestServer::start().await;
    server.sku("MASK-9", 10).await;
    let (status, _) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": "o-1", "sku": "MASK-9", "qty": 8, "platform": "douyin"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let before = server.stock("MASK-9").await;
    for body in [json!({"total": 5}), json!({"reserved": 5})] {
        let (status, refused) = server.put("/api/v1/skus/MASK-9", body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{refused}");
        assert_eq!(code(&refused), "invalid_stock");
    }
    assert_eq!(server.stock("MASK-9").await, before);
    server.stop().await;
}

#[tokio::test]
async fn service_routes_answer() {
    // Goal: health, metrics and the OpenAPI document are served and say something true.
    // Method: place one order and one refused order, then read all three.
    let server = TestServer::start().await;
    server.sku("A", 1).await;
    for order_id in ["o-1", "o-2"] {
        server
            .post(
                "/api/v1/orders",
                json!({"order_id": order_id, "sku": "A", "qty": 1, "platform": "douyin"}),
            )
            .await;
    }
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["skus"], 1);
    assert_eq!(health["orders_locked"], 1);

    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = metrics.as_str().expect("metrics are text");
    assert!(
        metrics.contains(r#"stockpulse_orders_accepted_total{op="reserve"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"stockpulse_orders_refused_total{op="reserve",code="insufficient_stock"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains("stockpulse_http_request_duration_seconds_bucket"));

    let (status, document) = server.get("/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/api/v1/skus/{sku}",
        "/api/v1/orders",
        "/api/v1/orders/batch",
        "/api/v1/orders/{order_id}/confirm",
    ] {
        assert!(document["paths"][path].is_object(), "missing {path}");
    }
    // The contract: every operation has its own id; path ids carry their constraints; the
    // errors the server answers are documented; an order links to what can follow it.
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            let id = operation["operationId"].as_str().unwrap_or_default();
            assert!(
                ids.insert(id.to_owned()),
                "{method} {path}: operation id {id:?} again"
            );
        }
    }
    assert_eq!(document["components"]["schemas"]["Id"]["maxLength"], 128);
    let place = &document["paths"]["/api/v1/orders"]["post"];
    for status in ["201", "400", "413", "422", "503"] {
        assert!(
            place["responses"][status].is_object(),
            "POST /api/v1/orders: no {status}"
        );
    }
    assert_eq!(
        place["responses"]["201"]["links"]["confirmOrder"]["parameters"]["order_id"],
        "$response.body#/order_id"
    );
    let confirm = &document["paths"]["/api/v1/orders/{order_id}/confirm"]["post"];
    assert_eq!(
        confirm["parameters"][0]["schema"]["$ref"],
        "#/components/schemas/Id"
    );
    assert_eq!(
        document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
            .as_object()
            .and_then(|content| content.keys().next().cloned())
            .unwrap_or_default(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    // Every body the API takes has an example, and the cluster's route is documented.
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            if let Some(body) = operation.get("requestBody") {
                assert!(
                    body["content"]["application/json"]["example"].is_object(),
                    "{method} {path}: no example body"
                );
            }
        }
    }
    assert!(document["paths"]["/api/v1/cluster"]["get"].is_object());
    // Without an auth secret, no route asks for credentials.
    assert!(document["components"]["securitySchemes"].is_null());
    server.stop().await;
}

#[tokio::test]
async fn what_the_document_allows_the_server_takes() {
    // Goal: a client that follows the document is refused nothing it allows: ids count
    // characters as JSON Schema does (not bytes), and whole numbers written as floats are
    // integers. Method: a SKU named with 100 Chinese characters (300 bytes), a restock of
    // `5.0`; then 129 characters and `5.5` are refused and change nothing.
    let server = TestServer::start().await;
    let long: String = "货".repeat(100);
    let path = format!("/api/v1/skus/{}", urlencode(&long));
    let (status, created) = server.put(&path, json!({"total": 10.0})).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    let (status, restocked) = server
        .post(&format!("{path}/restock"), json!({"qty": 5.0}))
        .await;
    assert_eq!(status, StatusCode::OK, "{restocked}");
    assert_eq!(restocked["total"], 15);
    let (status, refused) = server
        .post(&format!("{path}/restock"), json!({"qty": 5.5}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let too_long: String = "货".repeat(129);
    let (status, refused) = server
        .put(
            &format!("/api/v1/skus/{}", urlencode(&too_long)),
            json!({"total": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(code(&refused), "invalid_request");
    // And what it refuses, the server refuses: an array where an object is due (serde would
    // read `[null, null]` as a SKU update with nothing in it).
    let (status, refused) = server.put(&path, json!([null, null])).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let (_, stock) = server.get(&path).await;
    assert_eq!(stock["total"], 15);
    server.stop().await;
}

fn urlencode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn a_restock_with_an_id_counts_once() {
    // Goal: an operator retrying a restock whose answer was lost does not double the stock.
    // Method: the same restock twice, then the same id with another quantity.
    let server = TestServer::start().await;
    server.sku("A", 10).await;
    for _ in 0..2 {
        let (status, stock) = server
            .post(
                "/api/v1/skus/A/restock",
                json!({"qty": 5, "restock_id": "truck-7"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{stock}");
        assert_eq!(stock["total"], 15);
    }
    let (status, refused) = server
        .post(
            "/api/v1/skus/A/restock",
            json!({"qty": 6, "restock_id": "truck-7"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&refused), "restock_conflict");
    assert_eq!(server.stock("A").await["total"], 15);
    server.stop().await;
}
