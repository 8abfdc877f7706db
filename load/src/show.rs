//! `show`: a live show replayed at speed. The host calls a listing every few minutes of show
//! time and hundreds of orders arrive within seconds; most are paid a moment later, some are
//! cancelled, some run out their locks, a few are paid after their lock ran out, and a few
//! paid ones are refunded. Halfway through, every listing is restocked. At the end the tool
//! checks against the server that nothing was oversold or lost and that every count
//! balances.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Connection, error_code};
use super::stats::{ProcessSampler, ServerUsage, table};
use super::{LoadError, Progress, create_skus, refused};

#[derive(Clone, Debug)]
pub struct ShowOptions {
    pub target: SocketAddr,
    /// Listings in the show.
    pub skus_count: u32,
    /// Units of each listing at the start; a quarter more arrives halfway through.
    pub stock_per_sku: u64,
    /// Length of the show, in show time.
    pub show_length: Duration,
    /// Show time per real time: 360 plays three hours in thirty seconds.
    pub speed: f64,
    /// Show time between two calls of the host.
    pub call_interval: Duration,
    /// Orders in the burst after each call.
    pub burst_orders: u32,
    /// Orders per minute of show time between bursts, across all listings.
    pub trickle_per_minute: u32,
    /// The lock TTL of every listing, in real seconds.
    pub lock_ttl_s: u64,
    /// Connections the orders and follow-ups are spread over.
    pub connections: u32,
    pub seed: u64,
    pub run_id: String,
    pub progress: Progress,
}

/// What happens to an order after it is placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// Paid before its lock runs out.
    Pay,
    /// Paid, then refunded.
    PayThenRefund,
    /// Paid after its lock ran out: taken again if the units are still there.
    PayLate,
    Cancel,
    /// Never paid: its lock runs out.
    Abandon,
}

#[derive(Clone, Debug)]
struct PlannedOrder {
    /// Real time after the start when the order is placed.
    at: Duration,
    number: u64,
    /// (listing, qty) per line.
    lines: Vec<(u32, u64)>,
    platform: &'static str,
    fate: Fate,
    /// Real time between placing and the follow-up (payment or cancellation).
    follow_up_after: Duration,
}

/// One request the workers send.
enum Step {
    Place(PlannedOrder),
    Confirm(PlannedOrder),
    Cancel(PlannedOrder),
    Refund(PlannedOrder),
}

const PLATFORMS: [&str; 3] = ["douyin", "kuaishou", "taobao"];

#[derive(Clone, Debug, Default, Serialize)]
pub struct ShowCounts {
    pub orders_placed: u64,
    pub orders_locked: u64,
    pub paid: u64,
    pub paid_late_retaken: u64,
    pub paid_late_refused: u64,
    pub cancelled: u64,
    pub refunded: u64,
    /// Locks never paid nor cancelled, left to expire.
    pub abandoned: u64,
    pub refused: BTreeMap<String, u64>,
    pub failed: u64,
}

/// One listing's figures: what the tool expects from what the server acknowledged, and what
/// the server says.
#[derive(Clone, Debug, Serialize)]
pub struct ListingCheck {
    pub sku: String,
    pub total: u64,
    pub expected_sold: u64,
    pub sold: u64,
    pub locked: u64,
    pub available: u64,
    pub balanced: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ShowReport {
    pub show_seconds: f64,
    pub real_seconds: f64,
    pub counts: ShowCounts,
    pub listings: Vec<ListingCheck>,
    /// Nothing oversold, nothing lost, every count balanced.
    pub balanced: bool,
    pub server: Option<ServerUsage>,
}

impl ShowReport {
    pub fn table(&self) -> String {
        let counts = &self.counts;
        let mut rows = vec![
            (
                "show / real time".to_owned(),
                format!("{:.0} s / {:.1} s", self.show_seconds, self.real_seconds),
            ),
            ("orders placed".to_owned(), counts.orders_placed.to_string()),
            ("locked".to_owned(), counts.orders_locked.to_string()),
            ("paid".to_owned(), counts.paid.to_string()),
            (
                "paid late: retaken / refused".to_owned(),
                format!(
                    "{} / {}",
                    counts.paid_late_retaken, counts.paid_late_refused
                ),
            ),
            ("cancelled".to_owned(), counts.cancelled.to_string()),
            ("refunded".to_owned(), counts.refunded.to_string()),
            ("left to expire".to_owned(), counts.abandoned.to_string()),
        ];
        for (code, count) in &counts.refused {
            rows.push((format!("refused {code}"), count.to_string()));
        }
        rows.push(("failed".to_owned(), counts.failed.to_string()));
        for listing in &self.listings {
            rows.push((
                listing.sku.clone(),
                format!(
                    "total {} sold {} (expected {}) locked {} available {} {}",
                    listing.total,
                    listing.sold,
                    listing.expected_sold,
                    listing.locked,
                    listing.available,
                    if listing.balanced { "ok" } else { "MISMATCH" }
                ),
            ));
        }
        rows.push((
            "balanced".to_owned(),
            if self.balanced { "yes" } else { "NO" }.to_owned(),
        ));
        if let Some(server) = &self.server {
            rows.push((
                "server cpu / peak memory".to_owned(),
                format!("{:.0} % / {} KiB", server.cpu_percent, server.rss_peak_kib),
            ));
        }
        table(&rows)
    }
}

/// What the workers learn: counts, and the units each listing sold by acknowledged calls.
#[derive(Default)]
struct Books {
    counts: ShowCounts,
    sold: BTreeMap<u32, u64>,
}

impl Books {
    fn sold(&mut self, order: &PlannedOrder, sign: i64) {
        for (listing, qty) in &order.lines {
            let entry = self.sold.entry(*listing).or_default();
            *entry = entry.saturating_add_signed(sign * *qty as i64);
        }
    }
}

fn plan(options: &ShowOptions) -> Vec<PlannedOrder> {
    let mut rng = fastrand::Rng::with_seed(options.seed);
    let scale = |show: Duration| show.div_f64(options.speed);
    let ttl = Duration::from_secs(options.lock_ttl_s);
    let listings = options.skus_count.max(1);
    let mut orders = Vec::new();
    let mut order = |rng: &mut fastrand::Rng, show_at: Duration, hot: Option<u32>| {
        let listing = match hot {
            Some(hot) if rng.f64() < 0.8 => hot,
            _ => rng.u32(..listings),
        };
        let mut lines = vec![(listing, rng.u64(1..=3))];
        if 1 < listings && rng.f64() < 0.1 {
            let other = (listing + 1 + rng.u32(..listings - 1)) % listings;
            lines.push((other, 1));
        }
        let roll = rng.f64();
        let fate = if roll < 0.70 {
            Fate::Pay
        } else if roll < 0.73 {
            Fate::PayThenRefund
        } else if roll < 0.76 {
            Fate::PayLate
        } else if roll < 0.88 {
            Fate::Cancel
        } else {
            Fate::Abandon
        };
        let follow_up_after = match fate {
            Fate::PayLate => ttl + ttl / 2,
            _ => ttl.mul_f64(0.1 + 0.6 * rng.f64()),
        };
        let number = orders.len() as u64;
        orders.push(PlannedOrder {
            at: scale(show_at),
            number,
            lines,
            platform: PLATFORMS[rng.usize(..PLATFORMS.len())],
            fate,
            follow_up_after,
        });
    };
    let minutes = (options.show_length.as_secs() / 60).max(1);
    for minute in 0..minutes {
        for _ in 0..options.trickle_per_minute {
            let at = Duration::from_secs(minute * 60) + Duration::from_millis(rng.u64(..60_000));
            order(&mut rng, at, None);
        }
    }
    let call_interval = options.call_interval.max(Duration::from_secs(60));
    let mut call = Duration::from_secs(60);
    let mut call_count = 0u32;
    while call < options.show_length {
        let hot = call_count % listings;
        for _ in 0..options.burst_orders {
            // Most of a burst lands in the first twenty seconds after the call.
            let delay = Duration::from_millis((rng.f64().powi(2) * 60_000.0) as u64);
            order(&mut rng, call + delay, Some(hot));
        }
        call += call_interval;
        call_count += 1;
    }
    orders.sort_by_key(|order| order.at);
    for (number, order) in orders.iter_mut().enumerate() {
        order.number = number as u64;
    }
    orders
}

/// Replays the show and checks the books.
pub async fn show(
    options: ShowOptions,
    server: Option<ProcessSampler>,
) -> Result<ShowReport, LoadError> {
    let skus: Vec<String> = (0..options.skus_count)
        .map(|index| format!("{}-listing-{index}", options.run_id))
        .collect();
    create_skus(options.target, &skus, options.stock_per_sku).await?;
    set_lock_ttl(options.target, &skus, options.lock_ttl_s).await?;
    let orders = plan(&options);
    let server = server.map(|sampler| sampler.restarted());
    let books = Arc::new(Mutex::new(Books::default()));
    let sent = Arc::new(AtomicU64::new(0));
    let pending = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let (steps, receiver) = mpsc::channel::<Step>(4096);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..options.connections.max(1) {
        let connection = Connection::connect(options.target).await?;
        let worker = Worker {
            run_id: options.run_id.clone(),
            steps: steps.clone(),
            books: books.clone(),
            sent: sent.clone(),
            pending: pending.clone(),
        };
        workers.push(tokio::spawn(worker.run(
            connection,
            receiver.clone(),
            done.clone(),
        )));
    }
    let progress = options.progress.spawn("requests", {
        let sent = sent.clone();
        move || sent.load(Ordering::Relaxed)
    });

    let restock_at = options.show_length.div_f64(2.0 * options.speed);
    let mut restocked = false;
    for order in orders {
        if !restocked && restock_at <= order.at {
            tokio::time::sleep_until(started + restock_at).await;
            restock(options.target, &skus, options.stock_per_sku / 4).await?;
            restocked = true;
        }
        tokio::time::sleep_until(started + order.at).await;
        pending.fetch_add(1, Ordering::SeqCst);
        if steps.send(Step::Place(order)).await.is_err() {
            break;
        }
    }
    if !restocked {
        restock(options.target, &skus, options.stock_per_sku / 4).await?;
    }
    // Follow-ups run on their own timers: wait until every one was sent, then for the
    // server's sweeper to expire the last abandoned locks.
    while 0 < pending.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(options.lock_ttl_s) + Duration::from_millis(1500)).await;
    done.cancel();
    progress.abort();
    for worker in workers {
        worker
            .await
            .map_err(|error| LoadError::Worker(error.to_string()))?;
    }
    let real_seconds = started.elapsed().as_secs_f64();
    let books = std::mem::take(&mut *books.lock());
    let listings = check(options.target, &skus, options.stock_per_sku, &books).await?;
    let balanced = listings.iter().all(|listing| listing.balanced) && books.counts.failed == 0;
    Ok(ShowReport {
        show_seconds: options.show_length.as_secs_f64(),
        real_seconds,
        counts: books.counts,
        listings,
        balanced,
        server: server.map(|sampler| sampler.usage()),
    })
}

struct Worker {
    run_id: String,
    /// To schedule follow-ups.
    steps: mpsc::Sender<Step>,
    books: Arc<Mutex<Books>>,
    sent: Arc<AtomicU64>,
    /// Steps scheduled and not yet handled: the show is over when it is zero.
    pending: Arc<AtomicU64>,
}

impl Worker {
    async fn run(
        self,
        mut connection: Connection,
        receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Step>>>,
        done: CancellationToken,
    ) {
        loop {
            let step = {
                let mut receiver = receiver.lock().await;
                tokio::select! {
                    step = receiver.recv() => step,
                    () = done.cancelled() => None,
                }
            };
            let Some(step) = step else {
                return;
            };
            if let Err(error) = self.send(&mut connection, step).await {
                tracing::warn!(%error, "Request failed.");
                self.books.lock().counts.failed += 1;
                match Connection::connect(connection.peer()).await {
                    Ok(fresh) => connection = fresh,
                    Err(_) => {
                        self.pending.fetch_sub(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
            self.sent.fetch_add(1, Ordering::Relaxed);
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn send(&self, connection: &mut Connection, step: Step) -> Result<(), LoadError> {
        match step {
            Step::Place(order) => {
                let body = self.order_body(&order);
                let response = connection
                    .request("POST", "/api/v1/orders", body.as_bytes())
                    .await?;
                let mut books = self.books.lock();
                books.counts.orders_placed += 1;
                if !response.is_success() {
                    *books
                        .counts
                        .refused
                        .entry(error_code(&response))
                        .or_default() += 1;
                    return Ok(());
                }
                books.counts.orders_locked += 1;
                drop(books);
                let follow_up = match order.fate {
                    Fate::Pay | Fate::PayThenRefund | Fate::PayLate => Step::Confirm,
                    Fate::Cancel => Step::Cancel,
                    Fate::Abandon => {
                        self.books.lock().counts.abandoned += 1;
                        return Ok(());
                    }
                };
                let delay = order.follow_up_after;
                self.later(delay, follow_up(order));
            }
            Step::Confirm(order) => {
                let path = format!("/api/v1/orders/{}-{}/confirm", self.run_id, order.number);
                let response = connection.request("POST", &path, b"").await?;
                let mut books = self.books.lock();
                match (response.status, order.fate) {
                    (200, Fate::PayLate) => books.counts.paid_late_retaken += 1,
                    (200, _) => books.counts.paid += 1,
                    (409, Fate::PayLate) if error_code(&response) == "lock_expired" => {
                        books.counts.paid_late_refused += 1;
                        return Ok(());
                    }
                    _ => return Err(refused(format!("confirming {}", order.number), &response)),
                }
                books.sold(&order, 1);
                drop(books);
                if order.fate == Fate::PayThenRefund {
                    let delay = order.follow_up_after;
                    self.later(delay, Step::Refund(order));
                }
            }
            Step::Cancel(order) => {
                let path = format!("/api/v1/orders/{}-{}/cancel", self.run_id, order.number);
                let response = connection.request("POST", &path, b"").await?;
                if !response.is_success() {
                    return Err(refused(format!("cancelling {}", order.number), &response));
                }
                self.books.lock().counts.cancelled += 1;
            }
            Step::Refund(order) => {
                let path = format!("/api/v1/orders/{}-{}/refund", self.run_id, order.number);
                let response = connection.request("POST", &path, b"").await?;
                if !response.is_success() {
                    return Err(refused(format!("refunding {}", order.number), &response));
                }
                let mut books = self.books.lock();
                books.counts.refunded += 1;
                books.sold(&order, -1);
            }
        }
        Ok(())
    }

    fn later(&self, delay: Duration, step: Step) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let steps = self.steps.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = steps.send(step).await;
        });
    }

    fn order_body(&self, order: &PlannedOrder) -> String {
        let lines: Vec<String> = order
            .lines
            .iter()
            .map(|(listing, qty)| {
                format!(
                    r#"{{"sku":"{}-listing-{listing}","qty":{qty}}}"#,
                    self.run_id
                )
            })
            .collect();
        format!(
            r#"{{"order_id":"{}-{}","platform":"{}","room":"{}-room","lines":[{}]}}"#,
            self.run_id,
            order.number,
            order.platform,
            self.run_id,
            lines.join(",")
        )
    }
}

async fn set_lock_ttl(target: SocketAddr, skus: &[String], ttl_s: u64) -> Result<(), LoadError> {
    let mut connection = Connection::connect(target).await?;
    let body = format!(r#"{{"lock_ttl_s":{ttl_s}}}"#);
    for sku in skus {
        let response = connection
            .request("PUT", &format!("/api/v1/skus/{sku}"), body.as_bytes())
            .await?;
        if !response.is_success() {
            return Err(refused(format!("setting the TTL of {sku}"), &response));
        }
    }
    Ok(())
}

async fn restock(target: SocketAddr, skus: &[String], qty: u64) -> Result<(), LoadError> {
    let mut connection = Connection::connect(target).await?;
    let body = format!(r#"{{"qty":{qty}}}"#);
    for sku in skus {
        let response = connection
            .request(
                "POST",
                &format!("/api/v1/skus/{sku}/restock"),
                body.as_bytes(),
            )
            .await?;
        if !response.is_success() {
            return Err(refused(format!("restocking {sku}"), &response));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct SkuAnswer {
    total: u64,
    reserved: u64,
    locked: u64,
    sold: u64,
    available: u64,
}

/// Reads every listing back and compares it with the books.
async fn check(
    target: SocketAddr,
    skus: &[String],
    stock: u64,
    books: &Books,
) -> Result<Vec<ListingCheck>, LoadError> {
    let mut connection = Connection::connect(target).await?;
    let mut checks = Vec::new();
    for (index, sku) in skus.iter().enumerate() {
        let response = connection.get(&format!("/api/v1/skus/{sku}")).await?;
        if !response.is_success() {
            return Err(refused(format!("reading {sku}"), &response));
        }
        let answer: SkuAnswer = serde_json::from_slice(&response.body)
            .map_err(|error| LoadError::Answer(error.to_string()))?;
        let expected_sold = books.sold.get(&(index as u32)).copied().unwrap_or(0);
        let expected_total = stock + stock / 4;
        let balanced = answer.sold == expected_sold
            && answer.locked == 0
            && answer.total == expected_total
            && answer.sold + answer.reserved <= answer.total
            && answer.available == answer.total - answer.reserved - answer.sold;
        checks.push(ListingCheck {
            sku: sku.clone(),
            total: answer.total,
            expected_sold,
            sold: answer.sold,
            locked: answer.locked,
            available: answer.available,
            balanced,
        });
    }
    Ok(checks)
}
