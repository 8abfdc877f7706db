//! The writer thread: group commit. It takes every fact waiting in the queue, frames them
//! into one buffer, writes it with one system call, syncs once (under `always`), and only
//! then moves the durable watermark that acknowledgements wait on. Segments are preallocated
//! zero-filled ahead of time by a helper thread, and rolled at the size limit.
//!
//! A failed write marks the journal unhealthy and the same bytes are retried until the disk
//! takes them: nothing after them is written first. A failed sync is never retried, wherever
//! it happens (after a batch, when a segment is closed, when a new segment's name is made
//! durable, for a snapshot): the kernel may have dropped the dirty pages and would report the
//! next sync clean, so the journal is poisoned and acknowledges nothing more until a restart
//! reads what the disk really holds. Syncs go through [`Fsync`], so tests can fail one.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::segment::{self, SEGMENT_HEADER_BYTES};
use super::{Shared, SyncPolicy, record};
use crate::ledger::Fact;

/// How long the writer waits before retrying after an I/O error.
/// The most a message of the replicated log holds, in bytes, plus one record: NATS refuses
/// messages over its `max_payload` (1 MiB unless configured otherwise), and a backlog that
/// gathered while the log was away must not become one message it refuses.
pub(super) const REPLICATED_BATCH_BYTES_MAX: usize = 256 * 1024;
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Where in its work the journal syncs, so a test can fail one particular sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPoint {
    /// After writing a group of facts, before acknowledging them.
    Batch,
    /// A full segment, before the writer moves on to the next.
    Roll,
    /// A new segment's header, before it is named.
    SegmentHeader,
    /// The journal directory, after a segment or a snapshot got its name.
    Directory,
    /// A snapshot file, before it is named.
    Snapshot,
}

/// How the journal makes what it wrote durable: `fdatasync` and a directory `fsync` on a
/// real disk ([`OsFsync`]).
pub trait Fsync: std::fmt::Debug + Send + Sync {
    fn sync_file(&self, file: &File, point: SyncPoint) -> std::io::Result<()>;
    fn sync_directory(&self, directory: &Path) -> std::io::Result<()>;
}

/// The operating system's syncs.
#[derive(Debug, Default)]
pub struct OsFsync;

impl Fsync for OsFsync {
    fn sync_file(&self, file: &File, _point: SyncPoint) -> std::io::Result<()> {
        file.sync_data()
    }

    fn sync_directory(&self, directory: &Path) -> std::io::Result<()> {
        segment::sync_directory(directory)
    }
}

pub(super) struct Writer {
    pub(super) shared: Arc<Shared>,
    pub(super) directory: PathBuf,
    pub(super) policy: SyncPolicy,
    pub(super) fsync: Arc<dyn Fsync>,
    pub(super) segment_bytes: u64,
    /// The segment being written, its index and the next write offset.
    pub(super) file: Option<File>,
    pub(super) index: u64,
    pub(super) offset: u64,
    pub(super) buffer: Vec<u8>,
    /// The highest sequence synced to disk, which each record written carries: recovery
    /// tells by it whether damage is in synced records (corruption) or not (a torn tail).
    pub(super) synced: u64,
    /// The sequence of the last record written to the file.
    pub(super) written_last: u64,
    /// The next segment, being zero-filled by a helper thread.
    pub(super) prepared: Option<std::thread::JoinHandle<std::io::Result<(PathBuf, File)>>>,
    /// In cluster mode, the replicated log each batch goes to instead of a file.
    pub(super) replicator: Option<Box<dyn super::Replicator>>,
}

impl Writer {
    /// A writer that appends to a replicated log instead of files, from fact `sequence` on.
    /// Batches are cut to messages of at most [`REPLICATED_BATCH_BYTES_MAX`].
    pub(super) fn replicating(
        shared: Arc<Shared>,
        sequence: u64,
        replicator: Box<dyn super::Replicator>,
    ) -> Writer {
        Writer {
            shared,
            directory: PathBuf::new(),
            policy: SyncPolicy::Always,
            fsync: Arc::new(OsFsync),
            segment_bytes: 0,
            file: None,
            index: 0,
            offset: 0,
            buffer: Vec::with_capacity(1024 * 1024),
            synced: sequence,
            written_last: sequence,
            prepared: None,
            replicator: Some(replicator),
        }
    }

    pub(super) fn run(mut self) {
        let mut unsynced = false;
        let mut last_sync = tokio::time::Instant::now();
        loop {
            if self.poisoned() {
                return;
            }
            let (facts, first_sequence, closing) = {
                let mut queue = self.shared.queue.lock();
                if queue.facts.is_empty() && !queue.closing {
                    let timeout = match self.policy {
                        SyncPolicy::Interval(interval) if unsynced => interval,
                        _ => Duration::from_secs(3600),
                    };
                    self.shared.wake.wait_for(&mut queue, timeout);
                }
                let facts = std::mem::take(&mut queue.facts);
                let first_sequence = queue.submitted + 1 - facts.len() as u64;
                (facts, first_sequence, queue.closing)
            };
            if self.replicator.is_some() {
                if !facts.is_empty() {
                    self.replicate(facts, first_sequence);
                }
                if closing && self.shared.queue.lock().facts.is_empty() {
                    return;
                }
                continue;
            }
            if !facts.is_empty() {
                self.write_batch(&facts, first_sequence);
                if self.poisoned() {
                    // Gave up mid-batch: none of it may be acknowledged.
                    return;
                }
                self.written_last = first_sequence + facts.len() as u64 - 1;
                self.shared.batches.fetch_add(1, Ordering::Relaxed);
                unsynced = true;
            }
            let sync_now = match self.policy {
                SyncPolicy::Always => unsynced,
                SyncPolicy::Interval(interval) => {
                    unsynced && (closing || interval <= last_sync.elapsed())
                }
                SyncPolicy::Never => closing && unsynced,
            };
            if sync_now {
                let started = tokio::time::Instant::now();
                let synced = match &self.file {
                    Some(file) => self.fsync.sync_file(file, SyncPoint::Batch),
                    None => Ok(()),
                };
                if let Err(error) = synced {
                    self.shared.poison(&error, &self.directory);
                    return;
                }
                self.synced = self.written_last;
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                self.shared.syncs.fetch_add(1, Ordering::Relaxed);
                self.shared.sync_micros.fetch_add(micros, Ordering::Relaxed);
                unsynced = false;
                last_sync = tokio::time::Instant::now();
            }
            if !facts.is_empty() {
                let last = first_sequence + facts.len() as u64 - 1;
                self.shared.written.store(last, Ordering::Release);
                if self.policy != SyncPolicy::Always || !unsynced {
                    self.shared.made_durable(first_sequence, facts);
                }
            }
            if closing && self.shared.queue.lock().facts.is_empty() {
                // The segment prepared for later is not needed any more.
                if let Some(Ok(Ok((path, _)))) =
                    self.prepared.take().map(|preparing| preparing.join())
                {
                    let _ = std::fs::remove_file(path);
                }
                return;
            }
        }
    }

    /// Appends facts to the replicated log in messages of at most
    /// [`REPLICATED_BATCH_BYTES_MAX`], each durable (and told to the listener) once the log
    /// holds it: one message is one durable batch on every node.
    fn replicate(&mut self, mut facts: Vec<Fact>, first_sequence: u64) {
        let mut first = first_sequence;
        while !facts.is_empty() {
            self.buffer.clear();
            let mut count = 0;
            for (position, fact) in facts.iter().enumerate() {
                let sequence = first + position as u64;
                segment::frame(&mut self.buffer, sequence, self.synced, |buffer| {
                    record::encode_fact(fact, buffer)
                });
                count += 1;
                if REPLICATED_BATCH_BYTES_MAX <= self.buffer.len() {
                    break;
                }
            }
            let rest = facts.split_off(count);
            let last = first + count as u64 - 1;
            let Some(replicator) = self.replicator.as_mut() else {
                return;
            };
            if let Err(reason) = replicator.append(first, last, &self.buffer) {
                // The ledger holds changes the log may not: nothing more is acknowledged,
                // and the node must start again from the log.
                self.shared
                    .poison(&std::io::Error::other(reason), &self.directory);
                return;
            }
            self.written_last = last;
            self.synced = last;
            self.shared.batches.fetch_add(1, Ordering::Relaxed);
            self.shared.written.store(last, Ordering::Release);
            self.shared.made_durable(first, facts);
            facts = rest;
            first = last + 1;
        }
    }

    fn write_batch(&mut self, facts: &[Fact], first_sequence: u64) {
        self.buffer.clear();
        for (position, fact) in facts.iter().enumerate() {
            let sequence = first_sequence + position as u64;
            let before = self.buffer.len();
            segment::frame(&mut self.buffer, sequence, self.synced, |buffer| {
                record::encode_fact(fact, buffer)
            });
            let needed = self.offset + self.buffer.len() as u64;
            if self.file.is_none() || self.segment_bytes < needed {
                // Flush what fits in this segment, then start the next with this record.
                let record = self.buffer.split_off(before);
                self.flush();
                self.roll(sequence);
                if self.poisoned() {
                    return;
                }
                self.buffer = record;
            }
        }
        self.flush();
    }

    /// Writes the buffer at the current offset.
    fn flush(&mut self) {
        if self.buffer.is_empty() || self.file.is_none() {
            return;
        }
        let offset = self.offset;
        self.retry("write", |writer| {
            let file = writer.file.as_ref().expect("checked above");
            file.write_all_at(&writer.buffer, offset)
        });
        self.offset += self.buffer.len() as u64;
        self.buffer.clear();
    }

    /// Closes the current segment and opens the next, preallocated, starting at `sequence`.
    fn roll(&mut self, first_sequence: u64) {
        if let Some(file) = self.file.take()
            && let Err(error) = self.fsync.sync_file(&file, SyncPoint::Roll)
        {
            self.shared.poison(&error, &self.directory);
            return;
        }
        let index = self.index + 1;
        let path = segment::segment_path(&self.directory, index);
        let file = loop {
            let prepared = match self.prepared.take() {
                Some(preparing) => preparing.join().unwrap_or_else(|_| {
                    Err(std::io::Error::other("the segment preparer panicked"))
                }),
                None => prepare(&self.directory, self.segment_bytes),
            };
            // A fresh file that fails before it is named is simply replaced by another.
            let opened = prepared.and_then(|(prepared_path, file)| {
                file.write_all_at(&segment::segment_header(index, first_sequence), 0)?;
                self.fsync.sync_file(&file, SyncPoint::SegmentHeader)?;
                std::fs::rename(&prepared_path, &path)?;
                Ok(file)
            });
            match opened {
                Ok(file) => {
                    // Once named, the segment's name must be durable before anything in it
                    // is acknowledged, and a failed directory sync cannot be retried.
                    if let Err(error) = self.fsync.sync_directory(&self.directory) {
                        self.shared.poison(&error, &self.directory);
                        return;
                    }
                    break file;
                }
                Err(error) => {
                    self.failed("open a segment", &error);
                    if self.poisoned() {
                        return;
                    }
                }
            }
        };
        self.shared.healthy.store(true, Ordering::Release);
        self.file = Some(file);
        self.index = index;
        self.offset = SEGMENT_HEADER_BYTES;
        // The next segment is zero-filled in the background while this one fills up.
        self.prepared = prepare_in_background(&self.directory, self.segment_bytes);
    }

    fn retry(&mut self, what: &str, mut operation: impl FnMut(&Writer) -> std::io::Result<()>) {
        loop {
            match operation(self) {
                Ok(()) => {
                    self.shared.healthy.store(true, Ordering::Release);
                    return;
                }
                Err(error) => {
                    self.failed(what, &error);
                    if self.poisoned() {
                        return;
                    }
                }
            }
        }
    }

    fn failed(&self, what: &str, error: &std::io::Error) {
        if self.shared.healthy.swap(false, Ordering::AcqRel) {
            self.shared.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(%error, directory = %self.directory.display(), "Journal cannot {what}; refusing writes until it can.");
        }
        if self.shared.queue.lock().closing {
            // Shutting down on a failing disk: stop retrying rather than hang. What is not
            // written was never acknowledged.
            tracing::error!(directory = %self.directory.display(), "Journal gives up at shutdown; unwritten changes were never acknowledged.");
            self.shared.poisoned.store(true, Ordering::Release);
            return;
        }
        std::thread::sleep(RETRY_INTERVAL);
    }

    fn poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }
}

/// Prepares a segment on a helper thread; `None` if no thread could be started (the writer
/// then prepares one itself when it rolls).
pub(super) fn prepare_in_background(
    directory: &Path,
    segment_bytes: u64,
) -> Option<std::thread::JoinHandle<std::io::Result<(PathBuf, File)>>> {
    let directory = directory.to_owned();
    std::thread::Builder::new()
        .name("journal-prepare".to_owned())
        .spawn(move || prepare(&directory, segment_bytes))
        .ok()
}

/// A new segment file, zero-filled and synced, under a temporary name.
///
/// Zeros are written rather than only reserved (`fallocate`): blocks that were merely
/// reserved are "unwritten" extents, and the first write to each makes every `fdatasync`
/// commit file-system metadata too, half again as slow on this machine (154 µs against
/// 100 µs). The writer takes the file and names it when it rolls.
fn prepare(directory: &Path, segment_bytes: u64) -> std::io::Result<(PathBuf, File)> {
    let path = directory.join(format!("segment-next-{}.prep", std::process::id()));
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let zeros = vec![0u8; 1024 * 1024];
    let mut offset = 0;
    while offset < segment_bytes {
        let length = zeros.len().min((segment_bytes - offset) as usize);
        file.write_all_at(&zeros[..length], offset)?;
        offset += length as u64;
        // Synced as it goes, as a snapshot is: the writer's syncs wait behind at most this
        // much of it, not the whole segment.
        if offset.is_multiple_of(super::SNAPSHOT_SYNC_CHUNK_BYTES as u64) {
            file.sync_data()?;
        }
    }
    file.sync_all()?;
    Ok((path, file))
}
