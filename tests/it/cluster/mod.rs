//! Cluster mode against a real NATS cluster: three `nats-server` processes with JetStream,
//! routed to each other on loopback ports, and real `stockpulse` binaries on top of them.
//! Nothing is mocked: nodes are killed with SIGKILL, and what every node holds afterwards is
//! read back over HTTP.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

mod partitions;
mod proxy;
mod restarts;
mod trust;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Cluster tests run one at a time: each starts three NATS servers and three nodes, and two
/// of them at once on two cores starve NATS's own elections.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Three NATS servers with JetStream, clustered on loopback.
struct Nats {
    servers: Vec<Option<Child>>,
    client_ports: Vec<u16>,
    monitor_ports: Vec<u16>,
    configs: Vec<PathBuf>,
    /// Where each server writes its log.
    logs: Vec<PathBuf>,
}

impl Nats {
    /// Three NATS servers, clustered, each with JetStream, once every one of them has a
    /// JetStream meta leader. A free port found by binding port 0 may be taken by another
    /// test before the server binds it, so a cluster that does not come up in time is
    /// started again on other ports, twice at most.
    async fn started(directory: &Path) -> Nats {
        Nats::started_with(directory, "").await
    }

    /// Three NATS servers whose configurations also hold `extra` (an `authorization`
    /// block, say).
    async fn started_with(directory: &Path, extra: &str) -> Nats {
        for attempt in 0..3 {
            let mut nats = Nats::start(directory, attempt, extra);
            match nats.ready().await {
                Ok(()) => return nats,
                Err(reason) => {
                    eprintln!("NATS cluster attempt {attempt}: {reason}; starting it again");
                    for index in 0..nats.servers.len() {
                        nats.kill(index);
                    }
                }
            }
        }
        panic!(
            "no NATS cluster in three attempts: {}",
            (0..3)
                .map(|index| {
                    let log = directory.join(format!("nats-2-{index}.log"));
                    format!(
                        "\n--- {}\n{}",
                        log.display(),
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )
                })
                .collect::<String>()
        );
    }

    fn start(directory: &Path, attempt: usize, extra: &str) -> Nats {
        let count = 3;
        let client_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let monitor_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
        let routes: Vec<String> = route_ports
            .iter()
            .map(|port| format!("nats-route://127.0.0.1:{port}"))
            .collect();
        let mut configs = Vec::new();
        for index in 0..count {
            let store = directory.join(format!("nats-{attempt}-{index}"));
            let config = format!(
                "server_name: n{index}\nlisten: 127.0.0.1:{}\nhttp: 127.0.0.1:{}\n\
                 jetstream {{\n  store_dir: \"{}\"\n}}\n\
                 cluster {{\n  name: stockpulse-test\n  listen: 127.0.0.1:{}\n  routes: [\n    {}\n  ]\n}}\n{extra}\n",
                client_ports[index],
                monitor_ports[index],
                store.display(),
                route_ports[index],
                routes.join("\n    ")
            );
            let path = directory.join(format!("nats-{attempt}-{index}.conf"));
            std::fs::write(&path, config).expect("NATS configuration written");
            configs.push(path);
        }
        let mut nats = Nats {
            servers: Vec::new(),
            client_ports,
            monitor_ports,
            configs,
            logs: (0..count)
                .map(|index| directory.join(format!("nats-{attempt}-{index}.log")))
                .collect(),
        };
        for index in 0..count {
            let child = nats.spawn(index);
            nats.servers.push(Some(child));
        }
        nats
    }

    fn spawn(&self, index: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.logs[index])
            .expect("NATS log file");
        Command::new(crate::support::nats_server())
            .arg("-c")
            .arg(&self.configs[index])
            .stdout(log.try_clone().expect("NATS log file"))
            .stderr(log)
            .spawn()
            .expect("nats-server starts")
    }

    /// Waits until every server has a JetStream meta leader (`/healthz` answers 200), for
    /// 30 s; says which one did not, with its log.
    async fn ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for index in 0..self.monitor_ports.len() {
            let url = format!("http://127.0.0.1:{}/healthz", self.monitor_ports[index]);
            loop {
                let healthy = client
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|response| response.status() == StatusCode::OK);
                if healthy {
                    break;
                }
                let exited = self.servers[index]
                    .as_mut()
                    .is_some_and(|child| child.try_wait().ok().flatten().is_some());
                if exited || deadline < tokio::time::Instant::now() {
                    return Err(format!(
                        "NATS at {url} {}: {}",
                        if exited {
                            "exited"
                        } else {
                            "not ready in 30 s"
                        },
                        std::fs::read_to_string(&self.logs[index]).unwrap_or_default()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    fn urls(&self) -> String {
        self.client_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Nats {
    /// SIGKILLs server `index`.
    fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.servers[index].take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        for child in self.servers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `stockpulse` node of the cluster.
struct Node {
    id: String,
    child: Option<Child>,
    base: String,
    port: u16,
    log: PathBuf,
    config: PathBuf,
    nats: String,
    /// Arguments after the common ones: `--insecure` unless a test sets credentials.
    args: Vec<String>,
    /// Environment variables the process gets.
    env: Vec<(String, String)>,
    /// The token the harness reads the node's view with, when the node has a secret.
    token: Option<String>,
    /// The server binary the node runs.
    program: PathBuf,
}

impl Node {
    async fn start(directory: &Path, id: &str, nats: &Nats) -> Node {
        let mut node = Node::prepare(directory, id, nats);
        node.spawn().await;
        node
    }

    /// The node, not started yet.
    fn prepare(directory: &Path, id: &str, nats: &Nats) -> Node {
        let config = directory.join("cluster.toml");
        if !config.exists() {
            std::fs::write(
                &config,
                "[cluster]\nreplicas = 3\nlease_ttl_ms = 1500\nlease_renew_ms = 300\n",
            )
            .expect("configuration written");
        }
        let port = free_port();
        Node {
            id: id.to_owned(),
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            port,
            log: directory.join(format!("{id}.log")),
            config,
            nats: nats.urls(),
            // These tests run NATS without credentials and the nodes without a secret, as
            // only `--insecure` allows; `nodes_with_credentials` runs them as production
            // does.
            args: vec!["--insecure".to_owned()],
            env: Vec::new(),
            token: None,
            program: PathBuf::from(env!("CARGO_BIN_EXE_stockpulse")),
        }
    }

    async fn spawn(&mut self) {
        self.launch();
        if !crate::support::answers_within(&self.base, Duration::from_secs(10)).await {
            panic!("node {} did not answer: {}", self.id, self.log_text());
        }
    }

    /// Starts the process without waiting for it to answer.
    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let data = self.log.with_extension("data");
        let child = Command::new(&self.program)
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(&data)
            .args(["--cluster", &self.nats, "--node-id", &self.id])
            .args(&self.args)
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("the server binary starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The node's view of the cluster; `None` when it does not answer within 3 s (a node
    /// starting again holds its port while it waits for NATS).
    async fn cluster(&self) -> Option<Value> {
        let mut request = reqwest::Client::new()
            .get(format!("{}/api/v1/cluster", self.base))
            .timeout(Duration::from_secs(3));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.ok()?;
        response.json().await.ok()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until one node leads and every running node has applied the whole stream; returns
/// the leader's index.
async fn settled(nodes: &[Node]) -> usize {
    wait_for_leader(nodes, true).await
}

/// Waits until one node leads (and, with `caught_up`, every node has applied as much of the
/// stream as it has); returns the leader's index.
async fn wait_for_leader(nodes: &[Node], caught_up: bool) -> usize {
    // Generous: after a NATS server dies, its elections take seconds, and on two loaded
    // cores longer.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut views = Vec::new();
        for node in nodes {
            views.push(node.cluster().await);
        }
        let leaders: Vec<usize> = views
            .iter()
            .enumerate()
            .filter(|(_, view)| view.as_ref().is_some_and(|view| view["role"] == "leader"))
            .map(|(index, _)| index)
            .collect();
        if let [leader] = leaders.as_slice() {
            if !caught_up {
                return *leader;
            }
            // The log moves on by itself (a tick a second while a room lists something), so
            // the leader is read first and every node must hold at least that much. Every
            // node still running must answer: one that is starting again (after stepping
            // down) is not level until it does.
            let head = nodes[*leader]
                .cluster()
                .await
                .and_then(|view| view["applied_seq"].as_u64());
            let mut level = head.is_some();
            for node in nodes {
                level &= match node.cluster().await {
                    Some(view) => view["applied_seq"].as_u64() >= head,
                    None => node.child.is_none(),
                };
            }
            if level {
                return *leader;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no settled leader in 60 s: {views:?}\n{}",
            nodes
                .iter()
                .map(|node| format!("--- {}\n{}", node.id, node.log_text()))
                .collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Order id → acknowledged as sold.
type Outcomes = Arc<Mutex<BTreeMap<String, bool>>>;

/// Places paid one-unit orders on nodes in turn until `stop`, each once, recording which were
/// acknowledged; a failure (503, a node down, a timeout) leaves the order unacknowledged.
async fn buyer(
    bases: Vec<String>,
    worker: usize,
    skus: Vec<String>,
    outcomes: Outcomes,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut index = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let order_id = format!("w{worker}-{index}");
        let base = &bases[(worker + index) % bases.len()];
        let sku = &skus[index % skus.len()];
        let sent = client
            .post(format!("{base}/api/v1/orders"))
            .json(&json!({"order_id": order_id, "sku": sku, "qty": 1, "platform": "douyin", "paid": true}))
            .send()
            .await;
        let acknowledged = match sent {
            Ok(response) => {
                let status = response.status();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                match status {
                    StatusCode::CREATED | StatusCode::OK => {
                        assert_eq!(body["status"], "sold", "{body}");
                        true
                    }
                    StatusCode::CONFLICT => {
                        // Sold out: a refusal, never a sale.
                        assert_eq!(body["error"]["code"], "insufficient_stock", "{body}");
                        false
                    }
                    _ => false,
                }
            }
            Err(_) => false,
        };
        outcomes.lock().insert(order_id, acknowledged);
        index += 1;
    }
}

/// Three NATS servers, ready, and three nodes `a`, `b`, `c` on them.
/// A NATS cluster and three nodes on it, started at the same moment (as a deployment
/// would): they race to create the log and to take the lease, and exactly one leads.
async fn three_nodes(directory: &Path) -> (Nats, Vec<Node>) {
    let nats = Nats::started(directory).await;
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .into_iter()
        .map(|id| Node::prepare(directory, id, &nats))
        .collect();
    for node in &mut nodes {
        node.launch();
    }
    for node in &nodes {
        if !crate::support::answers_within(&node.base, Duration::from_secs(10)).await {
            panic!("node {} did not answer: {}", node.id, node.log_text());
        }
    }
    (nats, nodes)
}

/// Creates `sku` with `total` units through the node at `base` (forwarded when it is a
/// standby).
async fn put_sku(client: &reqwest::Client, base: &str, sku: &str, total: u64) {
    let response = client
        .put(format!("{base}/api/v1/skus/{sku}"))
        .json(&json!({ "total": total }))
        .send()
        .await
        .expect("PUT");
    assert_eq!(response.status(), StatusCode::OK, "PUT {sku} on {base}");
}

/// GETs `url`. A node that steps down starts again (its process re-executes itself), so
/// its port can be closed for a moment at any time after a leader change: a refused
/// connection is retried for up to 30 s, and the node answers only once it has caught up.
async fn get_json(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let response = loop {
        match client.get(url).send().await {
            Ok(response) => break response,
            Err(error) if error.is_connect() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("GET {url}: {error:?}"),
        }
    };
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_mid_show_loses_no_acknowledged_order_and_oversells_nothing() {
    // Goal: kill -9 of the leader, five times under load, loses no acknowledged order on any
    // surviving node, oversells nothing, and a retry with the same order_id never sells twice.
    // Method: three NATS servers, three nodes; four buyers spread paid orders over all nodes
    // (two SKUs run out, one does not); the leader is killed, and started again once another node leads, five times;
    // then every acknowledged order must be sold on every node, every SKU must balance, and
    // after retrying every order once more, each SKU's sold count must equal its sold orders.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_nats, mut nodes) = three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let client = reqwest::Client::new();
    let skus = [
        ("SCARCE-1", 150u64),
        ("SCARCE-2", 200),
        ("PLENTY", 1_000_000),
    ];
    for (sku, total) in skus {
        // Through a standby: forwarded to the leader.
        put_sku(&client, &nodes[(leader + 1) % 3].base, sku, total).await;
    }
    let outcomes: Outcomes = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bases: Vec<String> = nodes.iter().map(|node| node.base.clone()).collect();
    let sku_names: Vec<String> = skus.iter().map(|(sku, _)| (*sku).to_owned()).collect();
    let buyers: Vec<_> = (0..4)
        .map(|worker| {
            tokio::spawn(buyer(
                bases.clone(),
                worker,
                sku_names.clone(),
                outcomes.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let mut leaders_killed = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let leader = wait_for_leader(&nodes, false).await;
        leaders_killed.push(nodes[leader].id.clone());
        nodes[leader].kill();
        // Another node takes over while this one is down, so the next kill hits another.
        wait_for_leader(&nodes, false).await;
        nodes[leader].spawn().await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Release);
    for buyer in buyers {
        buyer.await.expect("buyer");
    }
    let leader = settled(&nodes).await;
    let outcomes = outcomes.lock().clone();
    let acknowledged: Vec<&String> = outcomes
        .iter()
        .filter(|(_, acknowledged)| **acknowledged)
        .map(|(order_id, _)| order_id)
        .collect();
    assert!(
        100 < acknowledged.len(),
        "too few orders went through to mean anything: {}",
        acknowledged.len()
    );
    let distinct: std::collections::BTreeSet<&String> = leaders_killed.iter().collect();
    assert!(
        1 < distinct.len(),
        "the kills hit one node only: {leaders_killed:?}"
    );

    // Every unacknowledged order once more, with its id: each sells at most once.
    for (order_id, acknowledged) in &outcomes {
        if *acknowledged {
            continue;
        }
        let index: usize = order_id[1..]
            .split('-')
            .nth(1)
            .and_then(|index| index.parse().ok())
            .expect("index");
        let sku = &sku_names[index % sku_names.len()];
        let response = client
            .post(format!("{}/api/v1/orders", nodes[leader].base))
            .json(&json!({"order_id": order_id, "sku": sku, "qty": 1, "platform": "douyin", "paid": true}))
            .send()
            .await
            .expect("retry sent");
        assert!(
            [StatusCode::CREATED, StatusCode::OK, StatusCode::CONFLICT]
                .contains(&response.status()),
            "retry of {order_id}: {}",
            response.status()
        );
    }
    let leader = settled(&nodes).await;
    let _ = leader;
    for node in &nodes {
        for order_id in &acknowledged {
            let (status, order) =
                get_json(&client, &format!("{}/api/v1/orders/{order_id}", node.base)).await;
            assert_eq!(status, StatusCode::OK, "{order_id} on {}: {order}", node.id);
            assert_eq!(order["status"], "sold", "{order_id} on {}", node.id);
        }
        let mut sold_orders: BTreeMap<String, u64> = BTreeMap::new();
        for order_id in outcomes.keys() {
            let (status, order) =
                get_json(&client, &format!("{}/api/v1/orders/{order_id}", node.base)).await;
            if status == StatusCode::OK && order["status"] == "sold" {
                let sku = order["lines"][0]["sku"].as_str().expect("sku").to_owned();
                *sold_orders.entry(sku).or_default() += 1;
            }
        }
        for (sku, total) in skus {
            let (_, stock) = get_json(&client, &format!("{}/api/v1/skus/{sku}", node.base)).await;
            let sold = stock["sold"].as_u64().expect("sold");
            assert_eq!(
                stock["available"].as_u64(),
                Some(
                    total
                        - stock["reserved"].as_u64().expect("reserved")
                        - stock["locked"].as_u64().expect("locked")
                        - sold
                ),
                "{sku} on {} balances: {stock}",
                node.id
            );
            assert!(sold <= total, "{sku} oversold on {}: {stock}", node.id);
            assert_eq!(
                sold,
                sold_orders.get(sku).copied().unwrap_or(0),
                "{sku} on {}: sold units are exactly the sold orders",
                node.id
            );
        }
    }
}

#[tokio::test]
async fn a_node_that_cannot_reach_nats_exits_69_at_once() {
    // Goal: NATS unreachable at start-up is a clear error and exit code 69, not a hang.
    let directory = tempfile::tempdir().expect("temporary directory");
    let closed = free_port();
    let started = tokio::time::Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_stockpulse"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(directory.path())
        .args([
            "--cluster",
            &format!("nats://127.0.0.1:{closed}"),
            "--node-id",
            "a",
            "--insecure",
        ])
        .env("RUST_LOG", "info")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(69));
    // The server logs to standard output.
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(log.contains("cannot reach NATS"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_cannot_append_and_answers_503() {
    // Goal: a leader that was stopped (SIGSTOP) past its lease, while another node took over
    // and wrote, cannot append when it wakes: the order it was handed meanwhile gets 503,
    // never a success, is nowhere in the ledger, and the node comes back as a standby that
    // follows the new leader.
    // Method: three NATS servers, three nodes; SIGSTOP the leader; wait for a new leader and
    // sell through it; send an order to the stopped node; SIGCONT it.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_nats, nodes) = three_nodes(directory.path()).await;
    let old = settled(&nodes).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    put_sku(&client, &nodes[old].base, "A", 100).await;
    let pid = nodes[old].child.as_ref().expect("running").id();
    let signal = |name: &str| send_signal(pid, name);
    signal("-STOP");
    let others = others_than(&nodes, old);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let new = loop {
        let mut leader = None;
        for node in &others {
            if node
                .cluster()
                .await
                .is_some_and(|view| view["role"] == "leader")
            {
                leader = Some(*node);
            }
        }
        if let Some(leader) = leader {
            break leader;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no node took over from a stopped leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let response = client
        .post(format!("{}/api/v1/orders", new.base))
        .json(
            &json!({"order_id": "after", "sku": "A", "qty": 1, "platform": "douyin", "paid": true}),
        )
        .send()
        .await
        .expect("order on the new leader");
    assert_eq!(response.status(), StatusCode::CREATED);
    let stale = {
        let client = client.clone();
        let url = format!("{}/api/v1/orders", nodes[old].base);
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"order_id": "fenced", "sku": "A", "qty": 1, "platform": "douyin", "paid": true}))
                .send()
                .await
                .map(|response| response.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal("-CONT");
    let status = stale.await.expect("the request task");
    assert!(
        matches!(status, Ok(StatusCode::SERVICE_UNAVAILABLE)),
        "the fenced leader answered {status:?}\n{}",
        nodes[old].log_text()
    );
    // It starts again as a standby (the same process, executed anew).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while nodes[old]
        .cluster()
        .await
        .is_none_or(|view| view["role"] != "standby")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fenced node did not come back as a standby\n{}",
            nodes[old].log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = settled(&nodes).await;
    assert_ne!(leader, old, "the fenced node leads again");
    for node in &nodes {
        let (status, _) = get_json(&client, &format!("{}/api/v1/orders/fenced", node.base)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "fenced order on {}", node.id);
        let (_, stock) = get_json(&client, &format!("{}/api/v1/skus/A", node.base)).await;
        assert_eq!(stock["sold"], 1, "on {}: {stock}", node.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_dying_does_not_stop_writes() {
    // Goal: with replicas 3, killing one of the three NATS servers does not stop writes: after
    // NATS elects new stream leaders, orders are acknowledged again, and nothing
    // acknowledged is lost.
    // Method: three NATS servers, three nodes, buyers over all nodes; kill -9 one NATS server
    // (the first: every node's first address); count the orders acknowledged after it died;
    // then every acknowledged order is sold on every node.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (mut nats, nodes) = three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let client = reqwest::Client::new();
    put_sku(&client, &nodes[leader].base, "PLENTY", 1_000_000).await;
    let outcomes: Outcomes = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let bases: Vec<String> = nodes.iter().map(|node| node.base.clone()).collect();
    let buyers: Vec<_> = (0..3)
        .map(|worker| {
            tokio::spawn(buyer(
                bases.clone(),
                worker,
                vec!["PLENTY".to_owned()],
                outcomes.clone(),
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    nats.kill(0);
    let acknowledged_at_kill = outcomes.lock().values().filter(|ok| **ok).count();
    // Writes come back within NATS's own election (seconds), then go on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let acknowledged = outcomes.lock().values().filter(|ok| **ok).count();
        if acknowledged_at_kill + 200 <= acknowledged {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes did not resume within 30 s of a NATS server dying: {acknowledged_at_kill} then {acknowledged}\n{}",
            nodes
                .iter()
                .map(|node| format!("--- {}\n{}", node.id, node.log_text()))
                .collect::<String>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    for buyer in buyers {
        buyer.await.expect("buyer");
    }
    settled(&nodes).await;
    let acknowledged: Vec<String> = outcomes
        .lock()
        .iter()
        .filter(|(_, ok)| **ok)
        .map(|(order_id, _)| order_id.clone())
        .collect();
    for node in &nodes {
        for order_id in &acknowledged {
            let (status, order) =
                get_json(&client, &format!("{}/api/v1/orders/{order_id}", node.base)).await;
            assert_eq!(status, StatusCode::OK, "{order_id} on {}: {order}", node.id);
            assert_eq!(order["status"], "sold");
        }
    }
}

impl Node {
    /// Starts the node and checks that it refuses to run: exit 65 within `limit`, its log
    /// saying `why`.
    async fn refuses(&mut self, limit: Duration, why: &str) {
        self.launch();
        let code = self.exit_code(limit).await;
        let log = self.log_text();
        assert_eq!(code, Some(65), "node {}: {log}", self.id);
        assert!(
            log.contains(why),
            "node {} does not say {why:?}: {log}",
            self.id
        );
    }

    /// Waits for the node's process to exit by itself; its exit code.
    async fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + limit;
        let child = self.child.as_mut()?;
        loop {
            if let Some(status) = child.try_wait().expect("waits") {
                self.child = None;
                return status.code();
            }
            if deadline < tokio::time::Instant::now() {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn nats_client(nats: &Nats) -> async_nats::jetstream::Context {
    let addresses: Vec<String> = nats
        .client_ports
        .iter()
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect();
    let client = async_nats::connect(addresses)
        .await
        .expect("the test connects to NATS");
    async_nats::jetstream::new(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_record_that_does_not_decode_stops_the_node_naming_its_sequence() {
    // Goal: a standby that reads a message of the log it cannot decode stops with a clear
    // error naming the stream and the message's sequence (exit code 65); it does not skip it.
    // Method: a three-node cluster; a stranger appends a garbage batch to the log.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (nats, mut nodes) = three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let jetstream = nats_client(&nats).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Sp-Kind", "batch");
    let ack = jetstream
        .publish_with_headers(
            "stockpulse.log.0",
            headers,
            bytes::Bytes::from_static(b"\x10\x00\x00\x00garbage, not a record"),
        )
        .await
        .expect("published")
        .await
        .expect("stored");
    let standby = (leader + 1) % nodes.len();
    let code = nodes[standby].exit_code(Duration::from_secs(20)).await;
    assert_eq!(code, Some(65), "{}", nodes[standby].log_text());
    let log = nodes[standby].log_text();
    assert!(
        log.contains(&format!("stream stockpulse message {}", ack.sequence)),
        "{log}"
    );
}

/// Every node of `nodes` but the one at `index`.
fn others_than(nodes: &[Node], index: usize) -> Vec<&Node> {
    nodes
        .iter()
        .enumerate()
        .filter(|(other, _)| *other != index)
        .map(|(_, node)| node)
        .collect()
}

/// Sends `signal` (`-STOP`, `-CONT`, `-TERM`…) to process `pid`.
fn send_signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "kill {signal} {pid}");
}

/// Sets the nodes started from `directory` to share a snapshot every `facts` facts, with
/// the tests' short lease.
fn snapshotting_every(directory: &Path, facts: u64) {
    std::fs::write(
        directory.join("cluster.toml"),
        format!(
            "snapshot_every_facts = {facts}\n[cluster]\nreplicas = 3\nlease_ttl_ms = 1500\nlease_renew_ms = 300\n"
        ),
    )
    .expect("configuration written");
}

/// Makes the lease stream as nodes whose leases last `max_age` would.
async fn lease_stream(jetstream: &async_nats::jetstream::Context, max_age: Duration) {
    jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "stockpulse-lease".to_owned(),
            subjects: vec!["stockpulse.lease.>".to_owned()],
            max_messages_per_subject: 1,
            max_age,
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("the lease stream");
}

/// Makes the log stream `stockpulse` as another program or version would, described so.
async fn log_described(jetstream: &async_nats::jetstream::Context, description: &str) {
    jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "stockpulse".to_owned(),
            description: Some(description.to_owned()),
            subjects: vec!["stockpulse.log.>".to_owned()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("a stream described so");
}

#[tokio::test]
async fn a_node_refuses_a_stream_that_is_not_a_log_it_can_read() {
    // Goal: a node whose stream was made for something else (another record version, another
    // program) refuses to join with a clear error and exit code 65.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let nats = Nats::started(directory.path()).await;
    let jetstream = nats_client(&nats).await;
    log_described(&jetstream, "stockpulse log, record format 999").await;
    let mut node = Node::prepare(directory.path(), "a", &nats);
    node.refuses(Duration::from_secs(20), "record format 999")
        .await;
}

#[tokio::test]
async fn a_node_joins_a_log_of_the_earlier_record_format_and_says_what_it_writes_once_it_leads() {
    // Goal: a log made by nodes of record format 5 (before forgetting was a fact) is one this
    // node reads. While an older node leads, this one follows and leaves the log as it is
    // (older nodes still running and still starting keep reading it); once it leads, the
    // log says this build's format (7) and takes shard 0's subject only, before anything is
    // written in it.
    // Method: the stream as a format-5 cluster made it (subjects `stockpulse.log.>`), and a
    // lease held by "old" (renewed by the test as a node would); node a joins as a standby;
    // then the renewals stop and a takes over.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let nats = Nats::started(directory.path()).await;
    let jetstream = nats_client(&nats).await;
    log_described(&jetstream, "stockpulse log, record format 5").await;
    lease_stream(&jetstream, Duration::from_millis(1500)).await;
    let renewing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let holder = {
        let (jetstream, renewing) = (jetstream.clone(), renewing.clone());
        tokio::spawn(async move {
            let mut after = 0u64;
            while renewing.load(std::sync::atomic::Ordering::Acquire) {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    after.to_string().as_str(),
                );
                let published = jetstream
                    .publish_with_headers("stockpulse.lease.0", headers, "old".into())
                    .await
                    .expect("published");
                if let Ok(ack) = published.await {
                    after = ack.sequence;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        })
    };
    let describes = |jetstream: async_nats::jetstream::Context| async move {
        let mut stream = jetstream.get_stream("stockpulse").await.expect("the log");
        let info = stream.info().await.expect("its description");
        (
            info.config.description.clone(),
            info.config.subjects.clone(),
        )
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut node = Node::prepare(directory.path(), "a", &nats);
    node.launch();
    assert!(
        crate::support::answers_within(&node.base, Duration::from_secs(20)).await,
        "{}",
        node.log_text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = node.cluster().await.expect("a's view");
    assert_eq!(view["role"], "standby", "{view}");
    assert_eq!(view["leader"], "old", "{view}");
    assert_eq!(
        describes(jetstream.clone()).await,
        (
            Some("stockpulse log, record format 5".to_owned()),
            vec!["stockpulse.log.>".to_owned()]
        ),
        "a standby leaves the log as its leader made it"
    );
    renewing.store(false, std::sync::atomic::Ordering::Release);
    holder.await.expect("the holder stops");
    let leader = wait_for_leader(std::slice::from_ref(&node), true).await;
    assert_eq!(leader, 0);
    assert_eq!(
        describes(jetstream.clone()).await,
        (
            Some("stockpulse log, record format 7".to_owned()),
            vec!["stockpulse.log.0".to_owned()]
        )
    );
    // And it writes, in that format.
    put_sku(&reqwest::Client::new(), &node.base, "A", 10).await;
}

#[tokio::test]
async fn a_shared_snapshot_of_an_older_version_is_passed_over_while_the_log_is_whole_and_a_newer_one_refused()
 {
    // Goal: a node meeting a shared snapshot older than it reads follows the log from its
    // start instead (while the log still holds its first message), where it used to stop
    // with 65; one newer than it reads is refused with 65, saying to upgrade.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let nats = Nats::started(directory.path()).await;
    let jetstream = nats_client(&nats).await;
    let store = jetstream
        .create_object_store(async_nats::jetstream::object_store::Config {
            bucket: "stockpulse-snapshots".to_owned(),
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("the snapshot store");
    let object = |version: u32| {
        let mut bytes = b"SPCLSNAP".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&[0; 24]);
        bytes
    };
    store
        .put("latest", &mut &object(1)[..])
        .await
        .expect("a version-1 snapshot");
    let mut node = Node::prepare(directory.path(), "a", &nats);
    node.launch();
    assert!(
        crate::support::answers_within(&node.base, Duration::from_secs(20)).await,
        "{}",
        node.log_text()
    );
    assert!(
        node.log_text().contains("following the log from its start"),
        "{}",
        node.log_text()
    );
    put_sku(&reqwest::Client::new(), &node.base, "A", 10).await;
    node.kill();
    store
        .put("latest", &mut &object(9)[..])
        .await
        .expect("a version-9 snapshot");
    node.refuses(
        Duration::from_secs(20),
        "version 9, written by a newer node",
    )
    .await;
}

#[tokio::test]
async fn a_node_refuses_a_log_with_fewer_copies_or_a_lease_of_another_length_than_it_is_set_to() {
    // Goal: settings the streams already hold are checked against this node's: a log kept
    // in fewer copies than `cluster.replicas` (an acknowledgement would not mean a quorum
    // holds it) and a lease stream whose age limit is not this node's lease length (a node
    // renewing slower than leases expire loses its own) are refused with 65, saying which.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let nats = Nats::started(directory.path()).await;
    let jetstream = nats_client(&nats).await;
    let log = jetstream
        .get_or_create_stream(async_nats::jetstream::stream::Config {
            name: "stockpulse".to_owned(),
            description: Some("stockpulse log, record format 6".to_owned()),
            subjects: vec!["stockpulse.log.0".to_owned()],
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .expect("an R1 log");
    drop(log);
    let mut node = Node::prepare(directory.path(), "a", &nats);
    node.refuses(
        Duration::from_secs(20),
        "keeps 1 copies and this node is set to 3",
    )
    .await;
    jetstream
        .delete_stream("stockpulse")
        .await
        .expect("deleted");
    lease_stream(&jetstream, Duration::from_secs(10)).await;
    std::fs::remove_file(&node.log).expect("old log removed");
    node.refuses(
        Duration::from_secs(20),
        "a lease there lasts 10000 ms and this node is set to 1500 ms",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_late_catches_up_from_the_shared_snapshot_and_the_stream() {
    // Goal: a fourth node started after 100,000 facts starts from the newest shared snapshot
    // plus the stream after it, then serves reads that agree with the leader's, and numbers
    // room and alert topics as the leader does (the alert engine's state is in the
    // snapshot too).
    // Method: three nodes snapshotting every 20,000 facts take 100,000 paid orders in
    // batches, those of SKU A in room r1, which raises alerts; once the leader has shared a
    // snapshot, node d starts; it must say it started from the snapshot, catch up, and then
    // every SKU and a sample of orders read from it must equal the leader's; screens on the
    // leader and on d see the next order of the room under the same number, and the same
    // alerts.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    snapshotting_every(directory.path(), 20000);
    let (nats, mut nodes) = three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let client = reqwest::Client::new();
    let skus = ["A", "B", "C", "D"];
    for sku in skus {
        put_sku(&client, &nodes[leader].base, sku, 1_000_000).await;
    }
    let room = json!({
        "starts_at": from_now(-60), "ends_at": from_now(3 * 3600 - 60),
        "listings": [{"sku": "A", "forecast": 20_000}],
    });
    let response = client
        .put(format!("{}/api/v1/rooms/r1", nodes[leader].base))
        .json(&room)
        .send()
        .await
        .expect("room");
    assert!(response.status().is_success(), "{response:?}");
    let batches = 400;
    for batch in 0..batches {
        let ops: Vec<Value> = (0..250)
            .map(|index| {
                let sku = skus[index % skus.len()];
                let room = (sku == "A").then_some("r1");
                json!({"op": "sell", "order_id": format!("o{batch}-{index}"), "sku": sku, "qty": 1, "platform": "douyin", "room": room})
            })
            .collect();
        let response = client
            .post(format!("{}/api/v1/orders/batch", nodes[leader].base))
            .json(&json!({ "ops": ops }))
            .send()
            .await
            .expect("batch");
        assert_eq!(response.status(), StatusCode::OK);
    }
    // Two: the second trims the log up to the first.
    wait_for_shared_snapshots(&client, &nodes[leader], 2).await;
    // Each shared snapshot trims the log up to the one before it: the log no longer starts
    // at its first message, so d cannot replay it all.
    let mut stream = nats_client(&nats)
        .await
        .get_stream("stockpulse")
        .await
        .expect("the log stream");
    let state = stream.info().await.expect("stream info").state.clone();
    assert!(1 < state.first_sequence, "the log was never trimmed");
    nodes.push(Node::start(directory.path(), "d", &nats).await);
    // d answers only once it holds the log as far as it went when d started: its first
    // answer already counts every acknowledged order.
    let first_answer = nodes[3].cluster().await.expect("d answers");
    assert!(
        state.last_sequence <= first_answer["applied_seq"].as_u64().unwrap_or(0),
        "d answered before catching up to message {}: {first_answer}",
        state.last_sequence
    );
    let leader = settled(&nodes).await;
    let late = &nodes[3];
    let log = late.log_text();
    let started_from = log
        .lines()
        .find(|line| line.contains("Started from the shared snapshot"))
        .unwrap_or_else(|| panic!("d did not start from the snapshot:\n{log}"));
    assert!(!started_from.contains("facts=0 "), "{started_from}");
    // Time passing is a fact too (once a second while a room lists something): d agrees
    // with the leader between two of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (leader_view, late_view) = loop {
        let leader_view = nodes[leader].cluster().await.expect("leader");
        let late_view = late.cluster().await.expect("d");
        if late_view["facts"] == leader_view["facts"] {
            break (leader_view, late_view);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "d holds {} facts, the leader {}",
            late_view["facts"],
            leader_view["facts"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Every node answers for itself: the leader lists all four, caught up.
    let names: Vec<&str> = leader_view["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|node| node["node"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["a", "b", "c", "d"], "{leader_view}");
    let metrics = client
        .get(format!("{}/metrics", nodes[leader].base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("stockpulse_cluster_leading 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("stockpulse_cluster_node_lag{node=\"d\"}"),
        "{metrics}"
    );
    assert!(100_000 <= late_view["facts"].as_u64().expect("facts"));
    let mut sold = 0;
    for sku in skus {
        let (_, on_leader) = get_json(
            &client,
            &format!("{}/api/v1/skus/{sku}", nodes[leader].base),
        )
        .await;
        let (_, on_late) = get_json(&client, &format!("{}/api/v1/skus/{sku}", late.base)).await;
        assert_eq!(on_late, on_leader, "{sku}");
        sold += on_late["sold"].as_u64().expect("sold");
    }
    assert_eq!(sold, 100_000);
    for batch in (0..batches).step_by(37) {
        let order_id = format!("o{batch}-{}", batch % 250);
        let (status, on_late) =
            get_json(&client, &format!("{}/api/v1/orders/{order_id}", late.base)).await;
        assert_eq!(status, StatusCode::OK, "{order_id}");
        assert_eq!(on_late["status"], "sold");
    }
    // The room and the alerts, numbered alike on the leader and on d.
    let topics = ["room:r1", "alerts"];
    let mut screens = Vec::new();
    let mut seen = Vec::new();
    for node in [&nodes[leader], late] {
        let mut socket = screen(node).await;
        crate::push::send(&mut socket, json!({"op": "subscribe", "topics": topics})).await;
        let mut screen_seen = Seen::default();
        read_until(&mut socket, &mut screen_seen, |seen| {
            topics.iter().all(|topic| seen.topics.contains_key(*topic))
        })
        .await;
        screens.push(socket);
        seen.push(screen_seen);
    }
    let (_, a) = get_json(&client, &format!("{}/api/v1/skus/A", nodes[leader].base)).await;
    let next_sold = a["sold"].as_u64().expect("sold") + 1;
    let response = client
        .post(format!("{}/api/v1/orders", nodes[leader].base))
        .json(&json!({"order_id": "last", "sku": "A", "qty": 1, "platform": "douyin", "room": "r1", "paid": true}))
        .send()
        .await
        .expect("order");
    assert_eq!(response.status(), StatusCode::CREATED);
    for (socket, screen_seen) in screens.iter_mut().zip(seen.iter_mut()) {
        read_until(socket, screen_seen, |seen| seen.sold("room:r1", next_sold)).await;
    }
    let numbered = |seen: &Seen| {
        seen.topics["room:r1"]
            .iter()
            .find(|(_, message)| {
                message["type"] == "stock" && message["stock"]["sold"] == next_sold
            })
            .map(|(seq, message)| (*seq, message.clone()))
    };
    assert_eq!(numbered(&seen[0]), numbered(&seen[1]));
    let alerts = |seen: &Seen| {
        let (seq, snapshot) = seen.topics["alerts"].first_key_value().expect("snapshot");
        let ids: Vec<Value> = snapshot["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .map(|alert| alert["id"].clone())
            .collect();
        (*seq, ids)
    };
    let on_leader = alerts(&seen[0]);
    assert!(!on_leader.1.is_empty(), "no alert raised");
    assert_eq!(alerts(&seen[1]), on_leader);
}

/// Waits until `leader` has shared at least `count` snapshots since it started.
async fn wait_for_shared_snapshots(client: &reqwest::Client, leader: &Node, count: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = client
            .get(format!("{}/metrics", leader.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        let shared = metrics
            .lines()
            .find_map(|line| line.strip_prefix("stockpulse_journal_snapshots_total "))
            .and_then(|count| count.parse::<u64>().ok())
            .unwrap_or(0);
        if count <= shared {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no shared snapshot: {}",
            leader.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sells one unit in each of `batches` batches of 250 orders through `base`, spread over
/// `skus`, with order ids `{prefix}{batch}-{index}`.
async fn sell_in_batches(
    client: &reqwest::Client,
    base: &str,
    prefix: &str,
    batches: usize,
    skus: &[&str],
) {
    for batch in 0..batches {
        let ops: Vec<Value> = (0..250)
            .map(|index| {
                json!({"op": "sell", "order_id": format!("{prefix}{batch}-{index}"),
                    "sku": skus[index % skus.len()], "qty": 1, "platform": "douyin"})
            })
            .collect();
        let response = client
            .post(format!("{base}/api/v1/orders/batch"))
            .json(&json!({ "ops": ops }))
            .send()
            .await
            .expect("batch");
        assert_eq!(response.status(), StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_left_behind_a_trimmed_log_starts_again_from_the_snapshot() {
    // Goal: a standby that falls further behind than the log keeps (it was paused while the
    // leader shared snapshots and trimmed the log past it) does not skip what it missed or
    // stop for good: it starts again from the newest shared snapshot and catches up.
    // Method: three nodes snapshotting every 20,000 facts; one standby is stopped
    // (SIGSTOP); 60,000 orders sell on the leader, which shares snapshots and trims the log
    // past the stopped node; SIGCONT. The node says its log was trimmed past it, starts
    // from the snapshot, and then reads every SKU as the leader does.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    snapshotting_every(directory.path(), 20000);
    let (nats, nodes) = three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let behind = (leader + 1) % 3;
    let client = reqwest::Client::new();
    let skus = ["A", "B"];
    for sku in skus {
        put_sku(&client, &nodes[leader].base, sku, 1_000_000).await;
    }
    settled(&nodes).await;
    let stopped_at = nodes[behind].cluster().await.expect("standby")["applied_seq"]
        .as_u64()
        .expect("applied_seq");
    let pid = nodes[behind].child.as_ref().expect("running").id();
    let signal = |name: &str| send_signal(pid, name);
    signal("-STOP");
    sell_in_batches(&client, &nodes[leader].base, "o", 240, &skus).await;
    wait_for_shared_snapshots(&client, &nodes[leader], 2).await;
    let first = nats_client(&nats)
        .await
        .get_stream("stockpulse")
        .await
        .expect("the log stream")
        .info()
        .await
        .expect("stream info")
        .state
        .first_sequence;
    assert!(
        stopped_at + 1 < first,
        "the log was not trimmed past the stopped node ({stopped_at} applied, log from {first})"
    );
    signal("-CONT");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let log = nodes[behind].log_text();
        if log.contains("Started from the shared snapshot") {
            break;
        }
        // What the process is doing, if it never gets there.
        let state = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with("State:") || line.starts_with("Threads:"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node left behind did not start again from the snapshot ({state}):\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    settled(&nodes).await;
    for sku in skus {
        let url = |node: &Node| format!("{}/api/v1/skus/{sku}", node.base);
        let (_, on_leader) = get_json(&client, &url(&nodes[leader])).await;
        let (_, on_behind) = get_json(&client, &url(&nodes[behind])).await;
        assert_eq!(on_behind, on_leader, "{sku}");
        assert_eq!(on_behind["sold"], 30_000);
    }
}

/// Sells one unit of SKU A for each of orders `o{index}`, through `base`, in `room`.
async fn place(
    client: &reqwest::Client,
    base: &str,
    orders: std::ops::Range<usize>,
    room: Option<&str>,
) {
    for index in orders {
        let response = client
            .post(format!("{base}/api/v1/orders"))
            .json(
                &json!({"order_id": format!("o{index}"), "sku": "A", "qty": 1,
                "platform": "douyin", "room": room, "paid": true}),
            )
            .send()
            .await
            .expect("order");
        assert_eq!(response.status(), StatusCode::CREATED);
    }
}

async fn screen(node: &Node) -> crate::push::Socket {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("ws://127.0.0.1:{}/ws", node.port)
        .into_client_request()
        .expect("a request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "stockpulse.v1.json".parse().expect("a header value"),
    );
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the handshake succeeds");
    socket
}

/// Reads stock messages until one at `version` or later; every message must follow the one
/// before it.
async fn follow_until(
    socket: &mut crate::push::Socket,
    last: &mut u64,
    version: u64,
    seen: &mut Vec<Value>,
) {
    while *last < version {
        for message in crate::push::next_messages(socket).await {
            assert_eq!(
                message["type"], "stock",
                "no snapshot, no resync: {message}"
            );
            let seq = message["seq"].as_u64().expect("seq");
            assert_eq!(seq, *last + 1, "a gap or a repeat: {message}");
            assert_eq!(message["stock"]["version"], seq);
            *last = seq;
            seen.push(message);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screen_whose_node_dies_resumes_on_another_without_a_gap() {
    // Goal: a screen on a standby sees every change in order; when its node is killed it
    // reconnects to another node with `since` and the epoch, and gets the changes it missed
    // and the ones after, with no gap and no resync.
    // Method: three nodes; screens on both standbys follow one SKU; orders go to the leader;
    // the first screen's node is killed mid-run; the screen resumes on the other standby.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_nats, mut nodes) = three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let (first, second) = ((leader + 1) % 3, (leader + 2) % 3);
    let client = reqwest::Client::new();
    put_sku(&client, &nodes[leader].base, "A", 100_000).await;
    settled(&nodes).await;
    let mut screens = Vec::new();
    let mut epochs = Vec::new();
    let mut lasts = Vec::new();
    for index in [first, second] {
        let mut socket = screen(&nodes[index]).await;
        crate::push::send(&mut socket, json!({"op": "subscribe", "topics": ["sku:A"]})).await;
        let snapshot = crate::push::next_messages(&mut socket).await;
        assert_eq!(snapshot[0]["type"], "snapshot");
        epochs.push(snapshot[0]["epoch"].as_u64().expect("epoch"));
        lasts.push(snapshot[0]["seq"].as_u64().expect("seq"));
        screens.push(socket);
    }
    assert_eq!(epochs[0], epochs[1], "every node numbers SKU topics alike");
    let leader_base = nodes[leader].base.clone();
    place(&client, &leader_base, 0..50, None).await;
    let mut seen = Vec::new();
    let target = lasts[0] + 50;
    follow_until(&mut screens[0], &mut lasts[0], target, &mut seen).await;
    let mut other_seen = Vec::new();
    follow_until(&mut screens[1], &mut lasts[1], target, &mut other_seen).await;
    // The first screen's node dies; orders go on meanwhile.
    nodes[first].kill();
    drop(screens.remove(0));
    place(&client, &leader_base, 50..100, None).await;
    let mut resumed = screen(&nodes[second]).await;
    crate::push::send(
        &mut resumed,
        json!({"op": "subscribe", "topics": ["sku:A"], "since": {"sku:A": lasts[0]}, "epoch": epochs[0]}),
    )
    .await;
    place(&client, &leader_base, 100..120, None).await;
    let mut last = lasts[0];
    follow_until(&mut resumed, &mut last, target + 70, &mut seen).await;
    assert_eq!(seen.len(), 120);
    assert_eq!(seen.last().expect("last")["stock"]["sold"], 120);

    // A standby takes order commands over /ws too: the leader runs them.
    let mut commands = screen(&nodes[second]).await;
    crate::push::send(
        &mut commands,
        json!({"op": "sell", "id": "c-1", "order_id": "ws-1", "sku": "A", "qty": 1, "platform": "douyin"}),
    )
    .await;
    let reply = crate::push::next_messages(&mut commands).await;
    assert_eq!(reply[0]["type"], "reply", "{reply:?}");
    assert_eq!(reply[0]["id"], "c-1");
    assert_eq!(reply[0]["status"], 201, "{reply:?}");
    assert_eq!(reply[0]["order"]["status"], "sold");
    let (status, order) = get_json(&client, &format!("{leader_base}/api/v1/orders/ws-1")).await;
    assert_eq!(status, StatusCode::OK, "{order}");
    assert_eq!(order["status"], "sold");
    // Many at once: the standby hands them all to the leader without waiting for each
    // answer, and the replies come back in command order, a repeat answered as one.
    for index in 2..=30 {
        let order_id = if index == 30 {
            "ws-2".to_owned()
        } else {
            format!("ws-{index}")
        };
        crate::push::send(
            &mut commands,
            json!({"op": "sell", "id": format!("c-{index}"), "order_id": order_id, "sku": "A", "qty": 1, "platform": "douyin"}),
        )
        .await;
    }
    let mut replies = Vec::new();
    while replies.len() < 29 {
        replies.extend(
            crate::push::next_messages(&mut commands)
                .await
                .into_iter()
                .filter(|message| message["type"] == "reply"),
        );
    }
    let ids: Vec<String> = replies
        .iter()
        .map(|reply| reply["id"].as_str().expect("id").to_owned())
        .collect();
    let expected: Vec<String> = (2..=30).map(|index| format!("c-{index}")).collect();
    assert_eq!(ids, expected);
    assert!(
        replies[..28].iter().all(|reply| reply["status"] == 201),
        "{replies:?}"
    );
    assert_eq!(replies[28]["status"], 200, "a repeat: {:?}", replies[28]);
    let (_, sku) = get_json(&client, &format!("{leader_base}/api/v1/skus/A")).await;
    assert_eq!(sku["sold"], 149, "{sku}");
}

/// What one screen saw of its topics: each topic's messages by sequence number.
#[derive(Default)]
struct Seen {
    topics: BTreeMap<String, BTreeMap<u64, Value>>,
}

impl Seen {
    /// Takes a batch of messages in: after a topic's snapshot, each message must be the
    /// next of its topic (no gap, no repeat, no resync).
    fn take(&mut self, messages: Vec<Value>) {
        for message in messages {
            let Some(topic) = message["topic"].as_str().map(str::to_owned) else {
                continue;
            };
            let seq = message["seq"].as_u64().expect("seq");
            let kind = message["type"].as_str().expect("type").to_owned();
            let topic_seen = self.topics.entry(topic.clone()).or_default();
            match topic_seen.last_key_value() {
                None => {}
                Some((last, _)) => {
                    assert_ne!(kind, "resync", "{topic}: a resync: {message}");
                    assert_ne!(kind, "snapshot", "{topic}: a second snapshot: {message}");
                    assert_eq!(seq, last + 1, "{topic}: a gap or a repeat: {message}");
                }
            }
            topic_seen.insert(seq, message);
        }
    }

    /// The newest sequence seen on `topic`.
    fn last(&self, topic: &str) -> u64 {
        *self.topics[topic].last_key_value().expect("seen").0
    }

    /// Whether `topic` had a room stock message showing `sold` units sold.
    fn sold(&self, topic: &str, sold: u64) -> bool {
        self.topics.get(topic).is_some_and(|messages| {
            messages
                .values()
                .any(|message| message["type"] == "stock" && message["stock"]["sold"] == sold)
        })
    }
}

/// Reads until `done` holds, within 30 s.
async fn read_until(
    socket: &mut crate::push::Socket,
    seen: &mut Seen,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(seen) {
        assert!(tokio::time::Instant::now() < deadline, "not seen in time");
        seen.take(crate::push::next_messages(socket).await);
    }
}

/// An RFC 3339 time `offset_s` seconds from now.
fn from_now(offset_s: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let at = (now + offset_s * 1000).max(0) as u64;
    stockpulse::clock::rfc3339(stockpulse::clock::Timestamp::from_millis(at)).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_and_alert_topics_are_numbered_alike_on_every_node_and_resume_on_another() {
    // Goal: a big screen's room topic and a console's alerts topic carry the same messages
    // with the same numbers on every node (levels, hints, curve points and alerts decided
    // from the log alone), so a screen whose node dies resumes on another by `since` with
    // no gap and no resync; an operator on a standby acknowledges an alert by the id it
    // shows, and every node records it.
    // Method: a room lists SKU A (forecast 100); screens on both standbys follow the room
    // and the alerts; 90 units sell on the leader, alerts are raised; whatever both screens
    // saw under the same number must be the same message. The first screen's node is
    // killed, 5 more units sell, and the screen resumes on the other standby: the next
    // message of each topic is the one after the last it saw. It acknowledges the newest
    // alert there; the alerts topic says so, and both live nodes list it acknowledged.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_nats, mut nodes) = three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let (first, second) = ((leader + 1) % 3, (leader + 2) % 3);
    let client = reqwest::Client::new();
    put_sku(&client, &nodes[leader].base, "A", 1_000).await;
    let room = json!({
        "starts_at": from_now(-60), "ends_at": from_now(3 * 3600 - 60),
        "listings": [{"sku": "A", "forecast": 100}],
    });
    let response = client
        .put(format!("{}/api/v1/rooms/r1", nodes[leader].base))
        .json(&room)
        .send()
        .await
        .expect("room");
    assert!(response.status().is_success(), "{response:?}");
    settled(&nodes).await;
    let topics = ["room:r1", "alerts"];
    let mut screens = Vec::new();
    let mut seen = Vec::new();
    let mut epoch = 0;
    for index in [first, second] {
        let mut socket = screen(&nodes[index]).await;
        crate::push::send(&mut socket, json!({"op": "subscribe", "topics": topics})).await;
        let mut screen_seen = Seen::default();
        read_until(&mut socket, &mut screen_seen, |seen| {
            topics.iter().all(|topic| seen.topics.contains_key(*topic))
        })
        .await;
        epoch = screen_seen.topics["room:r1"]
            .values()
            .next()
            .expect("snapshot")["epoch"]
            .as_u64()
            .expect("epoch");
        screens.push(socket);
        seen.push(screen_seen);
    }
    let leader_base = nodes[leader].base.clone();
    place(&client, &leader_base, 0..90, Some("r1")).await;
    for (socket, screen_seen) in screens.iter_mut().zip(seen.iter_mut()) {
        read_until(socket, screen_seen, |seen| seen.sold("room:r1", 90)).await;
    }
    // The same number is the same message on both nodes.
    let mut compared = 0;
    for topic in topics {
        for (seq, message) in &seen[0].topics[topic] {
            if let Some(other) = seen[1].topics[topic].get(seq)
                && message["type"] != "snapshot"
                && other["type"] != "snapshot"
            {
                assert_eq!(message, other, "{topic} #{seq} differs between nodes");
                compared += 1;
            }
        }
    }
    assert!(90 <= compared, "only {compared} messages compared");
    let alerts: Vec<Value> = seen[0].topics["alerts"]
        .values()
        .filter(|message| message["type"] == "alert")
        .cloned()
        .collect();
    assert!(!alerts.is_empty(), "no alert raised");

    // The first screen's node dies; orders go on; the screen resumes on the other standby.
    nodes[first].kill();
    drop(screens.remove(0));
    let mut resumed_seen = seen.remove(0);
    let since: BTreeMap<&str, u64> = topics
        .iter()
        .map(|topic| (*topic, resumed_seen.last(topic)))
        .collect();
    place(&client, &leader_base, 90..95, Some("r1")).await;
    let mut resumed = screen(&nodes[second]).await;
    crate::push::send(
        &mut resumed,
        json!({"op": "subscribe", "topics": topics, "since": since, "epoch": epoch}),
    )
    .await;
    read_until(&mut resumed, &mut resumed_seen, |seen| {
        seen.sold("room:r1", 95)
    })
    .await;

    // The newest alert, acknowledged on a standby by the id the screen showed.
    let newest = alerts.last().expect("an alert")["id"].as_u64().expect("id");
    crate::push::send(
        &mut resumed,
        json!({"op": "ack", "id": newest, "by": "ops"}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut acked = None;
    let mut announced = false;
    while acked.is_none() || !announced {
        assert!(tokio::time::Instant::now() < deadline, "no acknowledgement");
        let messages = crate::push::next_messages(&mut resumed).await;
        for message in &messages {
            if message["type"] == "acked" {
                acked = Some(message.clone());
            }
            if message["type"] == "alert_state"
                && message["id"] == newest
                && message["state"] == "acknowledged"
            {
                announced = true;
            }
        }
        resumed_seen.take(messages);
    }
    let acked = acked.expect("acked");
    assert_eq!(acked["alert"]["state"], "acknowledged", "{acked}");
    assert_eq!(acked["alert"]["acknowledged_by"], "ops", "{acked}");
    for index in [leader, second] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, listed) =
                get_json(&client, &format!("{}/api/v1/alerts", nodes[index].base)).await;
            assert_eq!(status, StatusCode::OK);
            let state = listed["alerts"]
                .as_array()
                .expect("alerts")
                .iter()
                .find(|alert| alert["id"] == newest)
                .map(|alert| alert["state"].clone());
            if state == Some(json!("acknowledged")) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {index} lists alert {newest} as {state:?}: {listed}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // A write a standby could not forward in one NATS message (1 MiB) is refused plainly,
    // not retried as if the leader were away.
    let padding = "x".repeat(1_048_000);
    let response = client
        .post(format!("{}/api/v1/orders/batch", nodes[second].base))
        .header("content-type", "application/json")
        .body(format!("{{\"ops\": [], \"padding\": \"{padding}\"}}"))
        .send()
        .await
        .expect("batch");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "body_too_large", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_mistyped_stream_name_refuses_to_start_a_cluster_of_its_own() {
    // Goal: a node configured with another stream name, on NATS that already holds a
    // stockpulse log, refuses to join (exit 65, naming the log it found) instead of starting
    // a cluster of its own that would take orders its peers never see; with
    // `new_stream = true` it may.
    let _alone = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let nats = Nats::started(directory.path()).await;
    let nodes = vec![Node::start(directory.path(), "a", &nats).await];
    settled(&nodes).await;
    let typo = directory.path().join("typo");
    std::fs::create_dir_all(&typo).expect("directory");
    std::fs::write(
        typo.join("cluster.toml"),
        "[cluster]\nreplicas = 3\nstream = \"stockpluse\"\n",
    )
    .expect("configuration written");
    let mut stray = Node::prepare(&typo, "x", &nats);
    stray
        .refuses(
            Duration::from_secs(30),
            "already holds the stockpulse log stockpulse",
        )
        .await;

    let second = directory.path().join("second");
    std::fs::create_dir_all(&second).expect("directory");
    std::fs::write(
        second.join("cluster.toml"),
        "[cluster]\nreplicas = 3\nstream = \"second\"\nnew_stream = true\n",
    )
    .expect("configuration written");
    let other = vec![Node::start(&second, "y", &nats).await];
    settled(&other).await;
}
