//! Alert delivery against real HTTP receivers (axum servers inside the test): retries until
//! a receiver answers, one delivery per idempotency key, signatures that verify, an outbox
//! that survives a restart, escalation until acknowledgement, and dead letters.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{Value, json};
use sha2::Sha256;
use stockpulse::alert::Level;
use stockpulse::config::ConfigLayer;
use stockpulse::notify::{Format, NotifyConfig, ReceiverConfig, RouteConfig};

use crate::push::{next_messages, send};
use crate::support::TestServer;

const SECRET: &str = "receiver-secret-0123456789";

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: String,
    answered: u16,
}

/// A webhook receiver on an ephemeral port that fails the first `fail_first` requests
/// (500) and answers 200 after that.
#[derive(Clone)]
struct Receiver {
    address: SocketAddr,
    fail_first: Arc<AtomicU32>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(fail_first: u32) -> Receiver {
        let receiver = Receiver {
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            fail_first: Arc::new(AtomicU32::new(fail_first)),
            received: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            address,
            ..receiver
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.address)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }

    fn delivered(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|request| request.answered == 200)
            .collect()
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let failing = receiver
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
            left.checked_sub(1)
        })
        .is_ok();
    let status = if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    receiver.received.lock().push(Received {
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        answered: status.as_u16(),
    });
    status
}

/// Checks the signature header against the body, as a receiver would.
fn verify(request: &Received) {
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let timestamp = header("x-stockpulse-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.{}", request.body).as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(header("x-stockpulse-signature"), expected);
    assert!(!header("idempotency-key").is_empty());
}

fn key(request: &Received) -> String {
    request
        .headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn receiver_config(name: &str, url: String, format: Format) -> ReceiverConfig {
    ReceiverConfig {
        name: name.to_owned(),
        url,
        format,
        secret: SECRET.to_owned(),
        headers: BTreeMap::from([("x-api-key".to_owned(), "k-1".to_owned())]),
        per_minute: 0,
        per_hour: 0,
        template_id: if format == Format::Sms {
            "SMS_0001".to_owned()
        } else {
            String::new()
        },
        sign_name: "stockpulse".to_owned(),
        phones: vec!["+8613800000000".to_owned()],
    }
}

/// Reds go to `ops`; hot reds to `sms` as well; escalations to `sms`.
fn layer(ops: &Receiver, sms: &Receiver, max_age_s: u64) -> ConfigLayer {
    ConfigLayer {
        notify: Some(NotifyConfig {
            receivers: vec![
                receiver_config("ops", ops.url(), Format::Json),
                receiver_config("sms", sms.url(), Format::Sms),
            ],
            routes: vec![
                RouteConfig {
                    levels: vec![Level::Red],
                    receivers: vec!["ops".to_owned()],
                    ..RouteConfig::default()
                },
                RouteConfig {
                    levels: vec![Level::Red],
                    hot: Some(true),
                    receivers: vec!["ops".to_owned(), "sms".to_owned()],
                    ..RouteConfig::default()
                },
            ],
            escalation: vec!["sms".to_owned()],
            max_age_s,
            ..NotifyConfig::default()
        }),
        ..ConfigLayer::default()
    }
}

/// A room at 90 minutes into its show with listings `LIP` (normal) and `PEN` (hot); each
/// SKU has 10 units, so selling them all is red.
async fn show(server: &TestServer) {
    server.sku("LIP", 10).await;
    server.sku("PEN", 10).await;
    let (status, body) = server
        .put(
            "/api/v1/rooms/r1",
            json!({
                "starts_at": "2026-11-25T12:00:00Z",
                "ends_at": "2026-11-25T15:00:00Z",
                "listings": [
                    {"sku": "LIP", "forecast": 1000},
                    {"sku": "PEN", "forecast": 1000, "policy": {"hot": true}},
                ],
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    server.clock.advance(Duration::from_secs(90 * 60));
}

async fn sell_out(server: &TestServer, sku: &str) {
    let (status, body) = server
        .post(
            "/api/v1/orders",
            json!({"order_id": format!("all-{sku}"), "sku": sku, "qty": 10, "platform": "douyin", "room": "r1", "paid": true}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

/// The alert of `sku` going to `to`, as the API lists it, once its first delivery is in
/// `state` (the notifier records a result a moment after the receiver answered).
async fn alert_once(server: &TestServer, sku: &str, to: &str, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..50 {
        let (_, alerts) = server.get("/api/v1/alerts").await;
        if let Some(alert) = alerts["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .find(|alert| alert["sku"] == sku && alert["to"] == to)
        {
            if alert["deliveries"][0]["state"] == state {
                return alert.clone();
            }
            last = alert.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no {to} alert of {sku} with a {state} delivery: {last}");
}

/// Moves the server's clock `step` at a time (letting the notifier run in between) until
/// `done`, for at most `steps` steps.
async fn advance_until(
    server: &TestServer,
    step: Duration,
    steps: u32,
    done: impl Fn() -> bool,
) -> bool {
    for _ in 0..steps {
        if done() {
            return true;
        }
        server.clock.advance(step);
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    done()
}

#[tokio::test]
async fn an_alert_reaches_a_failing_receiver_once_after_retries_signed() {
    // Goal: a receiver failing its first three calls gets the alert after retries, every
    // attempt with the same idempotency key and a signature that verifies; it is accepted
    // exactly once; the API shows the delivery and its attempts.
    let ops = Receiver::start(3).await;
    let sms = Receiver::start(0).await;
    let server = TestServer::with_config(layer(&ops, &sms, 3600)).await;
    show(&server).await;
    sell_out(&server, "LIP").await;
    let delivered = advance_until(&server, Duration::from_secs(5), 100, || {
        !ops.delivered().is_empty()
    })
    .await;
    assert!(delivered, "{:?}", ops.received());
    let requests = ops.received();
    assert_eq!(
        requests.len(),
        4,
        "three failures, then one success: {requests:?}"
    );
    for request in &requests {
        verify(request);
        assert_eq!(key(request), key(&requests[0]));
        assert_eq!(
            request
                .headers
                .get("x-api-key")
                .and_then(|value| value.to_str().ok()),
            Some("k-1")
        );
    }
    let body: Value = serde_json::from_str(&requests[3].body).expect("JSON");
    assert_eq!(body["alerts"][0]["to"], "red");
    assert_eq!(body["alerts"][0]["sku"], "LIP");
    assert_eq!(body["idempotency_key"], json!(key(&requests[0])));
    assert!(sms.received().is_empty(), "LIP is not hot");

    let alert = alert_once(&server, "LIP", "red", "delivered").await;
    assert_eq!(alert["state"], "open");
    assert_eq!(alert["deliveries"][0]["attempts"], 4);
    // No second message for the same transition, however long we wait.
    advance_until(&server, Duration::from_secs(60), 5, || false).await;
    assert_eq!(ops.delivered().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn pending_deliveries_survive_a_restart() {
    // Goal: a delivery still failing when the server stops is sent after a restart, with the
    // same idempotency key.
    let ops = Receiver::start(u32::MAX).await;
    let sms = Receiver::start(0).await;
    let server = TestServer::with_config(layer(&ops, &sms, 3600)).await;
    show(&server).await;
    sell_out(&server, "LIP").await;
    let attempted = advance_until(&server, Duration::from_secs(5), 50, || {
        !ops.received().is_empty()
    })
    .await;
    assert!(attempted);
    let first_key = key(&ops.received()[0]);
    let clock = server.clock.clone();
    let data = server.stop_keeping_data().await;
    ops.fail_first.store(0, Ordering::SeqCst);
    let restarted = TestServer::start_in(
        data.as_ref().expect("data").path().to_owned(),
        layer(&ops, &sms, 3600),
        Some(clock),
    )
    .await;
    let delivered = advance_until(&restarted, Duration::from_secs(30), 100, || {
        !ops.delivered().is_empty()
    })
    .await;
    assert!(delivered, "{:?}", ops.received());
    assert_eq!(key(&ops.delivered()[0]), first_key);
    alert_once(&restarted, "LIP", "red", "delivered").await;
    restarted.stop().await;
    drop(data);
}

#[tokio::test]
async fn a_hot_red_escalates_until_acknowledged() {
    // Goal: a hot listing's red reaches both receivers at once; unacknowledged after two
    // minutes it escalates to the SMS gateway (its request shape) and repeats; an
    // acknowledgement over the API stops it and shows on the alerts topic.
    let ops = Receiver::start(0).await;
    let sms = Receiver::start(0).await;
    let server = TestServer::with_config(layer(&ops, &sms, 3600)).await;
    show(&server).await;
    let mut console = crate::push::connect(&server, "stockpulse.v1.json").await;
    send(
        &mut console,
        json!({"op": "subscribe", "topics": ["alerts"]}),
    )
    .await;
    assert_eq!(next_messages(&mut console).await[0]["type"], "snapshot");
    sell_out(&server, "PEN").await;
    assert!(
        advance_until(&server, Duration::from_secs(5), 20, || {
            !ops.delivered().is_empty() && !sms.delivered().is_empty()
        })
        .await
    );
    let first: Value = serde_json::from_str(&sms.delivered()[0].body).expect("JSON");
    assert_eq!(first["TemplateCode"], "SMS_0001");
    assert_eq!(first["PhoneNumbers"], "+8613800000000");
    let parameters: Value =
        serde_json::from_str(first["TemplateParam"].as_str().expect("a JSON string"))
            .expect("JSON");
    assert_eq!(parameters["level"], "red");
    assert_eq!(parameters["level_zh"], "告急");
    assert_eq!(parameters["escalation"], false);
    // A Chinese template reads its words: the summary in both languages.
    let summary_zh = parameters["summary_zh"]
        .as_str()
        .expect("a Chinese summary");
    assert!(
        summary_zh.contains("商品 PEN") && summary_zh.contains("→ 告急"),
        "{summary_zh}"
    );
    assert!(
        parameters["summary"]
            .as_str()
            .expect("an English summary")
            .contains("-> red")
    );

    assert!(
        advance_until(&server, Duration::from_secs(30), 40, || {
            2 <= sms.delivered().len()
        })
        .await
    );
    let escalation: Value = serde_json::from_str(&sms.delivered()[1].body).expect("JSON");
    let parameters: Value =
        serde_json::from_str(escalation["TemplateParam"].as_str().expect("string")).expect("JSON");
    assert_eq!(parameters["escalation"], true);
    assert!(
        parameters["summary_zh"]
            .as_str()
            .expect("a Chinese summary")
            .starts_with("【未确认】")
    );

    let (_, open) = server.get("/api/v1/alerts?state=open").await;
    let red = open["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .find(|alert| alert["sku"] == "PEN" && alert["to"] == "red")
        .expect("the red alert is open");
    assert!(1 <= red["escalations"].as_u64().expect("count"));
    // The console acknowledges over its WebSocket; a second acknowledgement over HTTP keeps
    // the first.
    send(
        &mut console,
        json!({"op": "ack", "id": red["id"], "by": "小王"}),
    )
    .await;
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|message: &Value| message["type"] == "acked")
    {
        seen.extend(next_messages(&mut console).await);
    }
    let acked = seen
        .iter()
        .find(|message| message["type"] == "acked")
        .expect("acked");
    assert_eq!(acked["alert"]["state"], "acknowledged");
    while !seen.iter().any(|message: &Value| {
        message["type"] == "alert_state" && message["state"] == "acknowledged"
    }) {
        seen.extend(next_messages(&mut console).await);
    }
    let (status, again) = server
        .post(
            &format!("/api/v1/alerts/{}/ack", red["id"]),
            json!({"by": "other"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["state"], "acknowledged");
    assert_eq!(again["acknowledged_by"], "小王");
    let after_ack = sms.delivered().len();
    advance_until(&server, Duration::from_secs(60), 8, || false).await;
    assert_eq!(
        sms.delivered().len(),
        after_ack,
        "no escalation after the ack"
    );
    let (status, missing) = server.post("/api/v1/alerts/999/ack", json!({})).await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("alert_not_found"))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_delivery_failing_past_its_maximum_age_is_dead_lettered() {
    // Goal: a receiver that never answers makes the delivery dead after `max_age_s`; it is
    // listed as such, and the next alerts are still attempted.
    let ops = Receiver::start(u32::MAX).await;
    let sms = Receiver::start(0).await;
    let server = TestServer::with_config(layer(&ops, &sms, 120)).await;
    show(&server).await;
    sell_out(&server, "LIP").await;
    let dead = advance_until(&server, Duration::from_secs(20), 60, || {
        ops.received().len() >= 3
    })
    .await;
    assert!(dead);
    let mut listed = Value::Null;
    for _ in 0..50 {
        let (_, deliveries) = server.get("/api/v1/deliveries?state=dead").await;
        if !deliveries["deliveries"]
            .as_array()
            .expect("list")
            .is_empty()
        {
            listed = deliveries;
            break;
        }
        server.clock.advance(Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let dead = &listed["deliveries"][0];
    assert_eq!(dead["receiver"], "ops");
    assert!(dead["last_error"].as_str().expect("error").contains("500"));
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("stockpulse_notify_dead_letters_total 1"),
        "{metrics}"
    );
    let (status, _) = server.get("/api/v1/deliveries?state=lost").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    server.stop().await;
}
