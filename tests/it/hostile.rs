//! Hostile input: every decoder of outside bytes (HTTP bodies, WebSocket messages in JSON and
//! MessagePack, journal records and snapshots) fed arbitrary bytes, arbitrary JSON built
//! from the real field names, valid messages with bytes flipped, and deep nesting. None may
//! panic; the fuzz targets in `fuzz/` push the same doors harder.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use stockpulse::fuzzing;

/// Field names the decoders know, so generated objects get past the first checks.
const FIELDS: [&str; 20] = [
    "op",
    "order_id",
    "sku",
    "qty",
    "platform",
    "room",
    "lines",
    "paid",
    "ops",
    "topics",
    "since",
    "epoch",
    "id",
    "token",
    "total",
    "reserved",
    "starts_at",
    "ends_at",
    "listings",
    "forecast",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|number| json!(number)),
        "[a-z:0-9-]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("reserve"),
            Just("subscribe"),
            Just("ack"),
            Just("auth"),
            Just("sell"),
            Just("2026-11-25T12:00:00Z"),
            Just("douyin"),
            Just("room:r1"),
            Just("sku:A"),
        ]
        .prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(&FIELDS[..]), inner), 0..8).prop_map(
                |pairs| {
                    let object: Map<String, Value> = pairs
                        .into_iter()
                        .map(|(key, value)| (key.to_owned(), value))
                        .collect();
                    Value::Object(object)
                }
            ),
        ]
    })
}

fn every_door(bytes: &[u8]) {
    let _ = fuzzing::http_bodies(bytes);
    let _ = fuzzing::client_message(bytes);
    let _ = fuzzing::journal(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_are_refused_without_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        every_door(&bytes);
    }

    #[test]
    fn arbitrary_json_and_its_messagepack_are_refused_or_taken_without_a_panic(value in value()) {
        every_door(value.to_string().as_bytes());
        let packed = rmp_serde::to_vec_named(&value).expect("encodes");
        every_door(&packed);
    }

    #[test]
    fn valid_messages_with_bytes_flipped_do_not_panic(
        pick in 0usize..4,
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let valid = [
            json!({"order_id": "o1", "sku": "A", "qty": 2, "platform": "douyin", "room": "r1"}),
            json!({"op": "subscribe", "topics": ["room:r1", "sku:A"], "since": {"room:r1": 3}, "epoch": 7}),
            json!({"op": "reserve", "id": "c1", "order_id": "o1", "lines": [{"sku": "A", "qty": 1}], "platform": "douyin"}),
            json!({"starts_at": "2026-11-25T12:00:00Z", "ends_at": "2026-11-25T15:00:00Z",
                   "listings": [{"sku": "A", "forecast": 10, "plan": [{"elapsed_s": 60, "share": 0.5}],
                                 "policy": {"yellow": 0.7, "auto_halt": true}}]}),
        ];
        for mut bytes in [valid[pick].to_string().into_bytes(), rmp_serde::to_vec_named(&valid[pick]).expect("encodes")] {
            for (index, byte) in &flips {
                let at = index.index(bytes.len());
                bytes[at] = *byte;
            }
            every_door(&bytes);
        }
    }
}

#[test]
fn the_valid_forms_are_taken() {
    // Goal: the doors are open to what they should take, so the properties above test real
    // decoders and not ones that refuse everything.
    let order = json!({"order_id": "o1", "sku": "A", "qty": 2, "platform": "douyin"}).to_string();
    assert!(fuzzing::http_bodies(order.as_bytes())[0]);
    let subscribe = json!({"op": "subscribe", "topics": ["room:r1"]});
    assert!(fuzzing::client_message(subscribe.to_string().as_bytes())[0]);
    let packed = rmp_serde::to_vec_named(&subscribe).expect("encodes");
    assert!(fuzzing::client_message(&packed)[1]);
}

#[test]
fn deep_nesting_is_refused_without_exhausting_the_stack() {
    // Goal: a hundred thousand levels of arrays, in JSON and in MessagePack, get an error.
    let json = "[".repeat(100_000);
    every_door(json.as_bytes());
    let object = "{\"op\":".repeat(50_000);
    every_door(object.as_bytes());
    // MessagePack: fixarray of one element, nested.
    let packed = vec![0x91u8; 100_000];
    every_door(&packed);
    let maps = [0x81u8, 0xa2, b'o', b'p'].repeat(25_000);
    every_door(&maps);
}

mod connections {
    use std::net::SocketAddr;
    use std::time::Duration;

    use serde_json::json;
    use stockpulse::config::ConfigLayer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};

    use crate::push::{connect, next_messages, send};
    use crate::support::TestServer;

    async fn from(local: &str, server: SocketAddr) -> TcpStream {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(format!("{local}:0").parse().expect("an address"))
            .expect("bind");
        socket.connect(server).await.expect("connected")
    }

    /// Whether the server closed `stream` within `wait` (a read returns end of stream or an
    /// error) rather than leaving it open.
    async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
        let mut buffer = [0u8; 512];
        loop {
            match tokio::time::timeout(wait, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn a_thousand_junk_connections_do_not_stop_a_real_client() {
        // Goal: idle sockets, half-sent handshakes and garbage bytes, a thousand in all, do
        // not keep a real client from reserving stock and seeing its push within 100 ms; the
        // ones that never finish their headers are dropped after the header deadline.
        let server = TestServer::with_config(ConfigLayer {
            header_timeout_s: Some(2),
            ..ConfigLayer::default()
        })
        .await;
        server.sku("A", 100).await;
        let mut junk = Vec::new();
        for index in 0..1000 {
            let mut stream = TcpStream::connect(server.address).await.expect("connected");
            match index % 3 {
                0 if index % 2 == 0 => {}
                // One byte, or the HTTP/2 preface, and then nothing.
                0 if index % 4 == 1 => {
                    let _ = stream.write_all(b"P").await;
                }
                0 => {
                    let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                }
                1 => {
                    let head = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
                    let _ = stream.write_all(head.as_bytes()).await;
                }
                _ => {
                    let garbage: Vec<u8> =
                        (0..64).map(|byte: u32| (byte * 37 + index) as u8).collect();
                    let _ = stream.write_all(&garbage).await;
                }
            }
            junk.push(stream);
        }
        let mut client = connect(&server, "stockpulse.v1.json").await;
        send(&mut client, json!({"op": "subscribe", "topics": ["sku:A"]})).await;
        assert_eq!(next_messages(&mut client).await[0]["type"], "snapshot");
        let started = tokio::time::Instant::now();
        let (status, _) = server
            .post(
                "/api/v1/orders",
                json!({"order_id": "real", "sku": "A", "qty": 1, "platform": "douyin"}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED);
        let pushed = next_messages(&mut client).await;
        let waited = started.elapsed();
        assert_eq!(pushed[0]["stock"]["locked"], 1);
        assert!(waited < Duration::from_millis(100), "{waited:?}");
        // The idle and half-sent ones are dropped after the 2 s header deadline.
        for stream in junk.iter_mut().step_by(3).take(20) {
            assert!(closed_within(stream, Duration::from_secs(5)).await);
        }
        for stream in junk.iter_mut().skip(1).step_by(3).take(20) {
            assert!(closed_within(stream, Duration::from_secs(5)).await);
        }
        server.stop().await;
    }

    #[tokio::test]
    async fn deeply_nested_websocket_messages_get_an_error_and_the_session_goes_on() {
        // Goal: 40,000 levels of nesting in MessagePack and JSON frames (under the 64 KiB
        // message limit) get an error each; the session stays and the ledger is unchanged.
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let server = TestServer::start().await;
        server.sku("A", 10).await;
        let mut packed = connect(&server, "stockpulse.v1.msgpack").await;
        packed
            .send(Message::Binary(vec![0x91u8; 40_000].into()))
            .await
            .expect("sent");
        assert_eq!(
            next_messages(&mut packed).await[0]["code"],
            "invalid_message"
        );
        let mut text = connect(&server, "stockpulse.v1.json").await;
        text.send(Message::Text("[".repeat(40_000).into()))
            .await
            .expect("sent");
        assert_eq!(next_messages(&mut text).await[0]["code"], "invalid_message");
        send(&mut text, json!({"op": "ping"})).await;
        assert_eq!(next_messages(&mut text).await[0]["type"], "pong");
        assert_eq!(server.stock("A").await["available"], 10);
        server.stop().await;
    }

    #[tokio::test]
    async fn an_address_gets_so_many_connections_and_so_many_a_second() {
        // Goal: with loopback counted, one address gets at most its connections and its new
        // connections a second; the rest are closed at once; another address is unaffected.
        let server = TestServer::with_config(ConfigLayer {
            limit_loopback: Some(true),
            connections_per_ip_max: Some(4),
            connections_per_ip_per_s: Some(6),
            ..ConfigLayer::default()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(from("127.0.0.2", server.address).await);
        }
        let mut fifth = from("127.0.0.2", server.address).await;
        assert!(closed_within(&mut fifth, Duration::from_secs(2)).await);
        for stream in &mut held {
            assert!(!closed_within(stream, Duration::from_millis(50)).await);
        }
        let mut other = from("127.0.0.3", server.address).await;
        other
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("sent");
        let mut answer = String::new();
        other.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // 127.0.0.4 opens and closes: the sixth new connection within a second is refused.
        let mut opened = Vec::new();
        for _ in 0..6 {
            let stream = from("127.0.0.4", server.address).await;
            drop(stream);
            opened.push(());
        }
        let mut seventh = from("127.0.0.4", server.address).await;
        assert!(closed_within(&mut seventh, Duration::from_secs(2)).await);
        let metrics = server.metrics().await;
        assert!(
            metrics.contains("stockpulse_connections_refused_total 2"),
            "{metrics}"
        );
        server.stop().await;
    }
}
