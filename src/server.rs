//! The server as a whole: builds the ledger and the HTTP application, runs the lock sweeper,
//! serves a bound listener, and shuts down in order.
//!
//! `main` and the tests share [`run`]: it takes a listener that is already bound, the clock,
//! and a future that resolves when the server should stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::alert::Engine;
use crate::api::Access;
use crate::api::{self, Metrics, Shared};
use crate::auth::Authority;
use crate::clock::Clock;
use crate::cluster::{Cluster, ClusterError};
use crate::config::Config;
pub use crate::demo::DEMO_SPEEDUP;
use crate::hub::{self, Hub};
use crate::journal::{self, Journal};
use crate::ledger::{DurableState, Ledger, RoomId, SkuId};
use crate::notify::Notifier;

/// How often the sweeper looks for expired locks: a lock is back in `available` at most this
/// long after its `expires_at`, with no traffic needed.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(100);
/// How often finished orders past the idempotency window are forgotten.
pub const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// How far behind the log's newest fact a node's clock may be when it takes over before it
/// says so.
const CLOCK_SKEW_WARN: Duration = Duration::from_secs(2);
/// How long before a show starts and after it ends time still moves its listings' levels.
pub const SHOW_TICK_MARGIN: Duration = Duration::from_secs(10 * 60);
/// How long shutdown waits for requests in flight before it gives up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const _: () = assert!(
    SWEEP_INTERVAL.as_millis() < 1000,
    "expiry must land within a second"
);

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets requests in flight
/// finish (for at most [`SHUTDOWN_GRACE`]) and stops the background tasks.
pub async fn run(
    listener: TcpListener,
    config: Config,
    clock: Arc<dyn Clock>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cluster = match &config.cluster {
        Some(cluster_config) => Some(
            Cluster::connect(
                cluster_config,
                config.auth.secret.as_deref().map(str::as_bytes),
            )
            .await
            .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    // A cluster node's time never goes back behind the log's: it is shown every fact it
    // applies, and reads the newest of those when its own clock is behind.
    let log_time = cluster
        .as_ref()
        .map(|_| Arc::new(crate::clock::FloorClock::new(clock.clone())));
    let clock: Arc<dyn Clock> = match &log_time {
        Some(log_time) => log_time.clone(),
        None => clock,
    };
    // Where a cluster node's ledger starts in the log: the shared snapshot's place, or 0;
    // and the alert engine's state there.
    let mut stream_start = 0;
    let mut engine_image = None;
    let (ledger, journal) = match &cluster {
        // A cluster node starts from the newest shared snapshot (or empty) and follows the
        // log; only the leader changes it.
        Some(cluster) => {
            let loaded = crate::cluster::snapshot::load(cluster)
                .await
                .map_err(std::io::Error::other)?;
            let (ledger, journal) = match loaded {
                Some(loaded) => {
                    stream_start = loaded.stream_seq;
                    engine_image = Some(loaded.engine);
                    let ledger_config = config.ledger();
                    let started = tokio::task::spawn_blocking(move || {
                        journal::follower_from_snapshot(
                            ledger_config,
                            loaded.sequence,
                            &loaded.body,
                            journal::QUEUE_FACTS_MAX_DEFAULT,
                        )
                    })
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(std::io::Error::other)?;
                    tracing::info!(
                        facts = started.1.durable(),
                        stream_seq = stream_start,
                        "Started from the shared snapshot."
                    );
                    started
                }
                None => journal::follower(
                    Ledger::new(config.ledger()),
                    0,
                    journal::QUEUE_FACTS_MAX_DEFAULT,
                ),
            };
            (ledger, Arc::new(journal))
        }
        None => {
            let journal_config = config.journal();
            let ledger_config = config.ledger();
            let (ledger, journal, recovery) =
                tokio::task::spawn_blocking(move || journal::open(&journal_config, ledger_config))
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(std::io::Error::other)?;
            tracing::info!(
                snapshot = ?recovery.snapshot_sequence,
                replayed = recovery.replayed_count,
                elapsed_ms = recovery.elapsed.as_millis() as u64,
                "Recovered the ledger."
            );
            (ledger, Arc::new(journal))
        }
    };
    // What alerts, views and snapshots read: the ledger as the journal made it durable, kept
    // by the alert engine (below) as the journal makes each batch durable.
    let durable = Arc::new(DurableState::from_ledger(&ledger));
    if cluster.is_none() {
        // Locks that ran out while the server was down expire now, and the journal records it.
        let expired = ledger.expire_due(clock.now());
        if !expired.is_empty() {
            tracing::info!(
                count = expired.len(),
                "Locks expired while the server was down."
            );
        }
    }
    let cancel = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let edge = Arc::new(crate::edge::EdgeCounters::default());
    // Alert delivery first: its store says which alert id comes next.
    let notifier = Arc::new(
        Notifier::start(&config.data_dir, config.notify.clone(), clock.clone())
            .map_err(std::io::Error::other)?,
    );
    let engine = start_engine(
        &ledger,
        &durable,
        &notifier,
        clock.now(),
        cluster.is_some(),
        engine_image,
    );
    // Channel sync keeps its book from the same batches, on every node.
    let channels =
        crate::channels::Channels::new(&config.channels, &ledger, journal.durable(), clock.clone());
    // The engine takes in every batch as it becomes durable, before anything in it is
    // acknowledged: the durable state, then the levels and alerts it makes.
    journal.listen(Arc::new(EngineListener {
        engine: engine.clone(),
        channels: channels.clone(),
        log_time: log_time.clone(),
    }));
    if cluster.is_some() {
        // Until this node leads, its ledger changes only by the log.
        engine.set_halts(false);
        notifier.set_delivers(false);
        channels.set_delivers(false);
    }
    let hub = Arc::new(Hub::new(
        durable,
        engine.clone(),
        clock.clone(),
        config.push_queue_bytes,
        cluster.as_ref().map(Cluster::epoch),
    ));
    let hub_handle = hub.clone();
    let shared = Arc::new(Shared {
        ledger: ledger.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        journal: journal.clone(),
        hub: hub.clone(),
        engine: engine.clone(),
        notifier: notifier.clone(),
        channels: channels.clone(),
        access: Access {
            authority: config
                .auth
                .secret
                .as_ref()
                .map(|secret| Authority::new(secret.as_bytes())),
            platforms: config
                .auth
                .platforms
                .iter()
                .map(|platform| (platform.name.clone(), platform.secret.as_bytes().to_vec()))
                .collect(),
            allowed_origins: config.auth.allowed_origins.clone(),
            allowed_hosts: config.auth.allowed_hosts.clone(),
        },
        body_limit_bytes: usize::try_from(config.body_limit_bytes).unwrap_or(usize::MAX),
        edge: edge.clone(),
        shutdown: cancel.clone(),
        cluster: cluster.clone(),
    });
    if config.auth.secret.is_none() {
        tracing::warn!(
            listen = %config.listen,
            "No auth secret: every request is admin. Fine on loopback; set auth.secret before exposing the server."
        );
    }
    let tasks = TaskTracker::new();
    // The hub publishes what the journal made durable, and nothing else.
    let feed = journal.subscribe();
    let hub_cancel = cancel.clone();
    let hub_notifier = notifier.clone();
    let hub_journal = journal.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = hub::run(hub, feed, config.push_interval, hub_notifier, hub_journal) => {}
            () = hub_cancel.cancelled() => {}
        }
    });
    channels.spawn(&tasks, cancel.clone());
    if let Some(seed) = config.demo_seed
        && cluster.is_none()
    {
        let stand_in = config.demo_stand_in.as_ref().and_then(|listener| {
            listener
                .try_clone()
                .inspect_err(|error| tracing::warn!(%error, "Demo: no stand-in platform."))
                .ok()
        });
        tasks.spawn(crate::demo::run(
            ledger.clone(),
            clock.clone(),
            cancel.clone(),
            seed,
            stand_in,
        ));
    }
    tasks.spawn(sweep(
        Sweeper {
            ledger: ledger.clone(),
            journal: journal.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            snapshot_every_facts: config.snapshot_every_facts,
            cluster: cluster.clone(),
            engine: engine.clone(),
        },
        cancel.clone(),
    ));

    let body_limit_bytes = usize::try_from(config.body_limit_bytes).unwrap_or(usize::MAX);
    let app = api::router(shared, body_limit_bytes);
    // The cluster: follow the log, lead it when this node gets the lease, take the writes
    // other nodes forward. A failure stops the server, with the reason kept for `main`.
    let cluster_failure: Arc<parking_lot::Mutex<Option<ClusterError>>> = Arc::default();
    if let Some(cluster) = &cluster {
        tasks.spawn(api::answer_forwarded(
            cluster.clone(),
            app.clone(),
            metrics.clone(),
            cancel.clone(),
        ));
        tasks.spawn(api::answer_status(cluster.clone(), cancel.clone()));
        let (cluster, ledger, journal) = (cluster.clone(), ledger.clone(), journal.clone());
        let (engine, notifier, channels) = (engine.clone(), notifier.clone(), channels.clone());
        let (cancel, failure) = (cancel.clone(), cluster_failure.clone());
        let promoted_clock = clock.clone();
        let promoted_log_time = log_time.clone();
        tasks.spawn(async move {
            let promoted = move || {
                engine.set_halts(true);
                notifier.set_delivers(true);
                channels.set_delivers(true);
                if let Some(behind) = promoted_log_time
                    .as_ref()
                    .map(|log_time| log_time.wall_behind())
                    .filter(|behind| CLOCK_SKEW_WARN < *behind)
                {
                    tracing::warn!(
                        behind_ms = behind.as_millis() as u64,
                        "This node's clock is behind the log's newest fact; its facts take the log's time until the clock catches up. Check its time sync."
                    );
                }
                // A red the last leader decided but died before halting is halted now.
                let halted = engine.halt_red(promoted_clock.now());
                if 0 < halted {
                    tracing::warn!(
                        count = halted,
                        "Halted listings left at red by the last leader."
                    );
                }
            };
            let stop = cancel.clone().cancelled_owned();
            let run = cluster.run(ledger, journal, stream_start, promoted, stop);
            if let Err(error) = run.await {
                tracing::error!(%error, "The cluster stopped this node.");
                *failure.lock() = Some(error);
                cancel.cancel();
            }
        });
    }
    let mut shutdown = std::pin::pin!(shutdown);
    if let Some(cluster) = &cluster {
        // A cluster node serves once it holds the log as far as it went at start, as a
        // single node serves once it has replayed its journal.
        tokio::select! {
            () = cluster.caught_up() => {}
            () = &mut shutdown => cancel.cancel(),
            () = cancel.cancelled() => {}
        }
    }
    let stop = cancel.clone();
    let server = tokio::spawn(crate::edge::serve(
        listener,
        app,
        config.limits,
        edge,
        stop.cancelled_owned(),
        SHUTDOWN_GRACE,
    ));
    if !cancel.is_cancelled() {
        tokio::select! {
            () = &mut shutdown => {}
            () = cancel.cancelled() => {}
        }
    }
    tracing::info!("Shutting down: no new connections, finishing requests in flight.");
    cancel.cancel();
    let result: Result<std::io::Result<()>, tokio::task::JoinError> = server.await.map(|()| Ok(()));
    cancel.cancel();
    if let Some(cluster) = &cluster {
        cluster.release(&journal).await;
    }
    // WebSocket sessions outlive the edge's drain (an upgraded connection is theirs): each
    // closes with 1001 on the cancellation; wait for them, within the grace period.
    let sessions_closed = async {
        while 0 < hub_handle.stats().sessions {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, sessions_closed)
        .await
        .is_err()
    {
        tracing::warn!("WebSocket sessions still open at the end of the grace period.");
    }
    tasks.close();
    tasks.wait().await;
    let stopping = notifier.clone();
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .map_err(std::io::Error::other)?;
    // Last: a snapshot, so the next start replays nothing, then the journal's final sync.
    // A cluster node keeps no files: the log is the journal.
    let clustered = cluster.is_some();
    let closing = tokio::task::spawn_blocking(move || {
        if clustered {
            journal.close();
            return;
        }
        if let Err(error) = journal.snapshot(&ledger) {
            tracing::error!(%error, "Snapshot at shutdown failed; the journal has everything.");
        }
        journal.close();
    });
    closing.await.map_err(std::io::Error::other)?;
    if let Some(error) = cluster_failure.lock().take() {
        return Err(std::io::Error::other(error));
    }
    match result {
        Ok(served) => served,
        Err(join_error) => Err(std::io::Error::other(join_error)),
    }
}

/// The alert engine. A cluster node's numbers alerts and messages from the log alone: from
/// its start, or from where the shared snapshot's engine was (`image`). A single node's
/// goes on from the notifier's store: the next alert id, each listing's newest alert, and
/// the alerts a crash kept from it, raised now.
fn start_engine(
    ledger: &Arc<Ledger>,
    durable: &Arc<DurableState>,
    notifier: &Notifier,
    now: crate::clock::Timestamp,
    cluster: bool,
    image: Option<crate::alert::image::EngineImage>,
) -> Arc<Engine> {
    if cluster {
        let engine = Arc::new(Engine::new(ledger.clone(), durable.clone(), now, 1));
        if let Some(image) = image {
            engine.restore(image);
        }
        return engine;
    }
    let engine = Arc::new(Engine::new(
        ledger.clone(),
        durable.clone(),
        now,
        notifier.next_alert_id(),
    ));
    engine.remember(
        notifier
            .recorded_latest()
            .iter()
            .filter_map(|((room, sku), latest)| {
                let key = (RoomId::new(room).ok()?, SkuId::new(sku).ok()?);
                Some((key, latest.clone()))
            }),
    );
    let caught_up = engine.catch_up(notifier.recorded_levels(), now);
    if !caught_up.is_empty() {
        tracing::warn!(
            count = caught_up.len(),
            "Alerts raised at start-up for levels reached before the restart."
        );
    }
    engine
}

/// The journal's listener: the alert engine, which keeps the durable state, channel sync's
/// book, and a cluster node's clock, shown the time of each fact.
struct EngineListener {
    engine: Arc<Engine>,
    channels: Arc<crate::channels::Channels>,
    log_time: Option<Arc<crate::clock::FloorClock>>,
}

impl crate::journal::DurableListener for EngineListener {
    fn durable(&self, first_sequence: u64, facts: &[crate::ledger::Fact]) {
        // Only a cluster node's: a single node's batches pass here on the order path.
        if let Some(log_time) = &self.log_time
            && let Some(newest) = facts.iter().map(crate::ledger::Fact::at).max()
        {
            log_time.saw(newest);
        }
        self.engine.durable(first_sequence, facts);
        self.channels.durable(first_sequence, facts);
    }
}

struct Sweeper {
    ledger: Arc<Ledger>,
    journal: Arc<Journal>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    snapshot_every_facts: u64,
    /// In a cluster, only the leader sweeps (expiries are changes), and no node writes
    /// local snapshots.
    cluster: Option<Cluster>,
    /// Its state goes into the shared snapshots.
    engine: Arc<Engine>,
}

/// Runs `work` on a thread of its own, which it may give a lower priority
/// ([`lower_priority`]: a thread cannot take it back, so not on a pooled one); the handle
/// resolves when it is done.
fn in_background(name: &str, work: impl FnOnce() + Send + 'static) -> tokio::task::JoinHandle<()> {
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            work();
            let _ = done.send(());
        });
    if let Err(error) = &spawned {
        tracing::error!(%error, name, "Cannot start a background thread.");
    }
    tokio::spawn(async move {
        let _ = finished.await;
    })
}

/// Lowers the calling thread's CPU priority (nice 10), so that on a machine with few cores
/// the request workers and the journal's writer go first. For a thread of its own only.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10) {
        tracing::debug!(%error, "Cannot lower a background thread's priority.");
    }
}

/// Expires due locks, journals the demand refused orders lost and ends the shows whose time
/// is up every [`SWEEP_INTERVAL`], forgets old finished orders every [`FORGET_INTERVAL`],
/// and writes a snapshot once enough facts piled up, until cancelled.
async fn sweep(sweeper: Sweeper, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(SWEEP_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let forget_every = (FORGET_INTERVAL.as_millis() / SWEEP_INTERVAL.as_millis()) as u64;
    let alert_tick_every = (crate::hub::ALERT_TICK.as_millis() / SWEEP_INTERVAL.as_millis()) as u64;
    let mut tick_count: u64 = 0;
    let mut snapshotting: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if sweeper
            .cluster
            .as_ref()
            .is_some_and(|cluster| !cluster.leading())
        {
            continue;
        }
        let now = sweeper.clock.now();
        tick_count += 1;
        // Time passing is a fact too, for the alert engine: levels move with the plan and
        // dwells end. In the journal, so every node re-evaluates at the same points. Not
        // while the journal cannot write (nothing moves on a state that may yet be lost),
        // and only while some show that lists something is on (a room whose show ended
        // long ago would otherwise journal a fact a second forever).
        if tick_count.is_multiple_of(alert_tick_every)
            && sweeper.journal.healthy()
            && sweeper
                .ledger
                .rooms()
                .iter()
                .any(|room| !room.listings.is_empty() && room.on_air(now, SHOW_TICK_MARGIN))
        {
            sweeper.ledger.tick(now);
        }
        // Refused orders' units go into the journal as lost demand, at most a sweep late;
        // then shows whose end passed leave their records in their SKUs' histories.
        if sweeper.journal.healthy() {
            sweeper.ledger.flush_lost(now);
            sweeper.ledger.end_shows(now);
        }
        let forget = tick_count.is_multiple_of(forget_every);
        // Ledger work that may take a while runs off the async workers, which serve requests.
        let ledger = sweeper.ledger.clone();
        let swept = tokio::task::spawn_blocking(move || {
            let expired_count = ledger.expire_due(now).len();
            let forgotten_count = if forget {
                ledger.forget_finished(now)
            } else {
                0
            };
            (expired_count, forgotten_count)
        })
        .await;
        let Ok((expired_count, forgotten_count)) = swept else {
            tracing::error!("The sweeper's ledger work panicked.");
            continue;
        };
        if 0 < expired_count {
            tracing::debug!(count = expired_count, "Locks expired.");
            sweeper.metrics.locks_expired(expired_count as u64);
        }
        if 0 < forgotten_count {
            tracing::debug!(count = forgotten_count, "Finished orders forgotten.");
        }
        let idle = snapshotting.as_ref().is_none_or(|task| task.is_finished());
        let due = idle && sweeper.journal.snapshot_due(sweeper.snapshot_every_facts);
        if let Some(cluster) = sweeper.cluster.as_ref().filter(|_| due) {
            // The leader shares its snapshots for other nodes to start from.
            let (cluster, ledger, journal, engine) = (
                cluster.clone(),
                sweeper.ledger.clone(),
                sweeper.journal.clone(),
                sweeper.engine.clone(),
            );
            snapshotting = Some(tokio::spawn(async move {
                if let Err(error) =
                    crate::cluster::snapshot::publish(&cluster, ledger, journal, engine).await
                {
                    tracing::error!(%error, "Shared snapshot failed; nodes start further back.");
                }
            }));
        } else if due {
            let ledger = sweeper.ledger.clone();
            let journal = sweeper.journal.clone();
            snapshotting = Some(in_background("snapshot", move || {
                // The copy holds ledger locks a stripe at a time and runs at the requests'
                // priority, so that it is never descheduled holding one; encoding and
                // writing hold none, and give way to the requests.
                if let Err(error) = journal.snapshot_then(&ledger, lower_priority) {
                    tracing::error!(%error, "Snapshot failed; the journal keeps everything.");
                }
            }));
        }
    }
    if let Some(task) = snapshotting {
        let _ = task.await;
    }
}
