//! A cluster you can trust: what reaches a node over NATS is believed only when a node of
//! the cluster sealed it, no client credential crosses NATS, and a node refuses to run a
//! cluster that anyone on NATS could join.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stockpulse::auth::{Authority, Claims, Role};

use super::{Nats, Node, ONE_CLUSTER_AT_A_TIME, free_port, settled};

const SECRET: &str = "the cluster's secret, shared by every node";
const NODE_PASSWORD: &str = "the nodes' NATS password";
const OTHER_PASSWORD: &str = "another application's NATS password";

/// NATS as the README's "Run a cluster" sets it up: the nodes' user may use only the
/// stream's subjects, JetStream's API and inboxes. A second user stands for another
/// application on the same NATS with a permission too wide: it may publish anywhere.
const AUTHORIZATION: &str = r#"
authorization {
  users = [
    { user: "stockpulse", password: "the nodes' NATS password", permissions: {
        publish: { allow: ["stockpulse.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$O.stockpulse-snapshots.>", "_INBOX.>"] }
        subscribe: { allow: ["stockpulse.fwd.>", "stockpulse.status", "_INBOX.>"] }
    } }
    { user: "other", password: "another application's NATS password" }
  ]
}
"#;

fn admin_token() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    Authority::new(SECRET.as_bytes()).issue(&Claims {
        sub: "tester".to_owned(),
        role: Role::Admin,
        rooms: None,
        exp: now + 3600,
    })
}

/// Three nodes with NATS credentials and the secret, on `nats`.
async fn secured_nodes(directory: &Path, nats: &Nats, token: &str) -> Vec<Node> {
    let config = directory.join("secured.toml");
    std::fs::write(
        &config,
        "snapshot_every_facts = 1000\n[cluster]\nreplicas = 3\nlease_ttl_ms = 1500\nlease_renew_ms = 300\nuser = \"stockpulse\"\n",
    )
    .expect("configuration written");
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .into_iter()
        .map(|id| {
            let mut node = Node::prepare(directory, id, nats);
            node.config = config.clone();
            node.args = Vec::new();
            node.env = vec![
                (
                    "STOCKPULSE_NATS_PASSWORD".to_owned(),
                    NODE_PASSWORD.to_owned(),
                ),
                ("STOCKPULSE_AUTH_SECRET".to_owned(), SECRET.to_owned()),
            ];
            node.token = Some(token.to_owned());
            node
        })
        .collect();
    for node in &mut nodes {
        node.launch();
    }
    for node in &nodes {
        if !crate::support::answers_within(&node.base, Duration::from_secs(10)).await {
            panic!("node {} did not answer: {}", node.id, node.log_text());
        }
    }
    nodes
}

/// A NATS client as the other application.
async fn other_application(nats: &Nats) -> async_nats::Client {
    let addresses: Vec<String> = nats
        .client_ports
        .iter()
        .map(|port| format!("nats://127.0.0.1:{port}"))
        .collect();
    async_nats::ConnectOptions::with_user_and_password("other".into(), OTHER_PASSWORD.into())
        .connect(addresses)
        .await
        .expect("the other application connects")
}

/// Sends `payload` to `subject` as a request and says whether anything answered in 2 s.
async fn answered(client: &async_nats::Client, subject: &str, payload: Vec<u8>) -> bool {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.expect("subscribes");
    client
        .publish_with_reply(subject.to_owned(), inbox, payload.into())
        .await
        .expect("publishes");
    client.flush().await.expect("flushes");
    matches!(
        tokio::time::timeout(Duration::from_secs(2), answers.next()).await,
        Ok(Some(message)) if message.status.is_none()
    )
}

async fn sku(client: &reqwest::Client, base: &str, sku: &str) -> (StatusCode, Value) {
    super::get_json(client, &format!("{base}/api/v1/skus/{sku}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_or_replayed_forwarded_write_changes_nothing_and_no_token_crosses_nats() {
    // Goal (S1, S2): whoever can publish on NATS is not a node. A write forged in the old
    // envelope, one sealed with another secret and a replay of a real one are refused
    // unread; a subscriber to every forwarded request sees no client credential; a token
    // given in the query works through a standby as in a header.
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let nats = Nats::started_with(directory.path(), AUTHORIZATION).await;
    let token = admin_token();
    let nodes = secured_nodes(directory.path(), &nats, &token).await;
    let leader = settled(&nodes).await;
    let standby = (leader + 1) % nodes.len();
    let client = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");

    let other = other_application(&nats).await;
    let mut sniffed = other
        .subscribe("stockpulse.fwd.>")
        .await
        .expect("subscribes");
    other.flush().await.expect("flushes");

    // Writes through a standby, the token in the header and in the query.
    let put = client
        .put(format!("{}/api/v1/skus/T1", nodes[standby].base))
        .json(&json!({"total": 5000}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(put.status(), StatusCode::OK, "{:?}", put.text().await);
    let in_query = reqwest::Client::new()
        .put(format!(
            "{}/api/v1/skus/T2?token={token}",
            nodes[standby].base
        ))
        .json(&json!({"total": 7}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(
        in_query.status(),
        StatusCode::OK,
        "{:?}",
        in_query.text().await
    );
    let (_, t2) = sku(&client, &nodes[leader].base, "T2").await;
    assert_eq!(t2["total"], 7, "{t2}");

    // What crossed NATS: two sealed requests, and no credential in them.
    let mut captured = Vec::new();
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), sniffed.next()).await
    {
        captured.push(message.payload.to_vec());
    }
    assert_eq!(captured.len(), 2, "one message per forwarded write");
    for payload in &captured {
        let text = String::from_utf8_lossy(payload);
        for secret in [token.as_str(), "Bearer", "authorization", "token="] {
            assert!(!text.contains(secret), "{secret:?} crossed NATS: {text}");
        }
    }

    let leader_subject = format!("stockpulse.fwd.{}", nodes[leader].id);
    // A replay of the first write, after the SKU changed: refused, the change stands.
    let changed = client
        .put(format!("{}/api/v1/skus/T1", nodes[leader].base))
        .json(&json!({"total": 9000}))
        .send()
        .await
        .expect("PUT");
    assert_eq!(changed.status(), StatusCode::OK);
    assert!(
        !answered(&other, &leader_subject, captured[0].clone()).await,
        "a replayed write was answered"
    );
    // The envelope forwarding used before it was sealed: `[method, uri, headers, body]`.
    let old_envelope = rmp_serde::to_vec(&(
        "PUT",
        "/api/v1/skus/FORGED",
        vec![("host", "127.0.0.1"), ("content-type", "application/json")],
        serde_bytes::ByteBuf::from(br#"{"total":999999}"#.to_vec()),
    ))
    .expect("encodes");
    assert!(
        !answered(&other, &leader_subject, old_envelope.clone()).await,
        "an unsealed write was answered"
    );
    // A seal made with a key that is not the cluster's.
    let mut wrongly_sealed = vec![1u8];
    wrongly_sealed.extend_from_slice(&[0x5a; 32]);
    wrongly_sealed.extend_from_slice(&old_envelope);
    assert!(
        !answered(&other, &leader_subject, wrongly_sealed).await,
        "a write sealed with another key was answered"
    );
    // Status requests are a node's business too.
    assert!(
        !answered(&other, "stockpulse.status", Vec::new()).await,
        "a node told its status to a stranger"
    );

    let settled_leader = settled(&nodes).await;
    for node in &nodes {
        let (status, _) = sku(&client, &node.base, "FORGED").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "node {}", node.id);
        let (_, t1) = sku(&client, &node.base, "T1").await;
        assert_eq!(t1["total"], 9000, "node {}: {t1}", node.id);
    }
    // The nodes' NATS user may do all a node does: share a snapshot too.
    super::sell_in_batches(&client, &nodes[settled_leader].base, "s", 5, &["T1"]).await;
    super::wait_for_shared_snapshots(&client, &nodes[settled_leader], 1).await;
    let metrics = client
        .get(format!("{}/metrics", nodes[settled_leader].base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("stockpulse_cluster_forwards_refused_total 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_a_cluster_without_nats_credentials_or_a_secret_unless_insecure() {
    // Goal (S1): a cluster anyone on NATS could join does not start by accident. The check
    // comes before NATS is dialled, so no NATS is needed: with `--insecure` the node gets
    // as far as NATS (none here: 69).
    let directory = tempfile::tempdir().expect("temporary directory");
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_stockpulse"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--data-dir")
            .arg(directory.path())
            .args([
                "--cluster",
                &format!("nats://127.0.0.1:{}", free_port()),
                "--node-id",
                "a",
            ])
            .args(extra)
            .env_remove("STOCKPULSE_AUTH_SECRET")
            .env_remove("STOCKPULSE_NATS_PASSWORD")
            .env_remove("STOCKPULSE_NATS_TOKEN")
            .envs(env.iter().copied())
            .output()
            .expect("runs")
    };
    let neither = run(&[], &[]);
    assert_eq!(neither.status.code(), Some(64));
    let said = String::from_utf8_lossy(&neither.stdout);
    assert!(said.contains("NATS credentials"), "{said}");
    assert!(said.contains("auth.secret"), "{said}");

    let no_secret = run(&[], &[("STOCKPULSE_NATS_TOKEN", "a NATS token")]);
    assert_eq!(no_secret.status.code(), Some(64));
    let said = String::from_utf8_lossy(&no_secret.stdout);
    assert!(said.contains("auth.secret"), "{said}");
    assert!(!said.contains("NATS credentials"), "{said}");

    let no_credentials = run(&[], &[("STOCKPULSE_AUTH_SECRET", SECRET)]);
    assert_eq!(no_credentials.status.code(), Some(64));
    let said = String::from_utf8_lossy(&no_credentials.stdout);
    assert!(said.contains("NATS credentials"), "{said}");
    assert!(!said.contains("auth.secret"), "{said}");

    let insecure = run(&["--insecure"], &[]);
    assert_eq!(insecure.status.code(), Some(69), "past the check, to NATS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_snapshot_of_a_log_made_anew_is_refused_naming_what_to_do() {
    // Goal (C1): a shared snapshot belongs to the log it was cut from. The review's
    // sequence: shared snapshots, every node stopped, the log stream deleted (the usual way
    // to reset a broken stream) while the snapshot store survives, the nodes started
    // again. Before, they started from the snapshot on a new empty log, the first leader
    // fenced after messages the others never saw, and acknowledged orders were lost and
    // sold twice. Now each node refuses to start (65), saying why and what to do.
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    super::snapshotting_every(directory.path(), 1000);
    let (nats, mut nodes) = super::three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let client = reqwest::Client::new();
    super::put_sku(&client, &nodes[leader].base, "F", 1_000_000).await;
    super::sell_in_batches(&client, &nodes[leader].base, "s", 12, &["F"]).await;
    super::wait_for_shared_snapshots(&client, &nodes[leader], 1).await;
    for node in &mut nodes {
        node.kill();
    }
    super::nats_client(&nats)
        .await
        .delete_stream("stockpulse")
        .await
        .expect("the log stream deleted");
    for node in &mut nodes {
        node.launch();
    }
    for node in &mut nodes {
        let code = node.exit_code(Duration::from_secs(60)).await;
        let log = node.log_text();
        assert_eq!(code, Some(65), "node {}: {log}", node.id);
        assert!(log.contains("cut from another log"), "{log}");
        assert!(
            log.contains("delete the object store stockpulse-snapshots"),
            "{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_batch_whose_answer_outgrows_a_nats_message_is_answered_whole() {
    // Goal (C2): the leader's answer to a write a standby forwarded reaches the client
    // whole, however large. Before, a batch of 5,000 reservations sent to a standby ran on
    // the leader, its 1.27 MB answer could not travel as one NATS message (1 MiB), and the
    // client was told after 10 s `503 not_leader … retry`, while the units stayed locked.
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    let (_nats, nodes) = super::three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let standby = (leader + 1) % nodes.len();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    super::put_sku(&client, &nodes[leader].base, "BIG", 10_000).await;
    let ops: Vec<Value> = (0..5000)
        .map(|index| {
            json!({"op": "reserve", "order_id": format!("bs-{index:05}"), "sku": "BIG",
                "qty": 1, "platform": "douyin"})
        })
        .collect();
    let response = client
        .post(format!("{}/api/v1/orders/batch", nodes[standby].base))
        .json(&json!({ "ops": ops }))
        .send()
        .await
        .expect("batch through the standby");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.expect("the answer");
    assert!(
        1024 * 1024 < bytes.len(),
        "a small answer: {} bytes",
        bytes.len()
    );
    let answer: Value = serde_json::from_slice(&bytes).expect("JSON");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), 5000);
    assert!(
        results.iter().all(|result| result["status"] == 201),
        "{:?}",
        results[0]
    );
    let (_, big) = sku(&client, &nodes[leader].base, "BIG").await;
    assert_eq!(big["locked"], 5000, "{big}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_never_writes_its_snapshot_over_a_newer_one() {
    // Goal (C5): shared snapshot writes are fenced: a leader whose snapshot is older (a
    // lower term or stream position) than the one stored, as a deposed leader's late write
    // is, leaves the stored one as it is and says why.
    // Method: the store's object is marked as written at term and position 10^12 (what a
    // later leader's would be); the leader then cuts snapshots every 1,000 facts.
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    super::snapshotting_every(directory.path(), 1000);
    let (nats, nodes) = super::three_nodes(directory.path()).await;
    let leader = settled(&nodes).await;
    let store = super::nats_client(&nats)
        .await
        .get_object_store("stockpulse-snapshots")
        .await
        .expect("the snapshot store");
    let mut meta = async_nats::jetstream::object_store::ObjectMetadata::from("latest");
    meta.metadata = [
        ("term".to_owned(), "1000000000000".to_owned()),
        ("stream_seq".to_owned(), "1000000000000".to_owned()),
    ]
    .into_iter()
    .collect();
    store
        .put(meta, &mut &b"a newer leader's snapshot"[..])
        .await
        .expect("the newer snapshot");
    let client = reqwest::Client::new();
    super::put_sku(&client, &nodes[leader].base, "F", 1_000_000).await;
    super::sell_in_batches(&client, &nodes[leader].base, "s", 12, &["F"]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !nodes[leader]
        .log_text()
        .contains("a newer shared snapshot is there")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}",
            nodes[leader].log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    use tokio::io::AsyncReadExt as _;
    let mut kept = Vec::new();
    store
        .get("latest")
        .await
        .expect("the stored snapshot")
        .read_to_end(&mut kept)
        .await
        .expect("read");
    assert_eq!(kept, b"a newer leader's snapshot");
}

/// A CA and a certificate it signed for 127.0.0.1, written as PEM files into `directory`
/// under `name`: `<name>-ca.pem`, `<name>.pem`, `<name>-key.pem`.
fn certificates(directory: &Path, name: &str) {
    let ca_key = rcgen::KeyPair::generate().expect("a CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).expect("the CA certificate");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("a server key");
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params");
    params.use_authority_key_identifier_extension = true;
    params
        .extended_key_usages
        .push(rcgen::ExtendedKeyUsagePurpose::ServerAuth);
    let certificate = params
        .signed_by(&key, &issuer)
        .expect("the server certificate");
    let write = |file: String, text: String| {
        std::fs::write(directory.join(file), text).expect("PEM written");
    };
    write(format!("{name}-ca.pem"), ca.pem());
    write(format!("{name}.pem"), certificate.pem());
    write(format!("{name}-key.pem"), key.serialize_pem());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_talks_to_nats_over_tls_and_refuses_a_server_it_cannot_verify() {
    // Goal: with `tls_ca` a node reaches NATS servers that require TLS, proving each by a
    // certificate that CA signed (its NATS password then never crosses in clear), leads
    // and takes writes; a node trusting another CA refuses the same servers (exit 69, no
    // connection) rather than talk to one it cannot verify.
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let directory = tempfile::tempdir().expect("temporary directory");
    certificates(directory.path(), "nats");
    certificates(directory.path(), "rogue");
    let tls = format!(
        "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n}}\n",
        directory.path().join("nats.pem").display(),
        directory.path().join("nats-key.pem").display()
    );
    let nats = Nats::started_with(directory.path(), &tls).await;
    let config = |ca: &str| {
        format!(
            "[cluster]\nreplicas = 3\nlease_ttl_ms = 1500\nlease_renew_ms = 300\ntls_ca = \"{}\"\n",
            directory.path().join(ca).display()
        )
    };
    let trusting = directory.path().join("trusting");
    std::fs::create_dir_all(&trusting).expect("directory");
    std::fs::write(trusting.join("cluster.toml"), config("nats-ca.pem")).expect("config");
    let node = Node::start(&trusting, "a", &nats).await;
    let leader = settled(std::slice::from_ref(&node)).await;
    assert_eq!(leader, 0);
    super::put_sku(&reqwest::Client::new(), &node.base, "TLS", 10).await;
    let doubting = directory.path().join("doubting");
    std::fs::create_dir_all(&doubting).expect("directory");
    std::fs::write(doubting.join("cluster.toml"), config("rogue-ca.pem")).expect("config");
    let mut stranger = Node::prepare(&doubting, "b", &nats);
    stranger.launch();
    let code = stranger.exit_code(Duration::from_secs(30)).await;
    assert_eq!(code, Some(69), "{}", stranger.log_text());
    assert!(
        stranger.log_text().contains("cannot reach NATS"),
        "{}",
        stranger.log_text()
    );
}
