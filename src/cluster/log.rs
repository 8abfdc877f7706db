//! The replicated log: the stream, the leader's appends ([`StreamReplicator`], the journal's
//! [`Replicator`] in cluster mode) and the standbys' tail ([`follow`]).
//!
//! Each message is one batch of facts, framed as in a segment file, with headers naming its
//! kind (`batch`, or `term` for the record a new leader appends to fence the one before),
//! the term and node that wrote it, and its first and last fact sequences.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

use super::{Cluster, ClusterError, Role, stream_description};
use crate::config::ClusterConfig;
use crate::journal::{Journal, Replicator};
use crate::ledger::Ledger;

const KIND: &str = "Sp-Kind";
const TERM: &str = "Sp-Term";
const NODE: &str = "Sp-Node";
const FIRST: &str = "Sp-First";
const LAST: &str = "Sp-Last";

/// How long a standby's log reader may stay quiet before it checks it is not stuck.
const FOLLOW_QUIET_MAX: Duration = Duration::from_secs(2);

/// How long opening a log reader waits for each JetStream answer.
const READER_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a batch is tried again before the leader gives up on the log.
const APPEND_RETRY_MAX: Duration = Duration::from_secs(30);

/// Where the log stands for this node: the stream sequence of the last message applied (or
/// appended), and whether following has stopped because this node leads.
#[derive(Debug, Default)]
pub(super) struct StreamPosition {
    pub applied_seq: u64,
    pub leading: bool,
}

/// The subject of shard 0 of the log.
pub(super) fn log_subject(stream: &str) -> String {
    format!("{stream}.log.0")
}

/// Creates the log stream, or checks that the one there is a stockpulse log of this record
/// format.
/// Returns the log's incarnation: the stream's creation time, in nanoseconds, which
/// changes when the stream is made anew.
pub(super) async fn ensure_stream(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<i128, ClusterError> {
    let nats = |error: &dyn std::fmt::Display| ClusterError::Nats(error.to_string());
    let description = stream_description();
    if !config.new_stream && jetstream.get_stream(&config.stream).await.is_err() {
        // No log by this name. If the account holds another stockpulse log, this node's
        // stream name is most likely mistyped: creating it would start a cluster of its own,
        // taking orders the real one never sees.
        let mut names = jetstream.stream_names();
        let mut others = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|error| nats(&error))?;
            if name == config.stream {
                // It does exist: the first look was not answered.
                others.clear();
                break;
            }
            let is_log = match jetstream.get_stream(&name).await {
                Ok(mut stream) => stream.info().await.is_ok_and(|info| {
                    info.config
                        .description
                        .as_deref()
                        .is_some_and(|text| text.starts_with("stockpulse log"))
                }),
                Err(_) => false,
            };
            if is_log {
                others.push(name);
            }
        }
        if !others.is_empty() {
            return Err(ClusterError::Incompatible {
                stream: config.stream.clone(),
                reason: format!(
                    "there is no such stream, and NATS already holds the stockpulse log {};                      set cluster.stream to join it, or cluster.new_stream = true to start a                      second cluster",
                    others.join(", ")
                ),
            });
        }
    }
    let mut stream = jetstream
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            description: Some(description.clone()),
            subjects: vec![log_subject(&config.stream)],
            storage: stream::StorageType::File,
            num_replicas: config.replicas,
            duplicate_window: Duration::from_secs(120),
            ..stream::Config::default()
        })
        .await
        .map_err(|error| nats(&format!("creating the log stream: {error}")))?;
    let info = stream
        .info()
        .await
        .map_err(|error| nats(&format!("reading the log stream: {error}")))?;
    let described = info.config.description.clone().unwrap_or_default();
    // A log of an earlier format this node reads is fine: the node that leads it next says
    // what it writes into it ([`describe`]), not every node that merely joins, so nodes of
    // the earlier format keep following until a leader of the new one writes.
    if described != description && !super::readable_description(&described) {
        return Err(ClusterError::Incompatible {
            stream: config.stream.clone(),
            reason: format!("it says {described:?}, this node writes and reads {description:?}"),
        });
    }
    check_replicas(config, info.config.num_replicas)?;
    Ok(info.created.unix_timestamp_nanos())
}

/// Refuses a log kept in fewer copies than `cluster.replicas` promises; more is said, and
/// holds.
fn check_replicas(config: &ClusterConfig, stream_replicas: usize) -> Result<(), ClusterError> {
    if stream_replicas < config.replicas {
        return Err(ClusterError::Incompatible {
            stream: config.stream.clone(),
            reason: format!(
                "it keeps {stream_replicas} copies and this node is set to {} (cluster.replicas): an acknowledgement would not mean what the setting promises; raise the stream's replicas (nats stream edit) or lower the setting",
                config.replicas
            ),
        });
    }
    if config.replicas < stream_replicas {
        tracing::warn!(
            stream = %config.stream,
            stream_replicas,
            replicas = config.replicas,
            "The log keeps more copies than cluster.replicas says; the log's count holds."
        );
    }
    Ok(())
}

/// Makes the log say the record format this node writes, and take messages on shard 0's
/// subject only: what a node does when it is about to lead, before it writes anything. A
/// node of an earlier format that starts later refuses the log rather than stop on a
/// record it does not know.
pub(super) async fn describe(cluster: &Cluster) -> Result<(), ClusterError> {
    let config = &cluster.inner.config;
    let nats = |error: &dyn std::fmt::Display| ClusterError::Nats(error.to_string());
    let jetstream = &cluster.inner.jetstream;
    // One request: the stream's info, not a look-up and then its info again.
    let info = jetstream
        .get_stream_no_info(&config.stream)
        .await
        .map_err(|error| nats(&error))?
        .get_info()
        .await
        .map_err(|error| nats(&error))?;
    let description = stream_description();
    let subjects = vec![log_subject(&config.stream)];
    if info.config.description.as_deref() == Some(description.as_str())
        && info.config.subjects == subjects
    {
        return Ok(());
    }
    let described = info.config.description.clone().unwrap_or_default();
    let mut upgraded = info.config.clone();
    upgraded.description = Some(description.clone());
    upgraded.subjects = subjects;
    jetstream
        .update_stream(&upgraded)
        .await
        .map_err(|error| nats(&format!("describing the log stream: {error}")))?;
    tracing::info!(stream = %config.stream, from = %described, to = %description, "The log now says the record format this node writes.");
    Ok(())
}

/// The log's epoch: a number every node derives alike from the stream's creation time
/// (`created`, nanoseconds), so screens can resume on any node, and that changes when the
/// stream is made anew.
pub(super) fn epoch_of(created: i128) -> u64 {
    let folded = (created as u64) ^ ((created >> 64) as u64);
    1 + folded % u64::from(u32::MAX - 1)
}

/// The stream's first and last sequences now.
pub(super) async fn bounds(cluster: &Cluster) -> Result<(u64, u64), ClusterError> {
    // One request: the stream's info, not a look-up and then its info again.
    let info = cluster
        .inner
        .jetstream
        .get_stream_no_info(&cluster.inner.config.stream)
        .await
        .map_err(|error| ClusterError::Nats(error.to_string()))?
        .get_info()
        .await
        .map_err(|error| ClusterError::Nats(error.to_string()))?;
    Ok((info.state.first_sequence, info.state.last_sequence))
}

/// The stream's last sequence now.
pub(super) async fn last_sequence(cluster: &Cluster) -> Result<u64, ClusterError> {
    Ok(bounds(cluster).await?.1)
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|value| value.as_str().to_owned())
}

/// Tails the log from the message after the last one applied, applying each batch to
/// `ledger` through `journal`, until this node leads (then it returns only when `stop`ped
/// by the caller) or a message cannot be applied.
pub(super) async fn follow(
    cluster: Cluster,
    ledger: Arc<Ledger>,
    journal: Arc<Journal>,
    position: Arc<tokio::sync::Mutex<StreamPosition>>,
) -> Result<(), ClusterError> {
    let config = &cluster.inner.config;
    let stream_name = config.stream.clone();
    let log_error = |sequence: u64, reason: String| ClusterError::Log {
        stream: stream_name.clone(),
        sequence,
        reason,
    };
    loop {
        let start = position.lock().await.applied_seq + 1;
        let mut messages = match open_reader(&cluster, start).await {
            Ok(messages) => messages,
            Err(reason) => {
                // NATS is failing over or overloaded: a standby waits, it does not stop.
                tracing::warn!(%reason, "Cannot read the log yet; trying again.");
                cluster.jetstream_failed().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        loop {
            // An ordered consumer lives on one NATS server; when that server dies the
            // consumer may go quiet without an error. A quiet consumer while the stream has
            // moved on is made again.
            let next = tokio::time::timeout(FOLLOW_QUIET_MAX, messages.next()).await;
            let message = match next {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(error))) => {
                    tracing::warn!(%error, "Reading the log failed; reading it again.");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    let applied = position.lock().await.applied_seq;
                    if behind_when_quiet(&cluster, applied).await {
                        break;
                    }
                    continue;
                }
            };
            let (sequence, pending) = match message.info() {
                Ok(info) => (info.stream_sequence, info.pending),
                Err(error) => return Err(log_error(0, format!("no stream sequence: {error}"))),
            };
            let mut position = position.lock().await;
            if position.leading {
                // This node leads: what it reads now it appended itself.
                return std::future::pending().await;
            }
            if sequence <= position.applied_seq {
                continue;
            }
            if position.applied_seq + 1 < sequence
                && !gap_is_no_loss(&cluster, position.applied_seq, sequence).await?
            {
                // The log could not be asked where it starts: read it again from here.
                break;
            }
            let headers = message.headers.clone().unwrap_or_default();
            let kind = header(&headers, KIND).unwrap_or_default();
            match kind.as_str() {
                "batch" => {
                    let ledger = ledger.clone();
                    let journal = journal.clone();
                    let payload = message.payload.clone();
                    let applied =
                        tokio::task::spawn_blocking(move || journal.follow(&ledger, &payload))
                            .await
                            .map_err(|error| log_error(sequence, error.to_string()))?;
                    let facts = applied.map_err(|error| log_error(sequence, error.to_string()))?;
                    cluster.update(|status| status.facts = facts);
                }
                "term" => {
                    let node = header(&headers, NODE);
                    let term = header(&headers, TERM)
                        .and_then(|term| term.parse().ok())
                        .unwrap_or(0);
                    tracing::info!(leader = ?node, term, sequence, "A new term began in the log.");
                    // Never backwards: a candidate catching up reads the terms before its own.
                    cluster.update(|status| {
                        if status.term <= term {
                            status.leader = node;
                            status.term = term;
                        }
                    });
                }
                other => {
                    return Err(log_error(
                        sequence,
                        format!(
                            "a message of unknown kind {other:?}: written by a newer node? upgrade this one"
                        ),
                    ));
                }
            }
            position.applied_seq = sequence;
            if pending == 0 {
                cluster.heard();
            }
            cluster.update(|status| {
                status.applied_seq = sequence;
                // What the reader still has to deliver: this node's lag behind the log.
                status.stream_seq = status.stream_seq.max(sequence + pending);
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The reader was quiet for [`FOLLOW_QUIET_MAX`]: whether the log has moved on past
/// `applied` (the reader must be made again). At the log's end, this node knows it is.
async fn behind_when_quiet(cluster: &Cluster, applied: u64) -> bool {
    let last = match last_sequence(cluster).await {
        Ok(last) => {
            cluster.jetstream_answered();
            last
        }
        Err(_) => {
            cluster.jetstream_failed().await;
            return false;
        }
    };
    if last <= applied {
        cluster.heard();
        return false;
    }
    tracing::warn!(
        applied,
        last,
        "The log reader went quiet behind the stream; reading it again."
    );
    true
}

/// The reader skipped from `applied` to `sequence`. A trim past `applied` (a newer shared
/// snapshot) means this node is further behind than the log keeps: it steps down to start
/// again from the snapshot. Otherwise nothing of the log is missing (sequences on another
/// subject of a log made before it took shard 0's only, or messages deleted by hand):
/// `true`, go on. `false` when the log could not be asked where it starts.
async fn gap_is_no_loss(
    cluster: &Cluster,
    applied: u64,
    sequence: u64,
) -> Result<bool, ClusterError> {
    let first = match bounds(cluster).await {
        Ok((first, _)) => first,
        Err(error) => {
            tracing::warn!(%error, applied, sequence, "The log skips sequences and cannot be asked why; reading it again.");
            return Ok(false);
        }
    };
    if applied + 1 < first {
        return Err(ClusterError::SteppedDown(format!(
            "the log now starts at message {first}, past this node's {applied}; starting again from the newest snapshot"
        )));
    }
    tracing::warn!(
        applied,
        sequence,
        "The log skips sequences that are not log messages; going on."
    );
    Ok(true)
}

/// An ordered reader of the log from stream sequence `start`.
async fn open_reader(
    cluster: &Cluster,
    start: u64,
) -> Result<jetstream::consumer::pull::Ordered, String> {
    let config = &cluster.inner.config;
    // Asked with a short timeout: while NATS elects after losing a server, a request can go
    // unanswered, and the next one, a moment later, is the one that works.
    let jetstream = jetstream::ContextBuilder::new()
        .timeout(READER_REQUEST_TIMEOUT)
        .build(cluster.inner.client.clone());
    let stream = jetstream
        .get_stream(&config.stream)
        .await
        .map_err(|error| error.to_string())?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: log_subject(&config.stream),
            deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ..Default::default()
        })
        .await
        .map_err(|error| error.to_string())?;
    consumer.messages().await.map_err(|error| error.to_string())
}

/// Appends the term-start record that fences the previous leader: it must follow `after`,
/// the last message this node applied, or someone appended meanwhile.
pub(super) async fn append_term(cluster: &Cluster, term: u64, after: u64) -> Result<u64, String> {
    let mut headers = HeaderMap::new();
    headers.insert(KIND, "term");
    headers.insert(TERM, term.to_string().as_str());
    headers.insert(NODE, cluster.inner.config.node_id.as_str());
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
        after.to_string().as_str(),
    );
    let ack = cluster
        .inner
        .jetstream
        .publish_with_headers(
            log_subject(&cluster.inner.config.stream),
            headers,
            bytes::Bytes::new(),
        )
        .await
        .map_err(|error| error.to_string())?
        .await
        .map_err(|error| error.to_string())?;
    follows(ack.sequence, after)
}

/// An append acknowledged at `sequence` that had to follow `after`: anything but the next
/// sequence means the log did not take it where the fence put it (a conditional publish
/// NATS let through), and this node must not go on as if it had.
fn follows(sequence: u64, after: u64) -> Result<u64, String> {
    if sequence == after + 1 {
        Ok(sequence)
    } else {
        Err(format!(
            "fenced: the log acknowledged message {sequence}, which does not follow {after}"
        ))
    }
}

/// The leader's side of the log: the journal writer's [`Replicator`]. Runs on the writer's
/// thread and blocks it on each publish, which is the group commit: while one batch is in
/// flight the next one gathers.
pub(super) struct StreamReplicator {
    pub(super) cluster: Cluster,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) term: u64,
    /// The stream sequence the next append must follow.
    pub(super) last: u64,
}

impl Replicator for StreamReplicator {
    fn append(
        &mut self,
        first_sequence: u64,
        last_sequence: u64,
        records: &[u8],
    ) -> Result<(), String> {
        let config = &self.cluster.inner.config;
        let mut headers = HeaderMap::new();
        headers.insert(KIND, "batch");
        headers.insert(TERM, self.term.to_string().as_str());
        headers.insert(NODE, config.node_id.as_str());
        headers.insert(FIRST, first_sequence.to_string().as_str());
        headers.insert(LAST, last_sequence.to_string().as_str());
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            self.last.to_string().as_str(),
        );
        // A retry after a lost answer is recognised by its id and answered with the
        // sequence it got the first time.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}-{}-{first_sequence}", config.node_id, self.term).as_str(),
        );
        let payload = bytes::Bytes::copy_from_slice(records);
        let subject = log_subject(&config.stream);
        // NATS takes seconds to elect a new stream leader when one of its servers dies; the
        // batch is tried again (the same message id) for that long. Requests waiting on it
        // get 503 after their own limit, and retry.
        let deadline = tokio::time::Instant::now() + APPEND_RETRY_MAX.max(config.lease_ttl);
        let jetstream = self.cluster.inner.jetstream.clone();
        let last = self.last;
        let result = self.runtime.block_on(async {
            loop {
                let attempt = async {
                    jetstream
                        .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                        .await
                        .map_err(|error| (error.kind(), error.to_string()))?
                        .await
                        .map_err(|error| (error.kind(), error.to_string()))
                };
                let outcome = tokio::time::timeout_at(deadline, attempt).await;
                match outcome {
                    Ok(Ok(ack)) => return follows(ack.sequence, last),
                    Ok(Err((jetstream::context::PublishErrorKind::WrongLastSequence, reason))) => {
                        return Err(format!("fenced: another node appended ({reason})"));
                    }
                    Ok(Err((_, reason))) => {
                        tracing::warn!(%reason, "Appending to the log failed; trying again.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        if deadline <= tokio::time::Instant::now() {
                            return Err(format!("the log did not take a batch: {reason}"));
                        }
                    }
                    Err(_) => {
                        return Err(format!(
                            "the log did not take a batch within {} s",
                            APPEND_RETRY_MAX.max(config.lease_ttl).as_secs()
                        ));
                    }
                }
            }
        });
        match result {
            Ok(sequence) => {
                self.last = sequence;
                self.cluster.update(|status| {
                    status.applied_seq = sequence;
                    status.stream_seq = sequence;
                    status.facts = last_sequence;
                });
                Ok(())
            }
            Err(reason) => {
                self.cluster
                    .inner
                    .leading
                    .store(false, std::sync::atomic::Ordering::Release);
                self.cluster.update(|status| status.role = Role::Standby);
                Err(reason)
            }
        }
    }
}
