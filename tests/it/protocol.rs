//! The `/ws` contract: every server message a test reads is checked against the AsyncAPI
//! document the server serves at `/api/asyncapi.json` (`conforms`, called where the tests
//! decode frames); the document itself is served, complete, and its examples hold.
//!
//! The check is stricter than the document: an object may carry no field the document does
//! not name (the document leaves clients free to ignore new fields, the tests do not let the
//! server add one without saying so).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::{Value, json};

use crate::push::{connect, next_messages, send};
use crate::support::TestServer;

/// The server messages' validators, by the `type` each carries: (message name, validator).
type Validators = BTreeMap<String, Vec<(String, jsonschema::Validator)>>;

fn validators(operation: &str) -> &'static Validators {
    static SERVER: OnceLock<Validators> = OnceLock::new();
    static CLIENT: OnceLock<Validators> = OnceLock::new();
    let (cell, discriminator) = match operation {
        "sendServerMessage" => (&SERVER, "type"),
        _ => (&CLIENT, "op"),
    };
    cell.get_or_init(|| {
        let mut root = stockpulse::asyncapi().clone();
        closed(&mut root["components"]);
        let mut validators = Validators::new();
        for reference in root["operations"][operation]["messages"]
            .as_array()
            .expect("the operation lists its messages")
        {
            let name = reference["$ref"]
                .as_str()
                .and_then(|path| path.rsplit('/').next())
                .expect("a message reference")
                .to_owned();
            let payload = &root["components"]["messages"][&name]["payload"];
            let kind = &payload["properties"][discriminator];
            let kinds: Vec<String> = match (&kind["const"], &kind["enum"]) {
                (Value::String(one), _) => vec![one.clone()],
                (_, Value::Array(many)) => many
                    .iter()
                    .filter_map(|kind| kind.as_str().map(str::to_owned))
                    .collect(),
                _ => panic!("message {name} names no {discriminator}"),
            };
            let mut schema = root.clone();
            schema["$ref"] = json!(format!("#/components/messages/{name}/payload"));
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft7)
                .build(&schema)
                .unwrap_or_else(|error| panic!("message {name}'s schema compiles: {error}"));
            for kind in kinds {
                validators
                    .entry(kind)
                    .or_default()
                    .push((name.clone(), validator.clone()));
            }
        }
        validators
    })
}

/// Every object schema that names its properties takes no other.
fn closed(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            if object.contains_key("properties") && !object.contains_key("additionalProperties") {
                object.insert("additionalProperties".to_owned(), Value::Bool(false));
            }
            object.values_mut().for_each(closed);
        }
        Value::Array(items) => items.iter_mut().for_each(closed),
        _ => {}
    }
}

/// Fails unless `message` is one of the server messages the document describes.
pub(crate) fn conforms(message: &Value) {
    check("sendServerMessage", "type", message);
}

fn check(operation: &str, discriminator: &str, message: &Value) {
    let kind = message[discriminator].as_str().unwrap_or_default();
    let Some(candidates) = validators(operation).get(kind) else {
        panic!("a message the protocol document does not describe: {message}");
    };
    let mut failures = Vec::new();
    for (name, validator) in candidates {
        let errors: Vec<String> = validator
            .iter_errors(message)
            .map(|error| format!("{} at {}", error, error.instance_path()))
            .collect();
        if errors.is_empty() {
            return;
        }
        failures.push(format!("as {name}: {}", errors.join("; ")));
    }
    panic!(
        "a message the protocol document does not allow: {message}\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn the_protocol_document_is_served_and_its_examples_hold() {
    // Goal: `/api/asyncapi.json` serves the AsyncAPI document the checks use; every example in
    // it is a message its schema allows; and every client example is a message the server
    // reads (it may refuse what the example asks for, never the message's shape).
    // Method: compare the served document with the library's; validate each example; send
    // each client example to a server holding the SKU and room they name, and read the
    // answers.
    let server = TestServer::start().await;
    let (status, served) = server.get("/api/asyncapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(&served, stockpulse::asyncapi());
    assert_eq!(served["asyncapi"], "3.0.0");
    assert_eq!(served["channels"]["session"]["address"], "/ws");
    let (_, openapi) = server.get("/api/openapi.json").await;
    assert!(openapi["paths"]["/api/asyncapi.json"]["get"].is_object());

    let example =
        |name: &str| served["components"]["messages"][name]["examples"][0]["payload"].clone();
    let names = |operation: &str| -> Vec<String> {
        served["operations"][operation]["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|reference| {
                reference["$ref"]
                    .as_str()?
                    .rsplit('/')
                    .next()
                    .map(str::to_owned)
            })
            .collect()
    };
    let server_names = names("sendServerMessage");
    for kind in [
        "skuSnapshot",
        "roomSnapshot",
        "alertsSnapshot",
        "stock",
        "point",
        "level",
        "hint",
        "listing",
        "lost",
        "room",
        "alert",
        "alertState",
        "reply",
        "acked",
        "error",
        "pong",
        "authed",
    ] {
        assert!(
            server_names.iter().any(|name| name == kind),
            "{kind} is described"
        );
    }
    for name in &server_names {
        conforms(&example(name));
    }
    // The check bites: a field the document does not name, a missing one, a wrong type,
    // an unknown message.
    let stock = example("stock");
    let mut extra = stock.clone();
    extra["stock"]["colour"] = json!("red");
    let mut missing = stock.clone();
    missing["stock"]
        .as_object_mut()
        .expect("stock")
        .remove("available");
    let mut wrong = stock.clone();
    wrong["seq"] = json!("7");
    for bad in [extra, missing, wrong, json!({"type": "shelf"})] {
        let refused = std::panic::catch_unwind(|| conforms(&bad));
        assert!(refused.is_err(), "{bad} passed the check");
    }
    let client_names = names("receiveClientMessage");
    assert_eq!(client_names.len(), 10, "{client_names:?}");
    for name in &client_names {
        check("receiveClientMessage", "op", &example(name));
    }

    server.sku("LIP-01", 100).await;
    let (status, _) = server
        .put(
            "/api/v1/rooms/r1",
            json!({"name": "r1", "starts_at": "2026-11-25T12:00:00Z", "ends_at": "2026-11-25T15:00:00Z",
                   "listings": [{"sku": "LIP-01", "forecast": 50}]}),
        )
        .await;
    assert_eq!(status, 200);
    let mut socket = connect(&server, "stockpulse.v1.json").await;
    let mut seen = Vec::new();
    let mut pings = 0;
    for name in &client_names {
        send(&mut socket, example(name)).await;
        // A ping after each: what a message refuses at once comes before its pong.
        send(&mut socket, json!({"op": "ping"})).await;
        pings += 1 + usize::from(name == "ping");
        while seen
            .iter()
            .filter(|message: &&Value| message["type"] == "pong")
            .count()
            < pings
        {
            seen.extend(next_messages(&mut socket).await);
        }
    }
    // Order commands are answered once durable, perhaps after the pongs.
    let commands = client_names
        .iter()
        .filter(|name| example(name)["order_id"].is_string())
        .count();
    while seen
        .iter()
        .filter(|message| message["type"] == "reply")
        .count()
        < commands
    {
        seen.extend(next_messages(&mut socket).await);
    }
    assert_eq!(commands, 5);
    for message in &seen {
        assert_ne!(message["code"], "invalid_message", "{message}");
        if message["type"] == "reply" {
            let status = message["status"].as_u64().unwrap_or_default();
            assert!(status != 400 && status != 422, "{message}");
        }
    }
    assert!(
        seen.iter().any(|message| message["type"] == "snapshot"),
        "{seen:?}"
    );
    server.stop().await;
}
