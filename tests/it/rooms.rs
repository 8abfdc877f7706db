//! Rooms and the alert engine over the real server: a room's listings move through the levels
//! as orders naming the room arrive over HTTP, subscribers to the room and to the alerts see
//! each transition once, in order, with its reasons; auto-halt refuses the room's orders
//! until an operator resumes the listing; rooms survive a restart.

use std::time::Duration;

use futures_util::SinkExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::push::{Socket, connect, next_messages, send};
use crate::support::{TestServer, code};

const MINUTE: Duration = Duration::from_secs(60);

/// A three-hour show from the test clock's start (12:00 to 15:00 UTC) listing each sku.
pub(crate) fn show(listings: Value) -> Value {
    json!({
        "name": "晚八点专场",
        "starts_at": "2026-11-25T12:00:00Z",
        "ends_at": "2026-11-25T15:00:00Z",
        "listings": listings,
    })
}

async fn subscribe(server: &TestServer, topics: &[&str]) -> Socket {
    let mut socket = connect(server, "stockpulse.v1.json").await;
    send(&mut socket, json!({"op": "subscribe", "topics": topics})).await;
    socket
}

/// Reads messages until `done` says the collection is complete (or 10 s pass).
async fn collect_until(socket: &mut Socket, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    collect_within(socket, done, Duration::from_secs(10)).await
}

/// Reads messages until `done` says the collection is complete (or `limit` passes).
async fn collect_within(
    socket: &mut Socket,
    done: impl Fn(&[Value]) -> bool,
    limit: Duration,
) -> Vec<Value> {
    let mut messages = Vec::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !done(&messages) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "incomplete after 10 s: {messages:#?}"
        );
        messages.extend(next_messages(socket).await);
    }
    messages
}

async fn order(server: &TestServer, id: &str, room: Option<&str>, qty: u64) -> (StatusCode, Value) {
    let mut body =
        json!({"order_id": id, "sku": "LIP", "qty": qty, "platform": "douyin", "paid": true});
    if let Some(room) = room {
        body["room"] = json!(room);
    }
    server.post("/api/v1/orders", body).await
}

#[tokio::test]
async fn a_burst_of_orders_moves_a_listing_through_every_level_and_auto_halts_it() {
    // Goal: orders naming the room move the listing green → yellow → orange → red; a room
    // subscriber and an alerts subscriber see each transition once, in order, with reasons
    // and consecutive sequence numbers; red halts the listing in the room (orders naming it
    // get 409 `halted`, others go through) until an operator resumes it.
    let server = TestServer::start().await;
    server.sku("LIP", 1_000).await;
    let (status, room) = server
        .put(
            "/api/v1/rooms/r1",
            show(json!([{"sku": "LIP", "forecast": 100, "policy": {"auto_halt": true, "hot": true}}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{room}");
    assert_eq!(room["listings"][0]["level"], "green");
    let mut screen = subscribe(&server, &["room:r1"]).await;
    let mut console = subscribe(&server, &["alerts"]).await;
    let snapshot = next_messages(&mut screen).await;
    assert_eq!(snapshot[0]["type"], "snapshot");
    assert_eq!(snapshot[0]["room"]["listings"][0]["sku"], "LIP");
    assert_eq!(next_messages(&mut console).await[0]["type"], "snapshot");

    // An hour and a half into the show, ten units at a time: to 80 %, 100 % and 120 % of the
    // forecast, each step read before the next (a step taken in one durable batch would
    // rightly go from green to orange at once).
    server.clock.advance(90 * MINUTE);
    let mut messages = Vec::new();
    let mut placed = 0;
    for (orders, level) in [(8, "yellow"), (2, "orange"), (2, "red")] {
        for _ in 0..orders {
            let (status, body) = order(&server, &format!("o{placed}"), Some("r1"), 10).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            placed += 1;
        }
        let reached = |messages: &[Value]| {
            messages
                .iter()
                .any(|message| message["type"] == "level" && message["to"] == level)
        };
        messages.extend(collect_until(&mut screen, reached).await);
    }
    let halted = |messages: &[Value]| {
        messages
            .iter()
            .any(|message| message["type"] == "listing" && message["halted"] == true)
    };
    if !halted(&messages) {
        messages.extend(collect_until(&mut screen, halted).await);
    }
    let first_seq = snapshot[0]["seq"].as_u64().expect("seq");
    for (offset, message) in messages.iter().enumerate() {
        assert_eq!(message["seq"], first_seq + 1 + offset as u64, "{message}");
    }
    let levels: Vec<(&str, &str)> = messages
        .iter()
        .filter(|message| message["type"] == "level")
        .map(|message| {
            assert!(!message["reasons"].as_array().expect("reasons").is_empty());
            (
                message["from"].as_str().expect("from"),
                message["to"].as_str().expect("to"),
            )
        })
        .collect();
    assert_eq!(
        levels,
        [("green", "yellow"), ("yellow", "orange"), ("orange", "red")]
    );
    let hints: Vec<&Value> = messages
        .iter()
        .filter(|message| message["type"] == "hint")
        .map(|message| &message["hint"]["key"])
        .collect();
    assert!(hints.contains(&&json!("slow_the_pace")), "{hints:?}");
    assert_eq!(hints.last(), Some(&&json!("stop_selling")));
    let stock_changes = messages
        .iter()
        .filter(|message| message["type"] == "stock")
        .count();
    assert_eq!(stock_changes, 12);

    let alerts = collect_until(&mut console, |messages| {
        messages
            .iter()
            .filter(|message| message["type"] == "alert")
            .count()
            == 3
    })
    .await;
    let alerts: Vec<&Value> = alerts
        .iter()
        .filter(|message| message["type"] == "alert")
        .collect();
    let to: Vec<&Value> = alerts.iter().map(|alert| &alert["to"]).collect();
    assert_eq!(to, [&json!("yellow"), &json!("orange"), &json!("red")]);
    assert_eq!(alerts[2]["hot"], true);
    assert_eq!(alerts[2]["reasons"][0]["rule"], "consumed_share");

    let (status, refused) = order(&server, "late", Some("r1"), 1).await;
    assert_eq!((status, code(&refused)), (StatusCode::CONFLICT, "halted"));
    let (status, _) = order(&server, "elsewhere", None, 1).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, view) = server
        .post("/api/v1/rooms/r1/listings/LIP/resume", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(view["listings"][0]["halted"], false);
    let (status, _) = order(&server, "late", Some("r1"), 1).await;
    assert_eq!(status, StatusCode::CREATED);

    let (_, view) = server.get("/api/v1/rooms/r1").await;
    let listing = &view["listings"][0];
    assert_eq!(listing["consumed"], 121);
    assert_eq!(listing["level"], "red");
    assert_eq!(listing["thresholds"]["yellow"], 0.8);
    assert_eq!(listing["hint"]["key"], "stop_selling");
    assert_eq!(listing["hint"]["zh-CN"], "停止售卖，切换下一款");
    assert_eq!(listing["series"]["plan"], json!([[0, 0], [10800, 100]]));
    assert_eq!(
        listing["series"]["actual"]
            .as_array()
            .expect("actual")
            .len(),
        1081
    );
    assert_eq!(listing["series"]["actual"][1080], 121);
    let (_, alerts) = server.get("/api/v1/alerts").await;
    let states: Vec<&Value> = alerts["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .map(|alert| &alert["state"])
        .collect();
    assert_eq!(
        states,
        [&json!("resolved"), &json!("resolved"), &json!("open")]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_room_subscribers_each_get_all_thousand_changes_of_a_burst() {
    // Goal: every stock change of a listing reaches every room subscriber, in order, none
    // missing; a MessagePack subscriber gets the same content as a JSON one.
    // Method: 199 JSON clients and one MessagePack client on one room; 1,000 orders placed
    // by 20 concurrent HTTP clients; each subscriber checks it saw 1,000 stock changes with
    // consecutive sequence numbers and rising versions. The readers start once every order
    // is placed, so each session's queue is made large enough to hold the whole burst (the
    // queue's bound has tests of its own), and they get 30 s: 200 readers share two cores
    // with the server.
    let server = TestServer::with_config(stockpulse::config::ConfigLayer {
        push_queue_kib: Some(16 * 1024),
        ..stockpulse::config::ConfigLayer::default()
    })
    .await;
    server.sku("LIP", 100_000).await;
    let (status, _) = server
        .put(
            "/api/v1/rooms/big",
            show(json!([{"sku": "LIP", "forecast": 100_000}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut clients = Vec::new();
    for _ in 0..199 {
        let mut client = subscribe(&server, &["room:big"]).await;
        assert_eq!(next_messages(&mut client).await[0]["type"], "snapshot");
        clients.push(client);
    }
    let mut packed = connect(&server, "stockpulse.v1.msgpack").await;
    packed
        .send(Message::Binary(
            rmp_serde::to_vec_named(&json!({"op": "subscribe", "topics": ["room:big"]}))
                .expect("encodes")
                .into(),
        ))
        .await
        .expect("sent");
    assert_eq!(next_messages(&mut packed).await[0]["type"], "snapshot");
    clients.push(packed);
    let mut placers = Vec::new();
    for worker in 0..20 {
        let client = server.client.clone();
        let url = server.url("/api/v1/orders");
        placers.push(tokio::spawn(async move {
            for index in 0..50 {
                let response = client
                    .post(&url)
                    .json(&json!({"order_id": format!("w{worker}-{index}"), "sku": "LIP", "qty": 1, "platform": "douyin", "room": "big"}))
                    .send()
                    .await
                    .expect("order sent");
                assert_eq!(response.status(), StatusCode::CREATED);
            }
        }));
    }
    for placer in placers {
        placer.await.expect("placer");
    }
    let mut readers = Vec::new();
    for mut client in clients {
        readers.push(tokio::spawn(async move {
            let messages = collect_within(
                &mut client,
                |messages| {
                    messages
                        .iter()
                        .filter(|message| message["type"] == "stock")
                        .count()
                        == 1000
                },
                Duration::from_secs(30),
            )
            .await;
            assert!(
                messages.iter().all(|message| message["type"] != "snapshot"),
                "resynced: {:?}",
                messages
                    .iter()
                    .find(|message| message["type"] == "snapshot")
            );
            for pair in messages.windows(2) {
                assert_eq!(
                    pair[0]["seq"].as_u64().map(|seq| seq + 1),
                    pair[1]["seq"].as_u64()
                );
            }
            let stocks: Vec<Value> = messages
                .into_iter()
                .filter(|message| message["type"] == "stock")
                .map(|message| message["stock"].clone())
                .collect();
            for pair in stocks.windows(2) {
                assert!(pair[0]["version"].as_u64() < pair[1]["version"].as_u64());
            }
            stocks
        }));
    }
    let mut seen = Vec::new();
    for reader in readers {
        seen.push(reader.await.expect("reader"));
    }
    assert_eq!(seen[0].len(), 1000);
    assert_eq!(seen[0].last().expect("last")["locked"], 1000);
    assert_eq!(
        seen[199], seen[0],
        "MessagePack and JSON carry the same changes"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_rooms_are_refused_and_change_nothing() {
    // Goal: unknown SKUs, backwards schedules, bad times, forecasts and policies, unknown
    // fields and unknown rooms get a clear error; nothing is created.
    let server = TestServer::start().await;
    server.sku("LIP", 100).await;
    let cases = [
        (
            show(json!([{"sku": "NOPE", "forecast": 10}])),
            StatusCode::NOT_FOUND,
            "sku_not_found",
        ),
        (
            show(json!([{"sku": "LIP", "forecast": 0}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            show(json!([{"sku": "LIP", "forecast": -5}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            show(json!([{"sku": "LIP", "forecast": 10}, {"sku": "LIP", "forecast": 10}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            show(json!([{"sku": "LIP", "forecast": 10, "policy": {"yellow": 0.9, "orange": 0.5}}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            show(json!([{"sku": "LIP", "forecast": 10, "policy": {"coverage": -1}}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            show(json!([{"sku": "LIP", "forecast": 10, "policy": {"colour": "red"}}])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            show(
                json!([{"sku": "LIP", "forecast": 10, "plan": [{"elapsed_s": 7200, "share": 0.5}, {"elapsed_s": 3600, "share": 0.6}]}]),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"starts_at": "2026-11-25T15:00:00Z", "ends_at": "2026-11-25T12:00:00Z", "listings": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
        (
            json!({"starts_at": "yesterday", "ends_at": "2026-11-25T12:00:00Z", "listings": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = server.put("/api/v1/rooms/r1", body.clone()).await;
        assert_eq!(
            (got, code(&answer)),
            (status, expected),
            "{body} → {answer}"
        );
    }
    let (status, answer) = server.get("/api/v1/rooms/r1").await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::NOT_FOUND, "room_not_found")
    );
    let (_, rooms) = server.get("/api/v1/rooms").await;
    assert_eq!(rooms["rooms"], json!([]));
    let (status, answer) = server
        .post("/api/v1/rooms/r1/listings/LIP/halt", json!({}))
        .await;
    assert_eq!(
        (status, code(&answer)),
        (StatusCode::NOT_FOUND, "room_not_found")
    );
    let mut socket = subscribe(&server, &["room:r1"]).await;
    let answer = next_messages(&mut socket).await;
    assert_eq!(answer[0]["code"], "room_not_found");
    server.stop().await;
}

#[tokio::test]
async fn rooms_their_consumption_and_halts_survive_a_restart() {
    // Goal: a room, what its listings consumed (with the curve) and an operator's halt are
    // journaled: a restarted server answers the same.
    let server = TestServer::start().await;
    server.sku("LIP", 1_000).await;
    server.sku("PEN", 1_000).await;
    let (status, _) = server
        .put(
            "/api/v1/rooms/r1",
            show(json!([{"sku": "LIP", "forecast": 100}, {"sku": "PEN", "forecast": 50, "plan": [{"elapsed_s": 3600, "share": 0.5}]}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.clock.advance(10 * MINUTE);
    for index in 0..5 {
        let (status, _) = order(&server, &format!("o{index}"), Some("r1"), 3).await;
        assert_eq!(status, StatusCode::CREATED);
        server.clock.advance(MINUTE);
    }
    let (status, _) = server
        .post("/api/v1/rooms/r1/listings/PEN/halt", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, before) = server.get("/api/v1/rooms/r1").await;
    let clock = server.clock.clone();
    let data = server.stop_keeping_data().await;
    let restarted = TestServer::start_in(
        data.as_ref().expect("data directory").path().to_owned(),
        Default::default(),
        Some(clock),
    )
    .await;
    let (status, after) = restarted.get("/api/v1/rooms/r1").await;
    assert_eq!(status, StatusCode::OK);
    for field in ["consumed", "halted", "series", "forecast", "policy"] {
        for index in 0..2 {
            assert_eq!(
                after["listings"][index][field], before["listings"][index][field],
                "{field} of listing {index}"
            );
        }
    }
    assert_eq!(after["listings"][0]["consumed"], 15);
    assert_eq!(after["listings"][1]["halted"], true);
    restarted.stop().await;
    drop(data);
}

#[tokio::test]
async fn the_largest_room_reaches_a_subscriber_whole_at_the_end_of_its_show() {
    // Goal: a room of 200 listings three hours in (each curve 2,160 buckets long) makes a
    // snapshot larger than a session's 1 MiB queue; it still arrives, whole, and the
    // session then follows the room.
    let server = TestServer::start().await;
    let mut listings = Vec::new();
    for index in 0..200 {
        let sku = format!("S{index:03}");
        server.sku(&sku, 1_000).await;
        listings.push(json!({"sku": sku, "forecast": 500}));
    }
    let (status, _) = server.put("/api/v1/rooms/big", show(json!(listings))).await;
    assert_eq!(status, StatusCode::OK);
    server.clock.advance(180 * MINUTE);
    let (status, _) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": "late", "sku": "S007", "qty": 2, "platform": "douyin", "room": "big"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut screen = subscribe(&server, &["room:big"]).await;
    let snapshot = next_messages(&mut screen).await;
    assert_eq!(snapshot[0]["type"], "snapshot");
    let listings = snapshot[0]["room"]["listings"]
        .as_array()
        .expect("listings");
    assert_eq!(listings.len(), 200);
    assert_eq!(
        listings[7]["series"]["actual"]
            .as_array()
            .expect("actual")
            .len(),
        2160
    );
    assert_eq!(listings[7]["consumed"], 2);
    assert!(1024 * 1024 < snapshot[0].to_string().len());
    let (status, _) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": "later", "sku": "S007", "qty": 1, "platform": "douyin", "room": "big"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let changes = collect_until(&mut screen, |messages| {
        messages.iter().any(|message| message["type"] == "stock")
    })
    .await;
    assert!(changes.iter().all(|message| message["type"] != "resync"));
    server.stop().await;
}

#[tokio::test]
async fn an_operator_changes_a_forecast_and_the_level_follows() {
    // Goal: a new forecast keeps what the listing consumed and re-decides its level; bad
    // forecasts and unknown listings are refused and change nothing.
    let server = TestServer::start().await;
    server.sku("LIP", 1_000).await;
    let (status, _) = server
        .put(
            "/api/v1/rooms/r1",
            show(json!([{"sku": "LIP", "forecast": 100}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    server.clock.advance(90 * MINUTE);
    let (status, _) = order(&server, "o1", Some("r1"), 90).await;
    assert_eq!(status, StatusCode::CREATED);
    // The engine decides the yellow that 90 % gives as it publishes the order; then past
    // its dwell time.
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                let alerts = server.get("/api/v1/alerts").await.1;
                alerts["alerts"]
                    .as_array()
                    .is_some_and(|alerts| alerts.iter().any(|alert| alert["to"] == "yellow"))
            })
            .await
    );
    server.clock.advance(Duration::from_secs(31));
    let (status, view) = server
        .put(
            "/api/v1/rooms/r1/listings/LIP/forecast",
            json!({"forecast": 200}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["listings"][0]["forecast"], 200);
    assert_eq!(view["listings"][0]["consumed"], 90);
    assert_eq!(view["listings"][0]["level"], "green");
    for (path, body, expected) in [
        (
            "/api/v1/rooms/r1/listings/LIP/forecast",
            json!({"forecast": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/rooms/r1/listings/LIP/forecast",
            json!({"forecast": "many"}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "/api/v1/rooms/r1/listings/PEN/forecast",
            json!({"forecast": 5}),
            StatusCode::NOT_FOUND,
        ),
        (
            "/api/v1/rooms/r9/listings/LIP/forecast",
            json!({"forecast": 5}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, answer) = server.put(path, body).await;
        assert_eq!(status, expected, "{path}: {answer}");
    }
    let (_, view) = server.get("/api/v1/rooms/r1").await;
    assert_eq!(view["listings"][0]["forecast"], 200);
    server.stop().await;
}

/// The facts the journal has taken, from `/metrics`.
async fn journal_facts(server: &TestServer) -> u64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix("stockpulse_journal_facts_total "))
        .and_then(|count| count.parse().ok())
        .expect("stockpulse_journal_facts_total")
}

#[tokio::test]
async fn time_is_journaled_only_while_a_show_is_on() {
    // Goal (A4): a tick fact a second moves levels while a show is on; a room whose show
    // ended long ago journals nothing as time passes. Before, any room that listed anything
    // journaled a fact a second forever (86,400 a day, replayed by every starting node).
    let server = TestServer::start().await;
    let (status, _) = server.put("/api/v1/skus/LIP", json!({"total": 100})).await;
    assert_eq!(status, StatusCode::OK);
    let mut ended = show(json!([{"sku": "LIP", "forecast": 100}]));
    ended["starts_at"] = json!("2020-01-01T12:00:00Z");
    ended["ends_at"] = json!("2020-01-01T15:00:00Z");
    let (status, _) = server.put("/api/v1/rooms/old", ended).await;
    assert_eq!(status, StatusCode::OK);
    // The show's end passed long ago: the sweeper records it once (its history entry).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let before = journal_facts(&server).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        journal_facts(&server).await,
        before,
        "ticks for a show of 2020"
    );
    // The same line-up in a show on now (the test clock stands at its start): ticks.
    let (status, _) = server
        .put(
            "/api/v1/rooms/now",
            show(json!([{"sku": "LIP", "forecast": 100}])),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let on = journal_facts(&server).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(on < journal_facts(&server).await, "no tick during a show");
}
