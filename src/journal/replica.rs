//! The journal over a replicated log (cluster mode): the leader's writer hands each batch,
//! framed exactly as in a segment file, to a [`Replicator`] (the cluster's JetStream
//! stream) and acknowledges it once the log holds it; a standby applies the log's batches
//! to its ledger with the replay code ([`Journal::follow`]), and from there they flow to its
//! durable state and its push hub as a leader's own batches do.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Journal, segment};
use crate::ledger::{Fact, Ledger};

/// The version of the records a replicated batch carries: the segment format's.
pub const LOG_FORMAT_VERSION: u32 = segment::FORMAT_VERSION;
/// The record formats of a log this node reads.
pub const LOG_FORMATS_READ: &[u32] = segment::LOG_FORMATS_READ;

/// Where a leader's batches go: a replicated log. `append` returns once the log holds the
/// batch (a quorum of its servers), or fails; a failure poisons the journal, since the
/// ledger now holds changes the log may not.
pub trait Replicator: Send {
    fn append(
        &mut self,
        first_sequence: u64,
        last_sequence: u64,
        records: &[u8],
    ) -> Result<(), String>;
}

/// A batch that does not follow the ledger a standby holds, or does not decode.
#[derive(Debug, thiserror::Error)]
#[error("replicated batch: {0}")]
pub struct FollowError(pub String);

impl Journal {
    /// Applies one replicated batch to `ledger` (which only the log changes on a standby),
    /// then treats it as durable: the durable state, the watermark and the push feed take
    /// it. Returns the sequence of its last fact. A batch that does not start right after
    /// the last fact applied, or does not decode or apply, changes nothing after its first
    /// bad record and is an error: the log is the truth, and a node that cannot follow it
    /// must stop, not skip.
    pub fn follow(&self, ledger: &Ledger, records: &[u8]) -> Result<u64, FollowError> {
        let parsed = segment::parse_records(records).map_err(FollowError)?;
        let mut sequence = self.durable();
        let mut first_sequence = None;
        let mut facts = Vec::with_capacity(parsed.len());
        for (record_sequence, payload) in parsed {
            if record_sequence <= sequence {
                // Already in the snapshot this node started from.
                continue;
            }
            if record_sequence != sequence + 1 {
                return Err(FollowError(format!(
                    "fact {record_sequence} follows fact {sequence}: facts are missing"
                )));
            }
            let fact = super::record::decode_fact(payload, &|order_id| {
                ledger.order(order_id).map(|view| view.order)
            })
            .map_err(|error| FollowError(format!("fact {record_sequence}: {error}")))?;
            ledger
                .apply(&fact)
                .map_err(|error| FollowError(format!("fact {record_sequence}: {error}")))?;
            facts.push(ledger.with_consumed(fact));
            first_sequence.get_or_insert(record_sequence);
            sequence = record_sequence;
        }
        if let Some(first_sequence) = first_sequence {
            self.publish_followed(first_sequence, facts);
        }
        Ok(sequence)
    }

    fn publish_followed(&self, first_sequence: u64, facts: Vec<Fact>) {
        let last = first_sequence + facts.len() as u64 - 1;
        let shared = &self.shared;
        {
            let mut queue = shared.queue.lock();
            queue.submitted = last;
        }
        shared.submitted_hint.store(last, Ordering::Relaxed);
        shared.written.store(last, Ordering::Release);
        shared.made_durable(first_sequence, facts);
    }

    /// Makes this journal the writer of the log: from now on every change of `ledger` is
    /// queued, handed to `replicator` in batches, and acknowledged once the log holds it.
    /// Call it once, on a standby that has applied the whole log and fenced the one before.
    pub fn lead(&self, ledger: &Ledger, replicator: Box<dyn Replicator>) -> std::io::Result<()> {
        let sequence = self.durable();
        let writer = super::writer::Writer::replicating(self.shared.clone(), sequence, replicator);
        let handle = std::thread::Builder::new()
            .name("journal-replicator".to_owned())
            .spawn(move || writer.run())?;
        *self.writer.lock() = Some(handle);
        if !ledger.attach(self.shared.clone()) {
            return Err(std::io::Error::other("the ledger already has a writer"));
        }
        Ok(())
    }
}

/// A journal with no file and no writer, for a standby: only [`Journal::follow`] moves it,
/// until [`Journal::lead`]. `ledger` starts at fact `sequence` (0, or a snapshot's).
pub fn follower(ledger: Ledger, sequence: u64, queue_facts_max: u64) -> (Arc<Ledger>, Journal) {
    let shared = super::Shared::new(sequence, queue_facts_max);
    let journal = Journal {
        shared,
        directory: std::path::PathBuf::new(),
        policy: super::SyncPolicy::Always,
        fsync: Arc::new(super::OsFsync),
        writer: parking_lot::Mutex::new(None),
        snapshot_sequence: std::sync::atomic::AtomicU64::new(sequence),
        snapshot_entries: std::sync::atomic::AtomicU64::new(0),
        snapshots: std::sync::atomic::AtomicU64::new(0),
        snapshot_longest_hold_ns: std::sync::atomic::AtomicU64::new(0),
        lock: parking_lot::Mutex::new(None),
    };
    (Arc::new(ledger), journal)
}

impl Journal {
    /// Stops acknowledging anything more, for good: this node no longer leads the log, so
    /// what it has not appended may never be; waiting requests learn it at once (503).
    pub fn refuse(&self, reason: &str) {
        self.shared
            .poison(&std::io::Error::other(reason.to_owned()), &self.directory);
    }
}

/// A follower journal whose ledger starts from a shared snapshot's `body` at fact
/// `sequence`, every invariant checked on the way in.
pub fn follower_from_snapshot(
    config: crate::ledger::LedgerConfig,
    sequence: u64,
    body: &[u8],
    queue_facts_max: u64,
) -> Result<(Arc<Ledger>, Journal), FollowError> {
    let image = super::record::decode_image(body)
        .map_err(|error| FollowError(format!("snapshot at fact {sequence}: {error}")))?;
    let ledger = Ledger::import(config, image)
        .map_err(|error| FollowError(format!("snapshot at fact {sequence}: {error}")))?;
    Ok(follower(ledger, sequence, queue_facts_max))
}
