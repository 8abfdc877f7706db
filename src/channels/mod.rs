//! Channel sync: keeps every platform listing of a SKU at the number the pool can honour,
//! so the platforms themselves refuse the units that are gone.
//!
//! `book` keeps, from the facts as they become durable, what each listing should show and
//! what it was last told; `allocation` is the rule (pure); the outbox (`outbox`) delivers
//! the latest number of each listing to its platform through a connector (`webhook`),
//! coalesced, paced and retried. Only the leader of a cluster delivers; every node keeps the
//! book, so a new leader knows what to send. `docs/CHANNELS.md` is the contract.

pub mod allocation;
mod book;
mod config;
mod connector;
pub mod douyin;
mod listing;
mod metrics;
mod outbox;
mod outcome;
mod rebalance;
pub mod reconcile;
mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

pub use book::{Book, Outlooks};
pub use config::{ChannelConfig, ConnectorKind};
pub use listing::{Acknowledged, ListingSync, Reason, Update};
pub use metrics::{ChannelMetrics, PlatformStats};
pub use rebalance::{Decision, Outlook, decide};

use crate::clock::{Clock, Timestamp};
use crate::ledger::{Fact, Ledger, ListingId, Platform};

/// One platform's connector and its wake-up.
struct Connector {
    config: ChannelConfig,
    platform: Platform,
    wake: tokio::sync::Notify,
}

/// See the module documentation.
pub struct Channels {
    book: Mutex<Book>,
    /// Where acknowledgements are journaled.
    ledger: Arc<Ledger>,
    connectors: Vec<Connector>,
    delivers: AtomicBool,
    clock: Arc<dyn Clock>,
    /// When the rebalancer last moved units of each SKU.
    moved_at: Mutex<std::collections::HashMap<crate::ledger::SkuId, Timestamp>>,
    /// Per platform: updates delivered, attempts failed, incidents by kind.
    counts: Mutex<std::collections::BTreeMap<String, PlatformStats>>,
}

/// One listing as the status route shows it.
#[derive(Clone, Debug)]
pub struct ListingStatus {
    pub platform: Platform,
    pub listing: ListingId,
    pub sync: ListingSync,
    /// What the listing shows by our account, once something was acknowledged.
    pub shown: Option<u64>,
    /// Whether a connector is configured for the platform.
    pub connected: bool,
}

impl Channels {
    /// Channel sync over `ledger` as recovered (quiescent and durable up to `sequence`):
    /// every listing starts out to be synced in full.
    pub fn new(
        configs: &[ChannelConfig],
        ledger: &Arc<Ledger>,
        sequence: u64,
        clock: Arc<dyn Clock>,
    ) -> Arc<Channels> {
        let connectors = configs
            .iter()
            .filter_map(|config| {
                Some(Connector {
                    platform: Platform::new(&config.platform).ok()?,
                    config: config.clone(),
                    wake: tokio::sync::Notify::new(),
                })
            })
            .collect();
        Arc::new(Channels {
            book: Mutex::new(Book::from_ledger(ledger, sequence, clock.now())),
            ledger: ledger.clone(),
            connectors,
            delivers: AtomicBool::new(true),
            clock,
            moved_at: Mutex::default(),
            counts: Mutex::default(),
        })
    }

    /// Takes in a batch that just became durable (the journal's listener calls it).
    pub fn durable(&self, first_sequence: u64, facts: &[Fact]) {
        self.book.lock().apply(first_sequence, facts);
        if self.delivers.load(Ordering::Acquire) {
            for connector in &self.connectors {
                connector.wake.notify_one();
            }
        }
    }

    /// Whether this node delivers (a cluster's leader, or a single node). A node that starts
    /// delivering syncs every listing in full: it cannot know what another node sent.
    pub fn set_delivers(&self, delivers: bool) {
        let was = self.delivers.swap(delivers, Ordering::AcqRel);
        if delivers && !was {
            let now = self.clock.now();
            let mut book = self.book.lock();
            for connector in &self.connectors {
                book.resync(&connector.platform, now);
            }
            drop(book);
            for connector in &self.connectors {
                connector.wake.notify_one();
            }
        }
    }

    /// Starts one delivery task per connector, until `stop`.
    pub fn spawn(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let client = reqwest::Client::builder()
            .timeout(outcome::ATTEMPT_TIMEOUT)
            .build()
            .unwrap_or_default();
        let channels = self.clone();
        let rebalancer_stop = stop.clone();
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    () = rebalancer_stop.cancelled() => return,
                }
                if channels.delivers.load(Ordering::Acquire) {
                    channels.rebalance(channels.now());
                }
            }
        });
        for index in 0..self.connectors.len() {
            let channels = self.clone();
            let (client, stop) = (client.clone(), stop.clone());
            tasks.spawn(async move {
                tokio::select! {
                    () = outbox::deliver(&channels, index, &client) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    }

    /// One round of the live rebalancer (the delivering node calls it every second): for each
    /// exclusive SKU listed by a show in progress, past its first minute and its interval
    /// since the last move, the move `rebalance::decide` asks for, journaled with its reason.
    pub fn rebalance(&self, now: Timestamp) -> Vec<crate::ledger::Fact> {
        let now_ms = now.as_millis();
        let mut facts = Vec::new();
        for room in self.ledger.rooms() {
            let (starts, ends) = (room.starts_at.as_millis(), room.ends_at.as_millis());
            if now_ms < starts + rebalance::SHOW_WARM_UP_MS || ends <= now_ms {
                continue;
            }
            for listing in &room.listings {
                let span_ms = now_ms - starts;
                if let Some(fact) = self.rebalance_sku(&listing.sku, now, span_ms, ends - now_ms) {
                    facts.push(fact);
                }
            }
        }
        facts
    }

    fn rebalance_sku(
        &self,
        sku: &crate::ledger::SkuId,
        now: Timestamp,
        span_ms: u64,
        left_ms: u64,
    ) -> Option<crate::ledger::Fact> {
        let outlooks = self.book.lock().outlooks(sku, now.as_millis(), span_ms)?;
        let last = self.moved_at.lock().get(sku).copied();
        if last.is_some_and(|last| now.as_millis() < last.as_millis() + outlooks.every_ms) {
            return None;
        }
        let judged: Vec<Outlook> = outlooks.platforms.iter().map(|(_, o)| o.clone()).collect();
        let decision = decide(&judged, left_ms, outlooks.floor)?;
        let (from, slow) = &outlooks.platforms[decision.from];
        let (to, fast) = &outlooks.platforms[decision.to];
        let per_minute = |outlook: &Outlook| outlook.per_ms * 60_000.0;
        let reason = format!(
            "{from} sells {:.1}/min and would end the show with units unsold; {to} sells {:.1}/min and would run out of its {} before the end",
            per_minute(slow),
            per_minute(fast),
            fast.unsold
        );
        let moved = crate::ledger::AllotmentMove {
            from: from.clone(),
            to: to.clone(),
            qty: decision.qty,
            reason,
        };
        tracing::info!(%sku, from = %moved.from, to = %moved.to, qty = moved.qty, reason = %moved.reason, "Rebalanced an exclusive allocation.");
        match self.ledger.move_allotment(now, sku, moved) {
            Ok(fact) => {
                self.moved_at.lock().insert(sku.clone(), now);
                Some(fact)
            }
            Err(error) => {
                tracing::warn!(%sku, %error, "The rebalancer's move was refused.");
                None
            }
        }
    }

    /// Counts `delivered` updates and `failed` attempts for `platform`.
    fn count(&self, platform: &Platform, delivered: u64, failed: u64) {
        let mut counts = self.counts.lock();
        let stats = counts.entry(platform.to_string()).or_default();
        stats.delivered += delivered;
        stats.failed_attempts += failed;
    }

    /// Counts what a reconciliation of `platform` found.
    pub fn count_incidents(&self, platform: &Platform, found: &reconcile::Reconciliation) {
        let mut counts = self.counts.lock();
        let stats = counts.entry(platform.to_string()).or_default();
        for incident in &found.incidents {
            *stats.incidents.entry(incident.kind.as_str()).or_default() += 1;
        }
    }

    /// Every platform's counts and its listings' state now.
    pub fn stats(&self, now: Timestamp) -> std::collections::BTreeMap<String, PlatformStats> {
        let mut stats = self.counts.lock().clone();
        for listing in self.status() {
            let platform = stats.entry(listing.platform.to_string()).or_default();
            platform.listings += 1;
            if let Some(since) = listing.sync.unsynced_since {
                platform.unsynced += 1;
                let waited = now.as_millis().saturating_sub(since.as_millis());
                platform.oldest_unsynced_ms = platform.oldest_unsynced_ms.max(waited);
            }
        }
        stats
    }

    /// The SKU other than `sku` that already names one of `listings`, with that listing.
    pub fn taken_by_another(
        &self,
        sku: &crate::ledger::SkuId,
        listings: &[(Platform, ListingId)],
    ) -> Option<(Platform, ListingId, crate::ledger::SkuId)> {
        let book = self.book.lock();
        listings.iter().find_map(|(platform, listing)| {
            let owner = book
                .owner(platform, listing)
                .filter(|owner| *owner != sku)?;
            Some((platform.clone(), listing.clone(), owner.clone()))
        })
    }

    /// Every listing with its sync state, by platform and listing id.
    pub fn status(&self) -> Vec<ListingStatus> {
        let book = self.book.lock();
        book.listings()
            .into_iter()
            .map(|sync| ListingStatus {
                platform: sync.platform.clone(),
                listing: sync.listing.clone(),
                shown: sync.shown(book.consumed(&sync.sku, &sync.platform)),
                sync: sync.clone(),
                connected: self
                    .connectors
                    .iter()
                    .any(|connector| connector.platform == sync.platform),
            })
            .collect()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
