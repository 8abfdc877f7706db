//! The journal: every fact the ledger produces, appended to checksummed segment files with
//! group commit, plus snapshots that bound how much of it a restart must replay.
//!
//! `open` recovers: the newest valid snapshot, then every journal record after it, with a
//! torn tail cut off; it returns the rebuilt ledger with the journal attached as its fact
//! sink. From then on, each fact is queued the moment it is applied (inside its SKU's
//! critical section, so one SKU's facts keep their order) and the writer thread
//! (`writer`) makes it durable; `wait_durable` is what an acknowledgement waits on.
//! `record` is the on-disk format of facts and images, `segment` the file framing.
//!
//! The journal never decides anything: replaying it re-does what the ledger decided.

mod record;
mod replica;
mod segment;
mod writer;

pub use replica::{
    FollowError, LOG_FORMAT_VERSION, LOG_FORMATS_READ, Replicator, follower, follower_from_snapshot,
};
pub use writer::{Fsync, OsFsync, SyncPoint};

#[cfg(test)]
mod tests;

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use tokio::sync::{broadcast, watch};

use crate::ledger::{Fact, FactSink, Ledger, LedgerConfig};

/// When the journal syncs what it wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// After every group of writes, before anything in it is acknowledged.
    Always,
    /// Every so often; acknowledged once written (like Redis `appendfsync everysec`).
    Interval(Duration),
    /// Never explicitly; the operating system writes back when it likes.
    Never,
}

#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// The journal's own directory (`<data dir>/journal`).
    pub directory: PathBuf,
    pub sync: SyncPolicy,
    /// Size of each preallocated segment.
    pub segment_bytes: u64,
    /// Cut corrupt records (and everything after them) instead of refusing to start.
    pub repair: bool,
    /// Facts that may wait for the writer before the journal calls itself backlogged and
    /// writes are refused: a disk that is slow but not failing must not let memory run
    /// ahead of it without bound.
    pub queue_facts_max: u64,
    /// How files and the directory are synced: the operating system's, or a test's.
    pub fsync: Arc<dyn Fsync>,
}

/// What recovery did.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// The sequence of the snapshot it started from, if any.
    pub snapshot_sequence: Option<u64>,
    /// Journal records replayed after it.
    pub replayed_count: u64,
    pub elapsed: Duration,
    /// Torn or (with repair) corrupt records cut off, with where they were.
    pub cut: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "journal corrupt in {path} at byte {offset}: {reason}; start with --repair to cut the journal there (losing what follows)"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error(
        "snapshot {path} is unusable: {reason}; start with --repair to recover from an older one"
    )]
    Snapshot { path: PathBuf, reason: String },
    #[error("another process is using the journal in {path}")]
    Locked { path: PathBuf },
}

/// Facts waiting for the writer.
#[derive(Default)]
struct Queue {
    facts: Vec<Fact>,
    /// The sequence of the last fact queued.
    submitted: u64,
    closing: bool,
}

/// What the ledger's threads, the writer and the waiters share.
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the writer when facts arrive.
    wake: Condvar,
    /// The highest sequence durable under the policy; acknowledgements wait on it.
    durable: watch::Sender<u64>,
    /// The highest sequence written to the file (synced or not).
    written: AtomicU64,
    /// The queue's `submitted`, readable without its lock, to measure the backlog.
    submitted_hint: AtomicU64,
    queue_facts_max: u64,
    /// Every batch of facts once it is durable, in order: what readers may publish.
    published: broadcast::Sender<DurableBatch>,
    /// Told of every batch once it is durable, before the watermark moves.
    listener: std::sync::OnceLock<Arc<dyn DurableListener>>,
    /// False while the disk refuses writes; the API refuses writes meanwhile.
    healthy: AtomicBool,
    /// A sync failed: nothing more is acknowledged until a restart.
    poisoned: AtomicBool,
    /// I/O failures seen, for metrics.
    failures: AtomicU64,
    /// Batches written, syncs done and the time spent syncing, for metrics.
    batches: AtomicU64,
    syncs: AtomicU64,
    sync_micros: AtomicU64,
}

/// Called by the writer with each batch of facts once it is durable, before anything in it
/// is acknowledged or published. It must be quick: acknowledgements wait for it.
pub trait DurableListener: Send + Sync {
    /// `facts` are numbered from `first_sequence`.
    fn durable(&self, first_sequence: u64, facts: &[Fact]);
}

impl DurableListener for crate::ledger::DurableState {
    fn durable(&self, _first_sequence: u64, facts: &[Fact]) {
        self.apply(facts);
    }
}

/// Facts that became durable together, in sequence order starting at `first_sequence`.
#[derive(Clone, Debug)]
pub struct DurableBatch {
    pub first_sequence: u64,
    pub facts: Arc<[Fact]>,
}

/// Facts that may wait for the writer unless configured otherwise: five seconds of the
/// fastest ingest measured, a few hundred megabytes at most.
pub const QUEUE_FACTS_MAX_DEFAULT: u64 = 1_000_000;
/// A snapshot, or a segment being prepared, is synced every this many bytes as it is
/// written, so that the writer's syncs never wait behind more than this much of it.
const SNAPSHOT_SYNC_CHUNK_BYTES: usize = 8 << 20;

/// Durable batches a slow reader may fall behind by before it is told it lagged (and must
/// resynchronise from the ledger).
pub const PUBLISHED_BATCHES_MAX: usize = 4096;

/// The journal's counters, for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JournalStats {
    pub submitted: u64,
    pub durable: u64,
    pub batches: u64,
    pub syncs: u64,
    pub sync_seconds: f64,
    pub failures: u64,
    pub healthy: bool,
    pub snapshots: u64,
    /// The longest the newest snapshot held a ledger lock: the pause it imposed.
    pub snapshot_longest_hold_seconds: f64,
}

impl Shared {
    /// Nothing queued, everything up to `sequence` durable.
    fn new(sequence: u64, queue_facts_max: u64) -> Arc<Shared> {
        let (durable, _) = watch::channel(sequence);
        Arc::new(Shared {
            queue: Mutex::new(Queue {
                submitted: sequence,
                ..Queue::default()
            }),
            wake: Condvar::new(),
            durable,
            written: AtomicU64::new(sequence),
            submitted_hint: AtomicU64::new(sequence),
            queue_facts_max,
            published: broadcast::channel(PUBLISHED_BATCHES_MAX).0,
            listener: std::sync::OnceLock::new(),
            healthy: AtomicBool::new(true),
            poisoned: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            sync_micros: AtomicU64::new(0),
        })
    }

    /// `facts`, from `first_sequence` on, are durable: the durable state takes them, then the
    /// watermark acknowledgements wait on moves, and only then may readers (the push hub)
    /// see them. The writer calls it for its batches, a standby for the log's.
    fn made_durable(&self, first_sequence: u64, facts: Vec<Fact>) {
        let last = first_sequence + facts.len() as u64 - 1;
        if let Some(listener) = self.listener.get() {
            listener.durable(first_sequence, &facts);
        }
        self.durable.send_replace(last);
        if 0 < self.published.receiver_count() {
            let _ = self.published.send(DurableBatch {
                first_sequence,
                facts: facts.into(),
            });
        }
    }

    /// A sync failed: whatever was written since the last good sync may be gone without the
    /// kernel saying so again, so nothing more is acknowledged until a restart reads what
    /// the disk really holds.
    fn poison(&self, error: &std::io::Error, directory: &Path) {
        self.poisoned.store(true, Ordering::Release);
        self.healthy.store(false, Ordering::Release);
        self.failures.fetch_add(1, Ordering::Relaxed);
        tracing::error!(%error, directory = %directory.display(), "The journal cannot make changes durable; refusing writes until the server is restarted.");
        // Whoever waits for durability learns now that it will not come.
        self.durable.send_modify(|_| {});
    }
}

impl FactSink for Shared {
    fn append(&self, fact: &Fact) {
        let mut queue = self.queue.lock();
        queue.facts.push(fact.clone());
        queue.submitted += 1;
        self.submitted_hint
            .store(queue.submitted, Ordering::Relaxed);
        drop(queue);
        self.wake.notify_one();
    }
}

/// The handle the server keeps.
pub struct Journal {
    shared: Arc<Shared>,
    directory: PathBuf,
    policy: SyncPolicy,
    fsync: Arc<dyn Fsync>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The sequence of the newest snapshot.
    snapshot_sequence: AtomicU64,
    /// SKUs plus orders in the newest snapshot: its cost to write again.
    snapshot_entries: AtomicU64,
    /// Snapshots written since start.
    snapshots: AtomicU64,
    /// The longest the newest snapshot held a ledger lock, in nanoseconds.
    snapshot_longest_hold_ns: AtomicU64,
    /// The open `LOCK` file, whose exclusive `flock` keeps a second process out of the
    /// directory; released by `close`.
    lock: Mutex<Option<std::fs::File>>,
}

impl Journal {
    /// Tells `listener` of every batch from now on, once it is durable and before anything
    /// in it is acknowledged. Attach it before the ledger changes after recovery. Returns
    /// `false` when a listener was attached already.
    pub fn listen(&self, listener: Arc<dyn DurableListener>) -> bool {
        self.shared.listener.set(listener).is_ok()
    }

    /// Every batch of facts from now on, each once it is durable, in order.
    pub fn subscribe(&self) -> broadcast::Receiver<DurableBatch> {
        self.shared.published.subscribe()
    }

    /// Whether more facts wait for the writer than it may fall behind by: the disk is too
    /// slow for the load, and writes are refused until it catches up.
    pub fn backlogged(&self) -> bool {
        let submitted = self.shared.submitted_hint.load(Ordering::Relaxed);
        let written = self.shared.written.load(Ordering::Relaxed);
        self.shared.queue_facts_max < submitted.saturating_sub(written)
    }

    /// Whether writes are being accepted by the disk.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Acquire) && !self.shared.poisoned.load(Ordering::Acquire)
    }

    /// Whether a sync failed: nothing more will become durable until a restart.
    pub fn poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    /// The sequence of the last fact queued.
    pub fn submitted(&self) -> u64 {
        self.shared.queue.lock().submitted
    }

    pub fn durable(&self) -> u64 {
        *self.shared.durable.borrow()
    }

    /// The durable watermark, to wait on for many changes at once (pipelined commands).
    pub fn durable_receiver(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    pub fn policy(&self) -> SyncPolicy {
        self.policy
    }

    pub fn stats(&self) -> JournalStats {
        let shared = &self.shared;
        JournalStats {
            submitted: self.submitted(),
            durable: self.durable(),
            batches: shared.batches.load(Ordering::Relaxed),
            syncs: shared.syncs.load(Ordering::Relaxed),
            sync_seconds: shared.sync_micros.load(Ordering::Relaxed) as f64 / 1e6,
            failures: shared.failures.load(Ordering::Relaxed),
            healthy: self.healthy(),
            snapshots: self.snapshots.load(Ordering::Relaxed),
            snapshot_longest_hold_seconds: self.snapshot_longest_hold_ns.load(Ordering::Relaxed)
                as f64
                / 1e9,
        }
    }

    /// Facts queued since the newest snapshot.
    pub fn since_snapshot(&self) -> u64 {
        self.submitted()
            .saturating_sub(self.snapshot_sequence.load(Ordering::Relaxed))
    }

    /// Whether a snapshot is due: `every_facts` facts since the last one, and at least as
    /// many as the last snapshot held entries. The second rule keeps snapshots of a large
    /// ledger from coming faster than the facts that justify them, so their cost stays a
    /// constant share of the work, as Redis does with its AOF rewrite percentage.
    pub fn snapshot_due(&self, every_facts: u64) -> bool {
        let threshold = every_facts.max(self.snapshot_entries.load(Ordering::Relaxed));
        threshold <= self.since_snapshot()
    }

    /// Waits until every fact queued so far is durable under the policy; `false` when that
    /// took longer than `limit` (the disk is failing).
    pub async fn wait_durable(&self, limit: Duration) -> bool {
        let target = self.submitted();
        let mut durable = self.shared.durable.subscribe();
        let poisoned = &self.shared.poisoned;
        let settled =
            durable.wait_for(|durable| target <= *durable || poisoned.load(Ordering::Acquire));
        match tokio::time::timeout(limit, settled).await {
            Ok(Ok(durable)) => target <= *durable,
            _ => false,
        }
    }

    /// Writes a snapshot of `ledger` and deletes the segments and snapshots it makes
    /// redundant. Blocking: call it from a blocking thread. A failed sync poisons the journal
    /// as the writer's do: the disk lost writes without saying which.
    pub fn snapshot(&self, ledger: &Ledger) -> std::io::Result<u64> {
        self.snapshot_then(ledger, || {})
    }

    /// [`Journal::snapshot`], calling `after_cut` once the ledger is copied: what follows
    /// (encoding, writing) holds no lock the requests need, and may run at a lower priority.
    pub fn snapshot_then(&self, ledger: &Ledger, after_cut: impl FnOnce()) -> std::io::Result<u64> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            // Memory holds changes the disk may have lost; the next start must read what the
            // disk holds, not a snapshot of them.
            return Err(std::io::Error::other(
                "the journal is poisoned by a failed sync; no snapshot until a restart",
            ));
        }
        let snapshot = self.encode_snapshot_then(ledger, after_cut);
        let (sequence, body) = (snapshot.sequence, &snapshot.body);
        let final_path = segment::snapshot_path(&self.directory, sequence);
        let temporary = final_path.with_extension("tmp");
        let poison = |error: std::io::Error| {
            self.shared.poison(&error, &self.directory);
            error
        };
        {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&temporary)?;
            file.write_all(&segment::snapshot_header(sequence, body))?;
            // Synced as it goes: a sync ends with a flush of the disk's cache, which waits
            // for every write in flight, so a gigabyte left dirty and synced at the end would
            // hold up the writer's syncs for hundreds of milliseconds; a few megabytes at a
            // time hold them up for a few.
            for chunk in body.chunks(SNAPSHOT_SYNC_CHUNK_BYTES) {
                file.write_all(chunk)?;
                self.fsync
                    .sync_file(&file, SyncPoint::Snapshot)
                    .map_err(poison)?;
            }
            if body.is_empty() {
                self.fsync
                    .sync_file(&file, SyncPoint::Snapshot)
                    .map_err(poison)?;
            }
        }
        std::fs::rename(&temporary, &final_path)?;
        self.fsync.sync_directory(&self.directory).map_err(poison)?;
        self.snapshot_written(&snapshot);
        self.prune(sequence)?;
        tracing::info!(
            sequence,
            entries = snapshot.entries,
            longest_hold_us = snapshot.longest_hold.as_micros(),
            "Snapshot written."
        );
        Ok(sequence)
    }

    /// Deletes older snapshots and every segment whose records all precede `sequence`,
    /// once the writer has written up to it (until then the segments on disk are not the
    /// whole story).
    fn prune(&self, sequence: u64) -> std::io::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.shared.written.load(Ordering::Acquire) < sequence {
            if deadline < tokio::time::Instant::now() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        for (number, path) in segment::list(&self.directory, "snapshot-", ".snap")? {
            if number < sequence {
                std::fs::remove_file(path)?;
            }
        }
        let segments = segment::list(&self.directory, "segment-", ".log")?;
        for pair in segments.windows(2) {
            let next_first = first_sequence(&pair[1].1)?;
            if next_first <= sequence + 1 {
                std::fs::remove_file(&pair[0].1)?;
            }
        }
        Ok(())
    }

    /// Writes what is queued, syncs, stops the writer, and releases the directory.
    pub fn close(&self) {
        self.shared.queue.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
        self.lock.lock().take();
    }
}

/// A snapshot's body, encoded, with the fact sequence it holds: written to a file by a
/// single node, shared through the cluster's store by a leader.
pub struct EncodedSnapshot {
    pub sequence: u64,
    /// The image, as a snapshot file's body.
    pub body: Vec<u8>,
    /// SKUs plus orders in it.
    pub entries: u64,
    /// The longest the copy held a ledger lock.
    pub longest_hold: std::time::Duration,
}

impl Journal {
    /// The ledger at a consistent cut (copy on write), encoded as a snapshot file's body.
    /// Blocking.
    pub fn encode_snapshot(&self, ledger: &Ledger) -> EncodedSnapshot {
        self.encode_snapshot_then(ledger, || {})
    }

    fn encode_snapshot_then(&self, ledger: &Ledger, after_cut: impl FnOnce()) -> EncodedSnapshot {
        let (image, sequence) = ledger.export(|| self.submitted());
        after_cut();
        let body = record::encode_image(&image);
        let entries = (image.skus.len() + image.orders.len()) as u64;
        EncodedSnapshot {
            sequence,
            body,
            entries,
            longest_hold: ledger.last_export_longest_hold(),
        }
    }

    /// Counts `snapshot` as this journal's newest, written (to a file or the cluster's
    /// store), so `snapshot_due` spaces the next one from it.
    pub fn snapshot_written(&self, snapshot: &EncodedSnapshot) {
        self.snapshot_sequence
            .store(snapshot.sequence, Ordering::Relaxed);
        self.snapshot_entries
            .store(snapshot.entries, Ordering::Relaxed);
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        self.snapshot_longest_hold_ns.store(
            u64::try_from(snapshot.longest_hold.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

fn first_sequence(path: &Path) -> std::io::Result<u64> {
    let file = std::fs::File::open(path)?;
    let mut bytes = [0u8; 8];
    file.read_exact_at(&mut bytes, 24)?;
    Ok(u64::from_le_bytes(bytes))
}

/// The first sequence a segment's header names, when the header is a valid one.
fn checked_first_sequence(path: &Path) -> Option<u64> {
    let file = std::fs::File::open(path).ok()?;
    let mut header = [0u8; segment::SEGMENT_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, 0).ok()?;
    segment::header_first_sequence(&header)
}

/// Recovers the ledger from `config.directory` and starts the journal on it.
pub fn open(
    config: &JournalConfig,
    ledger_config: LedgerConfig,
) -> Result<(Arc<Ledger>, Journal, Recovery), JournalError> {
    let started = tokio::time::Instant::now();
    let directory = &config.directory;
    let io = |source| JournalError::Io {
        path: directory.clone(),
        source,
    };
    std::fs::create_dir_all(directory).map_err(io)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(directory.join("LOCK"))
        .map_err(io)?;
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        return Err(JournalError::Locked {
            path: directory.clone(),
        });
    }
    // Segments being prepared and snapshots being written when the last run stopped were
    // never used.
    for entry in std::fs::read_dir(directory).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("");
        let unfinished =
            name.ends_with(".prep") || (name.starts_with("snapshot-") && name.ends_with(".tmp"));
        if unfinished {
            std::fs::remove_file(&path).map_err(io)?;
        }
    }
    let mut recovery = Recovery::default();
    let (ledger, mut sequence) = load_snapshot(config, ledger_config, &mut recovery)?;
    let segments = segment::list(directory, "segment-", ".log").map_err(io)?;
    let last_index = segments.last().map_or(0, |(index, _)| *index);
    let mut progress = Progress::new();
    let snapshot_sequence = sequence;
    for (position, (index, path)) in segments.iter().enumerate() {
        let is_last = position + 1 == segments.len();
        if let Some((_, next)) = segments.get(position + 1) {
            // Every record of this segment is in the snapshot (a crash came between the
            // snapshot and its pruning): nothing in it is needed, damaged or not.
            // Only a valid header may tell what to skip; a damaged one is the scan's to report.
            if checked_first_sequence(next)
                .is_some_and(|next_first| next_first <= snapshot_sequence.saturating_add(1))
            {
                continue;
            }
        }
        let scan = segment::scan(path, *index).map_err(|error| JournalError::Corrupt {
            path: path.clone(),
            offset: 0,
            reason: error.to_string(),
        })?;
        // Decide what to keep before changing any file.
        if let Some(damage) = &scan.damage {
            let tolerated = config.repair || (is_last && damage.torn_tail);
            if !tolerated {
                return Err(JournalError::Corrupt {
                    path: path.clone(),
                    offset: damage.offset,
                    reason: damage.reason.clone(),
                });
            }
        }
        let mut end = scan.end;
        let mut cut = false;
        for (record_sequence, offset, payload) in scan.records {
            if record_sequence <= sequence {
                continue;
            }
            let applied = if sequence.checked_add(1) == Some(record_sequence) {
                record::decode_fact(&payload, &|order_id| {
                    ledger.order(order_id).map(|view| view.order)
                })
                .map_err(|error| error.to_string())
                .and_then(|fact| ledger.apply(&fact).map_err(|error| error.to_string()))
            } else {
                Err(format!(
                    "sequence {record_sequence} follows {sequence}: records are missing"
                ))
            };
            if let Err(reason) = applied {
                if !config.repair {
                    return Err(JournalError::Corrupt {
                        path: path.clone(),
                        offset,
                        reason,
                    });
                }
                end = offset;
                cut = true;
                recovery
                    .cut
                    .push(format!("{}: byte {offset}: {reason}", path.display()));
                break;
            }
            sequence = record_sequence;
            recovery.replayed_count += 1;
            progress.tick(recovery.replayed_count);
        }
        if let Some(damage) = scan.damage {
            tracing::warn!(path = %path.display(), offset = damage.offset, reason = %damage.reason, "Journal cut off at damage.");
            recovery.cut.push(format!(
                "{}: byte {}: {}",
                path.display(),
                damage.offset,
                damage.reason
            ));
            end = end.min(damage.offset);
            cut = true;
        }
        if end < scan_length(path).map_err(io)? {
            // Drop the damaged bytes (and the preallocated zeros) for good.
            OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|file| {
                    file.set_len(end)?;
                    file.sync_all()
                })
                .map_err(io)?;
        }
        if cut && !is_last {
            // Only repair gets here: what follows a cut cannot be replayed. Keep it aside
            // for an operator to look at rather than deleting it.
            for (_, later) in &segments[position + 1..] {
                let aside = later.with_extension("log.cut");
                tracing::warn!(path = %later.display(), "Journal segment after the cut set aside.");
                std::fs::rename(later, &aside).map_err(io)?;
                recovery.cut.push(format!("{}: set aside", later.display()));
            }
            segment::sync_directory(directory).map_err(io)?;
            break;
        }
    }
    // What was read back may still be only in the page cache (the process crashed, the
    // machine did not): it is synced now, so new records may say everything up to here is.
    if let Some((_, last)) = segments.last()
        && last.exists()
    {
        OpenOptions::new()
            .write(true)
            .open(last)
            .and_then(|file| file.sync_all())
            .map_err(io)?;
    }
    let ledger = Arc::new(ledger);
    let shared = Shared::new(sequence, config.queue_facts_max);
    let writer = writer::Writer {
        shared: shared.clone(),
        directory: directory.clone(),
        policy: config.sync,
        fsync: config.fsync.clone(),
        segment_bytes: config.segment_bytes,
        file: None,
        index: last_index,
        offset: 0,
        buffer: Vec::with_capacity(1024 * 1024),
        // Everything recovered was synced just above.
        synced: sequence,
        written_last: sequence,
        prepared: writer::prepare_in_background(directory, config.segment_bytes),
        replicator: None,
    };
    let handle = std::thread::Builder::new()
        .name("journal-writer".to_owned())
        .spawn(move || writer.run())
        .map_err(io)?;
    ledger.attach(shared.clone());
    recovery.elapsed = started.elapsed();
    let journal = Journal {
        shared,
        directory: directory.clone(),
        policy: config.sync,
        fsync: config.fsync.clone(),
        writer: Mutex::new(Some(handle)),
        snapshot_sequence: AtomicU64::new(recovery.snapshot_sequence.unwrap_or(0)),
        snapshot_entries: AtomicU64::new(0),
        snapshots: AtomicU64::new(0),
        snapshot_longest_hold_ns: AtomicU64::new(0),
        lock: Mutex::new(Some(lock)),
    };
    Ok((ledger, journal, recovery))
}

fn scan_length(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

/// The ledger as of the newest usable snapshot, and that snapshot's sequence.
fn load_snapshot(
    config: &JournalConfig,
    ledger_config: LedgerConfig,
    recovery: &mut Recovery,
) -> Result<(Ledger, u64), JournalError> {
    let snapshots = segment::list(&config.directory, "snapshot-", ".snap").map_err(|source| {
        JournalError::Io {
            path: config.directory.clone(),
            source,
        }
    })?;
    for (named_sequence, path) in snapshots.iter().rev() {
        let loaded = segment::read_snapshot(path, *named_sequence).and_then(|(sequence, body)| {
            let image = record::decode_image(&body).map_err(|error| error.to_string())?;
            let ledger =
                Ledger::import(ledger_config.clone(), image).map_err(|error| error.to_string())?;
            Ok((ledger, sequence))
        });
        match loaded {
            Ok((ledger, sequence)) => {
                recovery.snapshot_sequence = Some(sequence);
                return Ok((ledger, sequence));
            }
            Err(reason) if config.repair => {
                tracing::warn!(path = %path.display(), %reason, "Snapshot unusable; trying an older one.");
                recovery.cut.push(format!("{}: {reason}", path.display()));
            }
            Err(reason) => {
                return Err(JournalError::Snapshot {
                    path: path.clone(),
                    reason,
                });
            }
        }
    }
    Ok((Ledger::new(ledger_config), 0))
}

/// Logs replay progress once a second when replay takes long.
struct Progress {
    started: tokio::time::Instant,
    last: tokio::time::Instant,
}

impl Progress {
    fn new() -> Self {
        let now = tokio::time::Instant::now();
        Progress {
            started: now,
            last: now,
        }
    }

    fn tick(&mut self, replayed_count: u64) {
        if replayed_count.is_multiple_of(65_536) && Duration::from_secs(1) <= self.last.elapsed() {
            self.last = tokio::time::Instant::now();
            tracing::info!(
                replayed_count,
                elapsed_s = self.started.elapsed().as_secs(),
                "Replaying the journal."
            );
        }
    }
}

/// Decodes a journal record and a snapshot image from outside bytes, for the property tests
/// and the fuzz targets: `true` when they decode. Payments and the like name orders the
/// ledger would look up; here every order is unknown.
pub fn decode_untrusted(bytes: &[u8]) -> (bool, bool) {
    let fact = record::decode_fact(bytes, &|_| None).is_ok();
    let image = record::decode_image(bytes).is_ok();
    (fact, image)
}
