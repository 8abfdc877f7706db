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
    assert_eq!(
        record["sold_out_at"],
        Value::Null,
        "100,000 on hand never sold out"
    );
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

/// Posts an order operation: reserve (`paid` false) or sell, naming room `r1`.
async fn place(server: &TestServer, id: &str, sku: &str, qty: u64, paid: bool) -> StatusCode {
    let body = json!({"order_id": id, "sku": sku, "qty": qty, "platform": "douyin", "room": "r1", "paid": paid});
    server.post("/api/v1/orders", body).await.0
}

#[tokio::test]
async fn the_post_show_review_adds_up_and_reads_the_same_after_a_restart() {
    // Goal: the review of a scripted show gives, per listing, the figures computed by hand:
    // forecast, consumed, paid, refunded, cancelled, expired, sell-out time, lost demand,
    // peak and accuracy; each alert with who acknowledged it after how long; halts with who
    // made and lifted them; totals and a timeline; a CSV for spreadsheets; and the same
    // after a restart.
    // Method: LIP (60 units, forecast 100, auto-halt): minute 10 reserve 10, 12 sell 20,
    // 15 pay the 10, 20 reserve 5 and cancel them at 21, 25 reserve 4 (expire at 40), 30
    // sell 26 (nothing left: red, auto-halted), 31 refused 5, 32 小王 acknowledges, 50
    // refund the 20. By hand: paid 10 + 20 + 26 = 56, refunded 20, cancelled 5, expired 4,
    // consumed 56 − 20 = 36 (accuracy 0.36), sold out at 12:30, lost 5, the fastest five
    // seconds 26 units at 12:30 (312 a minute). PEN: 小王 halts it at 13:00, an order at
    // 13:05 is refused (3 lost, halted), 小李 resumes it at 13:10.
    let server = TestServer::start().await;
    server.sku("LIP", 60).await;
    server.sku("PEN", 100).await;
    let (status, body) = server
        .put(
            "/api/v1/rooms/r1",
            show(json!([
                {"sku": "LIP", "forecast": 100, "policy": {"auto_halt": true}},
                {"sku": "PEN", "forecast": 50},
            ])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut minute = 0;
    let mut at = |to: u32| {
        let step = to - minute;
        minute = to;
        server.clock.advance(step * MINUTE);
    };
    at(10);
    assert_eq!(
        place(&server, "o1", "LIP", 10, false).await,
        StatusCode::CREATED
    );
    at(12);
    assert_eq!(
        place(&server, "s1", "LIP", 20, true).await,
        StatusCode::CREATED
    );
    at(15);
    assert_eq!(
        server.post("/api/v1/orders/o1/confirm", json!({})).await.0,
        StatusCode::OK
    );
    at(20);
    assert_eq!(
        place(&server, "o2", "LIP", 5, false).await,
        StatusCode::CREATED
    );
    at(21);
    assert_eq!(
        server.post("/api/v1/orders/o2/cancel", json!({})).await.0,
        StatusCode::OK
    );
    at(25);
    assert_eq!(
        place(&server, "o3", "LIP", 4, false).await,
        StatusCode::CREATED
    );
    at(30);
    assert_eq!(
        place(&server, "s2", "LIP", 26, true).await,
        StatusCode::CREATED
    );
    // Red (nothing left) halts LIP in the room.
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                listing_of(&server, "r1", "LIP").await["halted"] == true
            })
            .await
    );
    at(31);
    assert_eq!(
        place(&server, "s3", "LIP", 5, true).await,
        StatusCode::CONFLICT
    );
    at(32);
    let red_alert = || async {
        let (_, alerts) = server.get("/api/v1/alerts").await;
        alerts["alerts"]
            .as_array()
            .and_then(|alerts| {
                alerts
                    .iter()
                    .find(|alert| alert["sku"] == "LIP" && alert["to"] == "red")
            })
            .cloned()
    };
    // The notifier records alerts as the hub hands them over.
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                red_alert().await.is_some()
            })
            .await
    );
    let red = red_alert().await.expect("LIP went red");
    let (status, _) = server
        .post(
            &format!("/api/v1/alerts/{}/ack", red["id"]),
            json!({"by": "小王"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    at(41);
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                server.get("/api/v1/orders/o3").await.1["status"] == "expired"
            })
            .await
    );
    at(50);
    assert_eq!(
        server.post("/api/v1/orders/s1/refund", json!({})).await.0,
        StatusCode::OK
    );
    at(60);
    let (status, _) = server
        .post("/api/v1/rooms/r1/listings/PEN/halt", json!({"by": "小王"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    at(65);
    assert_eq!(
        place(&server, "p1", "PEN", 3, true).await,
        StatusCode::CONFLICT
    );
    at(70);
    let (status, _) = server
        .post(
            "/api/v1/rooms/r1/listings/PEN/resume",
            json!({"by": "小李"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The lost units reach the journal within a sweep.
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                listing_of(&server, "r1", "PEN").await["lost"]["units"] == 3
            })
            .await
    );
    at(181);

    let (status, report) = server.get("/api/v1/rooms/r1/report").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["finished"], true);
    let lip = listing(&report, "LIP");
    for (field, expected) in [
        ("forecast", json!(100)),
        ("consumed", json!(36)),
        ("consumed_in_show", json!(36)),
        ("sold", json!(56)),
        ("refunded", json!(20)),
        ("cancelled", json!(5)),
        ("expired", json!(4)),
        ("sold_out_at", json!("2026-11-25T12:30:00.000Z")),
        ("peak_per_min", json!(312.0)),
        ("peak_at", json!("2026-11-25T12:30:00.000Z")),
        ("accuracy", json!(0.36)),
    ] {
        assert_eq!(lip[field], expected, "LIP {field}: {lip}");
    }
    assert_eq!(lip["lost"]["insufficient_stock"], 5);
    // 60 on hand do not cover a forecast of 100: yellow from the start; red at the sell-out.
    assert_eq!(lip["alerts"][0]["to"], "yellow");
    let first = lip["alerts"]
        .as_array()
        .and_then(|alerts| alerts.iter().find(|alert| alert["to"] == "red"))
        .expect("a red alert");
    assert_eq!(first["at"], "2026-11-25T12:30:00.000Z");
    assert_eq!(first["acknowledged_by"], "小王");
    assert_eq!(first["acknowledged_after_s"], 120);
    assert!(
        first["reasons"]
            .as_array()
            .is_some_and(|reasons| reasons.iter().any(|reason| reason["rule"] == "sold_out"))
    );
    assert_eq!(lip["halts"][0]["auto"], true);
    assert_eq!(lip["halts"][0]["at"], "2026-11-25T12:30:00.000Z");
    let pen = listing(&report, "PEN");
    assert_eq!(
        pen["halts"],
        json!([{"at": "2026-11-25T13:00:00.000Z", "auto": false, "by": "小王",
                "resumed_at": "2026-11-25T13:10:00.000Z", "resumed_by": "小李"}])
    );
    assert_eq!(
        (pen["lost"]["halted"].as_u64(), pen["sold"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(report["totals"]["sold"], 56);
    assert_eq!(report["totals"]["lost"], 8);
    assert_eq!(report["totals"]["halts"], 2);
    let kinds: Vec<&str> = report["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .filter_map(|entry| entry["kind"].as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"start"));
    assert_eq!(kinds.last(), Some(&"end"));
    for kind in [
        "alert",
        "acknowledged",
        "halted",
        "resumed",
        "sold_out",
        "peak",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let times: Vec<&str> = report["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .filter_map(|entry| entry["at"].as_str())
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] <= pair[1]),
        "in time order: {times:?}"
    );

    let response = server
        .client
        .get(server.url("/api/v1/rooms/r1/report.csv"))
        .send()
        .await
        .expect("the CSV");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/csv")
    );
    let text = response.text().await.expect("text");
    let lines: Vec<&str> = text.trim_start_matches('\u{feff}').lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("商品 sku,"), "{text}");
    assert!(
        lines[1].starts_with("LIP,,100,36,56,20,5,4,2026-11-25T12:30:00.000Z,5,5,0,312.0,"),
        "{text}"
    );
    let (status, _) = server.get("/api/v1/rooms/nowhere/report").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (restarted, data) = server.restarted().await;
    let (_, again) = restarted.get("/api/v1/rooms/r1/report").await;
    let without_time = |mut report: Value| {
        report["generated_at"] = Value::Null;
        report
    };
    assert_eq!(without_time(again), without_time(report));
    restarted.stop().await;
    drop(data);
}
