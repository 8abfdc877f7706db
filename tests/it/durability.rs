//! Durability over real restarts: a clean stop and start keeps everything, locks that ran
//! out while the server was down expire at start-up (and that is journaled), and `kill -9`
//! of the real binary under load never loses an acknowledged operation.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stockpulse::clock::{ManualClock, Timestamp};
use stockpulse::config::ConfigLayer;
use stockpulse::journal::{Fsync, OsFsync, SyncPoint};

use crate::binary::Binary;
use crate::support::{self, START_MILLIS, TestServer};

#[tokio::test]
async fn a_clean_restart_keeps_every_sku_and_order() {
    // Goal: what one server acknowledged, the next one on the same data directory knows.
    // Method: orders in every status, a graceful stop (snapshot), a start on the same
    // directory; compare every SKU and order.
    let server = TestServer::start().await;
    server
        .put(
            "/api/v1/skus/A",
            json!({"total": 50, "reserved": 2, "quotas": {"taobao": 5}}),
        )
        .await;
    server.sku("B", 20).await;
    let place = |id: &str, sku: &str, qty: u64| json!({"order_id": id, "sku": sku, "qty": qty, "platform": "douyin", "room": "r1"});
    for (id, sku, qty) in [
        ("o1", "A", 3),
        ("o2", "A", 2),
        ("o3", "B", 4),
        ("o4", "B", 1),
    ] {
        let (status, _) = server.post("/api/v1/orders", place(id, sku, qty)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    server.post("/api/v1/orders/o1/confirm", json!({})).await;
    server.post("/api/v1/orders/o2/cancel", json!({})).await;
    server.post("/api/v1/orders/o3/confirm", json!({})).await;
    server.post("/api/v1/orders/o3/refund", json!({})).await;
    server.post("/api/v1/skus/B/halt", json!({})).await;
    let (_, skus_before) = server.get("/api/v1/skus").await;
    let mut orders_before = Vec::new();
    for id in ["o1", "o2", "o3", "o4"] {
        orders_before.push(server.get(&format!("/api/v1/orders/{id}")).await);
    }
    let data_dir = server.data_dir.clone();
    let kept = server.stop_keeping_data().await;

    let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
    let server = TestServer::start_in(data_dir, ConfigLayer::default(), Some(clock)).await;
    let (_, skus_after) = server.get("/api/v1/skus").await;
    assert_eq!(skus_after, skus_before);
    for (id, before) in ["o1", "o2", "o3", "o4"].iter().zip(orders_before) {
        assert_eq!(server.get(&format!("/api/v1/orders/{id}")).await, before);
    }
    // A retry after the restart is still answered from idempotency.
    let (status, again) = server.post("/api/v1/orders", place("o4", "B", 1)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["replayed"], true);
    server.stop().await;
    drop(kept);
}

#[tokio::test]
async fn locks_that_ran_out_while_down_expire_at_start_up_and_stay_expired() {
    // Goal: a lock whose `expires_at` passed during downtime is released at start-up, and the
    // expiry is journaled, not just recomputed.
    // Method: lock with a 60 s TTL, stop, start two minutes later: expired. Stop, start with
    // the clock back before the expiry: still expired, because the journal says so.
    let server = TestServer::start().await;
    server
        .put("/api/v1/skus/A", json!({"total": 5, "lock_ttl_s": 60}))
        .await;
    server
        .post(
            "/api/v1/orders",
            json!({"order_id": "o1", "sku": "A", "qty": 2, "platform": "douyin"}),
        )
        .await;
    let data_dir = server.data_dir.clone();
    let kept = server.stop_keeping_data().await;

    let later = ManualClock::new(Timestamp::from_millis(START_MILLIS + 120_000));
    let server = TestServer::start_in(data_dir.clone(), ConfigLayer::default(), Some(later)).await;
    assert_eq!(server.get("/api/v1/orders/o1").await.1["status"], "expired");
    assert_eq!(server.stock("A").await["available"], 5);
    server.stop().await;

    let earlier = ManualClock::new(Timestamp::from_millis(START_MILLIS + 1_000));
    let server = TestServer::start_in(data_dir, ConfigLayer::default(), Some(earlier)).await;
    assert_eq!(server.get("/api/v1/orders/o1").await.1["status"], "expired");
    server.stop().await;
    drop(kept);
}

/// What the clients were told: order id → (qty, acknowledged as sold).
type Acknowledged = Arc<Mutex<BTreeMap<String, (u64, bool)>>>;

async fn client_load(base: String, worker: u32, round: u32, acknowledged: Acknowledged) {
    let client = reqwest::Client::new();
    for index in 0u64.. {
        let id = format!("r{round}-w{worker}-{index}");
        let qty = 1 + index % 3;
        let placed = client
            .post(format!("{base}/api/v1/orders"))
            .json(&json!({"order_id": id, "sku": "HOT", "qty": qty, "platform": "douyin"}))
            .send()
            .await;
        match placed {
            Ok(response) if response.status() == StatusCode::CREATED => {
                acknowledged.lock().insert(id.clone(), (qty, false));
            }
            _ => return,
        }
        if index % 2 == 0 {
            let paid = client
                .post(format!("{base}/api/v1/orders/{id}/confirm"))
                .send()
                .await;
            match paid {
                Ok(response) if response.status() == StatusCode::OK => {
                    acknowledged.lock().insert(id, (qty, true));
                }
                _ => return,
            }
        }
    }
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(url)
        .send()
        .await
        .expect("the server answers")
        .json()
        .await
        .expect("JSON")
}

async fn check_books(base: &str, acknowledged: &Acknowledged, attempted: &[String]) {
    let client = reqwest::Client::new();
    let acknowledged = acknowledged.lock().clone();
    let mut held = 0;
    for id in attempted {
        let response = client
            .get(format!("{base}/api/v1/orders/{id}"))
            .send()
            .await
            .expect("the server answers");
        let status = response.status();
        let body: Value = response.json().await.expect("JSON");
        if let Some((qty, sold)) = acknowledged.get(id) {
            assert_eq!(
                status,
                StatusCode::OK,
                "acknowledged order {id} lost: {body}"
            );
            if *sold {
                assert_eq!(body["status"], "sold", "acknowledged payment of {id} lost");
            }
            assert_eq!(body["lines"][0]["qty"], *qty);
        }
        if status == StatusCode::OK {
            let qty = body["lines"][0]["qty"].as_u64().expect("qty");
            assert!(
                body["status"] == "locked" || body["status"] == "sold",
                "{body}"
            );
            held += qty;
        }
    }
    let stock = get_json(&client, &format!("{base}/api/v1/skus/HOT")).await;
    let figure = |name: &str| stock[name].as_u64().expect("a quantity");
    assert_eq!(figure("locked") + figure("sold"), held, "{stock}");
    assert_eq!(
        figure("available"),
        figure("total") - figure("reserved") - figure("locked") - figure("sold")
    );
}

#[tokio::test]
async fn kill_nine_under_load_never_loses_an_acknowledged_operation() {
    // Goal: every acknowledged reserve and payment survives `kill -9`, and the books balance:
    // what the server holds is exactly the orders it knows, acknowledged or in flight.
    // Method: the real binary, 8 clients placing and paying orders; SIGKILL at a random
    // moment, restart, check; five times. Then a graceful stop (snapshot) and one more check.
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let seed = fastrand::u64(..);
    let mut rng = fastrand::Rng::with_seed(seed);
    let acknowledged: Acknowledged = Arc::default();
    let mut attempted: Vec<String> = Vec::new();
    let mut in_flight: Vec<String> = Vec::new();
    let binary = Binary::start(data_dir.path()).await;
    let client = reqwest::Client::new();
    let created = client
        .put(format!("{}/api/v1/skus/HOT", binary.base))
        .json(&json!({"total": 1_000_000}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(created.status(), StatusCode::OK);
    let mut binary = binary;
    for round in 0..5 {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                tokio::spawn(client_load(
                    binary.base.clone(),
                    worker,
                    round,
                    acknowledged.clone(),
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(rng.u64(200..700))).await;
        binary.kill();
        for worker in workers {
            worker.await.expect("the client task ends");
        }
        // Every id a client may have sent: the acknowledged ones, plus the one each client
        // had in flight at each kill so far, which may or may not have reached the disk.
        for worker in 0..8 {
            let next = acknowledged
                .lock()
                .keys()
                .filter(|id| id.starts_with(&format!("r{round}-w{worker}-")))
                .count();
            in_flight.push(format!("r{round}-w{worker}-{next}"));
        }
        attempted = acknowledged.lock().keys().cloned().collect();
        attempted.extend(in_flight.iter().cloned());
        binary = Binary::start(data_dir.path()).await;
        check_books(&binary.base, &acknowledged, &attempted).await;
    }
    assert!(
        100 < acknowledged.lock().len(),
        "seed {seed}: too little load to mean anything"
    );
    let pid = binary.child.id().to_string();
    let stopped = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let status = binary.child.wait().expect("the server exits");
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let binary = Binary::start(data_dir.path()).await;
    check_books(&binary.base, &acknowledged, &attempted).await;
    binary.kill();
}

#[tokio::test]
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers() {
    // Goal: when the disk refuses the journal, writes get 503 `storage_unavailable` and
    // nothing unpersisted is acknowledged; reads go on; writes resume when the disk does, and
    // what was acknowledged survives a crash after that.
    // Method: the real binary under a 256 KiB file-size limit (`prlimit --fsize`) with 1 MiB
    // segments, so no segment can be made; then the limit is lifted on the running process.
    let data_dir = tempfile::tempdir().expect("temporary directory");
    let binary = Binary::start_with(
        data_dir.path(),
        &["prlimit", "--fsize=262144:unlimited", "--"],
        &["--journal-segment-mib", "1"],
    )
    .await;
    let client = reqwest::Client::new();
    let put = |total: u64| {
        client
            .put(format!("{}/api/v1/skus/A", binary.base))
            .json(&json!({ "total": total }))
            .send()
    };
    let refused = put(10).await.expect("the server answers");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "storage_unavailable");
    let again = put(10).await.expect("the server answers");
    assert_eq!(again.status(), StatusCode::SERVICE_UNAVAILABLE);
    let health = client
        .get(format!("{}/healthz", binary.base))
        .send()
        .await
        .expect("reads keep working");
    assert_eq!(health.status(), StatusCode::OK);

    let pid = binary.child.id().to_string();
    let lifted = Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited:unlimited"])
        .status()
        .expect("prlimit runs");
    assert!(lifted.success());
    let mut accepted = false;
    for _ in 0..100 {
        let response = put(20).await.expect("the server answers");
        if response.status() == StatusCode::OK {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "writes resume once the disk takes them");
    let order = client
        .post(format!("{}/api/v1/orders", binary.base))
        .json(&json!({"order_id": "after", "sku": "A", "qty": 3, "platform": "douyin"}))
        .send()
        .await
        .expect("the server answers");
    assert_eq!(order.status(), StatusCode::CREATED);
    binary.kill();

    let binary = Binary::start(data_dir.path()).await;
    let stock = get_json(&client, &format!("{}/api/v1/skus/A", binary.base)).await;
    assert_eq!(stock["total"], 20, "{stock}");
    assert_eq!(stock["locked"], 3, "{stock}");
    binary.kill();
}

/// Syncs like the operating system, except that the first sync at `point` once `armed`
/// fails (EIO), and that syncs wait while `stalled` (a disk that has stopped answering).
#[derive(Debug, Default)]
struct TestDisk {
    point: Option<SyncPoint>,
    armed: std::sync::atomic::AtomicBool,
    failed: std::sync::atomic::AtomicBool,
    stalled: Mutex<bool>,
    resumed: parking_lot::Condvar,
}

impl TestDisk {
    fn failing_at(point: SyncPoint, armed: bool) -> Arc<TestDisk> {
        Arc::new(TestDisk {
            point: Some(point),
            armed: std::sync::atomic::AtomicBool::new(armed),
            ..TestDisk::default()
        })
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::Release);
    }

    fn has_failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Acquire)
    }

    fn stall(&self, stalled: bool) {
        *self.stalled.lock() = stalled;
        self.resumed.notify_all();
    }
}

impl Fsync for TestDisk {
    fn sync_file(&self, file: &std::fs::File, point: SyncPoint) -> std::io::Result<()> {
        let mut stalled = self.stalled.lock();
        while *stalled {
            self.resumed.wait(&mut stalled);
        }
        drop(stalled);
        if Some(point) == self.point
            && self.armed.load(std::sync::atomic::Ordering::Acquire)
            && !self.failed.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Err(std::io::Error::other("injected EIO"));
        }
        file.sync_data()
    }

    fn sync_directory(&self, directory: &std::path::Path) -> std::io::Result<()> {
        OsFsync.sync_directory(directory)
    }
}

#[tokio::test]
async fn a_failed_sync_at_a_segment_roll_answers_503_and_acknowledges_nothing_more() {
    // Goal: when the sync that closes a full segment fails, the server acknowledges nothing
    // more (503 storage_unavailable) until it restarts, and the restart holds every order it
    // did acknowledge.
    // Method: 1 MiB segments and a sync that fails at the first roll; place batches of
    // reserves until one is refused with 503; every later request is refused too and
    // /metrics shows the journal unhealthy; a restart on the same directory has every
    // acknowledged order.
    let failing = TestDisk::failing_at(SyncPoint::Roll, true);
    let layer = ConfigLayer {
        journal_segment_mib: Some(1),
        ..ConfigLayer::default()
    };
    let server = TestServer::with_journal_fsync(layer, failing.clone()).await;
    server.sku("A", 1_000_000).await;
    let mut acknowledged = Vec::new();
    let mut refused_at = None;
    for round in 0..200 {
        let ops: Vec<Value> = (0..500)
            .map(|index| {
                json!({"op": "reserve", "order_id": format!("o-{round}-{index}"),
                       "sku": "A", "qty": 1, "platform": "douyin"})
            })
            .collect();
        let (status, body) = server
            .post("/api/v1/orders/batch", json!({ "ops": ops }))
            .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(support::code(&body), "storage_unavailable");
            refused_at = Some(round);
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        acknowledged.extend((0..500).map(|index| format!("o-{round}-{index}")));
    }
    assert!(
        failing.failed.load(std::sync::atomic::Ordering::Acquire),
        "no roll happened"
    );
    assert!(
        refused_at.is_some(),
        "the batch across the failed roll was acknowledged"
    );
    for attempt in 0..3 {
        let (status, body) = server
            .post(
                "/api/v1/orders",
                json!({"order_id": format!("late-{attempt}"), "sku": "A", "qty": 1,
                       "platform": "douyin"}),
            )
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }
    assert!(
        server
            .metrics()
            .await
            .contains("stockpulse_journal_healthy 0"),
        "the journal reports itself unhealthy"
    );
    let data = server
        .stop_keeping_data()
        .await
        .expect("owned data directory");
    let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
    let restarted =
        TestServer::start_in(data.path().to_owned(), ConfigLayer::default(), Some(clock)).await;
    // Orders are journaled in order, so the last acknowledged one standing means all did;
    // the SKU's count confirms it.
    let last = acknowledged.last().expect("some batches were acknowledged");
    let (status, body) = restarted.get(&format!("/api/v1/orders/{last}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "acknowledged {last} was lost: {body}"
    );
    let locked = restarted.stock("A").await["locked"]
        .as_u64()
        .expect("locked");
    assert!(acknowledged.len() as u64 <= locked, "{locked} locked");
    restarted.stop().await;
}

/// A reserve of `qty` units of A as a JSON body.
fn reserve(order_id: &str, qty: i64) -> Value {
    json!({"order_id": order_id, "sku": "A", "qty": qty, "platform": "douyin"})
}

#[tokio::test]
async fn a_refusal_waits_for_the_change_it_rests_on() {
    // Goal: a 409 is an answer about the ledger's state, so it waits, like a success, until
    // what it rests on is durable: a platform never hears "sold out" because of a lock that
    // a crash could still take back.
    // Method: a disk that stalls its syncs; order o1 takes the last unit and waits; order o2
    // is refused for it and must still be waiting 300 ms later; once the disk answers, o1
    // gets 201 and o2 409 insufficient_stock.
    let disk = Arc::new(TestDisk::default());
    let server =
        Arc::new(TestServer::with_journal_fsync(ConfigLayer::default(), disk.clone()).await);
    server.sku("A", 1).await;
    disk.stall(true);
    let first = {
        let server = server.clone();
        tokio::spawn(async move { server.post("/api/v1/orders", reserve("o1", 1)).await })
    };
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                server.get("/api/v1/skus/A").await.1["locked"] == 1
            })
            .await
    );
    let second = {
        let server = server.clone();
        tokio::spawn(async move { server.post("/api/v1/orders", reserve("o2", 1)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !first.is_finished(),
        "o1 was answered before it was durable"
    );
    assert!(
        !second.is_finished(),
        "o2's refusal did not wait for o1's lock to be durable"
    );
    disk.stall(false);
    let (status, body) = first.await.expect("o1");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = second.await.expect("o2");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(support::code(&body), "insufficient_stock");
    Arc::into_inner(server).expect("one owner").stop().await;
}

#[tokio::test]
async fn websocket_commands_get_replies_while_the_journal_is_stuck() {
    // Goal: over /ws, as over HTTP, a command whose change cannot be made durable is
    // answered 503 storage_unavailable (at once when a sync failed, after the HTTP limit
    // when the disk stalls), and refusals that changed nothing follow right behind, in order.
    // Method: a stalled disk: a reserve, then a reserve with a negative qty; the reserve's
    // 503 comes after about 5 s, the refusal right behind it. Then a failed sync: a reserve
    // is answered 503 within a second, and so is every command after it.
    let disk = TestDisk::failing_at(SyncPoint::Batch, false);
    let server = TestServer::with_journal_fsync(ConfigLayer::default(), disk.clone()).await;
    server.sku("A", 10).await;
    let mut socket = crate::push::connect(&server, "stockpulse.v1.json").await;
    let mut replies = Vec::new();
    let read = async |socket: &mut crate::push::Socket, replies: &mut Vec<Value>, count| {
        while replies.len() < count {
            let messages = tokio::time::timeout(Duration::from_secs(8), socket.next())
                .await
                .expect("a reply within 8 s")
                .expect("open")
                .expect("a frame");
            if let tokio_tungstenite::tungstenite::Message::Text(text) = messages {
                let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
                let messages = match value {
                    Value::Array(items) => items,
                    one => vec![one],
                };
                messages.iter().for_each(crate::protocol::conforms);
                replies.extend(messages);
            }
        }
    };
    disk.stall(true);
    let asked = tokio::time::Instant::now();
    let mut command = reserve("w1", 1);
    command["op"] = json!("reserve");
    command["id"] = json!("c1");
    crate::push::send(&mut socket, command).await;
    let mut bad = reserve("w2", -1);
    bad["op"] = json!("reserve");
    bad["id"] = json!("c2");
    crate::push::send(&mut socket, bad).await;
    read(&mut socket, &mut replies, 2).await;
    let waited = asked.elapsed();
    assert_eq!(replies[0]["id"], "c1");
    assert_eq!(replies[0]["status"], 503, "{replies:?}");
    assert_eq!(replies[0]["error"]["code"], "storage_unavailable");
    assert_eq!(replies[1]["id"], "c2");
    assert_eq!(replies[1]["status"], 422, "{replies:?}");
    assert!(
        Duration::from_secs(4) < waited && waited < Duration::from_secs(7),
        "{waited:?}"
    );

    disk.arm();
    disk.stall(false);
    let asked = tokio::time::Instant::now();
    for (index, id) in ["c3", "c4"].into_iter().enumerate() {
        let mut command = reserve(&format!("w{}", 3 + index), 1);
        command["op"] = json!("reserve");
        command["id"] = json!(id);
        crate::push::send(&mut socket, command).await;
    }
    read(&mut socket, &mut replies, 4).await;
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    assert!(disk.has_failed());
    for reply in &replies[2..] {
        assert_eq!(reply["status"], 503, "{replies:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_red_alert_lost_before_it_was_recorded_is_raised_at_start_up() {
    // Goal: the facts that turn a listing red are durable, but its alert reaches the alert
    // store a moment later, on another thread: a crash in between must not lose the red
    // alert for good. At start-up, a listing above the last level its alerts recorded gets
    // an alert raised then.
    // Method: a listing driven to red by one order; the alert store is then removed, as if
    // the process had died before it saved the alert; the restarted server lists a red
    // alert for the listing, marked as raised at start-up.
    let clock = ManualClock::new(Timestamp::from_millis(START_MILLIS));
    let server = TestServer::with_config(ConfigLayer::default()).await;
    server.sku("LIP", 100).await;
    let room = json!({
        "starts_at": "2026-11-25T12:00:00Z", "ends_at": "2026-11-25T15:00:00Z",
        "listings": [{"sku": "LIP", "forecast": 10}],
    });
    let (status, body) = server.put("/api/v1/rooms/r1", room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": "big", "sku": "LIP", "qty": 13, "platform": "douyin",
                   "room": "r1", "paid": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let red = |alerts: &Value| {
        alerts["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|alert| alert["sku"] == "LIP" && alert["to"] == "red")
    };
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                red(&server.get("/api/v1/alerts").await.1)
            })
            .await
    );
    let data = server
        .stop_keeping_data()
        .await
        .expect("owned data directory");
    std::fs::remove_file(data.path().join("notify.redb")).expect("the alert store");

    let restarted =
        TestServer::start_in(data.path().to_owned(), ConfigLayer::default(), Some(clock)).await;
    let (status, alerts) = restarted.get("/api/v1/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(red(&alerts), "{alerts}");
    let raised = alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|alert| alert["to"] == "red")
        .expect("the red alert");
    assert_eq!(raised["from"], "green");
    assert!(
        raised["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|reason| reason["rule"] == "restart"),
        "{raised}"
    );
    restarted.stop().await;
}

#[tokio::test]
async fn screens_and_alerts_see_only_what_is_durable() {
    // Goal: everything derived from the ledger (room views, snapshots, levels, alerts,
    // auto-halt) reads what the journal has made durable, never the ledger ahead of it: an
    // order the disk has not yet taken shows nowhere and alerts nobody, and once it is
    // durable it shows and alerts.
    // Method: a disk that stalls; an order takes 13 units of a listing forecast at 10, with
    // auto-halt (red once durable), and waits; meanwhile a new screen's snapshots, the room over HTTP
    // and the alert feed (across alert-engine ticks) show the listing untouched; then the
    // disk answers: the order is acknowledged, the alert is red and the listing halted.
    let disk = Arc::new(TestDisk::default());
    let server =
        Arc::new(TestServer::with_journal_fsync(ConfigLayer::default(), disk.clone()).await);
    server.sku("A", 100).await;
    let room = json!({
        "starts_at": "2026-11-25T12:00:00Z", "ends_at": "2026-11-25T15:00:00Z",
        "listings": [{"sku": "A", "forecast": 10, "policy": {"auto_halt": true}}],
    });
    let (status, body) = server.put("/api/v1/rooms/r1", room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    disk.stall(true);
    let pending = {
        let server = server.clone();
        let mut body = reserve("all", 13);
        body["room"] = json!("r1");
        tokio::spawn(async move { server.post("/api/v1/orders", body).await })
    };
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                server.stock("A").await["locked"] == 13
            })
            .await,
        "the ledger took the order"
    );

    let mut screen = crate::push::connect(&server, "stockpulse.v1.json").await;
    crate::push::send(
        &mut screen,
        json!({"op": "subscribe", "topics": ["room:r1", "sku:A"]}),
    )
    .await;
    let mut snapshots = Vec::new();
    while snapshots.len() < 2 {
        snapshots.extend(crate::push::next_messages(&mut screen).await);
    }
    let room_snapshot = snapshots
        .iter()
        .find(|message| message["topic"] == "room:r1");
    let listing = &room_snapshot.expect("a room snapshot")["room"]["listings"][0];
    assert_eq!(listing["consumed"], 0, "{listing}");
    assert_eq!(listing["stock"]["available"], 100);
    assert_eq!(listing["level"], "green");
    let sku_snapshot = snapshots.iter().find(|message| message["topic"] == "sku:A");
    assert_eq!(
        sku_snapshot.expect("a SKU snapshot")["stock"]["available"],
        100
    );
    let (_, view) = server.get("/api/v1/rooms/r1").await;
    assert_eq!(view["listings"][0]["consumed"], 0, "{view}");
    // Ticks re-evaluate every listing each second: none may see the pending order.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (_, alerts) = server.get("/api/v1/alerts").await;
    assert_eq!(
        alerts["alerts"].as_array().map(Vec::len),
        Some(0),
        "{alerts}"
    );
    assert!(!pending.is_finished());

    disk.stall(false);
    let (status, body) = pending.await.expect("the order");
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                let (_, view) = server.get("/api/v1/rooms/r1").await;
                let listing = &view["listings"][0];
                listing["level"] == "red" && listing["halted"] == true
            })
            .await
    );
    let (_, alerts) = server.get("/api/v1/alerts").await;
    assert!(
        alerts["alerts"]
            .as_array()
            .is_some_and(|alerts| alerts.iter().any(|alert| alert["to"] == "red")),
        "{alerts}"
    );
    drop(screen);
    Arc::into_inner(server).expect("one owner").stop().await;
}

#[tokio::test]
async fn kill_nine_right_after_the_order_that_turns_a_listing_red_still_alerts_red() {
    // Goal: the real binary killed with SIGKILL the moment an order that turns a listing red
    // is acknowledged (before or after its alert reached the alert store, whichever the race
    // gives) shows a red alert for the listing after it restarts.
    // Method: a listing forecast at 10; an order of 13 units naming the room; SIGKILL as soon
    // as it is acknowledged; restart on the same directory; the alert feed has a red alert.
    use stockpulse::clock::{Clock, Rfc3339, SystemClock};
    let directory = tempfile::tempdir().expect("temporary directory");
    let server = Binary::start(directory.path()).await;
    let client = reqwest::Client::new();
    let now = SystemClock.now();
    let put = |path: &str, body: Value| client.put(format!("{}{path}", server.base)).json(&body);
    let created = put("/api/v1/skus/LIP", json!({"total": 100}))
        .send()
        .await
        .expect("sku");
    assert_eq!(created.status(), StatusCode::OK);
    let room = json!({
        "starts_at": Rfc3339(Timestamp::from_millis(now.as_millis() - 600_000)).to_string(),
        "ends_at": Rfc3339(Timestamp::from_millis(now.as_millis() + 3_600_000)).to_string(),
        "listings": [{"sku": "LIP", "forecast": 10}],
    });
    let created = put("/api/v1/rooms/r1", room).send().await.expect("room");
    assert_eq!(created.status(), StatusCode::OK);
    let order = json!({"order_id": "big", "sku": "LIP", "qty": 13, "platform": "douyin",
                       "room": "r1", "paid": true});
    let placed = client
        .post(format!("{}/api/v1/orders", server.base))
        .json(&order)
        .send()
        .await
        .expect("order");
    assert_eq!(placed.status(), StatusCode::CREATED);
    server.kill();

    let restarted = Binary::start(directory.path()).await;
    let alerts = get_json(&client, &format!("{}/api/v1/alerts", restarted.base)).await;
    assert!(
        alerts["alerts"].as_array().is_some_and(|alerts| alerts
            .iter()
            .any(|alert| alert["sku"] == "LIP" && alert["to"] == "red")),
        "{alerts}"
    );
    restarted.kill();
}

#[tokio::test]
async fn while_the_journal_cannot_write_time_moves_no_level() {
    // Goal: levels also move with time (the alert engine re-evaluates every listing each
    // second), but not while the journal cannot write: no level change, no alert, no
    // auto-halt may rest on a state that could still turn out to be lost.
    // Method: 11 units against a forecast of 10 are yellow at the start of the show (cover
    // below 1.2 × the demand to come) and green an hour in; a failed sync poisons the
    // journal, the clock moves an hour, and ticks pass: no alert beyond the first yellow.
    let disk = TestDisk::failing_at(SyncPoint::Batch, false);
    let server = TestServer::with_journal_fsync(ConfigLayer::default(), disk.clone()).await;
    server.sku("A", 11).await;
    let room = json!({
        "starts_at": "2026-11-25T12:00:00Z", "ends_at": "2026-11-25T15:00:00Z",
        "listings": [{"sku": "A", "forecast": 10}],
    });
    let (status, body) = server.put("/api/v1/rooms/r1", room).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let alerts = || async { server.get("/api/v1/alerts").await.1["alerts"].clone() };
    assert!(
        server
            .eventually(Duration::from_secs(5), || async {
                alerts()
                    .await
                    .as_array()
                    .is_some_and(|alerts| alerts.len() == 1)
            })
            .await
    );
    assert_eq!(alerts().await[0]["to"], "yellow");
    disk.arm();
    let (status, _) = server.put("/api/v1/skus/B", json!({"total": 1})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(disk.has_failed());
    server.clock.advance(Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let seen = alerts().await;
    assert_eq!(seen.as_array().map(Vec::len), Some(1), "{seen}");
    server.stop().await;
}

#[tokio::test]
async fn a_snapshot_reports_how_long_it_held_the_ledger() {
    // Goal: operators see what a snapshot costs the order path: /metrics counts snapshots and
    // gives the longest any of the newest one's lock holds lasted, the pause it imposed.
    // Method: a server that snapshots every 1,000 facts (the least it allows) takes 1,200
    // orders in batches; /metrics then shows a snapshot and a hold longer than nothing and
    // far shorter than a second.
    let server = TestServer::with_config(ConfigLayer {
        snapshot_every_facts: Some(1_000),
        ..ConfigLayer::default()
    })
    .await;
    server.sku("A", 10_000).await;
    for batch in 0..6 {
        let ops: Vec<Value> = (0..200)
            .map(|index| {
                json!({"op": "sell", "order_id": format!("o{batch}-{index}"), "sku": "A", "qty": 1, "platform": "douyin"})
            })
            .collect();
        let (status, body) = server
            .post("/api/v1/orders/batch", json!({ "ops": ops }))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let gauge = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = server.metrics().await;
        if gauge(&text, "stockpulse_journal_snapshots_total").is_some_and(|count| 1.0 <= count) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no snapshot within 10 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hold = gauge(&text, "stockpulse_journal_snapshot_longest_hold_seconds")
        .expect("the longest hold in /metrics");
    assert!(0.0 < hold && hold < 1.0, "longest hold {hold} s");
}
