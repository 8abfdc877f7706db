//! Shared snapshots: the leader writes the ledger, at a consistent cut, to a JetStream object
//! store (`<stream>-snapshots`, object `latest`) as often as a single node writes local
//! ones; a node that starts loads it and follows the log from there instead of from the
//! first message.
//!
//! The object is a small header (magic, version, the fact sequence the image holds, a
//! stream sequence to follow from, the length of the alert engine's image, the log's
//! incarnation and the term of the leader that wrote it), the alert engine's image, and
//! the ledger's image, encoded as a snapshot file's body.
//!
//! A snapshot belongs to one incarnation of the log: the stream's name and creation time.
//! Stream sequences mean nothing in another, so a node refuses a snapshot of a log that was
//! made anew (its orders are in no log now: an operator decides), and one whose stream
//! sequence is past the log's end (the log lost what the snapshot holds). One older than
//! the log's start (a deposed leader's late write) is not loaded; the node waits for the
//! next. A leader writes a snapshot only while it leads, and never over a newer one. The engine's
//! image is taken after the ledger's, at the end of a batch the engine took in; a node
//! that starts from it goes on deciding levels, raising alerts and numbering messages where
//! every other node is. The
//! stream sequence is the leader's last appended message read *before* the cut: every
//! message up to it holds only facts the image has, and every fact after the image is in a
//! later message (a message may hold both; following skips the facts already held).
//!
//! Each new shared snapshot trims the log up to the stream sequence of the one before it, so
//! the log keeps about one snapshot interval; a standby that falls further behind than that
//! finds its next message gone and starts again from the newest snapshot.

use async_nats::jetstream::{self, object_store};
use tokio::io::AsyncReadExt as _;

use super::{Cluster, ClusterError};
use crate::config::ClusterConfig;
use crate::journal::Journal;
use crate::ledger::Ledger;

const MAGIC: &[u8; 8] = b"SPCLSNAP";
const VERSION: u32 = 3;
/// Version 2 named no incarnation: read, with only the log's bounds to check it against.
const VERSION_UNBOUND: u32 = 2;
/// Up to the engine image's length; version 3 then has the incarnation and the term.
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 8;
const INCARNATION_BYTES: usize = 16 + 8 + 2;
/// The object's metadata: what a leader reads before it writes over it.
const META_STREAM_SEQ: &str = "stream_seq";
const META_TERM: &str = "term";
/// How long a snapshot waits for the alert engine to take in the facts its cut holds.
const ENGINE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(10);
const OBJECT: &str = "latest";

fn bucket(config: &ClusterConfig) -> String {
    format!("{}-snapshots", config.stream)
}

pub(super) async fn ensure_store(
    jetstream: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<(), ClusterError> {
    if jetstream.get_object_store(bucket(config)).await.is_ok() {
        return Ok(());
    }
    jetstream
        .create_object_store(object_store::Config {
            bucket: bucket(config),
            description: Some("stockpulse shared snapshots".to_owned()),
            storage: jetstream::stream::StorageType::File,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|error| ClusterError::Nats(format!("creating the snapshot store: {error}")))?;
    Ok(())
}

/// A shared snapshot as loaded: the fact sequence it holds, the stream sequence to follow
/// from, and the image.
pub struct Loaded {
    pub sequence: u64,
    pub stream_seq: u64,
    /// The alert engine's image.
    pub engine: crate::alert::image::EngineImage,
    pub body: Vec<u8>,
}

/// Writes a snapshot of `ledger` for other nodes to start from. The leader calls it.
pub async fn publish(
    cluster: &Cluster,
    ledger: std::sync::Arc<Ledger>,
    journal: std::sync::Arc<Journal>,
    engine: std::sync::Arc<crate::alert::Engine>,
) -> Result<(), String> {
    // Read before the cut: every message up to here holds only facts the image will hold.
    let stream_seq = cluster.status().applied_seq;
    let cut_journal = journal.clone();
    let snapshot = tokio::task::spawn_blocking(move || cut_journal.encode_snapshot(&ledger))
        .await
        .map_err(|error| error.to_string())?;
    // The engine at or after the cut: it takes each batch in before the batch counts as
    // durable, so once the cut is durable the engine has it.
    let deadline = tokio::time::Instant::now() + ENGINE_WAIT_MAX;
    while journal.durable() < snapshot.sequence {
        if deadline < tokio::time::Instant::now() || !journal.healthy() {
            return Err("the log did not take the facts the cut holds".to_owned());
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let engine = crate::alert::image::encode(&engine.image());
    let term = cluster.status().term;
    let header = Header {
        sequence: snapshot.sequence,
        stream_seq,
        created: cluster.inner.created,
        term,
    };
    let object = encode_object(
        &header,
        &cluster.inner.config.stream,
        &engine,
        &snapshot.body,
    );
    put_fenced(cluster, &object, term, stream_seq).await?;
    journal.snapshot_written(&snapshot);
    // The log keeps what the previous shared snapshot did not hold, one snapshot interval:
    // a node that loads the newest snapshot follows from its stream sequence, which is past
    // that; a standby further behind than that starts again from the newest snapshot.
    let previous = cluster
        .inner
        .previous_snapshot_seq
        .swap(stream_seq, std::sync::atomic::Ordering::AcqRel);
    if 0 < previous {
        match cluster
            .inner
            .jetstream
            .get_stream(&cluster.inner.config.stream)
            .await
        {
            Ok(stream) => {
                if let Err(error) = stream.purge().sequence(previous + 1).await {
                    tracing::warn!(%error, "Cannot trim the log; it keeps everything.");
                }
            }
            Err(error) => tracing::warn!(%error, "Cannot trim the log; it keeps everything."),
        }
    }
    tracing::info!(
        sequence = snapshot.sequence,
        stream_seq,
        bytes = object.len(),
        longest_hold_us = snapshot.longest_hold.as_micros(),
        "Shared snapshot written."
    );
    Ok(())
}

/// What a shared snapshot's header says besides its lengths.
struct Header {
    sequence: u64,
    stream_seq: u64,
    created: i128,
    term: u64,
}

/// The object: header, the log's incarnation, the engine's image, the ledger's image.
fn encode_object(header: &Header, stream: &str, engine: &[u8], body: &[u8]) -> Vec<u8> {
    let name = stream.as_bytes();
    let mut object = Vec::with_capacity(
        HEADER_BYTES + INCARNATION_BYTES + name.len() + engine.len() + body.len(),
    );
    object.extend_from_slice(MAGIC);
    object.extend_from_slice(&VERSION.to_le_bytes());
    object.extend_from_slice(&header.sequence.to_le_bytes());
    object.extend_from_slice(&header.stream_seq.to_le_bytes());
    object.extend_from_slice(&(engine.len() as u64).to_le_bytes());
    object.extend_from_slice(&header.created.to_le_bytes());
    object.extend_from_slice(&header.term.to_le_bytes());
    object.extend_from_slice(&(name.len() as u16).to_le_bytes());
    object.extend_from_slice(name);
    object.extend_from_slice(engine);
    object.extend_from_slice(body);
    object
}

/// Writes `object` as the shared snapshot, fenced by term: a leader that was deposed while
/// it cut the image, or whose write comes late, does not replace a newer snapshot.
async fn put_fenced(
    cluster: &Cluster,
    object: &[u8],
    term: u64,
    stream_seq: u64,
) -> Result<(), String> {
    let store = cluster
        .inner
        .jetstream
        .get_object_store(bucket(&cluster.inner.config))
        .await
        .map_err(|error| error.to_string())?;
    if !cluster.leading() {
        return Err("this node no longer leads; the snapshot is not shared".to_owned());
    }
    if let Ok(stored) = store.info(OBJECT).await {
        let number = |key: &str| {
            stored
                .metadata
                .get(key)
                .and_then(|text| text.parse::<u64>().ok())
        };
        let (stored_term, stored_seq) = (number(META_TERM), number(META_STREAM_SEQ));
        if stored_term.is_some_and(|stored| term < stored)
            || stored_seq.is_some_and(|stored| stream_seq <= stored)
        {
            return Err(format!(
                "a newer shared snapshot is there (term {stored_term:?}, stream sequence \
                 {stored_seq:?}) than this one (term {term}, stream sequence {stream_seq})"
            ));
        }
    }
    let mut meta = object_store::ObjectMetadata::from(OBJECT);
    meta.metadata = [
        (META_STREAM_SEQ.to_owned(), stream_seq.to_string()),
        (META_TERM.to_owned(), term.to_string()),
    ]
    .into_iter()
    .collect();
    store
        .put(meta, &mut &object[..])
        .await
        .map_err(|error| error.to_string())?;
    Ok(())
}

/// The newest shared snapshot, if any. JetStream that does not answer yet (a NATS cluster
/// starting or electing) is asked again for a while.
pub async fn load(cluster: &Cluster) -> Result<Option<Loaded>, ClusterError> {
    let deadline = tokio::time::Instant::now() + super::JETSTREAM_READY_MAX;
    loop {
        match load_once(cluster).await {
            Err(ClusterError::Nats(reason) | ClusterError::SnapshotBehind(reason))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::warn!(%reason, "Cannot read the shared snapshot yet; asking again.");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            result => return result,
        }
    }
}

async fn load_once(cluster: &Cluster) -> Result<Option<Loaded>, ClusterError> {
    let config = &cluster.inner.config;
    let nats = |error: &dyn std::fmt::Display| ClusterError::Nats(error.to_string());
    let store = cluster
        .inner
        .jetstream
        .get_object_store(bucket(config))
        .await
        .map_err(|error| nats(&error))?;
    let mut object = match store.get(OBJECT).await {
        Ok(object) => object,
        Err(error) if error.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(nats(&error)),
    };
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|error| nats(&error))?;
    let bad = |reason: &str| ClusterError::Incompatible {
        stream: config.stream.clone(),
        reason: format!("shared snapshot: {reason}"),
    };
    if bytes.len() < HEADER_BYTES || &bytes[..8] != MAGIC {
        return Err(bad("not a stockpulse snapshot"));
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if VERSION < version {
        return Err(bad(&format!(
            "version {version}, written by a newer node; this node reads {VERSION_UNBOUND} and \
             {VERSION}: upgrade it"
        )));
    }
    if version < VERSION_UNBOUND {
        // Older than this node reads: the log itself will do while it still starts at its
        // first message; a leader of this version shares a new snapshot soon.
        let (first, _) = super::log::bounds(cluster).await?;
        if first <= 1 {
            tracing::warn!(
                version,
                "The shared snapshot is of a version this node does not read; following the log from its start."
            );
            return Ok(None);
        }
        return Err(bad(&format!(
            "version {version}, older than this node reads ({VERSION_UNBOUND} and {VERSION}), \
             and the log no longer starts at its first message: upgrade the leader, and start \
             this node once it has shared a snapshot"
        )));
    }
    let (sequence, stream_seq, engine_bytes) = (word(12), word(20), word(28));
    let mut engine_start = HEADER_BYTES;
    if version == VERSION {
        let incarnation = incarnation(&bytes).ok_or_else(|| bad("the header is cut short"))?;
        engine_start = incarnation.end;
        if incarnation.stream != config.stream || incarnation.created != cluster.inner.created {
            return Err(bad(&format!(
                "it was cut from another log: stream {:?} created {} (ns), and this log was \
                 created {} (ns). The log was made anew after the snapshot, so the changes \
                 the snapshot holds are in no log now. To start this new log empty, delete \
                 the object store {}; to keep them, restore the log the snapshot came from",
                incarnation.stream,
                incarnation.created,
                cluster.inner.created,
                bucket(config)
            )));
        }
    }
    check_bounds(cluster, stream_seq, bad).await?;
    let engine_end = usize::try_from(engine_bytes)
        .ok()
        .and_then(|bytes| engine_start.checked_add(bytes))
        .filter(|end| *end <= bytes.len())
        .ok_or_else(|| bad("the alert engine's image is cut short"))?;
    let engine = crate::alert::image::decode(&bytes[engine_start..engine_end])
        .map_err(|reason| bad(&reason))?;
    if engine.position < sequence {
        return Err(bad("the alert engine's image is older than the ledger's"));
    }
    bytes.drain(..engine_end);
    Ok(Some(Loaded {
        sequence,
        stream_seq,
        engine,
        body: bytes,
    }))
}

/// The log a version-3 snapshot was cut from, and where its header ends.
struct Incarnation {
    stream: String,
    created: i128,
    end: usize,
}

fn incarnation(bytes: &[u8]) -> Option<Incarnation> {
    let at = HEADER_BYTES;
    let created = i128::from_le_bytes(bytes.get(at..at + 16)?.try_into().ok()?);
    let name_bytes = u16::from_le_bytes(bytes.get(at + 24..at + 26)?.try_into().ok()?);
    let end = at + INCARNATION_BYTES + usize::from(name_bytes);
    let stream = String::from_utf8(bytes.get(at + INCARNATION_BYTES..end)?.to_vec()).ok()?;
    Some(Incarnation {
        stream,
        created,
        end,
    })
}

/// Checks a snapshot that says to follow the log from `stream_seq` against the log as it
/// is: past its end, the log lost what the snapshot holds (refused); before its start, the
/// snapshot is older than the log keeps ([`ClusterError::SnapshotBehind`]: wait for the
/// next one).
async fn check_bounds(
    cluster: &Cluster,
    stream_seq: u64,
    bad: impl Fn(&str) -> ClusterError,
) -> Result<(), ClusterError> {
    let (first, last) = super::log::bounds(cluster).await?;
    if last < stream_seq {
        return Err(bad(&format!(
            "it holds the log up to message {stream_seq}, but the log ends at {last}: the \
             log lost messages the snapshot holds (made anew, or cut short). Starting from \
             it would skip what is appended next; restore the log, or delete the object \
             store {} to start from the log as it is",
            bucket(&cluster.inner.config)
        )));
    }
    if stream_seq.saturating_add(1) < first {
        return Err(ClusterError::SnapshotBehind(format!(
            "the newest shared snapshot follows the log from message {}, and the log now \
             starts at {first}",
            stream_seq + 1
        )));
    }
    Ok(())
}
