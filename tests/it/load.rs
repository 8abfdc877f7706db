//! Smoke runs of every load-generator scenario, small enough for `cargo test`: they keep the
//! tool working; the figures come from running it by hand (see docs/BENCHMARKS.md).

use std::time::Duration;

use stockpulse_load::{
    FanoutOptions, IngestMode, IngestOptions, IngestReport, Progress, ShowOptions, fanout, ingest,
    show,
};

use crate::support::TestServer;

/// Units locked across every SKU of the server.
async fn total_locked(server: &TestServer) -> u64 {
    let (_, list) = server.get("/api/v1/skus").await;
    list["skus"]
        .as_array()
        .expect("skus")
        .iter()
        .map(|sku| sku["locked"].as_u64().expect("locked"))
        .sum()
}

/// Checks that 2,000 orders were each accepted or refused for stock, and that what the tool
/// counts as accepted is exactly what the server holds locked; returns the refusals.
async fn check_against_the_server(server: &TestServer, report: &IngestReport) -> u64 {
    assert_eq!(report.orders, 2_000);
    let refused = report
        .refused
        .get("insufficient_stock")
        .copied()
        .unwrap_or(0);
    assert_eq!(report.accepted + refused, 2_000, "{:?}", report.refused);
    assert_eq!(total_locked(server).await, report.accepted);
    refused
}

fn ingest_options(server: &TestServer, mode: IngestMode) -> IngestOptions {
    IngestOptions {
        target: server.address,
        connections: 4,
        mode,
        skus_count: 20,
        hot_share: 0.5,
        stock_per_sku: 1_000_000,
        duration: None,
        orders_max: Some(2_000),
        run_id: "smoke".to_owned(),
        progress: Progress::Quiet,
    }
}

#[tokio::test]
async fn ingest_single_orders_accounts_for_every_order() {
    // Goal: single-order ingest places exactly the orders asked for and the server agrees.
    // Method: 2,000 orders over 4 connections; compare the report with the server's SKUs.
    let server = TestServer::start().await;
    let report = ingest(ingest_options(&server, IngestMode::Single), None)
        .await
        .expect("the run completes");
    assert_eq!(report.orders, 2_000);
    assert_eq!(report.accepted, 2_000);
    assert_eq!(report.failed, 0);
    assert_eq!(report.ack_latency.samples, 2_000);
    assert!(report.ack_latency.p50_us <= report.ack_latency.p99_us);
    let locked = total_locked(&server).await;
    assert_eq!(locked, 2_000);
    assert_eq!(
        server.stock("smoke-sku-0").await["locked"]
            .as_u64()
            .map(|locked| 900 < locked),
        Some(true)
    );
    server.stop().await;
}

#[tokio::test]
async fn ingest_over_the_websocket_accounts_for_every_order() {
    // Goal: pipelined WebSocket ingest counts what the server did.
    // Method: 2,000 orders over 2 connections, 64 in flight, against 20 SKUs of 50 units.
    let server = TestServer::start().await;
    let options = IngestOptions {
        connections: 2,
        stock_per_sku: 50,
        ..ingest_options(&server, IngestMode::WebSocket { depth: 64 })
    };
    let report = ingest(options, None).await.expect("the run completes");
    assert_eq!(report.ack_latency.samples, 2_000);
    check_against_the_server(&server, &report).await;
    server.stop().await;
}

#[tokio::test]
async fn ingest_batches_counts_refusals_by_code() {
    // Goal: batched ingest reports accepted and refused orders by the server's codes.
    // Method: 2,000 orders in batches of 100 against 20 SKUs of 50 units each; what the tool
    // counts as accepted must be exactly what the server holds locked.
    let server = TestServer::start().await;
    let options = IngestOptions {
        stock_per_sku: 50,
        ..ingest_options(&server, IngestMode::Batch { batch_size: 100 })
    };
    let report = ingest(options, None).await.expect("the run completes");
    assert_eq!(report.ack_latency.samples, 20);
    let refused = check_against_the_server(&server, &report).await;
    // Half the orders aim at the hot SKU, so most of its 950 extra orders are refused.
    assert!(900 < refused, "{refused}");
    server.stop().await;
}

#[tokio::test]
async fn a_short_show_balances() {
    // Goal: the show scenario runs every kind of step and its end-of-show check passes.
    // Method: half an hour of show at 900× (two seconds) on a real-time server, with 1 s
    // locks so abandoned orders expire during the run.
    let server = TestServer::start_real_time().await;
    let options = ShowOptions {
        target: server.address,
        skus_count: 3,
        stock_per_sku: 60,
        show_length: Duration::from_secs(30 * 60),
        speed: 900.0,
        call_interval: Duration::from_secs(5 * 60),
        burst_orders: 40,
        trickle_per_minute: 4,
        lock_ttl_s: 1,
        connections: 4,
        seed: 7,
        run_id: "smoke".to_owned(),
        progress: Progress::Quiet,
    };
    let report = show(options, None).await.expect("the show completes");
    assert!(report.balanced, "{}", report.table());
    let counts = &report.counts;
    assert!(0 < counts.paid && 0 < counts.cancelled && 0 < counts.abandoned);
    assert!(
        0 < counts
            .refused
            .get("insufficient_stock")
            .copied()
            .unwrap_or(0)
    );
    assert_eq!(report.listings.len(), 3);
    server.stop().await;
}

#[tokio::test]
async fn fanout_delivers_every_change_to_every_subscriber() {
    // Goal: the fan-out scenario runs and sees every change on every subscriber, in order.
    // Method: 20 subscribers, 100 changes a second for one second.
    let server = TestServer::start().await;
    let options = FanoutOptions {
        target: server.address,
        subscribers: 20,
        rate: 100,
        duration: Duration::from_secs(1),
        run_id: "smoke".to_owned(),
        progress: Progress::Quiet,
    };
    let report = fanout(options, None).await.expect("the run completes");
    assert!(50 < report.changes, "{}", report.table());
    assert_eq!(report.deliveries, report.changes * 20, "{}", report.table());
    assert_eq!(report.missing, 0);
    assert_eq!(report.out_of_order, 0);
    assert_eq!(report.order_to_screen.samples, report.deliveries);
    server.stop().await;
}
