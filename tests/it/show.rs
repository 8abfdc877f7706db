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
    let (restarted, data) = server.restarted().await;
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

/// The listing of `sku` in room `room`, as the server reads it now.
async fn listing_of(server: &TestServer, room: &str, sku: &str) -> Value {
    let (status, body) = server.get(&format!("/api/v1/rooms/{room}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    listing(&body, sku).clone()
}

#[tokio::test]
async fn a_finished_show_leaves_its_curve_and_the_next_plan_follows_it() {
    // Goal: every finished show leaves, per listing, its consumption normalised to the show's
    // length, durably; `GET /skus/{sku}/history` lists it with the forecast it suggests; a
    // plan `{"shape": "history"}` for the next show follows that curve (a straight line with
    // a reason while there is no history); named shapes give their profiles; bad shapes are
    // refused and change nothing.
    // Method: a three-hour show sells LIP 300 at minute 10, 200 at 30, 250 at 60, 170 at 120
    // and 80 at 170 (1,000, its forecast); at the end the curve at every 9 minutes is, by
    // hand, 0, 0, 300, 300, 500, 500, 500, 750 (×7), 920 (×5), 1000, 1000 thousandths; the
    // fastest five seconds sold 300, 3,600 a minute, at 12:10. The next day's show asks for
    // history and gets those corners times its forecast of 2,000. A restart keeps it all.
    let server = TestServer::start().await;
    server.sku("LIP", 100_000).await;
    let (status, body) = server
        .put(
            "/api/v1/rooms/r1",
            show(json!([{"sku": "LIP", "forecast": 1000, "plan": {"shape": "history"}}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = listing(&body, "LIP");
    assert_eq!(first["plan_shape"]["shape"], "linear");
    assert!(first["plan_shape"]["note"]["zh-CN"].is_string(), "{first}");

    let mut elapsed = 0;
    for (index, (minute, qty)) in [(10, 300), (30, 200), (60, 250), (120, 170), (170, 80)]
        .into_iter()
        .enumerate()
    {
        server.clock.advance((minute - elapsed) * MINUTE);
        elapsed = minute;
        let (status, body) = order(
            &server,
            &format!("o{index}"),
            "LIP",
            qty,
            "douyin",
            Some("r1"),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (_, history) = server.get("/api/v1/skus/LIP/history").await;
    assert_eq!(history["shows"], json!([]), "the show is not over");
    server
        .clock
        .advance((180 - elapsed) * MINUTE + Duration::from_secs(1));
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                server.get("/api/v1/skus/LIP/history").await.1["shows"]
                    .as_array()
                    .is_some_and(|shows| shows.len() == 1)
            })
            .await
    );
    let (_, history) = server.get("/api/v1/skus/LIP/history").await;
    let expected_curve: Vec<f64> = [
        0, 0, 300, 300, 500, 500, 500, 750, 750, 750, 750, 750, 750, 750, 920, 920, 920, 920, 920,
        1000, 1000,
    ]
    .iter()
    .map(|share: &u64| *share as f64 / 1000.0)
    .collect();
    let record = &history["shows"][0];
    assert_eq!(record["curve"], json!(expected_curve), "{record}");
    assert_eq!(
        (
            &record["forecast"],
            &record["consumed"],
            &record["lost"],
            &record["accuracy"]
        ),
        (&json!(1000), &json!(1000), &json!(0), &json!(1.0))
    );
    assert_eq!(record["peak_per_min"], 3600.0);
    assert_eq!(record["peak_at"], "2026-11-25T12:10:00.000Z");
    assert_eq!(record["name"], "晚八点专场");
    assert_eq!(history["suggested_forecast"], 1000);

    // The next day's show follows that curve.
    let tomorrow = json!({
        "name": "次日专场",
        "starts_at": "2026-11-26T12:00:00Z",
        "ends_at": "2026-11-26T15:00:00Z",
        "listings": [{"sku": "LIP", "forecast": 2000, "plan": {"shape": "history", "shows": 3}}],
    });
    let (status, body) = server.put("/api/v1/rooms/r1", tomorrow).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let next = listing(&body, "LIP");
    assert_eq!(
        next["plan_shape"],
        json!({"shape": "history", "shows": 1, "note": null})
    );
    let plan = next["series"]["plan"]
        .as_array()
        .expect("plan corners")
        .clone();
    assert_eq!(plan.len(), 21, "{plan:?}");
    assert_eq!(plan[0], json!([0, 0]));
    assert_eq!(plan[2], json!([1080, 600]));
    assert_eq!(plan[4], json!([2160, 1000]));
    assert_eq!(plan[14], json!([7560, 1840]));
    assert_eq!(plan[20], json!([10800, 2000]));

    // Named shapes, and shapes refused.
    server.sku("PEN", 1_000).await;
    let (status, body) = server
        .put(
            "/api/v1/rooms/r2",
            show(json!([{"sku": "PEN", "forecast": 1000, "plan": {"shape": "front_loaded"}}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let front = listing(&body, "PEN");
    assert_eq!(front["plan_shape"]["shape"], "front_loaded");
    assert_eq!(
        front["series"]["plan"],
        json!([[0, 0], [2160, 500], [4320, 750], [7560, 920], [10800, 1000]])
    );
    let (_, before) = server.get("/api/v1/rooms/r2").await;
    for plan in [
        json!({"shape": "zigzag"}),
        json!({"shape": "front_loaded", "shows": 3}),
        json!({"shape": "history", "shows": 0}),
        json!({"shape": "history", "shows": 21}),
        json!({"shape": "history", "extra": 1}),
    ] {
        let (status, body) = server
            .put(
                "/api/v1/rooms/r2",
                show(json!([{"sku": "PEN", "forecast": 1000, "plan": plan}])),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{plan}: {body}");
    }
    let (_, after) = server.get("/api/v1/rooms/r2").await;
    assert_eq!(
        listing(&after, "PEN")["plan_shape"],
        listing(&before, "PEN")["plan_shape"]
    );

    // A restart keeps the history and the plans made from it.
    let (restarted, data) = server.restarted().await;
    let (_, again) = restarted.get("/api/v1/skus/LIP/history").await;
    assert_eq!(again, history);
    assert_eq!(
        listing_of(&restarted, "r1", "LIP").await["plan_shape"]["shape"],
        "history"
    );
    restarted.stop().await;
    drop(data);
}
