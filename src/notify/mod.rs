//! Alert delivery: every level change becomes an alert record (open, acknowledged, resolved);
//! routing rules pick the webhook receivers it is owed to; `dispatch` groups, rate-limits and
//! escalates; the outbox (`store`, synced before anything is sent) keeps every delivery until
//! a receiver answered 2xx or it grew too old; `webhook` formats, signs and sends.
//!
//! The notifier is one thread that owns all of it and takes commands (new alerts from the
//! hub, acknowledgements and reads from the API, attempt results from the sending tasks), so
//! a dead receiver or a slow disk never touches the ledger or the push path: the hub only
//! hands alerts over with a `try_send`.

mod config;
mod dispatch;
mod store;
mod webhook;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::oneshot;

pub use crate::alert::AlertState;
pub use config::{Format, NotifyConfig, ReceiverConfig, RouteConfig};
pub use dispatch::{AlertRecord, Notice};
pub use store::{Delivery, DeliveryState, StoreError};
pub use webhook::signature;

use crate::alert::{Body, Latest, Level};
use crate::clock::{Clock, Rfc3339, Timestamp};
use dispatch::Dispatcher;
use store::Store;

/// Commands waiting for the notifier before new alerts are dropped (and logged).
const COMMANDS_MAX: usize = 65_536;
/// How often the notifier looks for due groups, escalations and retries.
const POLL: Duration = Duration::from_millis(50);
/// Alerts `GET /api/v1/alerts` returns at most, the newest; deliveries likewise.
pub const ALERTS_LISTED_MAX: usize = 1_000;
pub const DELIVERIES_LISTED_MAX: usize = 1_000;
/// When a node starts leading, what alerts raised this long before were owed is still
/// delivered: the previous leader may have died before sending it. Receivers tell a repeat
/// by the alert ids.
const PROMOTION_REDELIVERY: Duration = Duration::from_secs(30);
/// Finished alerts and deliveries are kept this long, then forgotten.
const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often finished records are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// An alert as the API lists it: the alert, its state, and its deliveries.
#[derive(Clone, Debug, Serialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: Arc<serde_json::Value>,
    pub state: AlertState,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<Rfc3339>,
    pub resolved_at: Option<Rfc3339>,
    pub escalations: u32,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: u64,
    pub receiver: String,
    pub idempotency_key: String,
    pub alerts: Vec<u64>,
    pub escalation: bool,
    pub held_back: u64,
    pub state: DeliveryState,
    pub attempts: u32,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Rfc3339,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt: Option<Rfc3339>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Rfc3339>,
    pub last_error: Option<String>,
}

impl From<&Delivery> for DeliveryView {
    fn from(delivery: &Delivery) -> Self {
        DeliveryView {
            id: delivery.id,
            receiver: delivery.receiver.clone(),
            idempotency_key: delivery.idempotency_key.clone(),
            alerts: delivery.alerts.clone(),
            escalation: delivery.escalation,
            held_back: delivery.held_back,
            state: delivery.state,
            attempts: delivery.attempts,
            created_at: Rfc3339(delivery.created_at),
            next_attempt: (delivery.state == DeliveryState::Pending)
                .then_some(Rfc3339(delivery.next_attempt)),
            finished_at: delivery.finished_at.map(Rfc3339),
            last_error: delivery.last_error.clone(),
        }
    }
}

/// Counts for `/metrics`.
#[derive(Default)]
pub struct NotifyCounters {
    pub delivered: std::sync::atomic::AtomicU64,
    pub failed_attempts: std::sync::atomic::AtomicU64,
    pub dead: std::sync::atomic::AtomicU64,
    pub dropped_alerts: std::sync::atomic::AtomicU64,
}

/// Why the notifier could not answer.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// Its command queue is full: try again.
    #[error("the notifier is busy; try again")]
    Busy,
    #[error("the notifier stopped")]
    Stopped,
    /// Its store refused to write.
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Command {
    /// New alerts and acknowledgements, in the order the engine took them from the
    /// journal.
    Changes(Vec<Body>),
    /// An alert as it stands; `None` when there is no such alert (or none of `rooms`).
    Get {
        id: u64,
        rooms: Option<Vec<String>>,
        reply: oneshot::Sender<Option<AlertView>>,
    },
    Acknowledge {
        id: u64,
        by: String,
        at: Timestamp,
        rooms: Option<Vec<String>>,
        reply: oneshot::Sender<Result<Option<AlertView>, NotifyError>>,
    },
    /// This node starts delivering.
    Promote,
    List {
        open_only: bool,
        reply: oneshot::Sender<Vec<AlertView>>,
    },
    Deliveries {
        state: Option<DeliveryState>,
        reply: oneshot::Sender<Vec<DeliveryView>>,
    },
}

/// The outcome of one attempt, from a sending task.
struct Attempted {
    delivery: u64,
    result: Result<(), String>,
}

/// The handle the rest of the server holds.
pub struct Notifier {
    commands: SyncSender<Command>,
    next_alert_id: u64,
    /// The level of each listing's newest alert in the store when it opened, by (room, SKU):
    /// what start-up compares the recovered levels with.
    recorded_levels: HashMap<(String, String), Level>,
    /// Each listing's newest alert in the store when it opened, by (room, SKU).
    recorded_latest: HashMap<(String, String), Latest>,
    pub counters: Arc<NotifyCounters>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// False on a cluster standby: it records alerts as the leader does, and the leader
    /// delivers them.
    delivers: Arc<std::sync::atomic::AtomicBool>,
}

impl Notifier {
    /// Opens the store in `data_dir` and starts the notifier thread; its sending tasks run on
    /// the current tokio runtime.
    pub fn start(
        data_dir: &Path,
        config: NotifyConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Notifier, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|error| StoreError::Database(error.to_string()))?;
        let (store, loaded) = Store::open(&data_dir.join("notify.redb"))?;
        let config = Arc::new(config);
        let next_delivery = loaded
            .deliveries
            .keys()
            .next_back()
            .map_or(1, |last| last + 1);
        let mut recorded_levels = HashMap::new();
        let mut recorded_latest = HashMap::new();
        // In id order: the newest alert of each listing is the last one seen.
        for record in loaded.alerts.values() {
            let key = (record.notice.room.clone(), record.notice.sku.clone());
            recorded_levels.insert(key.clone(), record.notice.to);
            recorded_latest.insert(
                key,
                Latest {
                    id: record.notice.id,
                    state: record.state,
                    acknowledged_by: record.acknowledged_by.clone(),
                },
            );
        }
        let dispatcher = Dispatcher::new(config.clone(), loaded.alerts, next_delivery, clock.now());
        let next_alert_id = dispatcher.next_alert_id();
        let (commands, inbox) = std::sync::mpsc::sync_channel(COMMANDS_MAX);
        let (results, outcomes) = std::sync::mpsc::channel();
        let counters = Arc::new(NotifyCounters::default());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| StoreError::Database(error.to_string()))?;
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let delivers = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let worker = Worker {
            stopping: stopping.clone(),
            delivers: delivers.clone(),
            config,
            clock,
            store,
            dispatcher,
            deliveries: loaded.deliveries,
            unsaved: Vec::new(),
            in_flight: HashSet::new(),
            client,
            runtime: tokio::runtime::Handle::current(),
            results,
            counters: counters.clone(),
            pruned_at: None,
        };
        let thread = std::thread::Builder::new()
            .name("notify".to_owned())
            .spawn(move || worker.run(inbox, outcomes))
            .map_err(|error| StoreError::Database(error.to_string()))?;
        Ok(Notifier {
            commands,
            next_alert_id,
            recorded_levels,
            recorded_latest,
            counters,
            stopping,
            thread: parking_lot::Mutex::new(Some(thread)),
            delivers,
        })
    }

    /// The id the next alert should take: after every alert kept.
    pub fn next_alert_id(&self) -> u64 {
        self.next_alert_id
    }

    /// The level of each listing's newest alert when the store opened, by (room, SKU).
    pub fn recorded_levels(&self) -> &HashMap<(String, String), Level> {
        &self.recorded_levels
    }

    /// Each listing's newest alert when the store opened, by (room, SKU).
    pub fn recorded_latest(&self) -> &HashMap<(String, String), Latest> {
        &self.recorded_latest
    }

    /// Whether this node delivers what it records: false while it follows a cluster's log.
    /// Turned on when the node starts leading: what alerts raised before then were owed
    /// is left to the previous leader, their escalations keep their schedule.
    pub fn set_delivers(&self, delivers: bool) {
        let was = self
            .delivers
            .swap(delivers, std::sync::atomic::Ordering::AcqRel);
        if delivers && !was && self.send(Command::Promote).is_err() {
            tracing::error!("The notifier could not take over delivery.");
        }
    }

    /// Hands new alerts and acknowledgements over without waiting; when the notifier is that
    /// far behind, they are dropped, logged and counted (the alerts topic still showed them).
    pub fn changes(&self, changes: Vec<Body>) {
        if changes.is_empty() {
            return;
        }
        let count = changes.len() as u64;
        match self.commands.try_send(Command::Changes(changes)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_alerts
                    .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(count, "The notifier is not keeping up; alerts dropped.");
            }
        }
    }

    /// An alert as it stands; `Ok(None)` when there is no such alert. `rooms`, when given,
    /// limits it to alerts of those rooms (others are not found).
    pub async fn get(
        &self,
        id: u64,
        rooms: Option<Vec<String>>,
    ) -> Result<Option<AlertView>, NotifyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Get { id, rooms, reply })?;
        answer.await.map_err(|_| NotifyError::Stopped)
    }

    /// Acknowledges an alert as of `at` (the journal's record of it; the same
    /// acknowledgement arriving again from the journal changes nothing); `Ok(None)` when
    /// there is no such alert. `rooms`, when given, limits it to alerts of those rooms.
    pub async fn acknowledge(
        &self,
        id: u64,
        by: String,
        at: Timestamp,
        rooms: Option<Vec<String>>,
    ) -> Result<Option<AlertView>, NotifyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Acknowledge {
            id,
            by,
            at,
            rooms,
            reply,
        })?;
        answer.await.map_err(|_| NotifyError::Stopped)?
    }

    /// The newest alerts (oldest first), or only the open ones.
    pub async fn list(&self, open_only: bool) -> Result<Vec<AlertView>, NotifyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::List { open_only, reply })?;
        answer.await.map_err(|_| NotifyError::Stopped)
    }

    pub async fn deliveries(
        &self,
        state: Option<DeliveryState>,
    ) -> Result<Vec<DeliveryView>, NotifyError> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Deliveries { state, reply })?;
        answer.await.map_err(|_| NotifyError::Stopped)
    }

    /// Queues a command without ever blocking the caller (a tokio task).
    fn send(&self, command: Command) -> Result<(), NotifyError> {
        self.commands
            .try_send(command)
            .map_err(|error| match error {
                TrySendError::Full(_) => NotifyError::Busy,
                TrySendError::Disconnected(_) => NotifyError::Stopped,
            })
    }

    /// Stops the thread after what it is doing and waits for it (deliveries in flight are
    /// attempted again at the next start).
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

struct Worker {
    stopping: Arc<std::sync::atomic::AtomicBool>,
    /// Whether this node delivers (see [`Notifier::set_delivers`]).
    delivers: Arc<std::sync::atomic::AtomicBool>,
    config: Arc<NotifyConfig>,
    clock: Arc<dyn Clock>,
    store: Store,
    dispatcher: Dispatcher,
    deliveries: BTreeMap<u64, Delivery>,
    /// Deliveries made while the store refused to write: sent only once saved.
    unsaved: Vec<Delivery>,
    in_flight: HashSet<u64>,
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    results: std::sync::mpsc::Sender<Attempted>,
    counters: Arc<NotifyCounters>,
    pruned_at: Option<Timestamp>,
}

impl Worker {
    fn run(mut self, inbox: Receiver<Command>, outcomes: Receiver<Attempted>) {
        self.forget_unknown_receivers();
        loop {
            match inbox.recv_timeout(POLL) {
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while let Ok(command) = inbox.try_recv() {
                self.handle(command);
            }
            let outcomes: Vec<Attempted> = outcomes.try_iter().collect();
            self.attempted(outcomes);
            if self.stopping.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            self.tick();
        }
    }

    /// One command, by its kind.
    fn handle(&mut self, command: Command) {
        match command {
            Command::Changes(changes) => self.changes(changes),
            Command::Get { id, rooms, reply } => {
                let _ = reply.send(self.visible(id, rooms.as_deref()));
            }
            Command::Acknowledge {
                id,
                by,
                at,
                rooms,
                reply,
            } => {
                let _ = reply.send(self.acknowledge(id, &by, at, rooms.as_deref()));
            }
            Command::Promote => self.promote(),
            Command::List { open_only, reply } => {
                let _ = reply.send(self.list(open_only));
            }
            Command::Deliveries { state, reply } => {
                let _ = reply.send(self.delivery_views(state));
            }
        }
    }

    /// New alerts and acknowledgements from the engine, in its order: recorded, routed and
    /// saved.
    fn changes(&mut self, changes: Vec<Body>) {
        let mut changed = Vec::new();
        for change in changes {
            match change {
                Body::Alert(alert) => {
                    let body = match serde_json::to_value(alert.as_ref()) {
                        Ok(body) => body,
                        Err(error) => {
                            // Plain fields always encode; were one not to, the alert is
                            // dropped loudly rather than kept empty.
                            tracing::error!(%error, id = alert.id, "An alert did not encode; dropped.");
                            self.counters
                                .dropped_alerts
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            continue;
                        }
                    };
                    let at = alert.at.0;
                    let notice = Notice {
                        id: alert.id,
                        room: alert.room.clone(),
                        sku: alert.sku.clone(),
                        from: alert.from,
                        to: alert.to,
                        hot: alert.hot,
                        at,
                        body: Arc::new(body),
                    };
                    changed.extend(self.dispatcher.add(notice, at));
                }
                Body::State(change) if change.state == AlertState::Acknowledged => {
                    let by = change.acknowledged_by.as_deref().unwrap_or_default();
                    if self.dispatcher.acknowledge(change.id, by, change.at.0) == Some(true) {
                        changed.push(change.id);
                    }
                }
                // Resolutions and new alerts' states: the dispatcher decides those from the
                // alerts themselves.
                Body::State(_) | Body::Event(_) => {}
            }
        }
        changed.sort_unstable();
        changed.dedup();
        self.save(&changed, &[]);
    }

    /// Acknowledges alert `id` (of one of `rooms`, when given) and saves it; `None` when
    /// there is no such alert.
    fn acknowledge(
        &mut self,
        id: u64,
        by: &str,
        at: Timestamp,
        rooms: Option<&[String]>,
    ) -> Result<Option<AlertView>, NotifyError> {
        if self.visible(id, rooms).is_none() {
            return Ok(None);
        }
        match self.dispatcher.acknowledge(id, by, at) {
            None => Ok(None),
            Some(false) => Ok(self.view(id)),
            Some(true) => {
                self.save_checked(&[id], &[])?;
                Ok(self.view(id))
            }
        }
    }

    /// This node starts delivering: alerts raised well before it took over were the
    /// previous leader's to deliver; those of the last moments may not have gone out, and
    /// go now.
    fn promote(&mut self) {
        let before = self.clock.now().saturating_sub(PROMOTION_REDELIVERY);
        let changed = self.dispatcher.settle_owed_before(before);
        self.save(&changed, &[]);
    }

    /// The newest alerts, oldest first, or only those not resolved.
    fn list(&self, open_only: bool) -> Vec<AlertView> {
        self.dispatcher
            .records()
            .filter(|record| !open_only || record.state != AlertState::Resolved)
            .map(|record| record.notice.id)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .take(ALERTS_LISTED_MAX)
            .rev()
            .filter_map(|id| self.view(id))
            .collect()
    }

    /// The newest deliveries, oldest first, in `state` when given.
    fn delivery_views(&self, state: Option<DeliveryState>) -> Vec<DeliveryView> {
        let mut views: Vec<DeliveryView> = self
            .deliveries
            .values()
            .rev()
            .filter(|delivery| state.is_none_or(|state| delivery.state == state))
            .take(DELIVERIES_LISTED_MAX)
            .map(DeliveryView::from)
            .collect();
        views.reverse();
        views
    }

    /// Records what the sending tasks found, in one write.
    fn attempted(&mut self, outcomes: Vec<Attempted>) {
        if outcomes.is_empty() {
            return;
        }
        let now = self.clock.now();
        let max_age = Duration::from_secs(self.config.max_age_s);
        let mut changed = Vec::new();
        for Attempted { delivery, result } in outcomes {
            self.in_flight.remove(&delivery);
            let Some(record) = self.deliveries.get_mut(&delivery) else {
                continue;
            };
            record.attempts += 1;
            match result {
                Ok(()) => {
                    record.state = DeliveryState::Delivered;
                    record.finished_at = Some(now);
                    record.last_error = None;
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => {
                    self.counters
                        .failed_attempts
                        .fetch_add(1, Ordering::Relaxed);
                    if max_age <= now.saturating_since(record.created_at) {
                        record.state = DeliveryState::Dead;
                        record.finished_at = Some(now);
                        self.counters.dead.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(
                            delivery,
                            receiver = %record.receiver,
                            attempts = record.attempts,
                            %error,
                            "Alert delivery dead-lettered."
                        );
                    } else {
                        record.next_attempt =
                            now.saturating_add(webhook::backoff(record.attempts - 1));
                        tracing::warn!(delivery, receiver = %record.receiver, %error, "Alert delivery failed; retrying.");
                    }
                    record.last_error = Some(error);
                }
            }
            changed.push(delivery);
        }
        let records: Vec<&Delivery> = changed
            .iter()
            .filter_map(|id| self.deliveries.get(id))
            .collect();
        if let Err(error) = self.store.save(&[], &records) {
            tracing::error!(%error, "The notify store refused delivery results; they are kept in memory.");
        }
    }

    /// At start-up: owed messages and pending deliveries of receivers no longer configured
    /// are dropped and dead-lettered.
    fn forget_unknown_receivers(&mut self) {
        let known: Vec<String> = self
            .config
            .receivers
            .iter()
            .map(|receiver| receiver.name.clone())
            .collect();
        let changed = self.dispatcher.forget_receivers(&known);
        let now = self.clock.now();
        let mut dead = Vec::new();
        for delivery in self.deliveries.values_mut() {
            if delivery.state == DeliveryState::Pending && !known.contains(&delivery.receiver) {
                delivery.state = DeliveryState::Dead;
                delivery.finished_at = Some(now);
                delivery.last_error = Some("the receiver is no longer configured".to_owned());
                dead.push(delivery.id);
            }
        }
        let dead: Vec<&Delivery> = dead
            .iter()
            .filter_map(|id| self.deliveries.get(id))
            .collect();
        self.save(&changed, &dead);
    }

    /// Due groups and escalations become deliveries (saved before anything is sent); due
    /// deliveries are sent.
    fn tick(&mut self) {
        let now = self.clock.now();
        if !self.delivers.load(std::sync::atomic::Ordering::Acquire) {
            // A standby records, and forgets what is past keeping, as the leader does; the
            // leader delivers.
            self.prune(now);
            return;
        }
        let (outgoing, changed) = self.dispatcher.due(now);
        let mut made = Vec::new();
        for message in outgoing {
            let Some(receiver) = self
                .config
                .receivers
                .iter()
                .find(|receiver| receiver.name == message.receiver)
            else {
                continue;
            };
            let key = message.idempotency_key();
            let records: Vec<&AlertRecord> = message
                .alerts
                .iter()
                .filter_map(|id| self.dispatcher.record(*id))
                .collect();
            let body = webhook::body(
                receiver,
                &key,
                &records,
                message.held_back,
                message.escalation,
                now,
            );
            made.push(Delivery {
                id: message.delivery,
                receiver: message.receiver,
                idempotency_key: key,
                alerts: message.alerts,
                escalation: message.escalation,
                held_back: message.held_back,
                created_at: now,
                body,
                state: DeliveryState::Pending,
                attempts: 0,
                next_attempt: now,
                last_error: None,
                finished_at: None,
            });
        }
        self.unsaved.extend(made);
        let unsaved: Vec<&Delivery> = self.unsaved.iter().collect();
        match self.save_checked(&changed, &unsaved) {
            Ok(()) => {
                for delivery in std::mem::take(&mut self.unsaved) {
                    self.deliveries.insert(delivery.id, delivery);
                }
            }
            Err(error) => {
                tracing::error!(%error, "The notify store refused new deliveries; holding them until it writes.");
            }
        }
        self.send_due(now);
        self.prune(now);
    }

    /// Each receiver's oldest pending delivery, when due and none of its is in flight: one
    /// at a time per receiver, in order, so a dead receiver costs one request per backoff.
    fn send_due(&mut self, now: Timestamp) {
        let mut busy: HashSet<String> = self
            .in_flight
            .iter()
            .filter_map(|id| self.deliveries.get(id))
            .map(|delivery| delivery.receiver.clone())
            .collect();
        let mut due = Vec::new();
        for delivery in self.deliveries.values() {
            if delivery.state != DeliveryState::Pending || busy.contains(&delivery.receiver) {
                continue;
            }
            busy.insert(delivery.receiver.clone());
            if delivery.next_attempt <= now {
                due.push(delivery.id);
            }
        }
        for id in due {
            let delivery = &self.deliveries[&id];
            let Some(receiver) = self
                .config
                .receivers
                .iter()
                .find(|receiver| receiver.name == delivery.receiver)
                .cloned()
            else {
                continue;
            };
            self.in_flight.insert(id);
            let client = self.client.clone();
            let key = delivery.idempotency_key.clone();
            let body = delivery.body.clone();
            let results = self.results.clone();
            self.runtime.spawn(async move {
                let result = webhook::send(&client, &receiver, &key, body, now).await;
                let _ = results.send(Attempted {
                    delivery: id,
                    result,
                });
            });
        }
    }

    /// Forgets finished alerts and deliveries older than the retention, in memory and on disk.
    fn prune(&mut self, now: Timestamp) {
        if self
            .pruned_at
            .is_some_and(|last| now.saturating_since(last) < PRUNE_EVERY)
        {
            return;
        }
        self.pruned_at = Some(now);
        let before =
            Timestamp::from_millis(now.as_millis().saturating_sub(RETENTION.as_millis() as u64));
        let deliveries = &self.deliveries;
        let finished = |id: u64| {
            deliveries
                .get(&id)
                .is_none_or(|delivery| delivery.state != DeliveryState::Pending)
        };
        let alerts = self.dispatcher.prune(before, finished);
        let old: Vec<u64> = self
            .deliveries
            .values()
            .filter(|delivery| {
                delivery.state != DeliveryState::Pending
                    && delivery.finished_at.is_some_and(|at| at < before)
            })
            .map(|delivery| delivery.id)
            .collect();
        // The newest delivery stays, so delivery ids never go back.
        let newest = self.deliveries.keys().next_back().copied();
        let old: Vec<u64> = old.into_iter().filter(|id| Some(*id) != newest).collect();
        for id in &old {
            self.deliveries.remove(id);
        }
        if let Err(error) = self.store.delete(&alerts, &old) {
            tracing::error!(%error, "The notify store could not forget old records.");
        }
    }

    fn save(&self, alerts: &[u64], deliveries: &[&Delivery]) {
        if let Err(error) = self.save_checked(alerts, deliveries) {
            tracing::error!(%error, "The notify store refused a write.");
        }
    }

    fn save_checked(&self, alerts: &[u64], deliveries: &[&Delivery]) -> Result<(), StoreError> {
        let records: Vec<&AlertRecord> = alerts
            .iter()
            .filter_map(|id| self.dispatcher.record(*id))
            .collect();
        self.store.save(&records, deliveries)
    }

    /// The view of alert `id`, when it exists and is of one of `rooms` (any, without).
    fn visible(&self, id: u64, rooms: Option<&[String]>) -> Option<AlertView> {
        let record = self.dispatcher.record(id)?;
        if rooms.is_some_and(|rooms| !rooms.contains(&record.notice.room)) {
            return None;
        }
        self.view(id)
    }

    fn view(&self, id: u64) -> Option<AlertView> {
        let record = self.dispatcher.record(id)?;
        Some(AlertView {
            alert: record.notice.body.clone(),
            state: record.state,
            acknowledged_by: record.acknowledged_by.clone(),
            acknowledged_at: record.acknowledged_at.map(Rfc3339),
            resolved_at: record.resolved_at.map(Rfc3339),
            escalations: record.escalations,
            deliveries: record
                .deliveries
                .iter()
                .filter_map(|id| self.deliveries.get(id))
                .map(DeliveryView::from)
                .collect(),
        })
    }
}
