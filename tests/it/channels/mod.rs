//! Channel sync against a stand-in platform (`platform.rs`): every listing of a SKU kept at
//! what the pool can honour, within its quota, coalesced, signed, versioned and keyed, with
//! the platform's own sales not counted twice, halts dropping listings to 0, and a platform
//! that throttles or fails caught up once it answers.

mod platform;

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
        max_requests_per_s: 50,
        max_updates_per_request: 100,
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
        json!({"allocation": {"mode": "exclusive", "shares": {"douyin": 0.6}}}),
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
