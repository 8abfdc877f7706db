//! `fanout`: many WebSocket subscribers on one SKU while orders change it at a steady rate.
//! Measures order-to-screen latency (from sending the order to each subscriber receiving
//! its change), completeness (every sequence number seen by every subscriber) and the worst
//! subscriber's lag.
//!
//! One connection places the orders one after the other, so the n-th change of the SKU is
//! the n-th order, and its send time is known.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::client::Connection;
use super::stats::{LatencySummary, ProcessSampler, ServerUsage, Tally, table};
use super::{LoadError, Progress, create_skus, subscriber};

#[derive(Clone, Debug)]
pub struct FanoutOptions {
    pub target: SocketAddr,
    pub subscribers: u32,
    /// Orders (so changes) per second.
    pub rate: u32,
    pub duration: Duration,
    pub run_id: String,
    pub progress: Progress,
}

#[derive(Clone, Debug, Serialize)]
pub struct FanoutReport {
    pub subscribers: u32,
    pub changes: u64,
    pub changes_per_second: f64,
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    /// Deliveries expected (changes × subscribers) that never arrived.
    pub missing: u64,
    /// Sequence numbers that arrived out of order or twice.
    pub out_of_order: u64,
    pub resyncs: u64,
    pub order_to_screen: LatencySummary,
    /// The slowest subscriber's p99.
    pub worst_subscriber_p99_us: u64,
    pub server: Option<ServerUsage>,
}

impl FanoutReport {
    pub fn table(&self) -> String {
        let latency = &self.order_to_screen;
        let mut rows = vec![
            ("subscribers".to_owned(), self.subscribers.to_string()),
            (
                "changes (per second)".to_owned(),
                format!("{} ({:.0})", self.changes, self.changes_per_second),
            ),
            (
                "deliveries (per second)".to_owned(),
                format!("{} ({:.0})", self.deliveries, self.deliveries_per_second),
            ),
            ("missing".to_owned(), self.missing.to_string()),
            ("out of order".to_owned(), self.out_of_order.to_string()),
            ("resyncs".to_owned(), self.resyncs.to_string()),
            (
                "order to screen p50/p99/p999/max".to_owned(),
                format!(
                    "{} / {} / {} / {} µs",
                    latency.p50_us, latency.p99_us, latency.p999_us, latency.max_us
                ),
            ),
            (
                "worst subscriber p99".to_owned(),
                format!("{} µs", self.worst_subscriber_p99_us),
            ),
        ];
        if let Some(server) = &self.server {
            rows.push((
                "server cpu / memory".to_owned(),
                format!("{:.0} % / {} KiB", server.cpu_percent, server.rss_kib),
            ));
        }
        table(&rows)
    }
}

/// What one subscriber saw.
struct Seen {
    tally: Tally,
    deliveries: u64,
    out_of_order: u64,
    resyncs: u64,
}

/// The `seq` of each message in a JSON frame (one object or an array), read without
/// parsing the whole frame: the tool must not spend the CPU the server needs.
fn sequences(frame: &str, found: &mut Vec<(u64, bool)>) {
    let mut rest = frame;
    while let Some(start) = rest.find("\"type\":\"") {
        rest = &rest[start + 8..];
        let resync = rest.starts_with("resync") || rest.starts_with("snapshot");
        let Some(seq_at) = rest.find("\"seq\":") else {
            return;
        };
        rest = &rest[seq_at + 6..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(seq) = digits.parse() {
            found.push((seq, resync));
        }
    }
}

pub async fn fanout(
    options: FanoutOptions,
    server: Option<ProcessSampler>,
) -> Result<FanoutReport, LoadError> {
    let sku = format!("{}-fanout", options.run_id);
    create_skus(options.target, std::slice::from_ref(&sku), 1_000_000_000).await?;
    // Send times of the orders, by the sequence number their change will carry.
    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let mut subscribers = Vec::new();
    for _ in 0..options.subscribers {
        subscribers.push(subscriber(options.target, &sku).await?);
    }
    let server = server.map(|sampler| sampler.restarted());
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut readers = Vec::new();
    for mut socket in subscribers {
        let sent_at = sent_at.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = Seen {
                tally: Tally::default(),
                deliveries: 0,
                out_of_order: 0,
                resyncs: 0,
            };
            let mut last: Option<u64> = None;
            let mut found = Vec::new();
            let linger = deadline + Duration::from_secs(2);
            while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(linger, socket.next()).await {
                let Message::Text(text) = frame else {
                    continue;
                };
                let now = Instant::now();
                found.clear();
                sequences(text.as_str(), &mut found);
                for (seq, fresh_state) in found.drain(..) {
                    if fresh_state {
                        if last.is_some() {
                            seen.resyncs += 1;
                        }
                        last = Some(seq);
                        continue;
                    }
                    match last {
                        Some(previous) if previous + 1 == seq => {}
                        _ => seen.out_of_order += 1,
                    }
                    last = Some(seq);
                    seen.deliveries += 1;
                    if let Some(sent) = sent_at.lock().get(seq as usize - 1) {
                        seen.tally.latency(now.saturating_duration_since(*sent));
                    }
                }
            }
            seen
        }));
    }
    let progress = options.progress.spawn("changes", {
        let sent_at = sent_at.clone();
        move || sent_at.lock().len() as u64
    });
    // Subscribers got their snapshots at sequence 0; orders now make changes 1, 2, ...
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut orders = Connection::connect(options.target).await?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(options.rate.max(1)),
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut changes = 0u64;
    while Instant::now() < deadline {
        ticker.tick().await;
        let body = format!(
            r#"{{"order_id":"{sku}-{changes}","sku":"{sku}","qty":1,"platform":"douyin"}}"#
        );
        sent_at.lock().push(Instant::now());
        let response = orders
            .request("POST", "/api/v1/orders", body.as_bytes())
            .await?;
        if !response.is_success() {
            return Err(super::refused("placing an order".to_owned(), &response));
        }
        changes += 1;
    }
    let changes_seconds = started.elapsed().as_secs_f64();
    let mut tally = Tally::default();
    let mut deliveries = 0;
    let mut out_of_order = 0;
    let mut resyncs = 0;
    let mut worst = 0;
    for reader in readers {
        let seen = reader
            .await
            .map_err(|error| LoadError::Worker(error.to_string()))?;
        deliveries += seen.deliveries;
        out_of_order += seen.out_of_order;
        resyncs += seen.resyncs;
        worst = worst.max(seen.tally.latency_summary().p99_us);
        tally.merge(seen.tally);
    }
    progress.abort();
    let expected = changes * u64::from(options.subscribers);
    Ok(FanoutReport {
        subscribers: options.subscribers,
        changes,
        changes_per_second: changes as f64 / changes_seconds,
        deliveries,
        deliveries_per_second: deliveries as f64 / changes_seconds,
        missing: expected.saturating_sub(deliveries),
        out_of_order,
        resyncs,
        order_to_screen: tally.latency_summary(),
        worst_subscriber_p99_us: worst,
        server: server.map(|sampler| sampler.usage()),
    })
}
