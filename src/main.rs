//! The `stockpulse` binary: parse flags, load and validate the configuration, bind, serve.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use stockpulse::clock::{Clock, ScaledClock, SystemClock};
use stockpulse::cluster::ClusterError;
use stockpulse::config::{ConfigError, ConfigLayer};

/// Real-time stock ledger and alert server for live-stream commerce.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to serve HTTP on [default: 127.0.0.1:8080].
    #[arg(long, env = "STOCKPULSE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Directory for the server's data [default: ./data].
    #[arg(long, env = "STOCKPULSE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// TOML configuration file; environment variables and flags override it.
    #[arg(long, env = "STOCKPULSE_CONFIG")]
    config: Option<PathBuf>,
    /// Largest request body, in bytes [default: 1048576].
    #[arg(long, env = "STOCKPULSE_BODY_LIMIT_BYTES")]
    body_limit_bytes: Option<u64>,
    /// How long an order lock lasts, in seconds, when the SKU sets none [default: 900].
    #[arg(long, env = "STOCKPULSE_LOCK_TTL_S")]
    lock_ttl_s: Option<u64>,
    /// How long finished orders are remembered for idempotent retries, in seconds
    /// [default: 86400].
    #[arg(long, env = "STOCKPULSE_IDEMPOTENCY_WINDOW_S")]
    idempotency_window_s: Option<u64>,
    /// How long sold orders are remembered, in seconds: they can be refunded, and a paid
    /// order sent again is a retry, until then [default: 1296000, 15 days].
    #[arg(long, env = "STOCKPULSE_REFUND_WINDOW_S")]
    refund_window_s: Option<u64>,
    /// When the journal syncs: always (before acknowledging), interval, or never
    /// [default: always].
    #[arg(long, env = "STOCKPULSE_JOURNAL_SYNC")]
    journal_sync: Option<String>,
    /// How often the journal syncs under `--journal-sync interval`, in ms [default: 1000].
    #[arg(long, env = "STOCKPULSE_JOURNAL_SYNC_INTERVAL_MS")]
    journal_sync_interval_ms: Option<u64>,
    /// Size of each preallocated journal segment, in MiB [default: 64].
    #[arg(long, env = "STOCKPULSE_JOURNAL_SEGMENT_MIB")]
    journal_segment_mib: Option<u64>,
    /// Write a snapshot after this many facts [default: 1000000].
    #[arg(long, env = "STOCKPULSE_SNAPSHOT_EVERY_FACTS")]
    snapshot_every_facts: Option<u64>,
    /// Bytes a WebSocket session may have queued before it is resynced, in KiB [default: 1024].
    #[arg(long, env = "STOCKPULSE_PUSH_QUEUE_KIB")]
    push_queue_kib: Option<u64>,
    /// The shortest time between two rounds of pushes, in milliseconds [default: 5].
    #[arg(long, env = "STOCKPULSE_PUSH_INTERVAL_MS")]
    push_interval_ms: Option<u64>,
    /// Threads serving requests and pushes [default: the cores but one, at least one].
    #[arg(long, env = "STOCKPULSE_WORKERS")]
    workers: Option<usize>,
    /// Start even when the journal is corrupt before its tail: cut it at the first bad
    /// record, losing what follows.
    #[arg(long)]
    repair: bool,
    /// Simulate a live show with bursty orders, so there is something to watch.
    #[arg(long)]
    demo: bool,
    /// Seed of the demo's random choices, to repeat a run [default: random].
    #[arg(long, requires = "demo")]
    demo_seed: Option<u64>,
    /// Listen beyond loopback even without credentials (no auth secret configured).
    #[arg(long)]
    insecure: bool,
    /// The secret tokens are signed with (at least 32 bytes); better in the environment or
    /// the configuration file than on a command line.
    #[arg(long, env = "STOCKPULSE_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// Run as a node of a cluster on these NATS servers (comma-separated `nats://host:port`).
    #[arg(long, env = "STOCKPULSE_CLUSTER")]
    cluster: Option<String>,
    /// This node's name in the cluster.
    #[arg(long, env = "STOCKPULSE_NODE_ID")]
    node_id: Option<String>,
    /// The NATS password (with `cluster.user` in the configuration file): environment only.
    #[arg(skip = std::env::var("STOCKPULSE_NATS_PASSWORD").ok())]
    nats_password: Option<String>,
    /// The NATS token: environment only.
    #[arg(skip = std::env::var("STOCKPULSE_NATS_TOKEN").ok())]
    nats_token: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Prints a token signed with the configured auth secret.
    Token {
        /// admin, operator, ingest or viewer.
        #[arg(long)]
        role: String,
        /// Limit an operator or a viewer to this room (repeatable).
        #[arg(long = "room")]
        rooms: Vec<String>,
        /// Days until it expires.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Who it is for (shown in logs and acknowledgements).
        #[arg(long, default_value = "stockpulse")]
        subject: String,
    },
}

/// mimalloc rather than the system allocator: a request allocates and frees many small
/// buffers across two worker threads, where glibc's malloc spends a quarter of the server's
/// time under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit code of a bad configuration (`EX_USAGE`).
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) if error.use_stderr() => {
            let _ = error.print();
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(info) => {
            let _ = info.print();
            return ExitCode::SUCCESS;
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match load(&args) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "Configuration refused.");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(Command::Token {
        role,
        rooms,
        days,
        subject,
    }) = &args.command
    {
        return issue_token(&config, role, rooms, *days, subject);
    }
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "Server stopped.");
            let cluster_error = error
                .downcast_ref::<std::io::Error>()
                .and_then(|error| error.get_ref())
                .and_then(|error| error.downcast_ref::<ClusterError>());
            match cluster_error {
                Some(ClusterError::SteppedDown(_)) => restart(),
                Some(error) => ExitCode::from(error.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Counts a node's starts again after stepping down, and when the last one was:
/// `count:unix_seconds`, in the environment the process passes to itself.
const RESTARTS_ENV: &str = "STOCKPULSE_RESTARTS";

/// A start again after this long running counts as the first in a row.
const RESTARTS_FORGOTTEN_AFTER: Duration = Duration::from_secs(60);

/// The longest pause before starting again.
const RESTART_PAUSE_MAX: Duration = Duration::from_secs(10);

/// How many times in a row this process has started again, and when it last did.
fn restarts() -> Option<(u32, u64)> {
    let text = std::env::var(RESTARTS_ENV).ok()?;
    let (count, at) = text.split_once(':')?;
    Some((count.parse().ok()?, at.parse().ok()?))
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A node that stopped leading starts again as a standby, in the same process (same pid,
/// same arguments, same environment): its ledger may hold changes the log does not, and only
/// the log is the truth. Starts in a row are spaced out (100 ms, doubling, up to 10 s), so a
/// node that keeps stepping down does not spin reloading the snapshot. The program started
/// is the one at the path this one was started from, when it is still there (an upgrade put
/// a new one there), else this very one (`/proc/self/exe` still reaches a deleted file).
fn restart() -> ExitCode {
    use std::os::unix::process::CommandExt as _;
    let now = unix_seconds();
    let in_a_row = match restarts() {
        Some((count, at)) if now.saturating_sub(at) < RESTARTS_FORGOTTEN_AFTER.as_secs() => {
            count + 1
        }
        _ => 1,
    };
    let pause = Duration::from_millis(100 << (in_a_row - 1).min(7)).min(RESTART_PAUSE_MAX);
    tracing::warn!(
        in_a_row,
        pause_ms = pause.as_millis() as u64,
        "Starting again as a standby."
    );
    std::thread::sleep(pause);
    let program = std::env::current_exe()
        .ok()
        .map(|path| {
            let text = path.to_string_lossy();
            match text.strip_suffix(" (deleted)") {
                Some(original) => std::path::PathBuf::from(original),
                None => path,
            }
        })
        .filter(|path| path.is_file())
        .unwrap_or_else(|| std::path::PathBuf::from("/proc/self/exe"));
    let error = std::process::Command::new(program)
        .args(std::env::args_os().skip(1))
        .env(RESTARTS_ENV, format!("{in_a_row}:{}", unix_seconds()))
        .exec();
    tracing::error!(%error, "Cannot start again.");
    ExitCode::FAILURE
}

/// `stockpulse token`: prints a token, or says why not.
fn issue_token(
    config: &stockpulse::config::Config,
    role: &str,
    rooms: &[String],
    days: u64,
    subject: &str,
) -> ExitCode {
    let Some(secret) = &config.auth.secret else {
        eprintln!("no auth secret: set STOCKPULSE_AUTH_SECRET or auth.secret in the configuration");
        return ExitCode::from(EXIT_CONFIG);
    };
    let Some(role) = stockpulse::auth::Role::parse(role) else {
        eprintln!("role must be admin, operator, ingest or viewer, got {role:?}");
        return ExitCode::from(EXIT_CONFIG);
    };
    if !rooms.is_empty()
        && !matches!(
            role,
            stockpulse::auth::Role::Operator | stockpulse::auth::Role::Viewer
        )
    {
        eprintln!("--room limits operators and viewers only");
        return ExitCode::from(EXIT_CONFIG);
    }
    let now = SystemClock.now().as_millis() / 1000;
    let claims = stockpulse::auth::Claims {
        sub: subject.to_owned(),
        role,
        rooms: (!rooms.is_empty()).then(|| rooms.to_vec()),
        exp: now.saturating_add(days.saturating_mul(86_400)),
    };
    println!(
        "{}",
        stockpulse::auth::Authority::new(secret.as_bytes()).issue(&claims)
    );
    ExitCode::SUCCESS
}

fn load(args: &Args) -> Result<stockpulse::config::Config, ConfigError> {
    let file = match &args.config {
        Some(path) => ConfigLayer::from_file(path)?,
        None => ConfigLayer::default(),
    };
    let command_line = ConfigLayer {
        listen: args.listen,
        data_dir: args.data_dir.clone(),
        body_limit_bytes: args.body_limit_bytes,
        lock_ttl_s: args.lock_ttl_s,
        idempotency_window_s: args.idempotency_window_s,
        refund_window_s: args.refund_window_s,
        journal_sync: args.journal_sync.clone(),
        journal_sync_interval_ms: args.journal_sync_interval_ms,
        journal_segment_mib: args.journal_segment_mib,
        snapshot_every_facts: args.snapshot_every_facts,
        push_queue_kib: args.push_queue_kib,
        push_interval_ms: args.push_interval_ms,
        workers: args.workers,
        notify: None,
        channels: None,
        connections_max: None,
        connections_per_ip_max: None,
        connections_per_ip_per_s: None,
        header_timeout_s: None,
        limit_loopback: None,
        cluster: {
            let layer = stockpulse::config::ClusterLayer {
                nats: args.cluster.iter().cloned().collect(),
                node_id: args.node_id.clone(),
                password: args.nats_password.clone(),
                token: args.nats_token.clone(),
                ..stockpulse::config::ClusterLayer::default()
            };
            (layer != stockpulse::config::ClusterLayer::default()).then_some(layer)
        },
        auth: args
            .auth_secret
            .clone()
            .map(|secret| stockpulse::config::AuthConfig {
                secret: Some(secret),
                ..stockpulse::config::AuthConfig::default()
            }),
    };
    let mut config = file.merge(command_line).resolve()?;
    config.repair = args.repair;
    config.insecure = args.insecure;
    if let Some(cluster) = &mut config.cluster {
        // Started again after stepping down: an outage the node stepped down in is waited
        // out, not a reason to stop for good.
        cluster.patient = restarts().is_some();
    }
    if args.command.is_none() {
        config.check_exposure()?;
    }
    if args.demo {
        config.demo_seed = Some(args.demo_seed.unwrap_or_else(|| fastrand::u64(..)));
        if config.channels.is_empty() {
            // Stand-in platforms the demo serves itself, so channel sync has somewhere to go.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|error| {
                ConfigError::Invalid(format!("the demo's stand-in platform: {error}"))
            })?;
            let address = listener.local_addr().map_err(|error| {
                ConfigError::Invalid(format!("the demo's stand-in platform: {error}"))
            })?;
            config.channels = stockpulse::demo_stand_in_connectors(address);
            config.demo_stand_in = Some(std::sync::Arc::new(listener));
        }
    }
    Ok(config)
}

fn serve(config: stockpulse::config::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    // Remembered orders grow the heap for as long as the refund window; with transparent
    // huge pages, each fresh 2 MiB page is zeroed at once, inside whichever request touched
    // it first (a millisecond on a virtual machine). Like Redis, the server turns them off
    // for itself: 4 KiB faults cost less in all, and spread out (docs/BENCHMARKS.md).
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(%error, "Cannot turn transparent huge pages off for the server.");
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers)
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(serve_on_runtime(config))
}

async fn serve_on_runtime(config: stockpulse::config::Config) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // A file-size limit (`ulimit -f`) must make journal writes fail with EFBIG, which the
    // journal survives and reports, instead of killing the server: listening for SIGXFSZ
    // replaces its default action (terminate).
    #[cfg(unix)]
    let _file_size_signal =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(libc::SIGXFSZ));
    let address = listener.local_addr()?;
    tracing::info!(%address, data_dir = %config.data_dir.display(), "Listening.");
    // The demo's show runs on a faster clock: three hours in five minutes.
    let clock: Arc<dyn Clock> = if config.demo_seed.is_some() {
        Arc::new(ScaledClock::new(stockpulse::server::DEMO_SPEEDUP))
    } else {
        Arc::new(SystemClock)
    };
    stockpulse::server::run(listener, config, clock, shutdown_signal()).await?;
    tracing::info!("Stopped.");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(error) => {
                    tracing::warn!(%error, "Cannot watch SIGTERM; only SIGINT stops the server.");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
