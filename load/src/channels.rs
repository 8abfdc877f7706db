//! `channels`: orders at a steady rate over many SKUs, each listed on three platforms, and
//! a platform receiver of its own (the generic webhook contract): how long after a sale's
//! acknowledgement each sibling listing receives a number that counts it, whether the
//! receiver's per-listing rate limit held, and what the server spent.
//!
//! The server must send its three connectors to this receiver (`--start-server` configures
//! it so; against a running server, point its `[[channels]]` at `--receiver`). A sale of
//! SKU `s` acknowledged when `k` orders of `s` had been acknowledged is counted by a
//! listing once the listing receives a quantity of at most `stock - k`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use super::client::Connection;
use super::stats::{LatencySummary, ProcessSampler, ServerUsage, Tally, table};
use super::{LoadError, Progress, refused};

/// The platforms every SKU is listed on.
pub const PLATFORMS: [&str; 3] = ["douyin", "kuaishou", "wechat"];

#[derive(Clone, Debug)]
pub struct ChannelsOptions {
    pub target: SocketAddr,
    /// Where the receiver listens (the server's connectors post here).
    pub receiver: SocketAddr,
    pub connections: u32,
    pub skus_count: u32,
    /// Orders per second, in all.
    pub rate: u32,
    pub duration: Duration,
    /// Requests a second the receiver takes per listing before answering 429.
    pub listing_limit_per_s: u32,
    /// The same orders on SKUs without listings (and a server without connectors): the
    /// baseline the cost of channel sync is measured against.
    pub baseline: bool,
    pub run_id: String,
    pub progress: Progress,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChannelsReport {
    pub skus: u32,
    pub listings: u32,
    pub seconds: f64,
    pub orders: u64,
    pub orders_per_second: f64,
    pub accepted: u64,
    pub failed: u64,
    /// Order acknowledgement.
    pub ack_latency: LatencySummary,
    /// Acknowledged sale → each sibling listing received a number counting it.
    pub sync_latency: LatencySummary,
    /// Sales some sibling listing never counted before the end.
    pub never_counted: u64,
    pub receiver_requests: u64,
    pub receiver_updates: u64,
    /// Requests the receiver answered 429 for a listing over its limit.
    pub receiver_throttled: u64,
    pub server: Option<ServerUsage>,
}

impl ChannelsReport {
    pub fn table(&self) -> String {
        let (ack, sync) = (&self.ack_latency, &self.sync_latency);
        let mut text = table(&[
            (
                "skus × platforms".to_owned(),
                format!("{} × 3 = {}", self.skus, self.listings),
            ),
            ("seconds".to_owned(), format!("{:.2}", self.seconds)),
            (
                "orders/s".to_owned(),
                format!("{:.0}", self.orders_per_second),
            ),
            ("accepted".to_owned(), self.accepted.to_string()),
            ("failed".to_owned(), self.failed.to_string()),
            (
                "ack p50 / p99".to_owned(),
                format!("{} / {} µs", ack.p50_us, ack.p99_us),
            ),
            (
                "sale → siblings p50 / p99 / max".to_owned(),
                format!(
                    "{} / {} / {} ms",
                    sync.p50_us / 1000,
                    sync.p99_us / 1000,
                    sync.max_us / 1000
                ),
            ),
            ("never counted".to_owned(), self.never_counted.to_string()),
            (
                "receiver requests".to_owned(),
                self.receiver_requests.to_string(),
            ),
            (
                "receiver updates".to_owned(),
                self.receiver_updates.to_string(),
            ),
            (
                "receiver 429s".to_owned(),
                self.receiver_throttled.to_string(),
            ),
        ]);
        if let Some(server) = &self.server {
            let _ = writeln!(
                text,
                "server: {:.0} % CPU, {:.1} µs CPU per order, {} KiB resident",
                server.cpu_percent,
                server.cpu_seconds * 1e6 / self.accepted.max(1) as f64,
                server.rss_kib
            );
        }
        text
    }
}

/// What the receiver saw: per listing, each quantity with when it arrived; per listing the
/// requests of the current second, for the limit.
#[derive(Default)]
struct Received {
    quantities: HashMap<String, Vec<(Instant, u64)>>,
    this_second: HashMap<String, (u64, u32)>,
    requests: u64,
    updates: u64,
    throttled: u64,
}

/// The receiver: applies the generic contract's updates, refusing (429) a request that
/// would take a listing over `limit` requests in a second.
async fn receive(
    listener: tokio::net::TcpListener,
    received: Arc<Mutex<Received>>,
    limit: u32,
    started: Instant,
) {
    use axum::http::StatusCode;
    let app = axum::Router::new().route(
        "/stock",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let now = Instant::now();
                let second = now.duration_since(started).as_secs();
                let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    return StatusCode::BAD_REQUEST;
                };
                let updates = value["updates"].as_array().cloned().unwrap_or_default();
                let mut seen = received.lock();
                seen.requests += 1;
                let over = updates.iter().any(|update| {
                    let listing = update["listing"].as_str().unwrap_or_default();
                    seen.this_second
                        .get(listing)
                        .is_some_and(|(at, count)| *at == second && limit <= *count)
                });
                if over {
                    seen.throttled += 1;
                    return StatusCode::TOO_MANY_REQUESTS;
                }
                for update in &updates {
                    let listing = update["listing"].as_str().unwrap_or_default().to_owned();
                    let quantity = update["quantity"].as_u64().unwrap_or(u64::MAX);
                    let slot = seen
                        .this_second
                        .entry(listing.clone())
                        .or_insert((second, 0));
                    if slot.0 != second {
                        *slot = (second, 0);
                    }
                    slot.1 += 1;
                    seen.updates += 1;
                    seen.quantities
                        .entry(listing)
                        .or_default()
                        .push((now, quantity));
                }
                StatusCode::OK
            }
        }),
    );
    let _ = axum::serve(listener, app).await;
}

fn listing_id(run_id: &str, sku: u32, platform: &str) -> String {
    format!("{run_id}-{sku}-{platform}")
}

/// Units of each SKU: nothing sells out.
const STOCK: u64 = 1_000_000_000;

async fn create_listed_skus(options: &ChannelsOptions) -> Result<(), LoadError> {
    let mut connection = Connection::connect(options.target).await?;
    for index in 0..options.skus_count {
        let listings: Vec<String> = PLATFORMS
            .iter()
            .map(|platform| {
                let id = listing_id(&options.run_id, index, platform);
                format!(r#""{platform}":"{id}""#)
            })
            .collect();
        let body = if options.baseline {
            format!(r#"{{"total":{STOCK}}}"#)
        } else {
            format!(
                r#"{{"total":{STOCK},"listings":{{{}}}}}"#,
                listings.join(",")
            )
        };
        let path = format!("/api/v1/skus/{}-{index}", options.run_id);
        let response = connection.request("PUT", &path, body.as_bytes()).await?;
        if !response.is_success() {
            return Err(refused(format!("creating {path}"), &response));
        }
    }
    Ok(())
}

/// One acknowledged sale: its SKU, when, and how many of the SKU's orders were
/// acknowledged then (this one included).
struct Sale {
    sku: u32,
    platform: usize,
    at: Instant,
    count: u64,
}

pub async fn channels(
    options: ChannelsOptions,
    sampler: Option<ProcessSampler>,
) -> Result<ChannelsReport, LoadError> {
    let started = Instant::now();
    let received = Arc::new(Mutex::new(Received::default()));
    let listener = tokio::net::TcpListener::bind(options.receiver)
        .await
        .map_err(|error| LoadError::Worker(format!("receiver on {}: {error}", options.receiver)))?;
    tokio::spawn(receive(
        listener,
        received.clone(),
        options.listing_limit_per_s,
        started,
    ));
    create_listed_skus(&options).await?;
    let listings = options.skus_count * PLATFORMS.len() as u32;
    if !options.baseline {
        first_sync(&received, listings).await?;
    }
    let counts: Arc<Vec<AtomicU64>> =
        Arc::new((0..options.skus_count).map(|_| AtomicU64::new(0)).collect());
    let placed = Arc::new(AtomicU64::new(0));
    let progress = options.progress.spawn("orders", {
        let placed = placed.clone();
        move || placed.load(Ordering::Relaxed)
    });
    let usage_from = sampler.as_ref().map(ProcessSampler::restarted);
    let run_started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..options.connections {
        let (options, counts, placed) = (options.clone(), counts.clone(), placed.clone());
        workers.push(tokio::spawn(async move {
            drive(worker, options, counts, placed).await
        }));
    }
    let mut tally = Tally::default();
    let mut sales = Vec::new();
    for worker in workers {
        let (worker_tally, worker_sales) = worker
            .await
            .map_err(|error| LoadError::Worker(error.to_string()))??;
        tally.merge(worker_tally);
        sales.extend(worker_sales);
    }
    let seconds = run_started.elapsed().as_secs_f64();
    let server = usage_from.map(|sampler| sampler.usage());
    progress.abort();
    // Let the last updates arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = received.lock();
    let (sync, never_counted) = if options.baseline {
        (Tally::default().latency_summary(), 0)
    } else {
        sync_latencies(&options, &sales, &seen)
    };
    Ok(ChannelsReport {
        skus: options.skus_count,
        listings,
        seconds,
        orders: tally.orders(),
        orders_per_second: tally.orders() as f64 / seconds,
        accepted: tally.accepted,
        failed: tally.failed,
        ack_latency: tally.latency_summary(),
        sync_latency: sync,
        never_counted,
        receiver_requests: seen.requests,
        receiver_updates: seen.updates,
        receiver_throttled: seen.throttled,
        server,
    })
}

/// Waits until every listing was synced in full once: the run measures what follows.
async fn first_sync(received: &Mutex<Received>, listings: u32) -> Result<(), LoadError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while (received.lock().quantities.len() as u32) < listings {
        if deadline < Instant::now() {
            return Err(LoadError::Answer(
                "the listings' first sync did not arrive in 60 s".to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One connection placing its share of the rate, paced; what it tallied and sold.
async fn drive(
    worker: u32,
    options: ChannelsOptions,
    counts: Arc<Vec<AtomicU64>>,
    placed: Arc<AtomicU64>,
) -> Result<(Tally, Vec<Sale>), LoadError> {
    let mut connection = Connection::connect(options.target).await?;
    let per_worker = f64::from(options.rate) / f64::from(options.connections.max(1));
    let gap = Duration::from_secs_f64(1.0 / per_worker.max(0.001));
    let mut tally = Tally::default();
    let mut sales = Vec::new();
    let end = Instant::now() + options.duration;
    let mut next = Instant::now();
    let mut serial = 0u64;
    while Instant::now() < end {
        tokio::time::sleep_until(next).await;
        next += gap;
        serial += 1;
        let sku = fastrand::u32(..options.skus_count);
        let platform = fastrand::usize(..PLATFORMS.len());
        let body = format!(
            r#"{{"order_id":"{}-w{worker}-{serial}","sku":"{}-{sku}","qty":1,"platform":"{}","paid":true}}"#,
            options.run_id, options.run_id, PLATFORMS[platform]
        );
        let sent = Instant::now();
        match connection
            .request("POST", "/api/v1/orders", body.as_bytes())
            .await
        {
            Ok(response) if response.is_success() => {
                let at = Instant::now();
                tally.accepted += 1;
                tally.latency(at - sent);
                let count = counts[sku as usize].fetch_add(1, Ordering::AcqRel) + 1;
                sales.push(Sale {
                    sku,
                    platform,
                    at,
                    count,
                });
            }
            Ok(response) => tally.refused(&super::client::error_code(&response)),
            Err(_) => {
                tally.failed += 1;
                connection = Connection::connect(options.target).await?;
            }
        }
        placed.fetch_add(1, Ordering::Relaxed);
    }
    Ok((tally, sales))
}

/// For each sale and each sibling listing: when the listing first received a quantity
/// counting it. The latencies, and how many sales some sibling never counted.
fn sync_latencies(
    options: &ChannelsOptions,
    sales: &[Sale],
    seen: &Received,
) -> (LatencySummary, u64) {
    let mut tally = Tally::default();
    let mut never = 0;
    for sale in sales {
        let wanted = STOCK - sale.count;
        let mut counted = true;
        for (index, platform) in PLATFORMS.iter().enumerate() {
            if index == sale.platform {
                continue;
            }
            let listing = listing_id(&options.run_id, sale.sku, platform);
            let arrived = seen.quantities.get(&listing).and_then(|quantities| {
                // Quantities only go down in this run: the first at most `wanted` counts
                // the sale (it may arrive before the client read its acknowledgement).
                quantities
                    .iter()
                    .find(|(_, quantity)| *quantity <= wanted)
                    .map(|(at, _)| *at)
            });
            match arrived {
                Some(at) => tally.latency(at.saturating_duration_since(sale.at)),
                None => counted = false,
            }
        }
        if !counted {
            never += 1;
        }
    }
    (tally.latency_summary(), never)
}
