//! The order life cycle over HTTP: reserve, confirm, cancel, refund, expiry, idempotency,
//! multi-line orders, quotas, the batch form, and a crowd of concurrent buyers.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, code};

fn order(order_id: &str, sku: &str, qty: i64) -> Value {
    json!({"order_id": order_id, "sku": sku, "qty": qty, "platform": "douyin"})
}

#[tokio::test]
async fn two_thousand_buyers_race_for_five_hundred_units() {
    // Goal: under a crowd, exactly the units that exist are locked, never one more.
    // Method: 2,000 concurrent single-unit reservations, each on its own task, against 500
    // available units; count the answers, then read the SKU.
    let server = TestServer::start().await;
    server.sku("HOT", 500).await;
    let mut tasks = Vec::new();
    for index in 0..2000 {
        let client = server.client.clone();
        let url = server.url("/api/v1/orders");
        tasks.push(tokio::spawn(async move {
            let response = client
                .post(url)
                .json(&order(&format!("buyer-{index}"), "HOT", 1))
                .send()
                .await
                .expect("request reaches the server");
            let status = response.status();
            let body: Value = response.json().await.expect("JSON answer");
            (status, body)
        }));
    }
    let mut locked_count = 0;
    let mut refused_count = 0;
    for task in tasks {
        let (status, body) = task.await.expect("task finishes");
        match status {
            StatusCode::CREATED => locked_count += 1,
            StatusCode::CONFLICT => {
                assert_eq!(code(&body), "insufficient_stock");
                refused_count += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(locked_count, 500);
    assert_eq!(refused_count, 1500);
    let stock = server.stock("HOT").await;
    assert_eq!(stock["locked"], 500);
    assert_eq!(stock["available"], 0);
    assert_eq!(stock["sold"], 0);
    server.stop().await;
}

#[tokio::test]
async fn life_cycle_moves_units_between_quantities() {
    // Goal: each operation moves units exactly as DESIGN.md's table says.
    // Method: reserve, confirm, refund one order and reserve, cancel another, reading the
    // SKU after each step.
    let server = TestServer::start().await;
    server.sku("A", 10).await;
    let (status, locked) = server.post("/api/v1/orders", order("o-1", "A", 3)).await;
    assert_eq!(status, StatusCode::CREATED, "{locked}");
    assert_eq!(locked["status"], "locked");
    assert_eq!(locked["expires_at"], "2026-11-25T12:15:00.000Z");
    let stock = server.stock("A").await;
    assert_eq!(
        (stock["locked"].as_u64(), stock["available"].as_u64()),
        (Some(3), Some(7))
    );

    let (status, sold) = server.post("/api/v1/orders/o-1/confirm", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sold["status"], "sold");
    let stock = server.stock("A").await;
    assert_eq!(
        (stock["locked"].as_u64(), stock["sold"].as_u64()),
        (Some(0), Some(3))
    );
    assert_eq!(stock["platforms"][0]["platform"], "douyin");
    assert_eq!(stock["platforms"][0]["sold"], 3);

    let (status, refused) = server.post("/api/v1/orders/o-1/cancel", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&refused), "invalid_transition");

    let (status, refunded) = server.post("/api/v1/orders/o-1/refund", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(refunded["status"], "refunded");
    assert_eq!(server.stock("A").await["available"], 10);

    server.post("/api/v1/orders", order("o-2", "A", 4)).await;
    let (status, cancelled) = server.post("/api/v1/orders/o-2/cancel", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cancelled["status"], "cancelled");
    let (status, read) = server.get("/api/v1/orders/o-2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "cancelled");
    let stock = server.stock("A").await;
    assert_eq!(
        (
            stock["locked"].as_u64(),
            stock["sold"].as_u64(),
            stock["available"].as_u64()
        ),
        (Some(0), Some(0), Some(10))
    );

    let (status, paid) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": "o-3", "sku": "A", "qty": 2, "platform": "taobao", "paid": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(paid["status"], "sold");
    assert_eq!(server.stock("A").await["sold"], 2);
    server.stop().await;
}

#[tokio::test]
async fn a_retry_gets_the_first_answer_and_changes_nothing() {
    // Goal: idempotency by order_id.
    // Method: send the same reserve and confirm twice, and a different order under the same
    // id; the SKU's version shows whether anything changed.
    let server = TestServer::start().await;
    server.sku("A", 10).await;
    let (status, first) = server.post("/api/v1/orders", order("o-1", "A", 2)).await;
    assert_eq!(status, StatusCode::CREATED);
    let version = server.stock("A").await["version"].clone();

    let (status, again) = server.post("/api/v1/orders", order("o-1", "A", 2)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["expires_at"], first["expires_at"]);
    assert_eq!(again["status"], "locked");
    assert_eq!(server.stock("A").await["version"], version);

    let (status, conflict) = server.post("/api/v1/orders", order("o-1", "A", 3)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&conflict), "order_conflict");

    let (status, _) = server.post("/api/v1/orders/o-1/confirm", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    let version = server.stock("A").await["version"].clone();
    let (status, again) = server.post("/api/v1/orders/o-1/confirm", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["replayed"], true);
    assert_eq!(again["status"], "sold");
    let stock = server.stock("A").await;
    assert_eq!(stock["version"], version);
    assert_eq!(stock["sold"], 2);
    server.stop().await;
}

#[tokio::test]
async fn expired_locks_return_without_traffic_and_late_payments_retake_or_fail() {
    // Goal: a lock is released within a second of `expires_at` with no request arriving, and
    // a payment after expiry takes the units again only if they are still there.
    // Method: a SKU with a 2 s lock TTL; move the manual clock past the expiry and poll (reads
    // do not sweep) until the units are back.
    let server = TestServer::start().await;
    server.sku("A", 3).await;
    server.put("/api/v1/skus/A", json!({"lock_ttl_s": 2})).await;
    let (status, locked) = server.post("/api/v1/orders", order("o-1", "A", 2)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(locked["expires_at"], "2026-11-25T12:00:02.000Z");
    server.post("/api/v1/orders", order("o-2", "A", 1)).await;

    server.clock.advance(Duration::from_millis(2000));
    let released = server
        .eventually(Duration::from_secs(1), || async {
            server.stock("A").await["locked"] == 0
        })
        .await;
    assert!(released, "locks still held: {}", server.stock("A").await);
    assert_eq!(server.stock("A").await["available"], 3);
    let (_, expired) = server.get("/api/v1/orders/o-1").await;
    assert_eq!(expired["status"], "expired");

    // o-1's units are still there: its late payment takes them again.
    let (status, sold) = server.post("/api/v1/orders/o-1/confirm", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{sold}");
    assert_eq!(sold["status"], "sold");

    // Someone else buys the last unit; o-2's late payment finds nothing left.
    let (status, _) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": "o-3", "sku": "A", "qty": 1, "platform": "kuaishou", "paid": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, refused) = server.post("/api/v1/orders/o-2/confirm", json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&refused), "lock_expired");
    let stock = server.stock("A").await;
    assert_eq!(
        (stock["sold"].as_u64(), stock["available"].as_u64()),
        (Some(3), Some(0))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_multi_line_order_locks_every_line_or_none() {
    // Goal: all-or-nothing across SKUs.
    // Method: a two-line order whose second line is short is refused and locks nothing; the
    // same basket within stock locks both.
    let server = TestServer::start().await;
    server.sku("A", 5).await;
    server.sku("B", 1).await;
    let basket = |order_id: &str, b_qty: i64| {
        json!({"order_id": order_id, "platform": "douyin", "room": "room-1",
               "lines": [{"sku": "A", "qty": 2}, {"sku": "B", "qty": b_qty}]})
    };
    let (status, refused) = server.post("/api/v1/orders", basket("o-1", 2)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&refused), "insufficient_stock");
    assert_eq!(server.stock("A").await["locked"], 0);

    let (status, locked) = server.post("/api/v1/orders", basket("o-2", 1)).await;
    assert_eq!(status, StatusCode::CREATED, "{locked}");
    assert_eq!(locked["room"], "room-1");
    assert_eq!(server.stock("A").await["locked"], 2);
    assert_eq!(server.stock("B").await["locked"], 1);
    server.stop().await;
}

#[tokio::test]
async fn a_platform_quota_caps_its_share_of_the_pool() {
    // Goal: a per-platform quota refuses with `platform_quota_exceeded`, other platforms go on.
    // Method: quota 3 for kuaishou on a SKU of 10.
    let server = TestServer::start().await;
    server
        .put(
            "/api/v1/skus/A",
            json!({"total": 10, "quotas": {"kuaishou": 3}}),
        )
        .await;
    let kuaishou = |order_id: &str, qty: i64| json!({"order_id": order_id, "sku": "A", "qty": qty, "platform": "kuaishou"});
    let (status, _) = server.post("/api/v1/orders", kuaishou("k-1", 2)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, refused) = server.post("/api/v1/orders", kuaishou("k-2", 2)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&refused), "platform_quota_exceeded");
    let (status, _) = server.post("/api/v1/orders", order("d-1", "A", 5)).await;
    assert_eq!(status, StatusCode::CREATED);
    let stock = server.stock("A").await;
    let kuaishou = stock["platforms"]
        .as_array()
        .expect("platforms")
        .iter()
        .find(|platform| platform["platform"] == "kuaishou")
        .expect("kuaishou is listed")
        .clone();
    assert_eq!(kuaishou["locked"], 2);
    assert_eq!(kuaishou["quota"], 3);
    server.stop().await;
}

#[tokio::test]
async fn a_batch_answers_each_operation_as_if_alone() {
    // Goal: the batch form applies each operation on its own and answers each in order.
    // Method: one batch with a reserve, its confirm, an unknown order, a bad item and a
    // refused reserve; then an oversized batch.
    let server = TestServer::start().await;
    server.sku("A", 2).await;
    let (status, batch) = server
        .post(
            "/api/v1/orders/batch",
            json!({"ops": [
                {"op": "reserve", "order_id": "b-1", "sku": "A", "qty": 1, "platform": "douyin"},
                {"op": "confirm", "order_id": "b-1"},
                {"op": "cancel", "order_id": "nobody"},
                {"op": "reserve", "order_id": "b-2", "sku": "A", "qty": 0, "platform": "douyin"},
                {"op": "sell", "order_id": "b-3", "sku": "A", "qty": 5, "platform": "douyin"},
                {"op": "teleport"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    let statuses: Vec<u64> = batch["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| result["status"].as_u64().expect("status"))
        .collect();
    assert_eq!(statuses, [201, 200, 404, 422, 409, 422]);
    assert_eq!(batch["results"][1]["order"]["status"], "sold");
    assert_eq!(batch["results"][4]["error"]["code"], "insufficient_stock");
    assert_eq!(server.stock("A").await["sold"], 1);

    let ops: Vec<Value> = (0..10_001)
        .map(|index| json!({"op": "cancel", "order_id": format!("x-{index}")}))
        .collect();
    let (status, refused) = server
        .post("/api/v1/orders/batch", json!({ "ops": ops }))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(code(&refused), "invalid_request");
    server.stop().await;
}
