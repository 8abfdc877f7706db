//! `fanout`: many WebSocket subscribers on one SKU while orders change it at a steady rate.
//! Measures order-to-screen latency (from sending the order to each subscriber receiving
//! its change), completeness (every sequence number seen by every subscriber) and the worst
//! subscriber's lag.
//!
//! One WebSocket pipelines the orders, so the n-th change of the SKU is the n-th order, and
//! its send time is known.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

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
    /// The load generator's own CPU (its readers, mostly): on one machine it competes
    /// with the server's.
    pub load: Option<ServerUsage>,
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
            rows.push((
                "server cpu per delivery".to_owned(),
                format!("{:.3} µs", server.cpu_us_per(self.deliveries)),
            ));
        }
        if let Some(load) = &self.load {
            rows.push((
                "load generator cpu, per delivery".to_owned(),
                format!(
                    "{:.0} % of a core, {:.3} µs",
                    load.cpu_percent,
                    load.cpu_us_per(self.deliveries)
                ),
            ));
        }
        table(&rows)
    }
}

/// When each order was sent, written by the one order connection before it sends.
struct SendTimes {
    nanos: Box<[AtomicU64]>,
    /// Orders recorded so far.
    count: AtomicU64,
}

impl SendTimes {
    fn record(&self, epoch: Instant, index: u64) {
        let nanos = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos[index as usize].store(nanos, Ordering::Release);
        self.count.store(index + 1, Ordering::Release);
    }

    /// The send time of the order that made change `seq` (1-based).
    fn get(&self, epoch: Instant, seq: u64) -> Option<Instant> {
        if seq == 0 || self.count.load(Ordering::Acquire) < seq {
            return None;
        }
        let nanos = self.nanos.get(seq as usize - 1)?.load(Ordering::Acquire);
        Some(epoch + Duration::from_nanos(nanos))
    }
}

/// What one subscriber saw.
struct Seen {
    tally: Tally,
    deliveries: u64,
    out_of_order: u64,
    resyncs: u64,
}

/// Finds the fields the readers look for, built once: the tool must not spend the CPU the
/// server needs.
struct Fields {
    kind: memchr::memmem::Finder<'static>,
    seq: memchr::memmem::Finder<'static>,
}

impl Fields {
    fn new() -> Fields {
        Fields {
            kind: memchr::memmem::Finder::new(b"\"type\":\""),
            seq: memchr::memmem::Finder::new(b"\"seq\":"),
        }
    }

    /// The `seq` of each message in a JSON frame (one object or an array), and whether it
    /// is a fresh state (snapshot or resync), read without parsing the whole frame.
    fn sequences(&self, frame: &[u8], found: &mut Vec<(u64, bool)>) {
        let mut rest = frame;
        while let Some(start) = self.kind.find(rest) {
            rest = &rest[start + 8..];
            let fresh = rest.starts_with(b"resync") || rest.starts_with(b"snapshot");
            let Some(seq_at) = self.seq.find(rest) else {
                return;
            };
            rest = &rest[seq_at + 6..];
            let digits = rest.iter().take_while(|byte| byte.is_ascii_digit()).count();
            let seq = rest[..digits]
                .iter()
                .fold(0u64, |value, digit| value * 10 + u64::from(digit - b'0'));
            if 0 < digits {
                found.push((seq, fresh));
            }
        }
    }
}

pub async fn fanout(
    options: FanoutOptions,
    server: Option<ProcessSampler>,
) -> Result<FanoutReport, LoadError> {
    let sku = format!("{}-fanout", options.run_id);
    create_skus(options.target, std::slice::from_ref(&sku), 1_000_000_000).await?;
    // Send times of the orders (nanoseconds after `epoch`), by the sequence number their
    // change will carry, read by every subscriber without a lock.
    let epoch = Instant::now();
    let capacity = (f64::from(options.rate) * options.duration.as_secs_f64() * 1.1) as usize + 64;
    let sent_at: Arc<SendTimes> = Arc::new(SendTimes {
        nanos: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
        count: AtomicU64::new(0),
    });
    let mut subscribers = Vec::new();
    for _ in 0..options.subscribers {
        subscribers.push(subscriber(options.target, &sku).await?);
    }
    let server = server.map(|sampler| sampler.restarted());
    let load = ProcessSampler::own();
    let started = Instant::now();
    let deadline = started + options.duration;
    let mut readers = Vec::new();
    for mut socket in subscribers {
        let sent_at = sent_at.clone();
        readers.push(tokio::spawn(async move {
            let mut seen = Seen {
                tally: Tally::coarse(),
                deliveries: 0,
                out_of_order: 0,
                resyncs: 0,
            };
            let mut last: Option<u64> = None;
            let mut base: Option<u64> = None;
            let mut found = Vec::new();
            let fields = Fields::new();
            // One timer for the whole run, not one per frame.
            let linger = tokio::time::sleep_until(deadline + Duration::from_secs(2));
            tokio::pin!(linger);
            loop {
                let frame = tokio::select! {
                    biased;
                    frame = socket.next() => frame,
                    () = &mut linger => break,
                };
                let Some(Ok(frame)) = frame else {
                    break;
                };
                let Message::Text(text) = frame else {
                    continue;
                };
                let now = Instant::now();
                found.clear();
                fields.sequences(text.as_bytes(), &mut found);
                for (seq, fresh_state) in found.drain(..) {
                    if fresh_state {
                        if last.is_some() {
                            seen.resyncs += 1;
                        }
                        // A SKU topic's sequence is the SKU's version: the first snapshot
                        // shows the version before the first order.
                        base.get_or_insert(seq);
                        last = Some(seq);
                        continue;
                    }
                    match last {
                        Some(previous) if previous + 1 == seq => {}
                        _ => seen.out_of_order += 1,
                    }
                    last = Some(seq);
                    seen.deliveries += 1;
                    let change = seq.saturating_sub(base.unwrap_or(0));
                    if let Some(sent) = sent_at.get(epoch, change) {
                        seen.tally.latency(now.saturating_duration_since(sent));
                    }
                }
            }
            seen
        }));
    }
    let progress = options.progress.spawn("changes", {
        let sent_at = sent_at.clone();
        move || sent_at.count.load(Ordering::Acquire)
    });
    // Subscribers got their snapshots at the SKU's version; orders now make changes 1, 2, ...
    // after it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One WebSocket places the orders without waiting for answers, so the rate holds however
    // long a sync takes, and the server applies them in the order they were sent.
    let (orders, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", options.target))
        .await
        .map_err(|error| LoadError::Answer(format!("websocket: {error}")))?;
    let (mut orders, mut answers) = orders.split();
    let refusals = tokio::spawn(async move {
        let mut refused = 0u64;
        while let Some(Ok(answer)) = answers.next().await {
            if let Message::Text(text) = answer {
                refused += text.matches("\"error\"").count() as u64;
            }
        }
        refused
    });
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(
        1.0 / f64::from(options.rate.max(1)),
    ));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut changes = 0u64;
    while Instant::now() < deadline && (changes as usize) < sent_at.nanos.len() {
        ticker.tick().await;
        let command = format!(
            r#"{{"op":"reserve","id":"{changes}","order_id":"{sku}-{changes}","sku":"{sku}","qty":1,"platform":"douyin"}}"#
        );
        sent_at.record(epoch, changes);
        orders
            .send(Message::Text(command.into()))
            .await
            .map_err(|error| LoadError::Answer(format!("websocket: {error}")))?;
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
    let _ = orders.close().await;
    let refused = refusals.await.unwrap_or(0);
    if 0 < refused {
        return Err(LoadError::Answer(format!(
            "the server refused {refused} orders"
        )));
    }
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
        load: load.map(|sampler| sampler.usage()),
    })
}
