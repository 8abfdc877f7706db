//! The push hub: topics, sequence numbers, and the fan-out of every durable stock change to
//! the sessions subscribed to it.
//!
//! The hub reads only durable facts (the journal's feed), so nothing reaches a screen that a
//! crash could take back. It publishes in rounds: everything the feed holds when a round
//! starts goes out together, and under load rounds are at least the push interval apart, so
//! a busy topic sends a subscriber one chunk of several changes rather than one write per
//! change. Each round's changes of a topic are encoded once per codec and the same bytes are
//! queued to every subscriber. Every session queue is bounded: a subscriber that cannot keep up is
//! marked for a resync (a fresh snapshot of its topics replaces the backlog) instead of
//! slowing the others or growing memory, and one that needs too many resyncs is closed. The
//! hub never awaits while holding its lock.
//!
//! Topics: `sku:{id}`, the stock of one SKU; `room:{id}`, a room's listings (their stock,
//! levels, hints, curve points and halts, from the alert engine, which runs right after each
//! round); `alerts`, every level change of every room.

mod message;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

pub(crate) use message::{Chunk, Codec, ServerMessage, StockBody};

use crate::alert::{
    Alert, Body, Channel, ChannelSnapshot, Engine, Message, RoomEvent, StateChange,
};
use crate::clock::Clock;
use crate::journal::DurableBatch;
use crate::ledger::{DurableState, RoomId, SkuId, Stock};

/// Messages a session may have queued, whatever their size: a backstop behind the byte
/// limit, which is the one that normally acts.
pub(crate) const SESSION_QUEUE_FRAMES_MAX: usize = 65_536;
/// Bytes a session may have queued unless configured otherwise: about five thousand stock
/// messages.
pub(crate) const SESSION_QUEUE_BYTES_DEFAULT: usize = 1024 * 1024;
/// Resyncs a session may need for its own slowness, net of the decay, before it is closed
/// as too slow to follow.
pub(crate) const SESSION_RESYNCS_MAX: u32 = 8;
/// One resync is forgiven for each such period without one.
pub(crate) const SESSION_RESYNC_DECAY: std::time::Duration = std::time::Duration::from_secs(30);
/// Topics one session may follow.
pub(crate) const SESSION_TOPICS_MAX: usize = 256;
/// Changes each topic keeps for resuming clients; an older gap gets a resync snapshot.
pub(crate) const TOPIC_HISTORY_MAX: usize = 256;
/// How often the alert engine re-evaluates every listing, for the changes time alone makes
/// (a [`crate::ledger::Fact::Tick`] in the journal).
pub(crate) const ALERT_TICK: std::time::Duration = std::time::Duration::from_secs(1);
/// The shortest time between two publishing rounds unless configured otherwise. A change
/// arriving after a quiet spell goes out at once; under load, changes wait at most this long
/// and travel together.
pub(crate) const PUSH_INTERVAL_DEFAULT: std::time::Duration = std::time::Duration::from_millis(5);

/// A topic's name, validated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Topic {
    Sku(SkuId),
    Room(RoomId),
    Alerts,
    /// The alerts of one room.
    RoomAlerts(RoomId),
}

impl Topic {
    pub(crate) fn parse(name: &str) -> Result<Topic, String> {
        match name.split_once(':') {
            Some(("sku", id)) => SkuId::new(id)
                .map(Topic::Sku)
                .map_err(|error| format!("topic {name:?}: {error}")),
            Some(("room", id)) => RoomId::new(id)
                .map(Topic::Room)
                .map_err(|error| format!("topic {name:?}: {error}")),
            Some(("alerts", id)) => RoomId::new(id)
                .map(Topic::RoomAlerts)
                .map_err(|error| format!("topic {name:?}: {error}")),
            None if name == "alerts" => Ok(Topic::Alerts),
            _ => Err(format!(
                "unknown topic {name:?}; topics are sku:{{id}}, room:{{id}} and alerts"
            )),
        }
    }

    pub(crate) fn name(&self) -> String {
        match self {
            Topic::Sku(sku) => format!("sku:{sku}"),
            Topic::Room(room) => format!("room:{room}"),
            Topic::Alerts => "alerts".to_owned(),
            Topic::RoomAlerts(room) => format!("alerts:{room}"),
        }
    }
}

/// One change on a topic.
#[derive(Clone, Debug)]
enum Payload {
    Stock(Stock),
    Event(Arc<RoomEvent>),
    Alert(Arc<Alert>),
    AlertState(Arc<StateChange>),
}

impl From<Body> for Payload {
    fn from(body: Body) -> Payload {
        match body {
            Body::Event(event) => Payload::Event(event),
            Body::Alert(alert) => Payload::Alert(alert),
            Body::State(change) => Payload::AlertState(change),
        }
    }
}

impl Payload {
    fn encode(&self, topic: &str, sequence: u64, codec: Codec) -> Bytes {
        match self {
            Payload::Stock(stock) => {
                ServerMessage::stock("stock", topic, sequence, stock).encode(codec)
            }
            Payload::Event(event) => message::event(topic, sequence, event, codec),
            Payload::Alert(alert) => message::alert(topic, sequence, alert, codec),
            Payload::AlertState(change) => message::alert_state(topic, sequence, change, codec),
        }
    }
}

/// One subscriber's end: the hub pushes encoded frames, the session's writer sends them.
pub(crate) struct SessionLink {
    pub(crate) id: u64,
    pub(crate) codec: Codec,
    frames: mpsc::Sender<Chunk>,
    /// Bytes queued and not yet taken by the session's writer.
    queued_bytes: AtomicUsize,
    queue_bytes_max: usize,
    /// Set when a change could not be queued: the session replaces its backlog with fresh
    /// snapshots.
    resync: AtomicBool,
    /// Set with `resync` when the change did not fit because the session's queue was full:
    /// the session's own slowness, as opposed to the hub falling behind or a change larger
    /// than any queue.
    slow: AtomicBool,
    /// Wakes the writer for a resync.
    pub(crate) wake: Notify,
}

/// Why a session must resync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resync {
    /// Its queue was full: it did not read fast enough.
    Slow,
    /// Not its doing: the hub fell behind the journal, or one change outgrew every queue.
    Lost,
}

impl SessionLink {
    /// Marks the session for a resync (its own slowness only when `slow` was set first).
    fn mark_for_resync(&self, counters: &HubCounters) {
        if !self.resync.swap(true, Ordering::AcqRel) {
            counters.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        self.wake.notify_one();
    }

    /// Whether the session is marked for a resync, without clearing the mark.
    pub(crate) fn resync_pending(&self) -> bool {
        self.resync.load(Ordering::Acquire)
    }

    /// Whether the session must resync, and why; clears the mark.
    pub(crate) fn take_resync(&self) -> Option<Resync> {
        if !self.resync.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(if self.slow.swap(false, Ordering::AcqRel) {
            Resync::Slow
        } else {
            Resync::Lost
        })
    }

    /// The writer took `bytes` off the queue.
    pub(crate) fn taken(&self, bytes: usize) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// A topic's snapshot as captured under the hub's lock, for the session to encode and send
/// outside it: building is bounded work under the lock, encoding is not done there.
pub(crate) struct Snapshot {
    /// The topic's number in the hub, which its chunks carry.
    pub(crate) topic_number: u64,
    pub(crate) name: String,
    /// `snapshot` or `resync`.
    kind: &'static str,
    /// The topic's sequence the snapshot shows: the stream goes on after it.
    pub(crate) seq: u64,
    body: SnapshotBody,
}

enum SnapshotBody {
    Stock(Stock),
    Room(Option<Box<crate::alert::RoomView>>),
    Alerts(Vec<Arc<Alert>>),
}

/// What joining a topic needs from the session.
pub(crate) enum Joined {
    /// No such SKU or room.
    Missing,
    /// Up to date, or the missed changes were queued from the history.
    Streaming,
    /// The session must send this snapshot before anything queued for the topic after it.
    Snapshot(Snapshot),
}

struct TopicState {
    /// The topic's number, which its chunks carry.
    number: u64,
    /// The sequence of the last change published on the topic.
    sequence: u64,
    /// For a SKU topic, the last stock published, for snapshots. Room and alert snapshots are
    /// read from the alert engine.
    stock: Option<Stock>,
    /// The latest changes, oldest first, the last one at `sequence`.
    history: std::collections::VecDeque<Payload>,
    /// The changes of the round being published, when the topic has subscribers.
    round: Vec<Payload>,
    subscribers: Vec<Arc<SessionLink>>,
}

impl TopicState {
    /// A topic whose last change was `sequence`: a SKU topic counts its SKU's versions, the
    /// others the alert engine's messages, and every node of a cluster derives both from
    /// the same log, so a screen can resume on another node.
    fn new(number: u64, stock: Option<Stock>, sequence: u64) -> TopicState {
        TopicState {
            number,
            sequence,
            stock,
            history: std::collections::VecDeque::new(),
            round: Vec::new(),
            subscribers: Vec::new(),
        }
    }

    /// Adds change `next`: the history, and the round when somebody listens. `true` when
    /// the topic joined the round with it.
    fn stage(&mut self, payload: Payload, next: u64, counters: &HubCounters) -> bool {
        if next <= self.sequence {
            // A snapshot that made the topic showed it already.
            return false;
        }
        if next != self.sequence + 1 {
            // Changes this topic did not see: the history would have a gap, and the
            // subscribers must start again from a snapshot.
            self.history.clear();
            self.round.clear();
            for link in &self.subscribers {
                link.mark_for_resync(counters);
            }
        }
        self.sequence = next;
        if TOPIC_HISTORY_MAX <= self.history.len() {
            self.history.pop_front();
        }
        self.history.push_back(payload.clone());
        if self.subscribers.is_empty() {
            return false;
        }
        self.round.push(payload);
        self.round.len() == 1
    }
}

/// How a session joins a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Join {
    /// A fresh subscriber: a snapshot.
    Fresh,
    /// A reconnecting client that saw the topic up to this sequence: the missed changes
    /// from the history, or a resync snapshot when the gap is older than the history.
    Since(u64),
    /// A session that fell behind: a resync snapshot.
    Resync,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub(crate) struct HubCounters {
    /// Messages queued to sessions.
    pub(crate) messages: AtomicU64,
    /// Sessions marked for a resync because their queue was full.
    pub(crate) resyncs: AtomicU64,
    /// Sessions connected now.
    pub(crate) sessions: AtomicU64,
    /// Bytes of messages queued to sessions.
    pub(crate) bytes: AtomicU64,
}

/// A reading of the hub's counters.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct HubStats {
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) resyncs: u64,
    pub(crate) sessions: u64,
}

pub(crate) struct Hub {
    /// This run's epoch: sequence numbers start again with each run, so a client resuming
    /// with another epoch's numbers gets a resync. In a cluster, the log's: every node
    /// numbers SKU topics alike.
    epoch: u64,
    /// What snapshots read: the state the journal made durable.
    durable: Arc<DurableState>,
    engine: Arc<Engine>,
    clock: Arc<dyn Clock>,
    topics: Mutex<HashMap<Topic, TopicState>>,
    next_session: AtomicU64,
    next_topic: AtomicU64,
    counters: HubCounters,
    /// The alerts channel's messages staged and not yet handed to the notifier: a join
    /// stages what the engine queued before it takes a snapshot, and the next round hands
    /// it over. Taken under the topics' lock.
    for_notifier: Mutex<Vec<Body>>,
    /// The per-session queue limit, in bytes.
    queue_bytes_max: usize,
}

impl Hub {
    pub(crate) fn new(
        durable: Arc<DurableState>,
        engine: Arc<Engine>,
        clock: Arc<dyn Clock>,
        queue_bytes_max: usize,
        shared_epoch: Option<u64>,
    ) -> Hub {
        Hub {
            epoch: shared_epoch.unwrap_or_else(|| fastrand::u64(1..u64::from(u32::MAX))),
            durable,
            engine,
            clock,
            topics: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            next_topic: AtomicU64::new(1),
            counters: HubCounters::default(),
            for_notifier: Mutex::new(Vec::new()),
            queue_bytes_max,
        }
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    pub(crate) fn stats(&self) -> HubStats {
        HubStats {
            messages: self.counters.messages.load(Ordering::Relaxed),
            bytes: self.counters.bytes.load(Ordering::Relaxed),
            resyncs: self.counters.resyncs.load(Ordering::Relaxed),
            sessions: self.counters.sessions.load(Ordering::Relaxed),
        }
    }

    /// A new session's link and the receiving end of its frame queue.
    pub(crate) fn connect(&self, codec: Codec) -> (Arc<SessionLink>, mpsc::Receiver<Chunk>) {
        let (frames, receiver) = mpsc::channel(SESSION_QUEUE_FRAMES_MAX);
        let link = Arc::new(SessionLink {
            id: self.next_session.fetch_add(1, Ordering::Relaxed),
            codec,
            frames,
            queued_bytes: AtomicUsize::new(0),
            queue_bytes_max: self.queue_bytes_max,
            resync: AtomicBool::new(false),
            slow: AtomicBool::new(false),
            wake: Notify::new(),
        });
        self.counters.sessions.fetch_add(1, Ordering::Relaxed);
        (link, receiver)
    }

    pub(crate) fn disconnect(&self, link: &SessionLink, topics: &[Topic]) {
        self.unsubscribe(link, topics);
        self.counters.sessions.fetch_sub(1, Ordering::Relaxed);
    }

    /// Subscribes `link` to `topic` and, under the hub's lock so that no change falls
    /// between the two, either queues the changes a resuming client missed or captures the
    /// snapshot the session must send first. Building a snapshot is bounded work (one
    /// topic); the session encodes and sends it outside the lock, holding at most one.
    pub(crate) fn join(&self, link: &Arc<SessionLink>, topic: &Topic, join: Join) -> Joined {
        let mut states = self.topics.lock();
        let mut join = join;
        // A room or alerts topic: what the engine queued is published first, so the
        // topic's sequence is the engine's and the snapshot shows exactly that point.
        let engine_snapshot = match channel(topic) {
            Some(channel) => {
                let (pending, seq, snapshot) = self.engine.take_with(&channel, self.clock.now());
                let mut touched = Vec::new();
                self.stage_messages(&mut states, pending, &mut touched);
                self.flush(&mut states, touched);
                Some((seq, snapshot))
            }
            None => None,
        };
        let state = match states.entry(topic.clone()) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let (stock, sequence) = match (topic, &engine_snapshot) {
                    (Topic::Sku(sku), _) => match self.durable.stock(sku) {
                        Some(stock) => {
                            let version = stock.version;
                            (Some(stock), version)
                        }
                        None => return Joined::Missing,
                    },
                    (Topic::Room(room) | Topic::RoomAlerts(room), _)
                        if self.durable.room_spec(room).is_none() =>
                    {
                        return Joined::Missing;
                    }
                    (_, Some((seq, _))) => (None, *seq),
                    (_, None) => (None, 0),
                };
                // A topic nobody followed here has no history: a client resuming it is up to
                // date when it saw the current sequence, and resynced otherwise.
                if let Join::Since(seen) = join
                    && seen != sequence
                {
                    join = Join::Resync;
                }
                let number = self.next_topic.fetch_add(1, Ordering::Relaxed);
                entry.insert(TopicState::new(number, stock, sequence))
            }
        };
        if !state.subscribers.iter().any(|other| other.id == link.id) {
            state.subscribers.push(link.clone());
        }
        let oldest = state.sequence + 1 - state.history.len() as u64;
        let kind = match join {
            Join::Fresh => "snapshot",
            Join::Resync => "resync",
            Join::Since(seen) if seen == state.sequence => return Joined::Streaming,
            Join::Since(seen) if oldest <= seen.saturating_add(1) && seen < state.sequence => {
                let name = topic.name();
                let skip = (seen + 1 - oldest) as usize;
                for (offset, payload) in state.history.iter().enumerate().skip(skip) {
                    let sequence = oldest + offset as u64;
                    let bytes = payload.encode(&name, sequence, link.codec);
                    let chunk = Chunk::one(bytes).of_topic(state.number, sequence);
                    push(link, chunk, &self.counters);
                }
                return Joined::Streaming;
            }
            Join::Since(_) => "resync",
        };
        let body = match (engine_snapshot, &state.stock) {
            (None, Some(stock)) => SnapshotBody::Stock(stock.clone()),
            (Some((_, ChannelSnapshot::Room(view))), _) => SnapshotBody::Room(view),
            (Some((_, ChannelSnapshot::Alerts(alerts))), _) => SnapshotBody::Alerts(alerts),
            (None, None) => return Joined::Missing,
        };
        Joined::Snapshot(Snapshot {
            topic_number: state.number,
            name: topic.name(),
            kind,
            seq: state.sequence,
            body,
        })
    }

    pub(crate) fn encode_snapshot(&self, snapshot: &Snapshot, codec: Codec) -> Bytes {
        let (name, kind, seq) = (&snapshot.name, snapshot.kind, snapshot.seq);
        let bytes = match &snapshot.body {
            SnapshotBody::Stock(stock) => ServerMessage::stock(kind, name, seq, stock)
                .with_epoch(self.epoch)
                .encode(codec),
            SnapshotBody::Room(view) => {
                message::room(kind, name, seq, view.as_deref(), Some(self.epoch), codec)
            }
            SnapshotBody::Alerts(alerts) => {
                message::alerts(kind, name, seq, alerts, self.epoch, codec)
            }
        };
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.counters
            .bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        bytes
    }

    pub(crate) fn unsubscribe(&self, link: &SessionLink, topics: &[Topic]) {
        let mut states = self.topics.lock();
        for topic in topics {
            if let Some(state) = states.get_mut(topic) {
                state.subscribers.retain(|other| other.id != link.id);
            }
        }
    }

    /// Publishes one round: every stock change of some durable batches, in order, then what
    /// the alert engine made of them. Returns the alerts and their changes of state, for
    /// the notifier.
    pub(crate) fn publish(&self, batches: &[DurableBatch]) -> Vec<Body> {
        let facts = batches.iter().flat_map(|batch| batch.facts.iter());
        // Lock order: the topics, then (in `stage_messages`) the engine's state; never the
        // other way round (docs/ARCHITECTURE.md, "Lock order").
        let mut states = self.topics.lock();
        let mut touched = Vec::new();
        for fact in facts {
            for stock in fact.stocks() {
                let topic = Topic::Sku(stock.sku.clone());
                let Some(state) = states.get_mut(&topic) else {
                    // Nobody ever subscribed: a later snapshot reads the durable state.
                    continue;
                };
                if state
                    .stock
                    .as_ref()
                    .is_some_and(|last| stock.version <= last.version)
                {
                    // The snapshot that created the topic, read from the durable state, already
                    // showed this change.
                    continue;
                }
                state.stock = Some(stock.clone());
                if state.stage(Payload::Stock(stock.clone()), stock.version, &self.counters) {
                    touched.push(topic);
                }
            }
        }
        // The engine took these batches in before they were published: what it made of
        // them is queued already.
        self.stage_messages(&mut states, self.engine.take(), &mut touched);
        self.flush(&mut states, touched);
        self.take_for_notifier()
    }

    /// Stages the engine's messages on their topics, and the alerts channel's for the
    /// notifier ([`Hub::take_for_notifier`]).
    fn stage_messages(
        &self,
        states: &mut HashMap<Topic, TopicState>,
        messages: Vec<Message>,
        touched: &mut Vec<Topic>,
    ) {
        let mut alerts = self.for_notifier.lock();
        for Message { channel, seq, body } in messages {
            if channel == Channel::Alerts {
                alerts.push(body.clone());
            }
            let topic = match channel {
                Channel::Room(room) => Topic::Room(room),
                Channel::Alerts => Topic::Alerts,
                Channel::RoomAlerts(room) => Topic::RoomAlerts(room),
            };
            if let Some(state) = states.get_mut(&topic)
                && state.stage(body.into(), seq, &self.counters)
            {
                touched.push(topic);
            }
        }
    }

    /// What the notifier takes: the alerts and acknowledgements staged so far.
    fn take_for_notifier(&self) -> Vec<Body> {
        std::mem::take(&mut *self.for_notifier.lock())
    }

    /// Sends each touched topic's round to its subscribers, encoded once per codec.
    fn flush(&self, states: &mut HashMap<Topic, TopicState>, touched: Vec<Topic>) {
        for topic in touched {
            let Some(state) = states.get_mut(&topic) else {
                continue;
            };
            let name = topic.name();
            let first = state.sequence + 1 - state.round.len() as u64;
            let mut encoded: [Option<Chunk>; 2] = [None, None];
            for link in &state.subscribers {
                let chunk = encoded[link.codec as usize]
                    .get_or_insert_with(|| {
                        Chunk::join(
                            link.codec,
                            state.round.iter().enumerate().map(|(offset, payload)| {
                                payload.encode(&name, first + offset as u64, link.codec)
                            }),
                        )
                        .of_topic(state.number, state.sequence)
                    })
                    .clone();
                push(link, chunk, &self.counters);
            }
            state.round.clear();
        }
    }

    /// Marks every session for a resync: the hub fell behind the journal's feed, so each SKU
    /// topic takes its state from the durable state again, and its history, which now has
    /// a gap, is dropped. Room and alerts topics missed nothing (the engine took every
    /// batch in as it became durable): their messages are staged as usual.
    /// Returns what the notifier takes.
    pub(crate) fn resync_everyone(&self) -> Vec<Body> {
        let mut states = self.topics.lock();
        for (topic, state) in states.iter_mut() {
            if let Topic::Sku(sku) = topic
                && let Some(stock) = self.durable.stock(sku)
            {
                // A client resuming from before the gap is resynced rather than told it is
                // up to date.
                state.sequence = stock.version;
                state.stock = Some(stock);
                state.history.clear();
            }
            state.round.clear();
            for link in &state.subscribers {
                link.resync.store(true, Ordering::Release);
                link.wake.notify_one();
            }
        }
        // Every subscriber resyncs, so these reach only the history and the notifier.
        let mut touched = Vec::new();
        self.stage_messages(&mut states, self.engine.take(), &mut touched);
        for topic in touched {
            if let Some(state) = states.get_mut(&topic) {
                state.round.clear();
            }
        }
        self.take_for_notifier()
    }
}

/// The engine's channel of a room or alerts topic.
fn channel(topic: &Topic) -> Option<Channel> {
    match topic {
        Topic::Sku(_) => None,
        Topic::Room(room) => Some(Channel::Room(room.clone())),
        Topic::Alerts => Some(Channel::Alerts),
        Topic::RoomAlerts(room) => Some(Channel::RoomAlerts(room.clone())),
    }
}

/// Queues a chunk, or marks the session for a resync when it does not fit. Once marked,
/// nothing more is queued until the session has resynced: a later change sent before the
/// resync would show the client a gap.
fn push(link: &SessionLink, chunk: Chunk, counters: &HubCounters) {
    if link.resync.load(Ordering::Acquire) {
        return;
    }
    let length = chunk.bytes.len();
    let messages = u64::from(chunk.messages);
    let queued = link.queued_bytes.load(Ordering::Acquire);
    if queued + length <= link.queue_bytes_max && link.frames.try_send(chunk).is_ok() {
        link.queued_bytes.fetch_add(length, Ordering::AcqRel);
        counters.messages.fetch_add(messages, Ordering::Relaxed);
        counters.bytes.fetch_add(length as u64, Ordering::Relaxed);
        return;
    }
    // Larger than the whole queue: no reader could have taken it, so it is not slowness.
    if length <= link.queue_bytes_max {
        link.slow.store(true, Ordering::Release);
    }
    link.mark_for_resync(counters);
}

/// Feeds the hub from the journal until the feed closes: each round publishes whatever the
/// feed holds, and the next starts no sooner than `interval` after it.
pub(crate) async fn run(
    hub: Arc<Hub>,
    mut feed: tokio::sync::broadcast::Receiver<DurableBatch>,
    interval: std::time::Duration,
    notifier: Arc<crate::notify::Notifier>,
    journal: Arc<crate::journal::Journal>,
) {
    use tokio::sync::broadcast::error::{RecvError, TryRecvError};
    let mut round = Vec::new();
    // After a resync, the last durable sequence its snapshots already show.
    let mut skip_through = 0u64;
    let mut last_round = tokio::time::Instant::now() - interval;
    // What the engine queued before the first batch (alerts raised at start-up).
    notifier.changes(hub.publish(&[]));
    loop {
        let mut lagged = false;
        match feed.recv().await {
            Ok(batch) if batch_last(&batch) <= skip_through => continue,
            Ok(batch) => round.push(batch),
            Err(RecvError::Lagged(_)) => lagged = true,
            Err(RecvError::Closed) => return,
        }
        // Under load, let the changes gather until the interval since the last round is over.
        tokio::time::sleep_until(last_round + interval).await;
        let mut closed = false;
        loop {
            match feed.try_recv() {
                Ok(batch) if batch_last(&batch) <= skip_through => {}
                Ok(batch) => round.push(batch),
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => {
                    closed = true;
                    break;
                }
            }
        }
        if lagged {
            tracing::warn!("Push hub fell behind the journal; resyncing every session.");
            notifier.changes(hub.resync_everyone());
            // The snapshots of the resync read the durable state: batches up to here that
            // are still in the feed are in them already, and must not be published again.
            skip_through = journal.durable();
        } else {
            notifier.changes(hub.publish(&round));
        }
        round.clear();
        last_round = tokio::time::Instant::now();
        if closed {
            return;
        }
    }
}

/// The sequence of a batch's last fact.
fn batch_last(batch: &DurableBatch) -> u64 {
    batch.first_sequence + batch.facts.len() as u64 - 1
}
