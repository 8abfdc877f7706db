//! `idle`: many WebSocket connections that subscribe to one SKU and then do nothing, to
//! measure what an idle connection costs the server (resident memory per connection).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::stats::{ProcessSampler, table};
use super::{LoadError, create_skus, subscriber};

#[derive(Clone, Debug)]
pub struct IdleOptions {
    pub target: SocketAddr,
    pub connections: u32,
    pub run_id: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdleReport {
    pub connections: u32,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// The growth of resident memory divided by the connections.
    pub bytes_per_connection: u64,
}

impl IdleReport {
    pub fn table(&self) -> String {
        table(&[
            ("connections".to_owned(), self.connections.to_string()),
            (
                "server rss before / after".to_owned(),
                format!("{} / {} KiB", self.rss_before_kib, self.rss_after_kib),
            ),
            (
                "per connection".to_owned(),
                format!("{} bytes", self.bytes_per_connection),
            ),
        ])
    }
}

/// Opens the connections, lets them settle, and reads the server's memory around it.
/// Needs the server's pid.
pub async fn idle(options: IdleOptions, server: ProcessSampler) -> Result<IdleReport, LoadError> {
    let sku = format!("{}-idle", options.run_id);
    create_skus(options.target, std::slice::from_ref(&sku), 1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.usage().rss_kib;
    let mut sockets = Vec::with_capacity(options.connections as usize);
    for _ in 0..options.connections {
        sockets.push(subscriber(options.target, &sku).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.usage().rss_kib;
    drop(sockets);
    Ok(IdleReport {
        connections: options.connections,
        rss_before_kib: before,
        rss_after_kib: after,
        bytes_per_connection: after.saturating_sub(before) * 1024
            / u64::from(options.connections.max(1)),
    })
}
