//! `TestServer`: the real server on `127.0.0.1:0` with a temporary data directory and a
//! manual clock, and a real HTTP client to talk to it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use stockpulse::clock::{Clock, ManualClock, SystemClock, Timestamp};
use stockpulse::config::{Config, ConfigLayer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// 2026-11-25T12:00:00Z: tests start from a fixed instant so times in answers are stable.
pub(crate) const START_MILLIS: u64 = 1_795_608_000_000;

pub(crate) struct TestServer {
    pub(crate) address: SocketAddr,
    pub(crate) clock: ManualClock,
    pub(crate) client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<std::io::Result<()>>>,
    /// Where the server keeps its journal; kept across restarts by `start_in`.
    pub(crate) data_dir: PathBuf,
    /// Deletes the data directory when the last server using it is dropped.
    _owned_data_dir: Option<tempfile::TempDir>,
}

impl TestServer {
    pub(crate) async fn start() -> TestServer {
        TestServer::with_config(ConfigLayer::default()).await
    }

    /// A server on the machine's clock, for tests that need locks to expire in real time.
    /// Its `clock` field then moves nothing.
    pub(crate) async fn start_real_time() -> TestServer {
        TestServer::with_clock(ConfigLayer::default(), None).await
    }

    pub(crate) async fn with_config(layer: ConfigLayer) -> TestServer {
        let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
        TestServer::with_clock(layer, Some(clock)).await
    }

    async fn with_clock(layer: ConfigLayer, manual: Option<ManualClock>) -> TestServer {
        let owned = tempfile::tempdir().expect("temporary directory");
        let mut server = TestServer::start_in(owned.path().to_owned(), layer, manual).await;
        server._owned_data_dir = Some(owned);
        server
    }

    /// A server on `data_dir`, which may hold an earlier server's journal: a restart. The
    /// caller keeps the directory alive.
    pub(crate) async fn start_in(
        data_dir: PathBuf,
        layer: ConfigLayer,
        manual: Option<ManualClock>,
    ) -> TestServer {
        let config = Config {
            data_dir: data_dir.clone(),
            ..layer.resolve().expect("valid test configuration")
        };
        TestServer::start_config(config, manual).await
    }

    /// A server whose journal syncs through `fsync` (which may fail on purpose).
    pub(crate) async fn with_journal_fsync(
        layer: ConfigLayer,
        fsync: Arc<dyn stockpulse::journal::Fsync>,
    ) -> TestServer {
        let owned = tempfile::tempdir().expect("temporary directory");
        let config = Config {
            data_dir: owned.path().to_owned(),
            journal_fsync: fsync,
            ..layer.resolve().expect("valid test configuration")
        };
        let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
        let mut server = TestServer::start_config(config, Some(clock)).await;
        server._owned_data_dir = Some(owned);
        server
    }

    async fn start_config(config: Config, manual: Option<ManualClock>) -> TestServer {
        let data_dir = config.data_dir.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let address = listener.local_addr().expect("bound address");
        let server_clock: Arc<dyn Clock> = match &manual {
            Some(clock) => Arc::new(clock.clone()),
            None => Arc::new(SystemClock),
        };
        let clock = manual.unwrap_or_default();
        let (shutdown, stop) = oneshot::channel::<()>();
        let handle = tokio::spawn(stockpulse::server::run(
            listener,
            config,
            server_clock,
            async move {
                let _ = stop.await;
            },
        ));
        TestServer {
            address,
            clock,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            handle: Some(handle),
            data_dir,
            _owned_data_dir: None,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub(crate) async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("GET reaches the server");
        decode(response).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send_raw(reqwest::Method::POST, path, body.to_string())
            .await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send_raw(reqwest::Method::PUT, path, body.to_string())
            .await
    }

    /// Sends `body` as it is, valid JSON or not.
    pub(crate) async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request reaches the server");
        decode(response).await
    }

    /// Creates a SKU with `total` units and returns its JSON.
    pub(crate) async fn sku(&self, sku: &str, total: u64) -> Value {
        let (status, body) = self
            .put(
                &format!("/api/v1/skus/{sku}"),
                serde_json::json!({ "total": total }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub(crate) async fn stock(&self, sku: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/skus/{sku}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// The Prometheus text of `/metrics`.
    pub(crate) async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Polls `check` every 10 ms until it holds or `limit` passes; returns whether it held.
    pub(crate) async fn eventually<F, Fut>(&self, limit: Duration, mut check: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if check().await {
                return true;
            }
            if deadline < tokio::time::Instant::now() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the server and hands back its data directory (still alive), for a restart.
    pub(crate) async fn stop_keeping_data(mut self) -> Option<tempfile::TempDir> {
        let owned = self._owned_data_dir.take();
        self.stop().await;
        owned
    }

    /// Stops the server and starts it again on the same data directory and clock, with the
    /// default configuration; the directory lives as long as the returned guard.
    pub(crate) async fn restarted(self) -> (TestServer, Option<tempfile::TempDir>) {
        let clock = self.clock.clone();
        let data = self.stop_keeping_data().await;
        let path = data.as_ref().expect("a data directory").path().to_owned();
        let server = TestServer::start_in(path, ConfigLayer::default(), Some(clock)).await;
        (server, data)
    }

    /// Stops the server and waits for it to finish.
    pub(crate) async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(handle) = self.handle.take() {
            handle
                .await
                .expect("server task does not panic")
                .expect("server stops cleanly");
        }
    }
}

async fn decode(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The `error.code` of an error body.
pub(crate) fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// Whether a server answers `GET {base}/healthz` within `limit`, asking every 25 ms: for
/// the tests that start the real binary.
pub(crate) async fn answers_within(base: &str, limit: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// The `nats-server` the cluster tests start: `STOCKPULSE_NATS_SERVER` when set (the test
/// command runs the cluster tests once with Debian's and once with a current upstream
/// server), else the one on `PATH`. Says how to get one when there is none.
pub(crate) fn nats_server() -> PathBuf {
    if let Some(path) = std::env::var_os("STOCKPULSE_NATS_SERVER") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "STOCKPULSE_NATS_SERVER names {}, which is not a file",
            path.display()
        );
        return path;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|directory| directory.join("nats-server"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the cluster tests need nats-server, and none is on PATH: run the README's \
                 test command (scripts/test), which installs it, or `apt-get install \
                 nats-server`, or set STOCKPULSE_NATS_SERVER to a nats-server binary"
            )
        })
}
