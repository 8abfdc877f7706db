//! The TCP edge: accepting connections within limits, serving each with hyper (HTTP/1.1 with
//! a deadline for request headers, so a client that trickles them is dropped; HTTP/2; the
//! WebSocket upgrade), and draining them at shutdown.
//!
//! Limits: connections in total, connections per address, new connections per address per
//! second. A connection refused by a limit is closed at once, before a byte is read. Each
//! connection holds a permit for as long as its socket lives, WebSocket sessions included.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The edge's limits; see the configuration for their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub connections_max: usize,
    pub per_address_max: usize,
    pub per_address_per_second: u32,
    /// How long a client has to send a request's headers.
    pub header_timeout: Duration,
    /// Whether loopback clients (the operator's own machine, load tests) count against the
    /// per-address limits.
    pub limit_loopback: bool,
}

/// How many addresses the gate remembers before it forgets the idle ones.
const ADDRESSES_SWEEP: usize = 4096;

#[derive(Default)]
struct Address {
    open: usize,
    /// New connections in the current one-second window, and when it began.
    recent: u32,
    window: Option<Instant>,
}

/// Who is connected.
struct Gate {
    limits: Limits,
    open: usize,
    addresses: HashMap<IpAddr, Address>,
}

/// Counts of connections refused, for logs and metrics.
#[derive(Default)]
pub struct EdgeCounters {
    pub refused: AtomicU64,
    pub open: AtomicU64,
}

/// A connection's place within the limits, given back when its socket closes.
struct Permit {
    gate: Arc<Mutex<Gate>>,
    address: IpAddr,
    counters: Arc<EdgeCounters>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut gate = self.gate.lock();
        gate.open = gate.open.saturating_sub(1);
        if let Some(address) = gate.addresses.get_mut(&self.address) {
            address.open = address.open.saturating_sub(1);
            if address.open == 0 && address.recent == 0 {
                gate.addresses.remove(&self.address);
            }
        }
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// Admits a new connection from `address`, or says which limit refuses it.
    fn admit(&mut self, address: IpAddr, now: Instant) -> Result<(), &'static str> {
        if ADDRESSES_SWEEP <= self.addresses.len() {
            // Forget addresses with nothing open and no recent connection.
            self.addresses.retain(|_, known| {
                0 < known.open
                    || known
                        .window
                        .is_some_and(|start| now.duration_since(start) < Duration::from_secs(1))
            });
        }
        if self.limits.connections_max <= self.open {
            return Err("connections");
        }
        let counted = self.limits.limit_loopback || !address.is_loopback();
        let limits = self.limits;
        let entry = self.addresses.entry(address).or_default();
        if counted {
            if limits.per_address_max <= entry.open {
                return Err("connections per address");
            }
            let fresh = entry
                .window
                .is_none_or(|start| Duration::from_secs(1) <= now.duration_since(start));
            if fresh {
                entry.window = Some(now);
                entry.recent = 0;
            }
            if limits.per_address_per_second <= entry.recent {
                return Err("connections per address per second");
            }
            entry.recent += 1;
        }
        entry.open += 1;
        self.open += 1;
        Ok(())
    }
}

/// A socket that holds its connection's permit, and fails if its first request has not
/// reached the service by the header deadline (hyper's own deadline starts only once it
/// knows the protocol, so a client sending one byte, or an HTTP/2 preface and nothing, would
/// otherwise stay).
struct Counted {
    stream: TcpStream,
    _permit: Permit,
    first_request: Option<Pin<Box<tokio::time::Sleep>>>,
    served: Arc<AtomicBool>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.first_request.is_some() && self.served.load(Ordering::Acquire) {
            self.first_request = None;
        }
        if let Some(deadline) = self.first_request.as_mut()
            && deadline.as_mut().poll(context).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request before the header deadline",
            )));
        }
        Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(context, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// connections finish for at most `grace`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    counters: Arc<EdgeCounters>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let gate = Arc::new(Mutex::new(Gate {
        limits,
        open: 0,
        addresses: HashMap::new(),
    }));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(limit) = gate.lock().admit(peer.ip(), Instant::now()) {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, limit, "Connection refused by a limit.");
            drop(stream);
            continue;
        }
        counters.open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let served = Arc::new(AtomicBool::new(false));
        let io = Counted {
            stream,
            first_request: Some(Box::pin(tokio::time::sleep(limits.header_timeout))),
            served: served.clone(),
            _permit: Permit {
                gate: gate.clone(),
                address: peer.ip(),
                counters: counters.clone(),
            },
        };
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |request: hyper::Request<hyper::body::Incoming>| {
                served.store(true, Ordering::Release);
                request.map(axum::body::Body::new)
            },
        ));
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = grace.as_secs(),
            "Connections still open after the grace period; dropping them."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(limit_loopback: bool) -> Gate {
        Gate {
            limits: Limits {
                connections_max: 5,
                per_address_max: 2,
                per_address_per_second: 3,
                header_timeout: Duration::from_secs(1),
                limit_loopback,
            },
            open: 0,
            addresses: HashMap::new(),
        }
    }

    #[test]
    fn limits_count_connections_per_address_per_second_and_in_total() {
        let now = Instant::now();
        let one: IpAddr = "10.0.0.1".parse().expect("address");
        let two: IpAddr = "10.0.0.2".parse().expect("address");
        let mut gate = limited(true);
        assert_eq!(gate.admit(one, now), Ok(()));
        assert_eq!(gate.admit(one, now), Ok(()));
        assert_eq!(gate.admit(one, now), Err("connections per address"));
        gate.addresses.get_mut(&one).expect("known").open = 0;
        assert_eq!(gate.admit(one, now), Ok(()));
        assert_eq!(
            gate.admit(one, now),
            Err("connections per address per second")
        );
        assert_eq!(gate.admit(two, now), Ok(()));
        assert_eq!(gate.admit(two, now), Ok(()));
        assert_eq!(gate.admit(two, now), Err("connections"));
        let loopback: IpAddr = "127.0.0.1".parse().expect("address");
        let mut open = limited(false);
        for _ in 0..5 {
            assert_eq!(open.admit(loopback, now), Ok(()));
        }
        assert_eq!(open.admit(loopback, now), Err("connections"));
    }
}
