//! Cluster mode: the journal becomes a replicated log on NATS JetStream, one node leads it
//! and the others follow it hot.
//!
//! - **The log** is one JetStream stream (`<stream>`, subject `<stream>.log.0`: shard 0).
//!   The leader's journal writer publishes each batch of facts, framed as in a segment file,
//!   and acknowledges it only once JetStream has acknowledged the publish (a quorum of its
//!   servers holds it). See [`log`].
//! - **One writer, fenced.** Every publish names the stream sequence it must follow
//!   (`Nats-Expected-Last-Sequence`): a node that lost leadership cannot append, since the
//!   new leader's first act is to append a term-start record after catching up.
//! - **Leadership** is a lease in a JetStream key-value bucket (`<stream>-lease`, key
//!   `leader-0`): created when absent, renewed by revision compare-and-set, gone when not
//!   renewed within the bucket's `max_age`. The revision that created it is the term. See
//!   [`lease`].
//! - **Standbys** tail the stream and apply each batch with the replay code
//!   ([`crate::journal::Journal::follow`]), so their durable state, alert engine and push hub
//!   run as a leader's do; they serve reads and pushes and forward writes to the leader.
//!
//! - **Shared snapshots** ([`snapshot`]) let a node start from the ledger at a recent cut
//!   instead of the first message.
//!
//! A leader that loses its lease, or whose append is refused, stops acknowledging at once
//! (its journal is poisoned, so waiting requests get 503) and the process starts again as a
//! standby: its ledger may hold changes the log does not, and only the log is the truth.

pub mod forward;
mod lease;
mod log;
pub mod seal;
pub mod snapshot;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream;

use crate::config::{ClusterConfig, NatsCredentials};
use crate::journal::{Journal, LOG_FORMAT_VERSION};
use crate::ledger::Ledger;

use log::StreamPosition;

/// How long a starting node waits for JetStream to answer before it gives up.
const JETSTREAM_READY_MAX: Duration = Duration::from_secs(60);

/// How many JetStream requests in a row may fail through one NATS server before the node
/// connects to another of its list: a server cut off from the rest of its cluster still
/// answers pings, so the client would otherwise stay with it for the whole partition.
const JETSTREAM_FAILURES_RECONNECT: u64 = 3;

/// How often a starting node looks whether it has caught up with the log.
const CATCH_UP_POLL: Duration = Duration::from_millis(10);

/// What a node is doing in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Following the log, and not (yet) leading it.
    Standby,
    /// Holds the lease, catching up and fencing before it serves writes.
    Candidate,
    /// The one writer.
    Leader,
    /// Led, and has not renewed its lease for longer than it lasts: another node may lead
    /// by now (this one's appends then fail).
    Isolated,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standby => "standby",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
            Role::Isolated => "isolated",
        }
    }
}

/// A node's view of the cluster, for `GET /api/v1/cluster` and `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub node: String,
    pub role: Role,
    /// The node holding the lease, as last seen.
    pub leader: Option<String>,
    /// The term of that lease: the lease bucket's revision when it was taken.
    pub term: u64,
    /// The stream sequence of the last message this node applied (or appended, leading).
    pub applied_seq: u64,
    /// The stream's last sequence, as last seen.
    pub stream_seq: u64,
    /// The sequence of the last fact this node holds.
    pub facts: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server answered at start-up.
    #[error("cannot reach NATS at {servers}: {reason}")]
    Unreachable { servers: String, reason: String },
    /// The stream exists but was made for something else.
    #[error("stream {stream} is not a stockpulse log this node can read: {reason}")]
    Incompatible { stream: String, reason: String },
    /// A message of the log does not decode or apply: the node stops rather than skip it.
    #[error("stream {stream} message {sequence}: {reason}")]
    Log {
        stream: String,
        sequence: u64,
        reason: String,
    },
    /// JetStream refused or failed an operation.
    #[error("NATS JetStream: {0}")]
    Nats(String),
    /// The newest shared snapshot is older than the log's start; a newer one will come.
    #[error("{0}")]
    SnapshotBehind(String),
    /// This node led and lost its lease or its right to append, or it fell behind what the
    /// log keeps: it must start again, as a standby, from the newest shared snapshot.
    #[error("stepped down: {0}")]
    SteppedDown(String),
}

impl ClusterError {
    /// The process exit code for this error: 69 (`EX_UNAVAILABLE`) when NATS cannot be
    /// reached, 65 (`EX_DATAERR`) for a log this node cannot read, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClusterError::Unreachable { .. } => 69,
            ClusterError::Incompatible { .. } | ClusterError::Log { .. } => 65,
            _ => 1,
        }
    }
}

/// The description a stockpulse log stream carries: a node refuses a stream whose records it
/// cannot read.
fn stream_description() -> String {
    format!("stockpulse log, record format {LOG_FORMAT_VERSION}")
}

/// Whether a log stream with this description holds records this node reads: its own
/// format, or an earlier one whose records are a part of it.
fn readable_description(description: &str) -> bool {
    crate::journal::LOG_FORMATS_READ
        .iter()
        .any(|format| description == format!("stockpulse log, record format {format}"))
}

/// Connects to one of the NATS servers: fails fast when none answers, unless the node is
/// patient ([`ClusterConfig::patient`]), which waits with a doubling pause.
async fn dial(config: &ClusterConfig) -> Result<async_nats::Client, ClusterError> {
    // Two TLS back ends are built in (the NATS client's and the webhook client's), so the
    // process says which one TLS to NATS uses; a second call finds it said.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let servers = config.nats.join(",");
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("stockpulse-{}", config.node_id))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None);
    options = match &config.credentials {
        NatsCredentials::None => options,
        NatsCredentials::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.clone())
        }
        NatsCredentials::Token(token) => options.token(token.clone()),
    };
    if let Some(tls) = &config.tls {
        // Refused unless the server proves itself: credentials never cross in clear.
        options = options.require_tls(true);
        if let Some(ca) = &tls.ca {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
    }
    let addresses: Vec<async_nats::ServerAddr> = config
        .nats
        .iter()
        .map(|url| {
            url.parse().map_err(|error| ClusterError::Unreachable {
                servers: servers.clone(),
                reason: format!("{url}: {error}"),
            })
        })
        .collect::<Result<_, _>>()?;
    let mut pause = Duration::from_millis(500);
    loop {
        let connected =
            tokio::time::timeout(Duration::from_secs(10), options.clone().connect(&addresses))
                .await
                .map_err(|_| "no answer within 10 s".to_owned())
                .and_then(|connected| connected.map_err(|error| error.to_string()));
        match connected {
            Ok(client) => return Ok(client),
            Err(reason) if config.patient => {
                tracing::warn!(%servers, %reason, "Cannot reach NATS; waiting for it.");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(10));
            }
            Err(reason) => return Err(ClusterError::Unreachable { servers, reason }),
        }
    }
}

/// A connected node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClusterConfig,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    status: parking_lot::Mutex<Status>,
    /// Whether this node may change its ledger: it leads the log.
    leading: AtomicBool,
    /// The log's epoch, the same on every node.
    epoch: u64,
    /// When the log stream was created (nanoseconds): which incarnation of the log this
    /// is. A shared snapshot names the incarnation it was cut from.
    created: i128,
    /// The stream sequence of the last shared snapshot this node wrote: the next trims the
    /// log up to it.
    previous_snapshot_seq: std::sync::atomic::AtomicU64,
    /// Seals what this node tells the others, and opens what they tell it.
    seal: seal::Seal,
    /// Forwarded requests already taken, by sender.
    replays: seal::ReplayGuard,
    /// This process among the senders of sealed requests: random at each start.
    process: u64,
    /// Requests this process forwarded so far.
    forwarded: std::sync::atomic::AtomicU64,
    /// The stream sequence this node applied, for those waiting on it.
    applied: tokio::sync::watch::Sender<u64>,
    /// When this node last knew it held the log to its end.
    heard: parking_lot::Mutex<tokio::time::Instant>,
    /// JetStream requests that failed in a row.
    jetstream_failures: std::sync::atomic::AtomicU64,
}

impl Cluster {
    /// Connects to NATS and makes sure the log stream and the lease bucket exist, with a
    /// stream this build can read. Fails fast when no server answers. `secret` is the one
    /// tokens are signed with; what nodes tell each other is sealed with a key derived from
    /// it ([`seal`]).
    pub async fn connect(
        config: &ClusterConfig,
        secret: Option<&[u8]>,
    ) -> Result<Cluster, ClusterError> {
        let client = dial(config).await?;
        let jetstream = jetstream::new(client.clone());
        // A NATS cluster that just started, or is electing, does not answer JetStream
        // requests for a few seconds: keep asking, for a while, unless the answer is a no.
        let deadline = tokio::time::Instant::now() + JETSTREAM_READY_MAX;
        let created = loop {
            let ready = async {
                let created = log::ensure_stream(&jetstream, config).await?;
                lease::ensure_bucket(&jetstream, config).await?;
                snapshot::ensure_store(&jetstream, config).await?;
                Ok::<i128, ClusterError>(created)
            };
            match ready.await {
                Ok(created) => break created,
                Err(ClusterError::Nats(reason)) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(%reason, "JetStream is not ready; asking again.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(error) => return Err(error),
            }
        };
        let status = Status {
            node: config.node_id.clone(),
            role: Role::Standby,
            leader: None,
            term: 0,
            applied_seq: 0,
            stream_seq: 0,
            facts: 0,
        };
        Ok(Cluster {
            inner: Arc::new(Inner {
                config: config.clone(),
                client,
                jetstream,
                status: parking_lot::Mutex::new(status),
                leading: AtomicBool::new(false),
                epoch: log::epoch_of(created),
                created,
                previous_snapshot_seq: std::sync::atomic::AtomicU64::new(0),
                seal: seal::Seal::new(secret),
                replays: seal::ReplayGuard::default(),
                process: fastrand::u64(1..),
                forwarded: std::sync::atomic::AtomicU64::new(0),
                applied: tokio::sync::watch::Sender::new(0),
                heard: parking_lot::Mutex::new(tokio::time::Instant::now()),
                jetstream_failures: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    pub fn status(&self) -> Status {
        self.inner.status.lock().clone()
    }

    /// Whether this node leads the log and may change its ledger.
    pub fn leading(&self) -> bool {
        self.inner.leading.load(Ordering::Acquire)
    }

    /// The epoch push messages carry in this cluster: derived from the log stream, the same
    /// on every node.
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.inner.client
    }

    /// Seals and opens what nodes tell each other.
    pub fn seal(&self) -> &seal::Seal {
        &self.inner.seal
    }

    /// Waits until this node has applied the log as far as it reached when the wait began,
    /// or leads it. A starting node serves nothing before: like a single node replaying its
    /// journal, it would answer from a ledger that lacks acknowledged changes.
    pub async fn caught_up(&self) {
        let head = loop {
            match log::last_sequence(self).await {
                Ok(head) => break head,
                Err(error) => {
                    tracing::warn!(%error, "Cannot read where the log ends yet; asking again.");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let started = tokio::time::Instant::now();
        while self.status().applied_seq < head && !self.leading() {
            tokio::time::sleep(CATCH_UP_POLL).await;
        }
        tracing::info!(
            stream_seq = head,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Caught up with the log; serving."
        );
    }

    /// Gives leadership up at once when this node leads and stops on purpose (after the
    /// requests in flight are answered): a planned restart costs a moment, not a lease.
    pub async fn release(&self, journal: &Journal) {
        lease::release(self, journal).await;
    }

    fn update(&self, change: impl FnOnce(&mut Status)) {
        let applied_seq = {
            let mut status = self.inner.status.lock();
            change(&mut status);
            status.applied_seq
        };
        self.inner.applied.send_if_modified(|applied| {
            let moved = *applied != applied_seq;
            *applied = applied_seq;
            moved
        });
    }

    /// The stream sequence of the last message this node applied (or appended, leading).
    pub fn applied_seq(&self) -> u64 {
        *self.inner.applied.borrow()
    }

    /// How many messages this node is behind the log's end as it last saw it.
    pub fn lag(&self) -> u64 {
        let status = self.inner.status.lock();
        status.stream_seq.saturating_sub(status.applied_seq)
    }

    /// Waits, for at most `limit`, until this node has applied the log up to stream sequence
    /// `sequence`; whether it has. A standby answers a write it forwarded only then, so the
    /// client reads its own write back from this node.
    pub async fn applied(&self, sequence: u64, limit: Duration) -> bool {
        let mut applied = self.inner.applied.subscribe();
        let reached = applied.wait_for(|applied| sequence <= *applied);
        matches!(tokio::time::timeout(limit, reached).await, Ok(Ok(_)))
    }

    /// How long since this node last knew it held the log to its end (it applied a message,
    /// or the log said it had no more); zero while it leads.
    pub fn unheard_for(&self) -> Duration {
        if self.leading() {
            return Duration::ZERO;
        }
        self.inner.heard.lock().elapsed()
    }

    /// A JetStream request was answered.
    fn jetstream_answered(&self) {
        self.inner.jetstream_failures.store(0, Ordering::Relaxed);
    }

    /// A JetStream request failed or went unanswered; after a few in a row, this node
    /// connects to another NATS server of its list.
    async fn jetstream_failed(&self) {
        let failures = self
            .inner
            .jetstream_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if failures.is_multiple_of(JETSTREAM_FAILURES_RECONNECT) {
            tracing::warn!(
                failures,
                "JetStream does not answer through this NATS server; connecting to another."
            );
            if let Err(error) = self.inner.client.force_reconnect().await {
                tracing::warn!(%error, "Cannot connect to another NATS server yet.");
            }
        }
    }

    /// This node holds the log to its end, as of now.
    fn heard(&self) {
        *self.inner.heard.lock() = tokio::time::Instant::now();
    }

    /// Follows the log into `ledger` through `journal`, and leads it when this node gets the
    /// lease, until `stop` resolves (`Ok`) or the node must stop (`Err`): a log it cannot
    /// read, or, after leading, a lost lease or a refused append
    /// ([`ClusterError::SteppedDown`]), after which the process starts again.
    /// `after` is the stream sequence the ledger already holds everything up to (0, or the
    /// shared snapshot's).
    pub async fn run(
        &self,
        ledger: Arc<Ledger>,
        journal: Arc<Journal>,
        after: u64,
        promoted: impl Fn() + Send + Sync + 'static,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), ClusterError> {
        let position = Arc::new(tokio::sync::Mutex::new(StreamPosition {
            applied_seq: after,
            leading: false,
        }));
        self.update(|status| {
            status.applied_seq = after;
            status.facts = journal.durable();
        });
        let following = log::follow(
            self.clone(),
            ledger.clone(),
            journal.clone(),
            position.clone(),
        );
        let leading = lease::run(self.clone(), ledger, journal, position, promoted);
        tokio::select! {
            () = stop => Ok(()),
            result = following => result,
            result = leading => result,
        }
    }
}
