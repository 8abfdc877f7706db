//! The load generator behind `stockpulse-load`: drives a running server over the network,
//! exactly as its clients do, and measures it.
//!
//! A crate of its own, which does not depend on the server's: it shares nothing with the
//! server beyond the wire, and the compiler holds it to that. requests go out over TCP through
//! `client`, a minimal HTTP/1.1 client. `ingest` places orders as fast as the server answers;
//! `fanout` measures order-to-screen latency and completeness over `/ws`; `idle` what an
//! idle WebSocket costs the server;
//! `show` replays a compressed live show and checks the books balance at the end; `channels`
//! measures how soon a sale reaches every sibling platform listing, with a receiver of its
//! own; `stats`
//! tallies outcomes and latencies and samples the server's CPU and memory from `/proc`.

mod channels;
mod client;
mod fanout;
mod idle;
mod ingest;
mod show;
mod stats;

use std::net::SocketAddr;
use std::time::Duration;

pub use channels::{ChannelsOptions, ChannelsReport, PLATFORMS, channels};
pub use client::{ClientError, Connection, Response};
pub use fanout::{FanoutOptions, FanoutReport, fanout};
pub use idle::{IdleOptions, IdleReport, idle};
pub use ingest::{IngestMode, IngestOptions, IngestReport, ingest};
pub use show::{ShowOptions, ShowReport, show};
pub use stats::{LatencySummary, ProcessSampler, ServerUsage};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("the server refused {what}: HTTP {status} {body}")]
    Refused {
        what: String,
        status: u16,
        body: String,
    },
    #[error("a worker stopped: {0}")]
    Worker(String),
    #[error("unexpected answer: {0}")]
    Answer(String),
}

/// Whether and how often to print progress to standard error.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    Quiet,
    Every(Duration),
}

impl Progress {
    /// Prints `count()` and its rate every period until the returned task is aborted.
    fn spawn(
        self,
        what: &'static str,
        count: impl Fn() -> u64 + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let Progress::Every(period) = self else {
                return;
            };
            let started = tokio::time::Instant::now();
            let mut ticker = tokio::time::interval(period);
            ticker.tick().await;
            let mut last = 0;
            loop {
                ticker.tick().await;
                let now = count();
                eprintln!(
                    "{:>6.1} s  {what}: {now}  ({:.0}/s)",
                    started.elapsed().as_secs_f64(),
                    (now - last) as f64 / period.as_secs_f64()
                );
                last = now;
            }
        })
    }
}

/// Creates (or resets) SKUs with `stock` units each.
async fn create_skus(target: SocketAddr, skus: &[String], stock: u64) -> Result<(), LoadError> {
    let mut connection = Connection::connect(target).await?;
    for sku in skus {
        let body = format!(r#"{{"name":"{sku}","total":{stock}}}"#);
        let response = connection
            .request("PUT", &format!("/api/v1/skus/{sku}"), body.as_bytes())
            .await?;
        if !response.is_success() {
            return Err(refused(format!("creating sku {sku}"), &response));
        }
    }
    Ok(())
}

fn refused(what: String, response: &Response) -> LoadError {
    LoadError::Refused {
        what,
        status: response.status,
        body: String::from_utf8_lossy(&response.body).into_owned(),
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client subscribed to one SKU's topic.
async fn subscriber(target: SocketAddr, sku: &str) -> Result<Socket, LoadError> {
    use futures_util::SinkExt;
    let failed = |error: tokio_tungstenite::tungstenite::Error| {
        LoadError::Answer(format!("websocket: {error}"))
    };
    // A small read buffer: the default 128 KiB is zeroed on every read, which at thousands of
    // subscribers costs the tool more than the frames do.
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(8 * 1024);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{target}/ws"),
        Some(config),
        false,
    )
    .await
    .map_err(failed)?;
    let subscribe = format!(r#"{{"op":"subscribe","topics":["sku:{sku}"]}}"#);
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(
            subscribe.into(),
        ))
        .await
        .map_err(failed)?;
    Ok(socket)
}

/// A random run id, so ids of two runs against one server never collide.
pub fn run_id() -> String {
    format!("r{:08x}", fastrand::u32(..))
}
