//! Leadership: a lease in a small JetStream stream (`<stream>-lease`, one message per shard
//! subject, `max_age` the lease's length), used as a key-value bucket is: a standby tries to
//! create the lease (a publish that must be the subject's first, expected last subject
//! sequence 0) every renewal interval; `max_age` removes a lease nobody renews. (The same
//! compare-and-set as the key-value API, written out because that API's bucket creation does
//! not work against Debian's NATS 2.9.) The node that creates it becomes a candidate with
//! the creating sequence as its term, waits
//! until it has applied the whole log, appends a term-start record that must follow exactly
//! that (so nobody appended meanwhile, and the old leader's next append is refused), and
//! only then leads. A leader renews by compare-and-set on the sequence; a renewal that is
//! refused ends its leadership, one that fails while NATS fails over is tried again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};

use super::log::{self, StreamPosition, StreamReplicator};
use super::{Cluster, ClusterError, Role};
use crate::config::ClusterConfig;
use crate::journal::Journal;
use crate::ledger::Ledger;

fn lease_stream(config: &ClusterConfig) -> String {
    format!("{}-lease", config.stream)
}

/// The subject of shard 0's lease.
fn lease_subject(config: &ClusterConfig) -> String {
    format!("{}.lease.0", config.stream)
}

pub(super) async fn ensure_bucket(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<(), ClusterError> {
    let mut stream = jetstream
        .get_or_create_stream(stream::Config {
            name: lease_stream(config),
            description: Some("stockpulse leader lease".to_owned()),
            subjects: vec![format!("{}.lease.>", config.stream)],
            max_messages_per_subject: 1,
            max_age: config.lease_ttl,
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: config.lease_ttl.min(Duration::from_secs(120)),
            ..stream::Config::default()
        })
        .await
        .map_err(|error| ClusterError::Nats(format!("creating the lease stream: {error}")))?;
    let info = stream
        .info()
        .await
        .map_err(|error| ClusterError::Nats(format!("reading the lease stream: {error}")))?;
    // The stream's `max_age` is how long a lease lasts, whatever this node's setting: a node
    // renewing slower than the stream forgets would lose its lease between renewals.
    if info.config.max_age != config.lease_ttl {
        return Err(ClusterError::Incompatible {
            stream: lease_stream(config),
            reason: format!(
                "a lease there lasts {} ms and this node is set to {} ms (cluster.lease_ttl_ms): every node of a cluster must use the same lease length (or change the stream's max age with `nats stream edit`)",
                info.config.max_age.as_millis(),
                config.lease_ttl.as_millis()
            ),
        });
    }
    Ok(())
}

/// Why a lease publish failed.
enum LeaseError {
    /// The subject's last sequence was not the one expected: someone else holds it.
    Taken,
    Other(String),
}

/// How far behind the log, in messages, a standby may be and still take the lease at once.
/// One further behind lets a node nearer the end take it first, since a candidate serves no
/// write before it has applied the whole log.
const CLAIM_LAG_MAX: u64 = 1_000;

/// How many tries in a row a lagging node sees the lease free before it takes it anyway: a
/// cluster whose nodes all lag still gets a leader.
const CLAIM_PATIENCE: u32 = 3;

/// How many times in a row a candidate tries to fence the log before it gives the lease up.
const FENCE_TRIES_MAX: u32 = 20;

/// What a lease message says: the node that holds it and the process (random at each
/// start) that took it, so that a process knows its own claim after its acknowledgement
/// was lost.
#[derive(serde::Serialize, serde::Deserialize)]
struct Claim {
    node: String,
    process: u64,
}

impl Claim {
    /// A lease message's claim; a bare node id, as nodes before the process was named
    /// wrote, is a claim of no process of this one.
    fn of(payload: &[u8]) -> Claim {
        serde_json::from_slice(payload).unwrap_or_else(|_| Claim {
            node: String::from_utf8_lossy(payload).into_owned(),
            process: 0,
        })
    }
}

/// The lease, as a compare-and-set on its subject's last sequence (0: none).
#[derive(Clone)]
struct Lease {
    jetstream: jetstream::Context,
    stream: String,
    subject: String,
    node: String,
    /// This process (never 0).
    process: u64,
}

impl Lease {
    fn of(cluster: &Cluster) -> Lease {
        let config = &cluster.inner.config;
        Lease {
            jetstream: cluster.inner.jetstream.clone(),
            stream: lease_stream(config),
            subject: lease_subject(config),
            node: config.node_id.clone(),
            process: cluster.inner.process,
        }
    }

    /// Publishes this process's claim after subject sequence `after`; the new sequence.
    async fn claim(&self, after: u64) -> Result<u64, LeaseError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            after.to_string().as_str(),
        );
        let claim = Claim {
            node: self.node.clone(),
            process: self.process,
        };
        let payload =
            serde_json::to_vec(&claim).map_err(|error| LeaseError::Other(error.to_string()))?;
        let ack = self
            .jetstream
            .publish_with_headers(self.subject.clone(), headers, payload.into())
            .await
            .map_err(|error| LeaseError::Other(error.to_string()))?
            .await
            .map_err(|error| match error.kind() {
                jetstream::context::PublishErrorKind::WrongLastSequence => LeaseError::Taken,
                _ => LeaseError::Other(error.to_string()),
            })?;
        Ok(ack.sequence)
    }

    /// Claims after `after`; when the answer is that someone holds it and that someone is
    /// this process (a claim NATS stored but whose acknowledgement was lost), takes that
    /// claim's sequence instead of giving up a lease it holds.
    async fn claim_or_own(&self, after: u64) -> Result<u64, LeaseError> {
        match self.claim(after).await {
            Err(LeaseError::Taken) => match self.last().await {
                Ok(Some((sequence, claim))) if self.is_own(&claim) && after < sequence => {
                    tracing::info!(
                        sequence,
                        "The lease's last claim is this node's own; keeping it."
                    );
                    Ok(sequence)
                }
                _ => Err(LeaseError::Taken),
            },
            claimed => claimed,
        }
    }

    fn is_own(&self, claim: &Claim) -> bool {
        claim.process == self.process && claim.node == self.node
    }

    /// The lease's last message, when there is one: its sequence and claim.
    async fn last(&self) -> Result<Option<(u64, Claim)>, String> {
        let stream = self
            .jetstream
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|error| error.to_string())?;
        match stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(message) => Ok(Some((message.sequence, Claim::of(&message.payload)))),
            Err(error)
                if error.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Removes this process's claim, if the lease is still it: another node takes the lease
    /// at its next try instead of after it runs out.
    async fn give_up(&self) -> Result<(), String> {
        let Some((sequence, claim)) = self.last().await? else {
            return Ok(());
        };
        if !self.is_own(&claim) {
            return Ok(());
        }
        let stream = self
            .jetstream
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|error| error.to_string())?;
        stream
            .delete_message(sequence)
            .await
            .map(drop)
            .map_err(|error| error.to_string())
    }
}

/// Whether this node is too far behind the log to take the lease before a node nearer its
/// end has had the chance.
fn lagging(cluster: &Cluster) -> bool {
    let status = cluster.status();
    CLAIM_LAG_MAX < status.stream_seq.saturating_sub(status.applied_seq)
}

/// Tries for the lease, leads with it, and returns only when leadership is lost (an error:
/// the process starts again) or NATS fails.
pub(super) async fn run(
    cluster: Cluster,
    ledger: Arc<Ledger>,
    journal: Arc<Journal>,
    position: Arc<tokio::sync::Mutex<StreamPosition>>,
    promoted: impl Fn() + Send + Sync + 'static,
) -> Result<(), ClusterError> {
    let config = cluster.inner.config.clone();
    let store = Lease::of(&cluster);
    let mut seen_free = 0;
    loop {
        if lagging(&cluster) && seen_free < CLAIM_PATIENCE {
            match store.last().await {
                Ok(None) => seen_free += 1,
                Ok(Some((_, claim))) => {
                    seen_free = 0;
                    cluster.update(|status| status.leader = Some(claim.node));
                }
                Err(reason) => tracing::warn!(%reason, "Cannot read the lease."),
            }
            tokio::time::sleep(config.lease_renew).await;
            continue;
        }
        seen_free = 0;
        match store.claim_or_own(0).await {
            Ok(revision) => {
                tracing::info!(term = revision, "Took the lease; catching up with the log.");
                cluster.update(|status| {
                    status.role = Role::Candidate;
                    status.term = revision;
                    status.leader = Some(config.node_id.clone());
                });
                match promote(&cluster, &ledger, &journal, &position, &store, revision).await {
                    Ok(revision) => {
                        promoted();
                        return lead(&cluster, &journal, &store, revision).await;
                    }
                    Err(reason) => {
                        tracing::warn!(%reason, "Could not take over; giving the lease up and following again.");
                        cluster.update(|status| status.role = Role::Standby);
                        if let Err(reason) = store.give_up().await {
                            tracing::warn!(%reason, "Cannot give the lease up; it runs out by itself.");
                        }
                        // Others go first.
                        tokio::time::sleep(config.lease_ttl).await;
                    }
                }
            }
            Err(LeaseError::Taken) => {
                cluster.jetstream_answered();
                if let Ok(Some((_, claim))) = store.last().await {
                    cluster.update(|status| status.leader = Some(claim.node));
                }
            }
            Err(LeaseError::Other(reason)) => {
                tracing::warn!(%reason, "Cannot read the lease.");
                cluster.jetstream_failed().await;
            }
        }
        tokio::time::sleep(config.lease_renew).await;
    }
}

/// From candidate to leader: applies the whole log, fences it with a term-start record and
/// makes the journal its writer. Keeps the lease renewed meanwhile. Returns the lease's
/// revision.
async fn promote(
    cluster: &Cluster,
    ledger: &Arc<Ledger>,
    journal: &Arc<Journal>,
    position: &Arc<tokio::sync::Mutex<StreamPosition>>,
    store: &Lease,
    term: u64,
) -> Result<u64, String> {
    let config = &cluster.inner.config;
    let mut revision = term;
    let mut renewed = tokio::time::Instant::now();
    let mut described = false;
    let mut fence_tries = 0;
    loop {
        if config.lease_renew <= renewed.elapsed() {
            revision = renew_as_candidate(store, revision).await?;
            renewed = tokio::time::Instant::now();
        }
        let last = log::last_sequence(cluster)
            .await
            .map_err(|error| error.to_string())?;
        let mut held = position.lock().await;
        cluster.update(|status| status.stream_seq = last);
        if last < held.applied_seq {
            // This node applied messages the log no longer has (it was made anew, or lost its
            // tail): fencing after `last` would put the next leader's facts where others hold
            // different ones.
            tracing::error!(
                applied = held.applied_seq,
                last,
                "This node applied more of the log than the log holds; it will not lead."
            );
            return Err(format!(
                "applied message {} but the log ends at {last}",
                held.applied_seq
            ));
        }
        if held.applied_seq < last {
            drop(held);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        // Everything in the log is applied, and the follower waits on `held`: nothing can
        // be applied between here and the fence. The log says the format this node writes
        // before it writes anything.
        if !described {
            log::describe(cluster)
                .await
                .map_err(|error| error.to_string())?;
            described = true;
        }
        match log::append_term(cluster, term, last).await {
            Ok(sequence) => {
                held.applied_seq = sequence;
                held.leading = true;
                take_the_writer(cluster, ledger, journal, term, sequence)?;
                return Ok(revision);
            }
            Err(reason) => {
                // Someone appended after `last` (catch up again), or the log's server cannot
                // take it yet: a pause that doubles, and the lease is given up after a while.
                drop(held);
                fence_tries += 1;
                if FENCE_TRIES_MAX <= fence_tries {
                    return Err(format!(
                        "could not fence the log in {fence_tries} tries: {reason}"
                    ));
                }
                tracing::info!(%reason, "The log moved while fencing; catching up again.");
                let pause = Duration::from_millis(10 << fence_tries.min(7));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Renews the lease of a candidate still catching up; its new revision, or why it is lost.
async fn renew_as_candidate(store: &Lease, revision: u64) -> Result<u64, String> {
    store
        .claim_or_own(revision)
        .await
        .map_err(|error| match error {
            LeaseError::Taken => "lost the lease while catching up".to_owned(),
            LeaseError::Other(reason) => format!("cannot renew the lease: {reason}"),
        })
}

/// A node that fenced the log at `sequence` in `term`: its journal becomes the log's writer,
/// appending after that sequence, and the node leads.
fn take_the_writer(
    cluster: &Cluster,
    ledger: &Arc<Ledger>,
    journal: &Arc<Journal>,
    term: u64,
    sequence: u64,
) -> Result<(), String> {
    let replicator = StreamReplicator {
        cluster: cluster.clone(),
        runtime: tokio::runtime::Handle::current(),
        term,
        last: sequence,
    };
    journal
        .lead(ledger, Box::new(replicator))
        .map_err(|error| error.to_string())?;
    cluster.inner.leading.store(true, Ordering::Release);
    cluster.update(|status| {
        status.role = Role::Leader;
        status.applied_seq = sequence;
        status.stream_seq = sequence;
        status.facts = journal.durable();
    });
    tracing::info!(term, sequence, "Leading the log.");
    Ok(())
}

/// Renews the lease until a renewal is refused (another node holds it) or the log refused an
/// append. A renewal that fails because NATS is failing over is tried again: the lease only
/// elects, the fence keeps the log safe. If the lease runs out meanwhile and another node
/// takes it, that node's term-start record makes this node's next append fail, and it steps
/// down then; if nobody else took it, this node goes on leading.
async fn lead(
    cluster: &Cluster,
    journal: &Journal,
    store: &Lease,
    mut revision: u64,
) -> Result<(), ClusterError> {
    let config = &cluster.inner.config;
    let mut renewed = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(config.lease_renew).await;
        if journal.poisoned() {
            return Err(step_down(cluster, journal, "the log refused an append"));
        }
        match tokio::time::timeout(config.lease_ttl, store.claim_or_own(revision)).await {
            Ok(Ok(next)) => {
                revision = next;
                renewed = tokio::time::Instant::now();
                cluster.jetstream_answered();
                cluster.update(|status| {
                    if status.role == Role::Isolated {
                        tracing::info!("Renewed the lease again; leading.");
                        status.role = Role::Leader;
                    }
                });
                continue;
            }
            Ok(Err(LeaseError::Taken)) => {
                return Err(step_down(
                    cluster,
                    journal,
                    "the lease is no longer this node's",
                ));
            }
            Ok(Err(LeaseError::Other(reason))) => {
                tracing::warn!(%reason, "Renewing the lease failed; trying again.");
                cluster.jetstream_failed().await;
            }
            Err(_) => {
                tracing::warn!("Renewing the lease timed out; trying again.");
                cluster.jetstream_failed().await;
            }
        }
        if config.lease_ttl <= renewed.elapsed() {
            // Cut off from the lease for longer than it lasts: another node may lead by now.
            // This one says so, and its appends fail if one does.
            cluster.update(|status| {
                if status.role == Role::Leader {
                    tracing::warn!("No renewal of the lease for longer than it lasts; isolated.");
                    status.role = Role::Isolated;
                }
            });
        }
    }
}

/// Gives the lease up, when this node leads: the journal takes nothing more, and the lease
/// is removed, so another node takes over at its next try rather than after the lease runs
/// out. For a node that stops on purpose, once requests in flight are answered.
pub(super) async fn release(cluster: &Cluster, journal: &Journal) {
    if !cluster.leading() {
        return;
    }
    step_down(cluster, journal, "this node is stopping");
    match Lease::of(cluster).give_up().await {
        Ok(()) => tracing::info!("Gave the lease up."),
        Err(reason) => tracing::warn!(%reason, "Cannot give the lease up; it runs out by itself."),
    }
}

fn step_down(cluster: &Cluster, journal: &Journal, reason: &str) -> ClusterError {
    cluster.inner.leading.store(false, Ordering::Release);
    cluster.update(|status| status.role = Role::Standby);
    journal.refuse(reason);
    ClusterError::SteppedDown(reason.to_owned())
}
