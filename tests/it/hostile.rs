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
