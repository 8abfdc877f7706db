//! Settings: defaults, then a TOML file (`--config`), then environment variables, then flags,
//! each overriding the one before. Validated before anything binds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::journal::{JournalConfig, SyncPolicy};
use crate::ledger::LedgerConfig;

/// Journal segments are 64 MiB unless configured: big enough that rolling is rare, small
/// enough that a snapshot frees space soon.
pub const JOURNAL_SEGMENT_MIB_DEFAULT: u64 = 64;
/// A snapshot every million facts keeps start-up replay around a second.
pub const SNAPSHOT_EVERY_FACTS_DEFAULT: u64 = 1_000_000;

/// The longest refund window: 90 days, beyond any platform's return period.
pub const REFUND_WINDOW_S_MAX: u64 = 90 * 86_400;

/// The largest request body the server will read when none is configured: 1 MiB.
pub const BODY_LIMIT_BYTES_DEFAULT: u64 = 1024 * 1024;
/// The largest request body that may be configured: 64 MiB.
pub const BODY_LIMIT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// The most threads that may serve requests.
pub const WORKERS_MAX: usize = 1024;

/// The longest order lock that may be configured: a day.
pub const LOCK_TTL_S_MAX: u64 = 86_400;
/// The idempotency window's bounds: a minute to 30 days.
pub const IDEMPOTENCY_WINDOW_S_MIN: u64 = 60;
pub const IDEMPOTENCY_WINDOW_S_MAX: u64 = 30 * 86_400;
/// `journal_sync = interval`: how often, 1 s unless configured, at most once a minute.
pub const JOURNAL_SYNC_INTERVAL_MS_DEFAULT: u64 = 1000;
pub const JOURNAL_SYNC_INTERVAL_MS_MAX: u64 = 60_000;
/// The largest journal segment: 4 GiB.
pub const JOURNAL_SEGMENT_MIB_MAX: u64 = 4096;
/// Snapshots no more often than every thousand facts.
pub const SNAPSHOT_EVERY_FACTS_MIN: u64 = 1000;
/// A session's push queue: 16 KiB to 1 GiB.
pub const PUSH_QUEUE_KIB_MIN: u64 = 16;
pub const PUSH_QUEUE_KIB_MAX: u64 = 1024 * 1024;
/// The longest a topic's changes may be gathered before they are sent.
pub const PUSH_INTERVAL_MS_MAX: u64 = 1000;
/// A client must send its request headers within 1 to 300 s.
pub const HEADER_TIMEOUT_S_MAX: u64 = 300;

/// Threads serving requests unless configured otherwise: every core but one, which the
/// journal's writer (group commit: encode, write, sync) keeps busy under load; one at
/// least. On two cores, one worker and the writer spend a fifth less CPU per order than two
/// workers and the writer, which wake each other across cores (`docs/BENCHMARKS.md`).
fn workers_default() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .saturating_sub(1)
        .max(1)
}

/// Everything the server needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where HTTP is served.
    pub listen: SocketAddr,
    /// Where the server keeps its data.
    pub data_dir: PathBuf,
    /// Requests with a larger body get 413.
    pub body_limit_bytes: u64,
    /// How long an order lock lasts when the SKU sets no TTL.
    pub lock_ttl: Duration,
    /// How long settled orders are remembered for idempotent retries.
    pub idempotency_window: Duration,
    /// How long sold orders are remembered: refundable, and a re-sent paid order a retry.
    pub refund_window: Duration,
    /// When the journal syncs: `always` (the default), every so often, or never.
    pub journal_sync: SyncPolicy,
    /// Size of each preallocated journal segment.
    pub journal_segment_bytes: u64,
    /// A snapshot is written after this many facts, bounding replay at start-up.
    pub snapshot_every_facts: u64,
    /// Cut corrupt journal records instead of refusing to start (`--repair`).
    pub repair: bool,
    /// Bytes a WebSocket session may have queued before it is resynced.
    pub push_queue_bytes: usize,
    /// The shortest time between two rounds of pushes: under load, changes wait at most
    /// this long and travel together. Zero sends every round at once.
    pub push_interval: Duration,
    /// Threads serving requests and pushes. The journal's writer has its own thread, which
    /// is busy under load: by default one core is left to it.
    pub workers: usize,
    /// Alert delivery: receivers, routes, grouping, limits, escalation (`[notify]`).
    pub notify: crate::notify::NotifyConfig,
    /// Platform connectors that keep listings synced (`[[channels]]`).
    pub channels: Vec<crate::channels::ChannelConfig>,
    /// Credentials and origins (`[auth]`).
    pub auth: AuthConfig,
    /// Listen beyond loopback without credentials (`--insecure`); a run flag.
    pub insecure: bool,
    /// Connections in total and per address, and the header deadline.
    pub limits: crate::edge::Limits,
    /// Run the simulated show with this seed (`--demo`); a run mode, not a file setting.
    pub demo_seed: Option<u64>,
    /// The demo's stand-in platforms listen here (`--demo` without `[[channels]]`).
    pub demo_stand_in: Option<Arc<std::net::TcpListener>>,
    /// How the journal syncs: the operating system's, unless a test injects failures.
    pub journal_fsync: Arc<dyn crate::journal::Fsync>,
    /// Cluster mode on NATS JetStream (`[cluster]`, `--cluster`); `None` runs one node.
    pub cluster: Option<ClusterConfig>,
}

/// A cluster's replicated log and leadership, on NATS JetStream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The NATS servers to connect to (`nats://host:port`, or `tls://host:port`), any of
    /// them.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster: letters, digits, `-` and `_`.
    pub node_id: String,
    /// Copies JetStream keeps of the log, the lease and the snapshots: 3 on a 3-server NATS
    /// cluster, 1 on a single server.
    pub replicas: usize,
    /// The log stream's name; the lease bucket and the snapshot store are named after it.
    pub stream: String,
    /// A leader that has not renewed its lease for this long is replaced.
    pub lease_ttl: Duration,
    /// How often the leader renews its lease.
    pub lease_renew: Duration,
    /// Credentials for NATS: a user and password, or a token; from the configuration file
    /// or the environment, never from flags.
    pub credentials: NatsCredentials,
    /// Create this cluster's log even though the NATS account already holds another
    /// stockpulse log: a second cluster on purpose, not a mistyped stream name.
    pub new_stream: bool,
    /// Wait for NATS, however long, instead of exiting 69 when it cannot be reached: set
    /// for a node started again after stepping down, which was running a moment ago.
    pub patient: bool,
    /// TLS to NATS, when any server is `tls://` or a certificate is named.
    pub tls: Option<NatsTls>,
}

/// TLS between a node and NATS: the connection is refused unless the server proves itself
/// by a certificate the CA (or, without one, the system's roots) signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTls {
    /// A PEM file of the CA that signed the servers' certificates.
    pub ca: Option<std::path::PathBuf>,
    /// This node's certificate and key (PEM), for servers that verify their clients.
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

#[derive(Clone, Default, PartialEq, Eq)]
pub enum NatsCredentials {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
}

impl std::fmt::Debug for NatsCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            NatsCredentials::None => "None",
            NatsCredentials::UserPassword { .. } => "UserPassword { .. }",
            NatsCredentials::Token(_) => "Token(..)",
        })
    }
}

/// `[cluster]` in the configuration file; `nats` and `node_id` also come from flags.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterLayer {
    pub nats: Vec<String>,
    pub node_id: Option<String>,
    pub replicas: Option<usize>,
    pub stream: Option<String>,
    pub lease_ttl_ms: Option<u64>,
    pub lease_renew_ms: Option<u64>,
    /// Start a second cluster on NATS that already holds a stockpulse log.
    pub new_stream: Option<bool>,
    pub user: Option<String>,
    /// Also `STOCKPULSE_NATS_PASSWORD`.
    pub password: Option<String>,
    /// Also `STOCKPULSE_NATS_TOKEN`.
    pub token: Option<String>,
    /// A PEM file of the CA that signed the NATS servers' certificates (TLS to NATS).
    pub tls_ca: Option<std::path::PathBuf>,
    /// This node's certificate and key for NATS servers that verify clients.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

/// The log stream's name unless configured.
pub const CLUSTER_STREAM_DEFAULT: &str = "stockpulse";

/// Names that travel in NATS subjects and bucket names: 1 to 32 of `A-Z a-z 0-9 - _`.
fn is_subject_token(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

impl ClusterLayer {
    fn merge(self, over: ClusterLayer) -> ClusterLayer {
        ClusterLayer {
            nats: if over.nats.is_empty() {
                self.nats
            } else {
                over.nats
            },
            node_id: over.node_id.or(self.node_id),
            replicas: over.replicas.or(self.replicas),
            stream: over.stream.or(self.stream),
            lease_ttl_ms: over.lease_ttl_ms.or(self.lease_ttl_ms),
            lease_renew_ms: over.lease_renew_ms.or(self.lease_renew_ms),
            new_stream: over.new_stream.or(self.new_stream),
            user: over.user.or(self.user),
            password: over.password.or(self.password),
            token: over.token.or(self.token),
            tls_ca: over.tls_ca.or(self.tls_ca),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
        }
    }

    /// The cluster settings, or `None` when no NATS server is named (one node).
    fn resolve(self) -> Result<Option<ClusterConfig>, ConfigError> {
        if self.nats.is_empty() {
            return Ok(None);
        }
        let nats: Vec<String> = self
            .nats
            .iter()
            .flat_map(|urls| urls.split(','))
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect();
        if let Some(bad) = nats
            .iter()
            .find(|url| !url.starts_with("nats://") && !url.starts_with("tls://"))
        {
            return Err(ConfigError::Invalid(format!(
                "cluster.nats: each server is nats://host:port or tls://host:port, got {bad:?}"
            )));
        }
        let node_id = self.node_id.ok_or_else(|| {
            ConfigError::Invalid(
                "cluster mode needs a node id (--node-id or cluster.node_id)".to_owned(),
            )
        })?;
        if !is_subject_token(&node_id) {
            return Err(ConfigError::Invalid(format!(
                "cluster.node_id must be 1 to 32 letters, digits, - or _, got {node_id:?}"
            )));
        }
        let stream = self
            .stream
            .unwrap_or_else(|| CLUSTER_STREAM_DEFAULT.to_owned());
        if !is_subject_token(&stream) {
            return Err(ConfigError::Invalid(format!(
                "cluster.stream must be 1 to 32 letters, digits, - or _, got {stream:?}"
            )));
        }
        let replicas = self.replicas.unwrap_or(3);
        if !(1..=5).contains(&replicas) {
            return Err(ConfigError::Invalid(format!(
                "cluster.replicas must be between 1 and 5, got {replicas}"
            )));
        }
        let lease_ttl_ms = self.lease_ttl_ms.unwrap_or(3_000);
        let lease_renew_ms = self.lease_renew_ms.unwrap_or(lease_ttl_ms / 3);
        if !(500..=60_000).contains(&lease_ttl_ms)
            || lease_renew_ms < 50
            || lease_ttl_ms < 2 * lease_renew_ms
        {
            return Err(ConfigError::Invalid(format!(
                "cluster.lease_ttl_ms must be between 500 and 60000 and at least twice                  cluster.lease_renew_ms (at least 50), got {lease_ttl_ms} and {lease_renew_ms}"
            )));
        }
        let credentials = match (self.user, self.password, self.token) {
            (None, None, None) => NatsCredentials::None,
            (Some(user), Some(password), None) => NatsCredentials::UserPassword { user, password },
            (None, None, Some(token)) => NatsCredentials::Token(token),
            _ => {
                return Err(ConfigError::Invalid(
                    "cluster: give either user and password, or a token".to_owned(),
                ));
            }
        };
        let client = match (self.tls_cert, self.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => {
                return Err(ConfigError::Invalid(
                    "cluster: give tls_cert and tls_key together".to_owned(),
                ));
            }
        };
        let tls = (nats.iter().any(|url| url.starts_with("tls://"))
            || self.tls_ca.is_some()
            || client.is_some())
        .then_some(NatsTls {
            ca: self.tls_ca,
            client,
        });
        Ok(Some(ClusterConfig {
            nats,
            node_id,
            replicas,
            stream,
            lease_ttl: Duration::from_millis(lease_ttl_ms),
            lease_renew: Duration::from_millis(lease_renew_ms),
            credentials,
            new_stream: self.new_stream.unwrap_or(false),
            patient: false,
            tls,
        }))
    }
}

impl Default for Config {
    fn default() -> Self {
        let ledger = LedgerConfig::default();
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            body_limit_bytes: BODY_LIMIT_BYTES_DEFAULT,
            lock_ttl: ledger.lock_ttl,
            idempotency_window: ledger.idempotency_window,
            refund_window: ledger.refund_window,
            journal_sync: SyncPolicy::Always,
            journal_segment_bytes: JOURNAL_SEGMENT_MIB_DEFAULT * 1024 * 1024,
            snapshot_every_facts: SNAPSHOT_EVERY_FACTS_DEFAULT,
            repair: false,
            push_queue_bytes: crate::hub::SESSION_QUEUE_BYTES_DEFAULT,
            push_interval: crate::hub::PUSH_INTERVAL_DEFAULT,
            workers: workers_default(),
            notify: crate::notify::NotifyConfig::default(),
            channels: Vec::new(),
            auth: AuthConfig::default(),
            insecure: false,
            limits: LIMITS_DEFAULT,
            demo_seed: None,
            demo_stand_in: None,
            journal_fsync: Arc::new(crate::journal::OsFsync),
            cluster: None,
        }
    }
}

impl Config {
    /// Refuses to listen beyond loopback without credentials, unless `--insecure`.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        let exposed = !self.listen.ip().is_loopback();
        if exposed && self.auth.secret.is_none() && !self.insecure {
            return Err(ConfigError::Invalid(format!(
                "listening on {} without credentials: set auth.secret (or STOCKPULSE_AUTH_SECRET), \
                 listen on loopback, or pass --insecure",
                self.listen
            )));
        }
        self.check_cluster_exposure()
    }

    /// Refuses cluster mode without NATS credentials or without a secret, unless
    /// `--insecure`: without credentials anyone who reaches NATS can publish on the log's
    /// subjects, and without a secret nothing a node tells another can be sealed (so any
    /// NATS client could pass for a node).
    fn check_cluster_exposure(&self) -> Result<(), ConfigError> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let mut missing = Vec::new();
        if cluster.credentials == NatsCredentials::None {
            missing.push(
                "NATS credentials (cluster.user and cluster.password or \
                 STOCKPULSE_NATS_PASSWORD, or cluster.token or STOCKPULSE_NATS_TOKEN)",
            );
        }
        if self.auth.secret.is_none() {
            missing.push(
                "auth.secret (or STOCKPULSE_AUTH_SECRET), which seals what nodes tell each other",
            );
        }
        if missing.is_empty() || self.insecure {
            return Ok(());
        }
        Err(ConfigError::Invalid(format!(
            "cluster mode without {}: set {}, or pass --insecure on a NATS cluster nothing \
             else can reach",
            missing.join(" and without "),
            if missing.len() == 1 { "it" } else { "them" },
        )))
    }

    pub fn journal(&self) -> JournalConfig {
        JournalConfig {
            directory: self.data_dir.join("journal"),
            sync: self.journal_sync,
            segment_bytes: self.journal_segment_bytes,
            repair: self.repair,
            fsync: self.journal_fsync.clone(),
            queue_facts_max: crate::journal::QUEUE_FACTS_MAX_DEFAULT,
        }
    }

    pub fn ledger(&self) -> LedgerConfig {
        LedgerConfig {
            lock_ttl: self.lock_ttl,
            idempotency_window: self.idempotency_window,
            refund_window: self.refund_window,
        }
    }
}

/// One layer of settings: every field optional, so layers can be merged.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub body_limit_bytes: Option<u64>,
    pub lock_ttl_s: Option<u64>,
    pub idempotency_window_s: Option<u64>,
    pub refund_window_s: Option<u64>,
    /// `always`, `interval` or `never`.
    pub journal_sync: Option<String>,
    pub journal_sync_interval_ms: Option<u64>,
    pub journal_segment_mib: Option<u64>,
    pub snapshot_every_facts: Option<u64>,
    /// Bytes a WebSocket session may have queued, in KiB.
    pub push_queue_kib: Option<u64>,
    /// The shortest time between two rounds of pushes, in milliseconds.
    pub push_interval_ms: Option<u64>,
    /// Threads serving requests and pushes.
    pub workers: Option<usize>,
    /// Alert delivery (the configuration file only).
    pub notify: Option<crate::notify::NotifyConfig>,
    /// Platform connectors (the configuration file only).
    pub channels: Option<Vec<crate::channels::ChannelConfig>>,
    /// Credentials and origins; the secret may also come from `STOCKPULSE_AUTH_SECRET`.
    pub auth: Option<AuthConfig>,
    pub connections_max: Option<usize>,
    pub connections_per_ip_max: Option<usize>,
    pub connections_per_ip_per_s: Option<u32>,
    pub header_timeout_s: Option<u64>,
    /// Whether loopback clients count against the per-address limits.
    pub limit_loopback: Option<bool>,
    /// Cluster mode on NATS JetStream.
    pub cluster: Option<ClusterLayer>,
}

/// The edge's limits unless configured otherwise.
pub const LIMITS_DEFAULT: crate::edge::Limits = crate::edge::Limits {
    connections_max: 20_000,
    per_address_max: 512,
    per_address_per_second: 64,
    header_timeout: Duration::from_secs(10),
    limit_loopback: false,
};

/// Who may connect: the secret tokens are signed with, the platforms whose order webhooks
/// are signed, and the origins browsers may open `/ws` from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// At least 32 bytes; without one, the server takes no credentials and listens on
    /// loopback only.
    pub secret: Option<String>,
    /// Pages on these origins (`https://screen.example.com`) may open `/ws`; without a list,
    /// only pages served by this server may.
    pub allowed_origins: Vec<String>,
    /// Without a secret, requests are served only when their `Host` is an address,
    /// `localhost`, or one of these names (a name another site's page could re-bind to
    /// 127.0.0.1 is refused otherwise).
    pub allowed_hosts: Vec<String>,
    pub platforms: Vec<PlatformSecret>,
}

/// A platform that signs its order webhooks (`X-Stockpulse-Platform` names it).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformSecret {
    pub name: String,
    pub secret: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl ConfigLayer {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// `self` with every field `over` sets replaced.
    pub fn merge(self, over: ConfigLayer) -> ConfigLayer {
        ConfigLayer {
            listen: over.listen.or(self.listen),
            data_dir: over.data_dir.or(self.data_dir),
            body_limit_bytes: over.body_limit_bytes.or(self.body_limit_bytes),
            lock_ttl_s: over.lock_ttl_s.or(self.lock_ttl_s),
            idempotency_window_s: over.idempotency_window_s.or(self.idempotency_window_s),
            refund_window_s: over.refund_window_s.or(self.refund_window_s),
            journal_sync: over.journal_sync.or(self.journal_sync),
            journal_sync_interval_ms: over
                .journal_sync_interval_ms
                .or(self.journal_sync_interval_ms),
            journal_segment_mib: over.journal_segment_mib.or(self.journal_segment_mib),
            snapshot_every_facts: over.snapshot_every_facts.or(self.snapshot_every_facts),
            push_queue_kib: over.push_queue_kib.or(self.push_queue_kib),
            push_interval_ms: over.push_interval_ms.or(self.push_interval_ms),
            workers: over.workers.or(self.workers),
            notify: over.notify.or(self.notify),
            channels: over.channels.or(self.channels),
            connections_max: over.connections_max.or(self.connections_max),
            connections_per_ip_max: over.connections_per_ip_max.or(self.connections_per_ip_max),
            connections_per_ip_per_s: over
                .connections_per_ip_per_s
                .or(self.connections_per_ip_per_s),
            header_timeout_s: over.header_timeout_s.or(self.header_timeout_s),
            limit_loopback: over.limit_loopback.or(self.limit_loopback),
            cluster: match (self.cluster, over.cluster) {
                (Some(under), Some(over)) => Some(under.merge(over)),
                (under, over) => over.or(under),
            },
            auth: match (self.auth, over.auth) {
                (Some(mut under), Some(over)) => {
                    if over.secret.is_some() {
                        under.secret = over.secret;
                    }
                    if !over.allowed_origins.is_empty() {
                        under.allowed_origins = over.allowed_origins;
                    }
                    if !over.allowed_hosts.is_empty() {
                        under.allowed_hosts = over.allowed_hosts;
                    }
                    if !over.platforms.is_empty() {
                        under.platforms = over.platforms;
                    }
                    Some(under)
                }
                (under, over) => over.or(under),
            },
        }
    }

    /// The layer over the defaults, validated.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        let body_limit_bytes = self.body_limit_bytes.unwrap_or(defaults.body_limit_bytes);
        if !(1..=BODY_LIMIT_BYTES_MAX).contains(&body_limit_bytes) {
            return Err(ConfigError::Invalid(format!(
                "body_limit_bytes must be between 1 and {BODY_LIMIT_BYTES_MAX}, got {body_limit_bytes}"
            )));
        }
        let lock_ttl = match self.lock_ttl_s {
            None => defaults.lock_ttl,
            Some(seconds) if (1..=LOCK_TTL_S_MAX).contains(&seconds) => {
                Duration::from_secs(seconds)
            }
            Some(seconds) => {
                return Err(ConfigError::Invalid(format!(
                    "lock_ttl_s must be between 1 and {LOCK_TTL_S_MAX}, got {seconds}"
                )));
            }
        };
        let idempotency_window = match self.idempotency_window_s {
            None => defaults.idempotency_window,
            Some(seconds)
                if (IDEMPOTENCY_WINDOW_S_MIN..=IDEMPOTENCY_WINDOW_S_MAX).contains(&seconds) =>
            {
                Duration::from_secs(seconds)
            }
            Some(seconds) => {
                return Err(ConfigError::Invalid(format!(
                    "idempotency_window_s must be between {IDEMPOTENCY_WINDOW_S_MIN} and \
                     {IDEMPOTENCY_WINDOW_S_MAX}, got {seconds}"
                )));
            }
        };
        let refund_window = match self.refund_window_s {
            None => defaults.refund_window.max(idempotency_window),
            Some(seconds)
                if idempotency_window.as_secs() <= seconds && seconds <= REFUND_WINDOW_S_MAX =>
            {
                Duration::from_secs(seconds)
            }
            Some(seconds) => {
                return Err(ConfigError::Invalid(format!(
                    "refund_window_s must be between idempotency_window_s ({}) and \
                     {REFUND_WINDOW_S_MAX}, got {seconds}",
                    idempotency_window.as_secs()
                )));
            }
        };
        let interval_ms = self
            .journal_sync_interval_ms
            .unwrap_or(JOURNAL_SYNC_INTERVAL_MS_DEFAULT);
        if !(1..=JOURNAL_SYNC_INTERVAL_MS_MAX).contains(&interval_ms) {
            return Err(ConfigError::Invalid(format!(
                "journal_sync_interval_ms must be between 1 and {JOURNAL_SYNC_INTERVAL_MS_MAX}, \
                 got {interval_ms}"
            )));
        }
        let journal_sync = match self.journal_sync.as_deref() {
            None | Some("always") => SyncPolicy::Always,
            Some("interval") => SyncPolicy::Interval(Duration::from_millis(interval_ms)),
            Some("never") => SyncPolicy::Never,
            Some(other) => {
                return Err(ConfigError::Invalid(format!(
                    "journal_sync must be always, interval or never, got {other:?}"
                )));
            }
        };
        let segment_mib = self
            .journal_segment_mib
            .unwrap_or(JOURNAL_SEGMENT_MIB_DEFAULT);
        if !(1..=JOURNAL_SEGMENT_MIB_MAX).contains(&segment_mib) {
            return Err(ConfigError::Invalid(format!(
                "journal_segment_mib must be between 1 and {JOURNAL_SEGMENT_MIB_MAX}, got {segment_mib}"
            )));
        }
        let snapshot_every_facts = self
            .snapshot_every_facts
            .unwrap_or(SNAPSHOT_EVERY_FACTS_DEFAULT);
        if snapshot_every_facts < SNAPSHOT_EVERY_FACTS_MIN {
            return Err(ConfigError::Invalid(format!(
                "snapshot_every_facts must be at least {SNAPSHOT_EVERY_FACTS_MIN}, got {snapshot_every_facts}"
            )));
        }
        let push_queue_kib = self
            .push_queue_kib
            .unwrap_or(defaults.push_queue_bytes as u64 / 1024);
        if !(PUSH_QUEUE_KIB_MIN..=PUSH_QUEUE_KIB_MAX).contains(&push_queue_kib) {
            return Err(ConfigError::Invalid(format!(
                "push_queue_kib must be between {PUSH_QUEUE_KIB_MIN} and {PUSH_QUEUE_KIB_MAX}, got {push_queue_kib}"
            )));
        }
        let push_interval = match self.push_interval_ms {
            None => defaults.push_interval,
            Some(ms) if ms <= PUSH_INTERVAL_MS_MAX => Duration::from_millis(ms),
            Some(ms) => {
                return Err(ConfigError::Invalid(format!(
                    "push_interval_ms must be between 0 and {PUSH_INTERVAL_MS_MAX}, got {ms}"
                )));
            }
        };
        let workers = self.workers.unwrap_or(defaults.workers);
        if !(1..=WORKERS_MAX).contains(&workers) {
            return Err(ConfigError::Invalid(format!(
                "workers must be between 1 and {WORKERS_MAX}, got {workers}"
            )));
        }
        let notify = self.notify.unwrap_or_default();
        notify.validate().map_err(ConfigError::Invalid)?;
        let mut channels = self.channels.unwrap_or_default();
        crate::channels::ChannelConfig::resolve(&mut channels).map_err(ConfigError::Invalid)?;
        let limits = crate::edge::Limits {
            connections_max: self
                .connections_max
                .unwrap_or(LIMITS_DEFAULT.connections_max),
            per_address_max: self
                .connections_per_ip_max
                .unwrap_or(LIMITS_DEFAULT.per_address_max),
            per_address_per_second: self
                .connections_per_ip_per_s
                .unwrap_or(LIMITS_DEFAULT.per_address_per_second),
            header_timeout: self
                .header_timeout_s
                .map_or(LIMITS_DEFAULT.header_timeout, Duration::from_secs),
            limit_loopback: self.limit_loopback.unwrap_or(LIMITS_DEFAULT.limit_loopback),
        };
        let positive = 0 < limits.connections_max
            && 0 < limits.per_address_max
            && 0 < limits.per_address_per_second
            && (1..=HEADER_TIMEOUT_S_MAX).contains(&limits.header_timeout.as_secs());
        if !positive {
            return Err(ConfigError::Invalid(format!(
                "connections_max, connections_per_ip_max and connections_per_ip_per_s must be \
                 above 0, header_timeout_s between 1 and {HEADER_TIMEOUT_S_MAX}"
            )));
        }
        let auth = self.auth.unwrap_or_default();
        if let Some(secret) = &auth.secret
            && secret.len() < crate::auth::SECRET_BYTES_MIN
        {
            return Err(ConfigError::Invalid(format!(
                "auth.secret must be at least {} bytes",
                crate::auth::SECRET_BYTES_MIN
            )));
        }
        for platform in &auth.platforms {
            if platform.name.is_empty() || platform.secret.len() < 16 {
                return Err(ConfigError::Invalid(format!(
                    "auth.platforms: {:?} needs a name and a secret of at least 16 bytes",
                    platform.name
                )));
            }
        }
        let cluster = self.cluster.unwrap_or_default().resolve()?;
        Ok(Config {
            listen: self.listen.unwrap_or(defaults.listen),
            data_dir: self.data_dir.unwrap_or(defaults.data_dir),
            body_limit_bytes,
            lock_ttl,
            idempotency_window,
            refund_window,
            journal_sync,
            journal_segment_bytes: segment_mib * 1024 * 1024,
            snapshot_every_facts,
            repair: false,
            push_queue_bytes: usize::try_from(push_queue_kib * 1024).unwrap_or(usize::MAX),
            push_interval,
            workers,
            notify,
            channels,
            auth,
            insecure: false,
            limits,
            demo_seed: None,
            demo_stand_in: None,
            journal_fsync: defaults.journal_fsync,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback_with_data_under_the_working_directory() {
        // Goal: with no file, environment or flag, the documented defaults apply.
        let config = ConfigLayer::default()
            .resolve()
            .expect("defaults are valid");
        assert_eq!(config.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert_eq!(config.body_limit_bytes, 1024 * 1024);
        assert_eq!(config.lock_ttl, Duration::from_secs(900));
        assert_eq!(config.idempotency_window, Duration::from_secs(86_400));
    }

    #[test]
    fn later_layers_override_earlier_ones_field_by_field() {
        // Goal: the file sets what the command line leaves unset, and no more.
        // Method: parse a TOML file layer, merge a command-line layer over it.
        let file: ConfigLayer =
            toml::from_str("listen = \"0.0.0.0:9000\"\nlock_ttl_s = 60\n").expect("valid TOML");
        let command_line = ConfigLayer {
            lock_ttl_s: Some(30),
            ..ConfigLayer::default()
        };
        let config = file.merge(command_line).resolve().expect("valid");
        assert_eq!(config.listen, SocketAddr::from(([0, 0, 0, 0], 9000)));
        assert_eq!(config.lock_ttl, Duration::from_secs(30));
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        // Goal: validation happens before binding and names the setting.
        let unknown = toml::from_str::<ConfigLayer>("listen_port = 8080\n");
        assert!(unknown.is_err());
        for (layer, setting) in [
            (
                ConfigLayer {
                    body_limit_bytes: Some(0),
                    ..ConfigLayer::default()
                },
                "body_limit_bytes",
            ),
            (
                ConfigLayer {
                    lock_ttl_s: Some(0),
                    ..ConfigLayer::default()
                },
                "lock_ttl_s",
            ),
            (
                ConfigLayer {
                    idempotency_window_s: Some(1),
                    ..ConfigLayer::default()
                },
                "idempotency_window_s",
            ),
        ] {
            let error = layer.resolve().expect_err("invalid").to_string();
            assert!(error.contains(setting), "{error}");
        }
    }
}

#[cfg(test)]
mod notify_tests {
    use super::*;

    #[test]
    fn the_documented_notify_table_parses_and_a_route_to_nowhere_is_refused() {
        // Goal: the example in docs/ALERTS.md is a valid configuration, and a route naming
        // no receiver stops the server before it binds.
        let documented = std::fs::read_to_string("docs/ALERTS.md").expect("the document");
        let start = documented.find("```toml\n").expect("an example") + "```toml\n".len();
        let end = start + documented[start..].find("```").expect("its end");
        let layer: ConfigLayer = toml::from_str(&documented[start..end]).expect("parses");
        let config = layer.clone().resolve().expect("valid");
        assert_eq!(config.notify.receivers.len(), 2);
        assert_eq!(config.notify.routes[1].hot, Some(true));
        assert_eq!(config.notify.receivers[1].per_minute, 1);

        let mut broken = layer;
        if let Some(notify) = broken.notify.as_mut() {
            notify.routes[0].receivers.push("nobody".to_owned());
        }
        let refused = broken.resolve().expect_err("refused");
        assert!(refused.to_string().contains("nobody"), "{refused}");
    }
}

#[cfg(test)]
mod exposure_tests {
    use super::*;

    #[test]
    fn listening_beyond_loopback_needs_credentials_or_insecure() {
        let mut config = ConfigLayer {
            listen: Some("0.0.0.0:8080".parse().expect("address")),
            ..ConfigLayer::default()
        }
        .resolve()
        .expect("valid");
        let refused = config.check_exposure().expect_err("refused");
        assert!(refused.to_string().contains("--insecure"), "{refused}");
        config.insecure = true;
        assert!(config.check_exposure().is_ok());
        config.insecure = false;
        config.auth.secret = Some("x".repeat(32));
        assert!(config.check_exposure().is_ok());
        assert!(
            Config::default().check_exposure().is_ok(),
            "loopback needs nothing"
        );
        let short = ConfigLayer {
            auth: Some(AuthConfig {
                secret: Some("short".to_owned()),
                ..AuthConfig::default()
            }),
            ..ConfigLayer::default()
        };
        assert!(short.resolve().is_err());
    }
}
