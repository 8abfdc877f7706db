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
    jetstream
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
    Ok(())
}

/// Why a lease publish failed.
enum LeaseError {
    /// The subject's last sequence was not the one expected: someone else holds it.
    Taken,
    Other(String),
}

/// The lease, as a compare-and-set on its subject's last sequence (0: none).
#[derive(Clone)]
struct Lease {
    jetstream: jetstream::Context,
    stream: String,
    subject: String,
    node: String,
}

impl Lease {
    /// Publishes this node's claim after subject sequence `after`; the new sequence.
    async fn claim(&self, after: u64) -> Result<u64, LeaseError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            after.to_string().as_str(),
        );
        let ack = self
            .jetstream
            .publish_with_headers(
                self.subject.clone(),
                headers,
                bytes::Bytes::from(self.node.clone()),
            )
            .await
            .map_err(|error| LeaseError::Other(error.to_string()))?
            .await
            .map_err(|error| match error.kind() {
                jetstream::context::PublishErrorKind::WrongLastSequence => LeaseError::Taken,
                _ => LeaseError::Other(error.to_string()),
            })?;
        Ok(ack.sequence)
    }

    /// Who holds the lease now, if anyone.
    async fn holder(&self) -> Option<String> {
        let stream = self.jetstream.get_stream(&self.stream).await.ok()?;
        let message = stream
            .get_last_raw_message_by_subject(&self.subject)
            .await
            .ok()?;
        Some(String::from_utf8_lossy(&message.payload).into_owned())
    }
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
    let store = Lease {
        jetstream: cluster.inner.jetstream.clone(),
        stream: lease_stream(&config),
        subject: lease_subject(&config),
        node: config.node_id.clone(),
    };
    loop {
        match store.claim(0).await {
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
                        // The lease runs out by itself; whoever takes it next catches up.
                        tracing::warn!(%reason, "Could not take over; following again.");
                        cluster.update(|status| status.role = Role::Standby);
                    }
                }
            }
            Err(LeaseError::Taken) => {
                if let Some(holder) = store.holder().await {
                    cluster.update(|status| status.leader = Some(holder));
                }
            }
            Err(LeaseError::Other(reason)) => {
                tracing::warn!(%reason, "Cannot read the lease.");
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
    loop {
        if config.lease_renew <= renewed.elapsed() {
            revision = store.claim(revision).await.map_err(|error| match error {
                LeaseError::Taken => "lost the lease while catching up".to_owned(),
                LeaseError::Other(reason) => format!("cannot renew the lease: {reason}"),
            })?;
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
        // be applied between here and the fence.
        match log::append_term(cluster, term, last).await {
            Ok(sequence) => {
                held.applied_seq = sequence;
                held.leading = true;
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
                return Ok(revision);
            }
            Err(reason) => {
                // Someone appended after `last`: catch up again.
                tracing::info!(%reason, "The log moved while fencing; catching up again.");
                drop(held);
            }
        }
    }
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
    loop {
        tokio::time::sleep(config.lease_renew).await;
        if journal.poisoned() {
            return Err(step_down(cluster, journal, "the log refused an append"));
        }
        match tokio::time::timeout(config.lease_ttl, store.claim(revision)).await {
            Ok(Ok(next)) => revision = next,
            Ok(Err(LeaseError::Taken)) => {
                return Err(step_down(
                    cluster,
                    journal,
                    "the lease is no longer this node's",
                ));
            }
            Ok(Err(LeaseError::Other(reason))) => {
                tracing::warn!(%reason, "Renewing the lease failed; trying again.");
            }
            Err(_) => tracing::warn!("Renewing the lease timed out; trying again."),
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
    let config = &cluster.inner.config;
    let purged = match cluster
        .inner
        .jetstream
        .get_stream(lease_stream(config))
        .await
    {
        Ok(stream) => stream
            .purge()
            .filter(lease_subject(config))
            .await
            .map(|_| ())
            .map_err(|error| error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    match purged {
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
