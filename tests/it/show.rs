//! The show around its orders: demand lost to refusals (for want of stock, or halted),
//! counted per listing and platform, pushed to screens, in the restock suggestion, and kept
//! across a restart from a snapshot.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use stockpulse::config::ConfigLayer;

use crate::push::{Socket, connect, next_messages, send};
use crate::rooms::show;
use crate::support::TestServer;

const MINUTE: Duration = Duration::from_secs(60);

async fn order(
    server: &TestServer,
    id: &str,
    sku: &str,
    qty: u64,
    platform: &str,
    room: Option<&str>,
) -> (StatusCode, Value) {
    let mut body =
        json!({"order_id": id, "sku": sku, "qty": qty, "platform": platform, "paid": true});
    if let Some(room) = room {
        body["room"] = json!(room);
    }
    server.post("/api/v1/orders", body).await
}

fn listing<'a>(room: &'a Value, sku: &str) -> &'a Value {
    room["listings"]
        .as_array()
        .and_then(|listings| listings.iter().find(|listing| listing["sku"] == sku))
        .unwrap_or(&Value::Null)
}

/// Reads the room topic until `lost` messages said, for each `(sku, units)`, that it lost
/// that many; the last such message of each.
async fn lost_pushed(socket: &mut Socket, wanted: &[(&str, u64)]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut found: Vec<Option<Value>> = vec![None; wanted.len()];
    while found.iter().any(Option::is_none) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no lost {wanted:?}: {found:?}"
        );
        for message in next_messages(socket).await {
            for (index, (sku, units)) in wanted.iter().enumerate() {
                if message["type"] == "lost"
                    && message["sku"] == *sku
                    && message["lost"]["units"] == *units
                {
                    found[index] = Some(message.clone());
                }
            }
        }
    }
    found.into_iter().flatten().collect()
}

#[tokio::test]
async fn refused_orders_are_counted_as_lost_demand_pushed_and_kept() {
    // Goal: orders naming a room refused for want of stock or for a halt are the show's lost
    // demand: counted per listing, reason and platform, pushed to the room's screens, added
    // to the restock suggestion while they are recent (ten minutes), and kept across a
    // restart from a snapshot; they change no stock, and refusals outside the room count
    // nothing.
    // Method: LIP (10 units) sells out half an hour in; then douyin is refused 3 + 3 units
    // and kuaishou 4, and PEN, halted in the room, refuses douyin 5; an order naming no room
    // is refused too. Figures by hand: LIP lost 10 (douyin 6, kuaishou 4), PEN 5 halted.
    // Five minutes on nothing sells (velocity 0, so no demand to the end): the suggested
    // restock is exactly the 10 refused; eleven minutes later they are no longer recent
    // and it is 0. A batch of 1,000 orders of another SKU makes a snapshot; a restarted
    // server answers the same.
    let server = TestServer::with_config(ConfigLayer {
        snapshot_every_facts: Some(1_000),
        ..ConfigLayer::default()
    })
    .await;
    server.sku("LIP", 10).await;
    server.sku("PEN", 100).await;
    server.sku("PLENTY", 10_000).await;
    let (status, body) = server
        .put(
            "/api/v1/rooms/r1",
            show(json!([{"sku": "LIP", "forecast": 100}, {"sku": "PEN", "forecast": 50}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut screen = connect(&server, "stockpulse.v1.json").await;
    send(
        &mut screen,
        json!({"op": "subscribe", "topics": ["room:r1"]}),
    )
    .await;
    let snapshot = next_messages(&mut screen).await;
    assert_eq!(listing(&snapshot[0]["room"], "LIP")["lost"]["units"], 0);

    server.clock.advance(30 * MINUTE);
    for index in 0..10 {
        let (status, body) = order(
            &server,
            &format!("s{index}"),
            "LIP",
            1,
            "douyin",
            Some("r1"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let stock_before = server.stock("LIP").await;
    for (id, qty, platform) in [
        ("d1", 3, "douyin"),
        ("d2", 3, "douyin"),
        ("k1", 4, "kuaishou"),
    ] {
        let (status, body) = order(&server, id, "LIP", qty, platform, Some("r1")).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "insufficient_stock");
    }
    let (status, _) = order(&server, "none", "LIP", 2, "douyin", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = server
        .post("/api/v1/rooms/r1/listings/PEN/halt", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = order(&server, "p1", "PEN", 5, "douyin", Some("r1")).await;
    assert_eq!(body["error"]["code"], "halted", "{status} {body}");
    assert_eq!(
        server.stock("LIP").await,
        stock_before,
        "refusals move no stock"
    );

    let pushed = lost_pushed(&mut screen, &[("LIP", 10), ("PEN", 5)]).await;
    assert_eq!(pushed[1]["lost"]["halted"], 5);
    let pushed = &pushed[0];
    assert_eq!(pushed["lost"]["insufficient_stock"], 10);
    assert_eq!(
        pushed["lost"]["platforms"],
        json!([
            {"platform": "douyin", "insufficient_stock": 6, "halted": 0},
            {"platform": "kuaishou", "insufficient_stock": 4, "halted": 0},
        ])
    );

    server.clock.advance(5 * MINUTE);
    let (_, room) = server.get("/api/v1/rooms/r1").await;
    let lip = listing(&room, "LIP");
    assert_eq!(
        lip["lost"],
        json!({"units": 10, "insufficient_stock": 10, "halted": 0, "last_10_min": 10,
        "platforms": [
            {"platform": "douyin", "insufficient_stock": 6, "halted": 0},
            {"platform": "kuaishou", "insufficient_stock": 4, "halted": 0},
        ]})
    );
    assert_eq!(lip["projection"]["velocity_per_min"], 0.0);
    assert_eq!(lip["projection"]["suggested_restock"], 10);
    let pen = listing(&room, "PEN");
    assert_eq!(
        (
            pen["lost"]["units"].as_u64(),
            pen["lost"]["halted"].as_u64()
        ),
        (Some(5), Some(5))
    );

    server.clock.advance(11 * MINUTE);
    let (_, room) = server.get("/api/v1/rooms/r1").await;
    assert_eq!(listing(&room, "LIP")["lost"]["last_10_min"], 0);
    assert_eq!(listing(&room, "LIP")["projection"]["suggested_restock"], 0);
    assert_eq!(listing(&room, "LIP")["lost"]["units"], 10);

    // A snapshot, then a restart from it.
    let ops: Vec<Value> = (0..1_000)
        .map(|index| json!({"op": "sell", "order_id": format!("b{index}"), "sku": "PLENTY", "qty": 1, "platform": "douyin"}))
        .collect();
    let (status, body) = server
        .post("/api/v1/orders/batch", json!({ "ops": ops }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        server
            .eventually(Duration::from_secs(10), || async {
                server.metrics().await.lines().any(|line| {
                    line.starts_with("stockpulse_journal_snapshots_total ") && !line.ends_with(" 0")
                })
            })
            .await,
        "a snapshot"
    );
    let clock = server.clock.clone();
    let data = server.stop_keeping_data().await;
    let restarted = TestServer::start_in(
        data.as_ref().expect("data directory").path().to_owned(),
        ConfigLayer::default(),
        Some(clock),
    )
    .await;
    let (_, after) = restarted.get("/api/v1/rooms/r1").await;
    for sku in ["LIP", "PEN"] {
        assert_eq!(
            listing(&after, sku)["lost"],
            listing(&room, sku)["lost"],
            "{sku}"
        );
    }
    restarted.stop().await;
    drop(data);
}
