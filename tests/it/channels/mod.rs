//! Channel sync against a stand-in platform (`platform.rs`): every listing of a SKU kept at
//! what the pool can honour, within its quota, coalesced, signed, versioned and keyed, with
//! the platform's own sales not counted twice, halts dropping listings to 0, and a platform
//! that throttles or fails caught up once it answers.

mod douyin;
mod platform;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use stockpulse::channels::{ChannelConfig, ConnectorKind};
use stockpulse::config::ConfigLayer;

use crate::support::TestServer;
use platform::{Platform, SECRET};

fn channel(platform: &str, url: String) -> ChannelConfig {
    ChannelConfig {
        platform: platform.to_owned(),
        connector: ConnectorKind::Webhook,
        url,
        secret: SECRET.to_owned(),
        secret_env: None,
        app_key: String::new(),
        access_token: String::new(),
        access_token_env: None,
        max_requests_per_s: 50,
        max_updates_per_request: 100,
        max_updates_per_listing_per_s: 50,
    }
}

/// A server syncing `douyin` and `kuaishou` listings to `platform`.
async fn server_for(platform: &Platform) -> TestServer {
    TestServer::with_config(ConfigLayer {
        channels: Some(vec![
            channel("douyin", platform.url()),
            channel("kuaishou", platform.url()),
        ]),
        ..ConfigLayer::default()
    })
    .await
}

/// Waits (up to 5 s) until the platform's listings show `expected`.
async fn shows(server: &TestServer, platform: &Platform, expected: &[(&str, i64)]) {
    let held = server
        .eventually(Duration::from_secs(5), || async {
            expected
                .iter()
                .all(|(listing, stock)| platform.stock(listing) == Some(*stock))
        })
        .await;
    let seen: Vec<(&str, Option<i64>)> = expected
        .iter()
        .map(|(listing, _)| (*listing, platform.stock(listing)))
        .collect();
    assert!(held, "expected {expected:?}, the platform shows {seen:?}");
}

/// A buyer on `platform_name` takes `qty`: the platform's listing first, then the order
/// reaches stockpulse, as it does in a live sale.
async fn buy(
    server: &TestServer,
    platform: &Platform,
    name: &str,
    listing: &str,
    id: &str,
    qty: i64,
) {
    assert!(platform.sell(listing, qty), "{listing} refused {qty}");
    let order = json!({"order_id": id, "sku": "HOT", "qty": qty, "platform": name});
    let (status, body) = server.post("/api/v1/orders", order).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
}

fn listing<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["listings"]
        .as_array()
        .and_then(|listings| listings.iter().find(|entry| entry["listing"] == name))
        .unwrap_or_else(|| panic!("{name} in {status}"))
}

#[tokio::test]
async fn every_listing_shows_what_the_pool_can_honour_within_a_second_of_each_sale() {
    // Goal: each platform listing shows its quota's headroom capped by available - buffer,
    // bad allocations and listings are refused and change nothing,
    // moved by every sale on any platform, the selling platform's own sale not taken off
    // twice (the platform already took it off), signed, versioned, and 0 while halted.
    // Method: a stand-in platform applying deltas; sales taken off its listing first, then
    // ordered; its numbers compared with the pool's after each step.
    let platform = Platform::start().await;
    let server = server_for(&platform).await;
    let sku = json!({
        "total": 100, "quotas": {"kuaishou": 30},
        "listings": {"douyin": "dy-1", "kuaishou": "ks-1"},
        "allocation": {"mode": "shared", "buffer": 2},
    });
    let (status, body) = server.put("/api/v1/skus/HOT", sku).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body["allocation"], json!({"mode": "shared", "buffer": 2}));
    let douyin = body["platforms"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["platform"] == "douyin"));
    assert_eq!(
        douyin.map(|p| p["listing"].clone()),
        Some(json!("dy-1")),
        "{body}"
    );
    shows(&server, &platform, &[("dy-1", 98), ("ks-1", 30)]).await;
    for refused in [
        json!({"allocation": {"mode": "exclusive", "shares": {"douyin": 0.7, "kuaishou": 0.4}}}),
        json!({"allocation": {"mode": "exclusive", "shares": {"douyin": -0.1}}}),
        json!({"allocation": {"mode": "exclusive", "shares": {}}}),
        json!({"allocation": {"mode": "exclusive", "shares": {"douyin": 0.5}, "allotted": {"douyin": 9}}}),
        json!({"allocation": {"mode": "evenly"}}),
        json!({"allocation": {"mode": "shared", "buffer": -1}}),
        json!({"allocation": {"mode": "shared", "buffer": 1, "floor": 2}}),
        json!({"listings": {"douyin": ""}}),
        json!({"listings": {"douyin": 7}}),
    ] {
        let (status, body) = server.put("/api/v1/skus/HOT", refused.clone()).await;
        assert_eq!(
            status,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{refused}: {body}"
        );
    }
    let taken = json!({"total": 5, "listings": {"douyin": "dy-1"}});
    let (status, body) = server.put("/api/v1/skus/OTHER", taken).await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    assert_eq!(crate::support::code(&body), "listing_taken");
    let (status, _) = server.get("/api/v1/skus/OTHER").await;
    assert_eq!(
        status,
        reqwest::StatusCode::NOT_FOUND,
        "a refused SKU is not created"
    );
    let unchanged = server.stock("HOT").await;
    assert_eq!(unchanged["allocation"]["buffer"], 2, "{unchanged}");

    for index in 0..10 {
        buy(
            &server,
            &platform,
            "douyin",
            "dy-1",
            &format!("d{index}"),
            1,
        )
        .await;
    }
    shows(&server, &platform, &[("dy-1", 88), ("ks-1", 30)]).await;
    buy(&server, &platform, "kuaishou", "ks-1", "k0", 5).await;
    shows(&server, &platform, &[("dy-1", 83), ("ks-1", 25)]).await;

    let (_, status) = server.get("/api/v1/channels").await;
    let dy = listing(&status, "dy-1");
    assert_eq!(dy["target"], 83, "{status}");
    assert_eq!(dy["shown"], 83, "{status}");
    assert_eq!(dy["synced"], true, "{status}");
    assert_eq!(dy["connected"], true, "{status}");

    let (status, _) = server.post("/api/v1/skus/HOT/halt", json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    shows(&server, &platform, &[("dy-1", 0), ("ks-1", 0)]).await;
    let (status, _) = server.post("/api/v1/skus/HOT/resume", json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    shows(&server, &platform, &[("dy-1", 83), ("ks-1", 25)]).await;

    assert_eq!(platform.bad_signatures(), 0);
    // The first update of each listing sets it; every later one is a delta.
    assert_eq!(platform.overwrites(), 2);
    let updates = platform.updates();
    for name in ["dy-1", "ks-1"] {
        let versions: Vec<u64> = updates
            .iter()
            .filter(|update| update["listing"] == name)
            .filter_map(|update| update["version"].as_u64())
            .collect();
        assert!(
            versions.windows(2).all(|pair| pair[0] < pair[1]),
            "{name}: {versions:?}"
        );
    }
    let reasons: Vec<&str> = updates
        .iter()
        .filter_map(|update| update["reason"].as_str())
        .collect();
    for reason in ["resync", "sale", "halt", "resume"] {
        assert!(reasons.contains(&reason), "{reason} in {reasons:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_platform_that_throttles_or_fails_is_caught_up_with_the_latest_number_once() {
    // Goal: 429 with Retry-After slows delivery, 500 is retried, and what arrives once the
    // platform answers is the latest number of each listing (coalesced), each key applied
    // once.
    // Method: the platform refuses the next 2 requests with 429 and 2 with 500 while 20 sales
    // happen on another platform; then its listing must show the pool's number, and the
    // channels route must have counted the failures and cleared them.
    let platform = Platform::start().await;
    let server = server_for(&platform).await;
    let sku = json!({"total": 50, "listings": {"douyin": "dy-2", "kuaishou": "ks-2"}});
    let (status, body) = server.put("/api/v1/skus/HOT", sku).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    shows(&server, &platform, &[("dy-2", 50), ("ks-2", 50)]).await;
    let before = platform.requests();
    platform.refuse_next(2, 2);
    for index in 0..20 {
        buy(
            &server,
            &platform,
            "kuaishou",
            "ks-2",
            &format!("k{index}"),
            1,
        )
        .await;
    }
    shows(&server, &platform, &[("dy-2", 30), ("ks-2", 30)]).await;
    assert_eq!(platform.refused(), (2, 2));
    // 20 sales, 4 refusals: far fewer requests than sales once coalesced.
    let requests = platform.requests() - before;
    assert!(requests < 20, "{requests} requests for 20 sales");
    let (_, status) = server.get("/api/v1/channels").await;
    let dy = listing(&status, "dy-2");
    assert_eq!(dy["synced"], true, "{status}");
    assert_eq!(dy["failures"], 0, "{status}");
    server.stop().await;
}

#[tokio::test]
async fn what_a_platform_acknowledged_survives_a_restart() {
    // Goal: acknowledgements are journaled, so after a restart the first updates are
    // measured from what each listing was told before (a `delta`, not null), and a platform
    // applying deltas ends at the pool's number.
    // Method: sync, sell, stop, start again on the same data directory; sell on the other
    // platform; every update since the restart carries a delta and the numbers agree.
    let platform = Platform::start().await;
    let layer = || ConfigLayer {
        channels: Some(vec![
            channel("douyin", platform.url()),
            channel("kuaishou", platform.url()),
        ]),
        ..ConfigLayer::default()
    };
    let server = TestServer::with_config(layer()).await;
    let sku = json!({"total": 40, "listings": {"douyin": "dy-3", "kuaishou": "ks-3"}});
    let (status, body) = server.put("/api/v1/skus/HOT", sku).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    shows(&server, &platform, &[("dy-3", 40), ("ks-3", 40)]).await;
    buy(&server, &platform, "douyin", "dy-3", "d0", 5).await;
    shows(&server, &platform, &[("dy-3", 35), ("ks-3", 35)]).await;
    // Let the last acknowledgement reach the journal before stopping.
    let acknowledged = server
        .eventually(Duration::from_secs(5), || async {
            let (_, status) = server.get("/api/v1/channels").await;
            status["listings"]
                .as_array()
                .is_some_and(|all| all.iter().all(|entry| entry["synced"] == true))
        })
        .await;
    assert!(acknowledged);

    let clock = server.clock.clone();
    let data = server.stop_keeping_data().await;
    let path = data.as_ref().expect("a data directory").path().to_owned();
    let before = platform.updates().len();
    let server = TestServer::start_in(path, layer(), Some(clock)).await;
    let (_, status) = server.get("/api/v1/channels").await;
    assert_eq!(
        listing(&status, "ks-3")["acknowledged"]["quantity"],
        35,
        "{status}"
    );
    buy(&server, &platform, "kuaishou", "ks-3", "k0", 3).await;
    shows(&server, &platform, &[("dy-3", 32), ("ks-3", 32)]).await;
    let since: Vec<Value> = platform.updates()[before..].to_vec();
    assert!(!since.is_empty());
    for update in &since {
        assert!(
            update["delta"].is_i64(),
            "a delta after the restart: {update}"
        );
    }
    assert_eq!(platform.overwrites(), 2, "only the first updates overwrite");
    server.stop().await;
}

#[tokio::test]
async fn an_update_whose_answer_was_lost_is_sent_again_as_it_was() {
    // Goal: an update the platform may have applied (its answer lost) goes again unchanged,
    // same key and delta, so the platform applies it once; only after that is a newer number
    // measured. Measuring anew from the last acknowledgement would take the sale off twice.
    // Method: one listing, on douyin; the platform applies the next request and answers 500;
    // a second sale (on another platform, which has no listing here) comes before the retry;
    // the listing must end at the pool's number.
    let platform = Platform::start().await;
    let server = server_for(&platform).await;
    let sku = json!({"total": 30, "listings": {"douyin": "dy-4"}});
    let (status, body) = server.put("/api/v1/skus/HOT", sku).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    shows(&server, &platform, &[("dy-4", 30)]).await;
    platform.lose_next(1);
    let order = |id: &str, qty: u32| json!({"order_id": id, "sku": "HOT", "qty": qty, "platform": "kuaishou"});
    let (status, _) = server.post("/api/v1/orders", order("k0", 2)).await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    let lost = server
        .eventually(Duration::from_secs(5), || async { platform.lost() == 1 })
        .await;
    assert!(lost, "the platform lost no answer");
    let (status, _) = server.post("/api/v1/orders", order("k1", 3)).await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    shows(&server, &platform, &[("dy-4", 25)]).await;
    let updates = platform.updates();
    let repeated = updates
        .windows(2)
        .any(|pair| pair[0]["key"] == pair[1]["key"] && pair[0]["delta"] == pair[1]["delta"]);
    assert!(
        repeated,
        "the lost update went again as it was: {updates:?}"
    );
    assert_eq!(platform.overwrites(), 1, "only the first update overwrites");
    server.stop().await;
}

#[tokio::test]
async fn with_exclusive_shares_a_sale_moves_only_its_own_listing_and_a_move_shifts_units() {
    // Goal: with exclusive shares each listing shows its platform's allotment left unsold; a
    // sale on one platform does not touch the other's listing; that platform cannot sell
    // past its allotment; a move shifts unsold units and both listings follow (reason
    // `rebalance`); a restock is split by the shares.
    let platform = Platform::start().await;
    let server = server_for(&platform).await;
    let sku = json!({
        "total": 100, "listings": {"douyin": "dy-5", "kuaishou": "ks-5"},
        "allocation": {"mode": "exclusive", "shares": {"douyin": 0.6, "kuaishou": 0.4}, "floor": 5},
    });
    let (status, body) = server.put("/api/v1/skus/HOT", sku).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(
        body["allocation"]["allotted"],
        json!({"douyin": 60, "kuaishou": 40}),
        "{body}"
    );
    shows(&server, &platform, &[("dy-5", 60), ("ks-5", 40)]).await;
    buy(&server, &platform, "douyin", "dy-5", "d0", 10).await;
    shows(&server, &platform, &[("dy-5", 50), ("ks-5", 40)]).await;

    let order = json!({"order_id": "k-over", "sku": "HOT", "qty": 41, "platform": "kuaishou"});
    let (status, body) = server.post("/api/v1/orders", order).await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    assert_eq!(crate::support::code(&body), "allotment_exhausted");

    let moved =
        json!({"from": "kuaishou", "to": "douyin", "qty": 20, "reason": "douyin ahead of plan"});
    let (status, body) = server.post("/api/v1/skus/HOT/allotments/move", moved).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    shows(&server, &platform, &[("dy-5", 70), ("ks-5", 20)]).await;
    let too_far = json!({"from": "kuaishou", "to": "douyin", "qty": 16});
    let (status, body) = server
        .post("/api/v1/skus/HOT/allotments/move", too_far)
        .await;
    assert_eq!(status, reqwest::StatusCode::CONFLICT, "{body}");
    let (status, _) = server
        .post("/api/v1/skus/HOT/restock", json!({"qty": 10}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    shows(&server, &platform, &[("dy-5", 76), ("ks-5", 24)]).await;
    let reasons: Vec<String> = platform
        .updates()
        .iter()
        .filter_map(|update| update["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons.iter().any(|reason| reason == "rebalance"),
        "{reasons:?}"
    );
    assert_eq!(platform.overwrites(), 2, "only the first updates overwrite");
    server.stop().await;
}

#[tokio::test]
async fn while_a_show_is_live_units_move_to_the_platform_that_would_run_out() {
    // Goal: the rebalancer moves unsold units from a platform that will not sell its
    // allotment by the show's end to one that will run out before it, never below the floor,
    // journaled with its reason, and both listings follow.
    // Method: 100/100 allotments, a one-hour show; over its first six minutes (the test's
    // clock; nothing moves in the first five) douyin takes 96 and kuaishou nothing; then half
    // of kuaishou's 100 less its floor of 5 (48) must move to douyin.
    let platform = Platform::start().await;
    let server = server_for(&platform).await;
    let sku = json!({
        "total": 200, "listings": {"douyin": "dy-6", "kuaishou": "ks-6"},
        "allocation": {"mode": "exclusive", "shares": {"douyin": 0.5, "kuaishou": 0.5}, "floor": 5, "rebalance_every_s": 30},
    });
    let (status, body) = server.put("/api/v1/skus/HOT", sku).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let room = json!({
        "name": "evening", "starts_at": "2026-11-25T12:00:00Z", "ends_at": "2026-11-25T13:00:00Z",
        "listings": [{"sku": "HOT", "forecast": 200}],
    });
    let (status, body) = server.put("/api/v1/rooms/evening", room).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    shows(&server, &platform, &[("dy-6", 100), ("ks-6", 100)]).await;
    for step in 0..12 {
        buy(&server, &platform, "douyin", "dy-6", &format!("d{step}"), 8).await;
        server.clock.advance(Duration::from_secs(30));
    }
    shows(&server, &platform, &[("dy-6", 52), ("ks-6", 52)]).await;
    let (_, sku) = server.get("/api/v1/skus/HOT").await;
    assert_eq!(
        sku["allocation"]["allotted"],
        json!({"douyin": 148, "kuaishou": 52}),
        "{sku}"
    );
    let rebalanced = platform
        .updates()
        .iter()
        .any(|update| update["listing"] == "ks-6" && update["reason"] == "rebalance");
    assert!(rebalanced);
    server.stop().await;
}

#[tokio::test]
async fn a_douyin_listing_is_kept_by_signed_incremental_calls() {
    // Goal: the Douyin connector keeps a listing with signed `sku.syncStock` calls: set once,
    // then deltas keyed by `idempotent_id`; its own sales not taken off twice; a rate limit
    // (60000) waited out; a decrease Douyin refuses for want of stock (the shop lowered the
    // number in its back office) sets the listing to 0, and later numbers count from there.
    let douyin = douyin::Douyin::start().await;
    let platform = Platform::start().await;
    let mut douyin_channel = channel("douyin", douyin.url());
    douyin_channel.connector = ConnectorKind::Douyin;
    douyin_channel.secret = douyin::APP_SECRET.to_owned();
    douyin_channel.app_key = douyin::APP_KEY.to_owned();
    douyin_channel.access_token = douyin::ACCESS_TOKEN.to_owned();
    let server = TestServer::with_config(ConfigLayer {
        channels: Some(vec![douyin_channel, channel("kuaishou", platform.url())]),
        ..ConfigLayer::default()
    })
    .await;
    const SKU_ID: i64 = 1_234_567_890;
    let sku = json!({"total": 50, "listings": {"douyin": SKU_ID.to_string(), "kuaishou": "ks-7"}});
    let (status, body) = server.put("/api/v1/skus/HOT", sku).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let douyin_shows = |expected: i64| {
        let douyin = douyin.clone();
        let server = &server;
        async move {
            let held = server
                .eventually(Duration::from_secs(5), || async {
                    douyin.stock(SKU_ID) == Some(expected)
                })
                .await;
            assert!(
                held,
                "douyin shows {:?}, not {expected}",
                douyin.stock(SKU_ID)
            );
        }
    };
    douyin_shows(50).await;
    shows(&server, &platform, &[("ks-7", 50)]).await;
    buy(&server, &platform, "kuaishou", "ks-7", "k0", 5).await;
    douyin_shows(45).await;

    assert!(douyin.sell(SKU_ID, 3));
    let order = json!({"order_id": "d0", "sku": "HOT", "qty": 3, "platform": "douyin"});
    let (status, _) = server.post("/api/v1/orders", order).await;
    assert_eq!(status, reqwest::StatusCode::CREATED);
    shows(&server, &platform, &[("ks-7", 42)]).await;
    assert_eq!(douyin.stock(SKU_ID), Some(42));

    douyin.limit_next(2);
    buy(&server, &platform, "kuaishou", "ks-7", "k1", 2).await;
    douyin_shows(40).await;

    douyin.set(SKU_ID, 3);
    buy(&server, &platform, "kuaishou", "ks-7", "k2", 10).await;
    douyin_shows(0).await;
    // Later numbers count from 0: a restock of 10 shows the pool's 40.
    let (status, _) = server
        .post("/api/v1/skus/HOT/restock", json!({"qty": 10}))
        .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    douyin_shows(40).await;

    let (bad_signs, limited, short) = douyin.refusals();
    assert_eq!((bad_signs, limited, short), (0, 2, 1));
    let calls = douyin.calls();
    assert_eq!(
        calls[0]["incremental"], false,
        "the first call sets: {calls:?}"
    );
    assert!(
        calls[1..]
            .iter()
            .any(|call| call["incremental"] == true && call["idempotent_id"].is_string())
    );
    server.stop().await;
}

#[tokio::test]
async fn reconciliation_names_every_order_the_platform_and_the_ledger_disagree_on() {
    // Goal: a platform's orders of a window, as JSON or as its back office's CSV, matched
    // against the ledger: sold but never taken (missing), sold but given back (released),
    // other quantities, another platform's id, cancelled but still held, and held but not
    // listed (phantom); the oversold units add up; incidents are counted in /metrics; a bad
    // window, status or column is refused.
    let server = TestServer::start().await;
    server.sku("HOT", 100).await;
    let order = |id: &str, platform: &str, qty: u32| {
        // a4 is only reserved, so that it can be cancelled.
        json!({"order_id": id, "sku": "HOT", "qty": qty, "platform": platform, "paid": id != "a4"})
    };
    for (id, platform, qty) in [
        ("a1", "douyin", 2),
        ("a3", "douyin", 1),
        ("a4", "douyin", 4),
        ("a5", "douyin", 1),
        ("a6", "douyin", 1),
        ("a7", "kuaishou", 1),
    ] {
        let (status, body) = server
            .post("/api/v1/orders", order(id, platform, qty))
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
    }
    let (status, _) = server.post("/api/v1/orders/a4/cancel", json!({})).await;
    assert_eq!(status, reqwest::StatusCode::OK);
    let window =
        "/api/v1/channels/douyin/reconcile?from=2026-11-25T11:00:00Z&to=2026-11-25T13:00:00Z";
    let rows = json!({"orders": [
        {"order_id": "a1", "sku": "HOT", "qty": 2, "status": "paid"},
        {"order_id": "a2", "sku": "HOT", "qty": 3},
        {"order_id": "a3", "sku": "HOT", "qty": 2, "status": "shipped"},
        {"order_id": "a4", "sku": "HOT", "qty": 4, "status": "completed"},
        {"order_id": "a5", "sku": "HOT", "qty": 1, "status": "refunded"},
        {"order_id": "a7", "sku": "HOT", "qty": 1},
    ]});
    let (status, found) = server.post(window, rows).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{found}");
    let kinds: BTreeMap<String, String> = found["incidents"]
        .as_array()
        .expect("incidents")
        .iter()
        .map(|incident| {
            (
                incident["order_id"].as_str().unwrap_or_default().to_owned(),
                incident["kind"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected: BTreeMap<String, String> = [
        ("a2", "missing"),
        ("a3", "quantity"),
        ("a4", "released"),
        ("a5", "held"),
        ("a6", "phantom"),
        ("a7", "other_platform"),
    ]
    .into_iter()
    .map(|(id, kind)| (id.to_owned(), kind.to_owned()))
    .collect();
    assert_eq!(kinds, expected, "{found}");
    assert_eq!(
        (found["checked"].as_u64(), found["matched"].as_u64()),
        (Some(6), Some(1))
    );
    assert_eq!(
        found["oversold_units"], 7,
        "3 missing + 4 released: {found}"
    );

    let csv = "\u{feff}订单号,商家编码,数量,订单状态\na1,HOT,2,已付款\na2,HOT,3,已发货\n";
    let (status, from_csv) = server
        .send_raw(reqwest::Method::POST, window, csv.to_owned())
        .await;
    // send_raw says JSON: a CSV must say text/csv.
    assert_eq!(
        status,
        reqwest::StatusCode::UNPROCESSABLE_ENTITY,
        "{from_csv}"
    );
    let response = server
        .client
        .post(server.url(window))
        .header("content-type", "text/csv; charset=utf-8")
        .body(csv)
        .send()
        .await
        .expect("a reply");
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let from_csv: Value = response.json().await.expect("JSON");
    assert_eq!(from_csv["oversold_units"], 3, "a2 missing: {from_csv}");
    assert_eq!(from_csv["checked"], 2, "{from_csv}");

    let metrics = server.metrics().await;
    assert!(
        metrics
            .contains("stockpulse_channel_incidents_total{platform=\"douyin\",kind=\"missing\"} 2"),
        "{metrics}"
    );
    for refused in [
        "/api/v1/channels/douyin/reconcile?from=2026-11-25T13:00:00Z&to=2026-11-25T11:00:00Z",
        "/api/v1/channels/douyin/reconcile?from=2026-11-25T11:00:00Z",
    ] {
        let (status, body) = server.post(refused, json!({"orders": []})).await;
        assert_eq!(
            status,
            reqwest::StatusCode::UNPROCESSABLE_ENTITY,
            "{refused}: {body}"
        );
    }
    let unknown =
        json!({"orders": [{"order_id": "a1", "sku": "HOT", "qty": 2, "status": "lost at sea"}]});
    let (status, body) = server.post(window, unknown).await;
    assert_eq!(status, reqwest::StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let no_qty = server
        .client
        .post(server.url(window))
        .header("content-type", "text/csv")
        .body("订单号,商家编码\na1,HOT\n")
        .send()
        .await
        .expect("a reply");
    assert_eq!(no_qty.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}
