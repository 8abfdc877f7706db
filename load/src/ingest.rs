//! `ingest`: many connections placing orders as fast as the server answers, one order per
//! request or many per batch, with a share of them on one hot SKU.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::client::{Connection, error_code};
use super::stats::{LatencySummary, ProcessSampler, ServerUsage, Tally, table};
use super::{LoadError, Progress, create_skus};

/// How orders travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IngestMode {
    /// One order per `POST /api/v1/orders`.
    Single,
    /// `batch_size` orders per `POST /api/v1/orders/batch`.
    Batch { batch_size: u32 },
    /// Order commands over `/ws`, up to `depth` in flight per connection.
    WebSocket { depth: u32 },
}

#[derive(Clone, Debug)]
pub struct IngestOptions {
    pub target: SocketAddr,
    pub connections: u32,
    pub mode: IngestMode,
    /// SKUs the orders spread over.
    pub skus_count: u32,
    /// Share of orders on the first SKU, the hot one; the rest spread evenly.
    pub hot_share: f64,
    /// Units of each SKU: enough that nothing sells out unless the run is about selling out.
    pub stock_per_sku: u64,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many orders, whichever comes first.
    pub orders_max: Option<u64>,
    /// Prefix of order and SKU ids, so runs against one server never collide.
    pub run_id: String,
    pub progress: Progress,
}

#[derive(Clone, Debug, Serialize)]
pub struct IngestReport {
    pub mode: IngestMode,
    pub connections: u32,
    pub skus: u32,
    pub hot_share: f64,
    pub seconds: f64,
    pub orders: u64,
    pub orders_per_second: f64,
    pub accepted: u64,
    pub refused: std::collections::BTreeMap<String, u64>,
    pub failed: u64,
    /// Per request: one order, or one batch.
    pub ack_latency: LatencySummary,
    pub server: Option<ServerUsage>,
}

impl IngestReport {
    pub fn table(&self) -> String {
        let latency = &self.ack_latency;
        let mut rows = vec![
            ("mode".to_owned(), format!("{:?}", self.mode)),
            ("connections".to_owned(), self.connections.to_string()),
            ("seconds".to_owned(), format!("{:.2}", self.seconds)),
            ("orders".to_owned(), self.orders.to_string()),
            (
                "orders/s".to_owned(),
                format!("{:.0}", self.orders_per_second),
            ),
            ("accepted".to_owned(), self.accepted.to_string()),
        ];
        for (code, count) in &self.refused {
            rows.push((format!("refused {code}"), count.to_string()));
        }
        rows.push(("failed".to_owned(), self.failed.to_string()));
        rows.push((
            "ack latency p50/p99/p999/max".to_owned(),
            format!(
                "{} / {} / {} / {} µs",
                latency.p50_us, latency.p99_us, latency.p999_us, latency.max_us
            ),
        ));
        if let Some(server) = &self.server {
            rows.push((
                "server cpu".to_owned(),
                format!("{:.0} % of a core", server.cpu_percent),
            ));
            rows.push((
                "server cpu per order".to_owned(),
                format!("{:.2} µs", server.cpu_us_per(self.orders)),
            ));
            rows.push((
                "server memory (rss / peak)".to_owned(),
                format!("{} / {} KiB", server.rss_kib, server.rss_peak_kib),
            ));
        }
        table(&rows)
    }
}

/// Shared by the workers: the next order number and the running counts for progress.
struct Shared {
    options: IngestOptions,
    next_order: AtomicU64,
    completed: AtomicU64,
    deadline: Option<Instant>,
}

impl Shared {
    /// Claims `count` order numbers; `None` when the run is over.
    fn claim(&self, count: u64) -> Option<u64> {
        if self
            .deadline
            .is_some_and(|deadline| deadline <= Instant::now())
        {
            return None;
        }
        let first = self.next_order.fetch_add(count, Ordering::Relaxed);
        match self.options.orders_max {
            Some(max) if max <= first => None,
            _ => Some(first),
        }
    }

    fn sku_of(&self, order: u64) -> u64 {
        // A multiplicative hash spreads consecutive orders; the hot share goes to SKU 0.
        let spread = order.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let unit = (spread >> 11) as f64 / (1u64 << 53) as f64;
        if unit < self.options.hot_share {
            0
        } else {
            (spread >> 32) % u64::from(self.options.skus_count.max(1))
        }
    }

    fn write_order(&self, body: &mut String, order: u64) {
        let run = &self.options.run_id;
        let _ = write!(
            body,
            r#"{{"order_id":"{run}-{order}","sku":"{run}-sku-{}","qty":1,"platform":"{}"}}"#,
            self.sku_of(order),
            ["douyin", "kuaishou", "taobao"][(order % 3) as usize],
        );
    }
}

/// Runs the ingest workload and reports what it measured.
pub async fn ingest(
    options: IngestOptions,
    server: Option<ProcessSampler>,
) -> Result<IngestReport, LoadError> {
    let sku_ids: Vec<String> = (0..options.skus_count)
        .map(|index| format!("{}-sku-{index}", options.run_id))
        .collect();
    create_skus(options.target, &sku_ids, options.stock_per_sku).await?;
    let server = server.map(|sampler| sampler.restarted());
    let started = Instant::now();
    let shared = Arc::new(Shared {
        deadline: options.duration.map(|duration| started + duration),
        options: options.clone(),
        next_order: AtomicU64::new(0),
        completed: AtomicU64::new(0),
    });
    let mut workers = Vec::new();
    for _ in 0..options.connections {
        let shared = shared.clone();
        if let IngestMode::WebSocket { depth } = options.mode {
            let (socket, _) =
                tokio_tungstenite::connect_async(format!("ws://{}/ws", options.target))
                    .await
                    .map_err(|error| LoadError::Answer(format!("websocket: {error}")))?;
            workers.push(tokio::spawn(async move {
                pipelined(socket, &shared, depth.max(1) as usize).await
            }));
            continue;
        }
        let connection = Connection::connect(options.target).await?;
        workers.push(tokio::spawn(async move {
            match shared.options.mode {
                IngestMode::Batch { batch_size } => {
                    batches(connection, &shared, u64::from(batch_size.max(1))).await
                }
                IngestMode::Single | IngestMode::WebSocket { .. } => {
                    single_orders(connection, &shared).await
                }
            }
        }));
    }
    let progress = options.progress.spawn("orders", {
        let shared = shared.clone();
        move || shared.completed.load(Ordering::Relaxed)
    });
    let mut tally = Tally::default();
    for worker in workers {
        tally.merge(
            worker
                .await
                .map_err(|error| LoadError::Worker(error.to_string()))?,
        );
    }
    progress.abort();
    let seconds = started.elapsed().as_secs_f64();
    let orders = tally.orders();
    Ok(IngestReport {
        mode: options.mode,
        connections: options.connections,
        skus: options.skus_count,
        hot_share: options.hot_share,
        seconds,
        orders,
        orders_per_second: orders as f64 / seconds.max(1e-9),
        accepted: tally.accepted,
        refused: tally.refused.clone(),
        failed: tally.failed,
        ack_latency: tally.latency_summary(),
        server: server.map(|sampler| sampler.usage()),
    })
}

async fn single_orders(mut connection: Connection, shared: &Shared) -> Tally {
    let mut tally = Tally::default();
    let mut body = String::with_capacity(256);
    while let Some(order) = shared.claim(1) {
        body.clear();
        shared.write_order(&mut body, order);
        let sent = Instant::now();
        match connection
            .request("POST", "/api/v1/orders", body.as_bytes())
            .await
        {
            Ok(response) => {
                tally.latency(sent.elapsed());
                if response.is_success() {
                    tally.accepted += 1;
                } else {
                    tally.refused(&error_code(&response));
                }
            }
            Err(_) => {
                tally.failed += 1;
                return tally;
            }
        }
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
    tally
}

#[derive(Deserialize)]
struct BatchAnswer {
    results: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    status: u16,
    error: Option<BatchError>,
}

#[derive(Deserialize)]
struct BatchError {
    code: String,
}

async fn batches(mut connection: Connection, shared: &Shared, batch_size: u64) -> Tally {
    let mut tally = Tally::default();
    let mut body = String::with_capacity(128 * batch_size as usize);
    while let Some(first) = shared.claim(batch_size) {
        let last = match shared.options.orders_max {
            Some(max) => (first + batch_size).min(max),
            None => first + batch_size,
        };
        body.clear();
        body.push_str(r#"{"ops":["#);
        for order in first..last {
            if first < order {
                body.push(',');
            }
            body.push_str(r#"{"op":"reserve","#);
            let before = body.len();
            shared.write_order(&mut body, order);
            // Splice the order's fields into the op object: drop the order's opening brace.
            body.replace_range(before..before + 1, "");
        }
        body.push_str("]}");
        let sent = Instant::now();
        let answer = match connection
            .request("POST", "/api/v1/orders/batch", body.as_bytes())
            .await
        {
            Ok(response) if response.is_success() => {
                serde_json::from_slice::<BatchAnswer>(&response.body).ok()
            }
            Ok(_) | Err(_) => None,
        };
        let Some(answer) = answer else {
            tally.failed += last - first;
            return tally;
        };
        tally.latency(sent.elapsed());
        for item in answer.results {
            match item.error {
                None if (200..300).contains(&item.status) => tally.accepted += 1,
                None => tally.refused(&format!("http_{}", item.status)),
                Some(error) => tally.refused(&error.code),
            }
        }
        shared.completed.fetch_add(last - first, Ordering::Relaxed);
    }
    tally
}

/// Order commands over one WebSocket, `depth` in flight: each reply lets the next one go.
/// Replies come back in command order, so a queue of send times gives each its latency.
async fn pipelined(mut socket: super::Socket, shared: &Shared, depth: usize) -> Tally {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let mut tally = Tally::default();
    let mut in_flight: std::collections::VecDeque<Instant> = std::collections::VecDeque::new();
    let mut body = String::with_capacity(256);
    let mut exhausted = false;
    loop {
        while !exhausted && in_flight.len() < depth {
            let Some(order) = shared.claim(1) else {
                exhausted = true;
                break;
            };
            body.clear();
            body.push_str(r#"{"op":"reserve","id":"c","#);
            let before = body.len();
            shared.write_order(&mut body, order);
            body.replace_range(before..before + 1, "");
            in_flight.push_back(Instant::now());
            if socket
                .feed(Message::Text(body.clone().into()))
                .await
                .is_err()
            {
                tally.failed += in_flight.len() as u64;
                return tally;
            }
        }
        if socket.flush().await.is_err() || (exhausted && in_flight.is_empty()) {
            return tally;
        }
        let frame = match socket.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            _ => {
                tally.failed += in_flight.len() as u64;
                return tally;
            }
        };
        let now = Instant::now();
        let mut rest = frame.as_str();
        while let Some(at) = rest.find("\"status\":") {
            rest = &rest[at + 9..];
            // A reply's own status is a number; the order inside it has a status word.
            if !rest.starts_with(|first: char| first.is_ascii_digit()) {
                continue;
            }
            let status: u16 = rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap_or(0);
            if let Some(sent) = in_flight.pop_front() {
                tally.latency(now.saturating_duration_since(sent));
            }
            if (200..300).contains(&status) {
                tally.accepted += 1;
            } else {
                let code = rest
                    .find("\"code\":\"")
                    .map(|at| &rest[at + 8..])
                    .and_then(|code| code.split('"').next())
                    .unwrap_or("unknown");
                tally.refused(code);
            }
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
