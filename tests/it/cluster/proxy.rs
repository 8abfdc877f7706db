//! A link for partition tests: a TCP proxy on loopback between a node and a NATS server that
//! a test cuts and heals. Cut, it black-holes: connections stay open and what is sent on
//! them is read and dropped, as when a network path fails silently (the harder case: nothing
//! tells either end). Healed, the connections that lived through the cut are closed, as a
//! path that came back after the peers' state went stale, and new ones are forwarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct State {
    cut: AtomicBool,
    /// Bumped by every cut and heal: a connection forwards only in the generation it was
    /// opened in.
    generation: AtomicU64,
    healed: tokio::sync::Notify,
}

/// A proxied link to one port. Dropping it stops accepting.
pub(super) struct Link {
    pub(super) port: u16,
    state: Arc<State>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Link {
    /// A link to `127.0.0.1:target`, listening on a port of its own.
    pub(super) async fn to(target: u16) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a proxy port");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(State {
            cut: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            healed: tokio::sync::Notify::new(),
        });
        let accepting = tokio::spawn(accept(listener, target, state.clone()));
        Link {
            port,
            state,
            accepting,
        }
    }

    pub(super) fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.generation.fetch_add(1, Ordering::SeqCst);
        self.state.healed.notify_waiters();
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, target: u16, state: Arc<State>) {
    while let Ok((client, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let generation = state.generation.load(Ordering::SeqCst);
            if let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await {
                forward(client, server, &state, generation).await;
            }
        });
    }
}

/// Whether a connection opened in `generation` may pass bytes now.
fn passes(state: &State, generation: u64) -> bool {
    !state.cut.load(Ordering::SeqCst) && state.generation.load(Ordering::SeqCst) == generation
}

/// Carries bytes both ways while the link passes, drops them while it is cut, and closes
/// both ends once a heal finds this connection from an earlier generation.
async fn forward(mut client: TcpStream, mut server: TcpStream, state: &State, generation: u64) {
    let (mut client_in, mut client_out) = client.split();
    let (mut server_in, mut server_out) = server.split();
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    loop {
        let healed = state.healed.notified();
        tokio::select! {
            read = client_in.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(count) => {
                    if passes(state, generation) && server_out.write_all(&up[..count]).await.is_err() {
                        return;
                    }
                }
            },
            read = server_in.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(count) => {
                    if passes(state, generation) && client_out.write_all(&down[..count]).await.is_err() {
                        return;
                    }
                }
            },
            () = healed => {
                if state.generation.load(Ordering::SeqCst) != generation {
                    return;
                }
            }
        }
    }
}
