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
mod outbox;
mod webhook;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

pub use book::{Acknowledged, Book, ListingSync, Reason, Update};
pub use config::{ChannelConfig, ConnectorKind};

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
            .timeout(webhook::ATTEMPT_TIMEOUT)
            .build()
            .unwrap_or_default();
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

    /// Every listing with its sync state, by platform and listing id.
    pub fn status(&self) -> Vec<ListingStatus> {
        let book = self.book.lock();
        book.listings()
            .map(|((platform, listing), sync)| ListingStatus {
                platform: platform.clone(),
                listing: listing.clone(),
                shown: sync.shown(book.consumed(&sync.sku, platform)),
                sync: sync.clone(),
                connected: self
                    .connectors
                    .iter()
                    .any(|connector| &connector.platform == platform),
            })
            .collect()
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
