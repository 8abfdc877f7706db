//! `stockpulse-load`: drives a running stockpulse over the network and measures it.
//!
//! ```sh
//! cargo run --release --bin stockpulse-load -- --start-server ingest --connections 50 --seconds 10
//! cargo run --release --bin stockpulse-load -- --target 127.0.0.1:8080 show --hours 3 --speed 360
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitCode};
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use stockpulse_load::{
    ChannelsOptions, FanoutOptions, IdleOptions, IngestMode, IngestOptions, ProcessSampler,
    Progress, ShowOptions, channels, fanout, idle, ingest, run_id, show,
};

/// Drives a stockpulse server over the network, as its clients do, and measures it.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The server to drive.
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: SocketAddr,
    /// Start a server (the `stockpulse` binary beside this one) on a free port with a
    /// temporary data directory, drive it, and stop it at the end.
    #[arg(long)]
    start_server: bool,
    /// The server's process id, to sample its CPU and memory from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Place orders as fast as the server answers.
    Ingest {
        #[arg(long, default_value_t = 50)]
        connections: u32,
        #[arg(long, value_enum, default_value_t = Mode::Single)]
        mode: Mode,
        /// Orders per request in batch mode.
        #[arg(long, default_value_t = 100)]
        batch_size: u32,
        /// Order commands in flight per connection in WebSocket mode.
        #[arg(long, default_value_t = 64)]
        depth: u32,
        /// SKUs the orders spread over.
        #[arg(long, default_value_t = 1000)]
        skus: u32,
        /// Share of the orders on one hot SKU, 0 to 1.
        #[arg(long, default_value_t = 0.0)]
        hot_share: f64,
        /// Units of each SKU.
        #[arg(long, default_value_t = 1_000_000_000)]
        stock: u64,
        /// How long to run.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Stop after this many orders instead.
        #[arg(long)]
        orders: Option<u64>,
    },
    /// WebSocket subscribers on one SKU while orders change it at a steady rate.
    Fanout {
        #[arg(long, default_value_t = 2000)]
        subscribers: u32,
        /// Orders (changes) per second.
        #[arg(long, default_value_t = 500)]
        rate: u32,
        #[arg(long, default_value_t = 30.0)]
        seconds: f64,
    },
    /// Idle WebSocket connections, to measure the server's memory per connection (needs the
    /// server's pid: `--pid` or `--start-server`).
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: u32,
    },
    /// Orders at a steady rate over SKUs listed on three platforms, and a receiver of its own
    /// for the server's connectors: how soon each sale reaches every sibling listing.
    Channels {
        #[arg(long, default_value_t = 10_000)]
        rate: u32,
        #[arg(long, default_value_t = 1000)]
        skus: u32,
        #[arg(long, default_value_t = 50)]
        connections: u32,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Where the receiver listens; the server's `[[channels]]` must post to
        /// `http://<receiver>/stock` (`--start-server` configures it so).
        #[arg(long, default_value = "127.0.0.1:18090")]
        receiver: SocketAddr,
        /// Requests a second the receiver takes per listing before answering 429.
        #[arg(long, default_value_t = 10)]
        listing_limit: u32,
        /// The same orders on SKUs without listings, and a server without connectors: the
        /// baseline for the server's CPU per order.
        #[arg(long)]
        baseline: bool,
    },
    /// Replay a live show at speed and check the books balance.
    Show {
        /// Length of the show.
        #[arg(long, default_value_t = 3.0)]
        hours: f64,
        /// Show time per real time.
        #[arg(long, default_value_t = 360.0)]
        speed: f64,
        #[arg(long, default_value_t = 6)]
        listings: u32,
        /// Units of each listing at the start; a quarter more arrives halfway.
        #[arg(long, default_value_t = 1500)]
        stock: u64,
        /// Minutes of show time between the host's calls.
        #[arg(long, default_value_t = 10)]
        call_every_minutes: u64,
        /// Orders in the burst after each call.
        #[arg(long, default_value_t = 300)]
        burst: u32,
        /// Orders per minute of show time between bursts.
        #[arg(long, default_value_t = 20)]
        trickle: u32,
        /// Lock TTL of the listings, in real seconds.
        #[arg(long, default_value_t = 2)]
        lock_ttl_s: u64,
        #[arg(long, default_value_t = 16)]
        connections: u32,
        /// Seed of the show's random choices [default: random].
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    /// One order per HTTP request.
    Single,
    /// Many orders per HTTP request (`--batch-size`).
    Batch,
    /// Order commands pipelined over a WebSocket (`--depth` in flight).
    Ws,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("stockpulse-load: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the command; `Ok(false)` when a check failed.
async fn run(args: Args) -> anyhow::Result<bool> {
    let mut server = None;
    let (target, pid) = if args.start_server {
        let receiver = match &args.command {
            Command::Channels {
                receiver,
                baseline: false,
                ..
            } => Some(*receiver),
            _ => None,
        };
        let started = start_server(receiver).await?;
        let target = started.address;
        let pid = started.child.id();
        server = Some(started);
        (target, Some(pid))
    } else {
        (args.target, args.pid)
    };
    let sampler = pid.and_then(ProcessSampler::start);
    let progress = if args.quiet {
        Progress::Quiet
    } else {
        Progress::Every(Duration::from_secs(1))
    };
    let (table, json, passed) = match args.command {
        Command::Ingest {
            connections,
            mode,
            batch_size,
            depth,
            skus,
            hot_share,
            stock,
            seconds,
            orders,
        } => {
            let options = IngestOptions {
                target,
                connections,
                mode: match mode {
                    Mode::Single => IngestMode::Single,
                    Mode::Batch => IngestMode::Batch { batch_size },
                    Mode::Ws => IngestMode::WebSocket { depth },
                },
                skus_count: skus,
                hot_share: hot_share.clamp(0.0, 1.0),
                stock_per_sku: stock,
                duration: orders.is_none().then(|| Duration::from_secs_f64(seconds)),
                orders_max: orders,
                run_id: run_id(),
                progress,
            };
            let report = ingest(options, sampler).await?;
            (report.table(), serde_json::to_string_pretty(&report)?, true)
        }
        Command::Fanout {
            subscribers,
            rate,
            seconds,
        } => {
            let options = FanoutOptions {
                target,
                subscribers,
                rate,
                duration: Duration::from_secs_f64(seconds),
                run_id: run_id(),
                progress,
            };
            let report = fanout(options, sampler).await?;
            let complete = report.missing == 0 && report.out_of_order == 0;
            (
                report.table(),
                serde_json::to_string_pretty(&report)?,
                complete,
            )
        }
        Command::Idle { connections } => {
            let Some(sampler) = sampler else {
                anyhow::bail!("idle needs the server's pid: --pid or --start-server");
            };
            let options = IdleOptions {
                target,
                connections,
                run_id: run_id(),
            };
            let report = idle(options, sampler).await?;
            (report.table(), serde_json::to_string_pretty(&report)?, true)
        }
        Command::Channels {
            rate,
            skus,
            connections,
            seconds,
            receiver,
            listing_limit,
            baseline,
        } => {
            let options = ChannelsOptions {
                target,
                receiver,
                connections,
                skus_count: skus,
                rate,
                duration: Duration::from_secs_f64(seconds),
                listing_limit_per_s: listing_limit,
                baseline,
                run_id: run_id(),
                progress,
            };
            let report = channels(options, sampler).await?;
            let counted = report.never_counted == 0 && report.receiver_throttled == 0;
            (
                report.table(),
                serde_json::to_string_pretty(&report)?,
                counted,
            )
        }
        Command::Show {
            hours,
            speed,
            listings,
            stock,
            call_every_minutes,
            burst,
            trickle,
            lock_ttl_s,
            connections,
            seed,
        } => {
            let seed = seed.unwrap_or_else(|| fastrand::u64(..));
            eprintln!("show seed {seed}");
            let options = ShowOptions {
                target,
                skus_count: listings,
                stock_per_sku: stock,
                show_length: Duration::from_secs_f64(hours * 3600.0),
                speed: speed.max(1.0),
                call_interval: Duration::from_secs(call_every_minutes * 60),
                burst_orders: burst,
                trickle_per_minute: trickle,
                lock_ttl_s: lock_ttl_s.max(1),
                connections,
                seed,
                run_id: run_id(),
                progress,
            };
            let report = show(options, sampler).await?;
            let balanced = report.balanced;
            (
                report.table(),
                serde_json::to_string_pretty(&report)?,
                balanced,
            )
        }
    };
    print!("{table}");
    if let Some(path) = args.json {
        std::fs::write(&path, json)?;
    }
    if let Some(mut server) = server {
        let _ = server.child.kill();
        let _ = server.child.wait();
        let _ = std::fs::remove_dir_all(&server.data_dir);
    }
    Ok(passed)
}

struct StartedServer {
    child: Child,
    address: SocketAddr,
    data_dir: PathBuf,
}

/// Starts the `stockpulse` binary beside this one on a free port and waits until it answers;
/// with `receiver`, its three platforms' connectors post there.
async fn start_server(receiver: Option<SocketAddr>) -> anyhow::Result<StartedServer> {
    use anyhow::Context as _;
    let binary = std::env::current_exe()?.with_file_name("stockpulse");
    let address = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let data_dir = std::env::temp_dir().join(format!("stockpulse-load-{}", run_id()));
    let mut command = std::process::Command::new(&binary);
    if let Some(receiver) = receiver {
        std::fs::create_dir_all(&data_dir)?;
        let config = data_dir.join("stockpulse.toml");
        let channels: String = stockpulse_load::PLATFORMS
            .iter()
            .map(|platform| {
                format!(
                    "[[channels]]\nplatform = \"{platform}\"\nurl = \"http://{receiver}/stock\"\nsecret = \"load-receiver-secret\"\nmax_requests_per_s = 20\nmax_updates_per_request = 250\n\n"
                )
            })
            .collect();
        std::fs::write(&config, channels)?;
        command.env("STOCKPULSE_CONFIG", &config);
    }
    let child = command
        .arg("--listen")
        .arg(address.to_string())
        .arg("--data-dir")
        .arg(&data_dir)
        .env("RUST_LOG", "warn")
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut server = StartedServer {
        child,
        address,
        data_dir,
    };
    for _ in 0..100 {
        if let Ok(mut connection) = stockpulse_load::Connection::connect(address).await
            && connection.get("/healthz").await.is_ok()
        {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = server.child.kill();
    anyhow::bail!("{} did not answer on {address}", binary.display())
}
