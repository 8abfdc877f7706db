//! The `/ws` contract as an AsyncAPI 3.0 document, served at `/api/asyncapi.json`: every
//! client message the session takes and every server message it sends, with their fields.
//! The bodies (stock, room views, alerts, orders, errors) are generated from the types the
//! server serialises, by the same generator as the OpenAPI document; the envelopes (`type`,
//! `topic`, `seq`) and the client messages are stated here, beside the limits they carry.

use std::sync::OnceLock;

use axum::Json;
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use super::ws::{PROTOCOL_JSON, PROTOCOL_MSGPACK};
use crate::hub::SESSION_TOPICS_MAX;
use crate::ledger::{ACKNOWLEDGER_CHARS_MAX, ID_CHARS_MAX, LINE_QTY_MAX, ORDER_LINES_MAX};

/// The bodies server messages carry, as the server serialises them.
#[derive(OpenApi)]
#[openapi(components(schemas(
    crate::hub::StockBody,
    crate::alert::RoomView,
    crate::alert::Alert,
    crate::alert::HintChange,
    crate::alert::Point,
    crate::alert::ListingChange,
    crate::alert::LostChange,
    crate::alert::StateChange,
    crate::notify::DeliveryView,
    super::dto::OrderResponse,
    super::error::ErrorDetail,
)))]
struct Bodies;

#[utoipa::path(get, path = "/api/asyncapi.json", tag = "service",
    responses((status = 200, description = "The WebSocket protocol of `/ws` as an AsyncAPI 3.0 document")))]
pub(crate) async fn document() -> Json<Value> {
    Json(asyncapi().clone())
}

/// The document, built once.
pub fn asyncapi() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let mut schemas = serde_json::to_value(Bodies::openapi())
        .ok()
        .and_then(|mut openapi| {
            openapi["components"]["schemas"]
                .as_object_mut()
                .map(std::mem::take)
        })
        .unwrap_or_default();
    for schema in schemas.values_mut() {
        as_draft_07(schema);
    }
    schemas.insert("Id".to_owned(), id());
    // An alert as the API lists it: the alert, its state, and its deliveries.
    let record = merged(
        &schemas,
        "Alert",
        json!({
            "state": {"type": "string", "enum": ["open", "acknowledged", "resolved"]},
            "acknowledged_by": {"type": ["string", "null"]},
            "acknowledged_at": {"type": ["string", "null"], "format": "date-time"},
            "resolved_at": {"type": ["string", "null"], "format": "date-time"},
            "escalations": {"type": "integer", "minimum": 0},
            "deliveries": {"type": "array", "items": {"$ref": "#/components/schemas/DeliveryView"}},
        }),
        &[
            "state",
            "acknowledged_by",
            "acknowledged_at",
            "resolved_at",
            "escalations",
            "deliveries",
        ],
    );
    schemas.insert("AlertRecord".to_owned(), record);

    let mut messages = Map::new();
    let mut server = Vec::new();
    for (name, summary, payload, example) in server_messages(&schemas) {
        server.push(name);
        messages.insert(name.to_owned(), message(name, summary, payload, example));
    }
    let mut client = Vec::new();
    for (name, summary, payload, example) in client_messages() {
        client.push(name);
        messages.insert(name.to_owned(), message(name, summary, payload, example));
    }
    let channel_messages: Map<String, Value> = server
        .iter()
        .chain(&client)
        .map(|name| {
            (
                (*name).to_owned(),
                json!({"$ref": format!("#/components/messages/{name}")}),
            )
        })
        .collect();
    let refs = |names: &[&str]| -> Vec<Value> {
        names
            .iter()
            .map(|name| json!({"$ref": format!("#/channels/session/messages/{name}")}))
            .collect()
    };
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "stockpulse live push",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "One WebSocket session per screen, host phone or console: it subscribes to topics (`sku:{id}`, `room:{id}`, `alerts`, `alerts:{room}`), gets a snapshot of each and then every durable change in order, numbered by `seq`, and may acknowledge alerts and place orders. Several server messages may travel in one frame, which then holds an array of them, in order. Clients ignore fields they do not know: new fields may be added. docs/PROTOCOL.md tells the same in prose.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "stockpulse": {
                "host": "localhost:8080",
                "protocol": "ws",
                "description": "The server's own address; `wss` behind a TLS proxy.",
                "security": [
                    {"$ref": "#/components/securitySchemes/bearer"},
                    {"$ref": "#/components/securitySchemes/token"},
                ],
            },
        },
        "channels": {
            "session": {
                "address": "/ws",
                "title": "A session",
                "description": format!("Ask for the subprotocol `{PROTOCOL_JSON}` (text frames, JSON; the default) or `{PROTOCOL_MSGPACK}` (binary frames, the same objects in MessagePack with field names). A client message is at most 64 KiB."),
                "messages": channel_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {"token": {"type": "string", "description": "A token, for clients that cannot set headers; or send an `auth` message first"}},
                        },
                        "bindingVersion": "0.1.0",
                    },
                },
            },
        },
        "operations": {
            "receiveClientMessage": {
                "action": "receive",
                "channel": {"$ref": "#/channels/session"},
                "summary": "What a client sends: subscriptions, pings, credentials, acknowledgements and order commands.",
                "messages": refs(&client),
            },
            "sendServerMessage": {
                "action": "send",
                "channel": {"$ref": "#/channels/session"},
                "summary": "What the server sends: snapshots, changes, replies and errors.",
                "messages": refs(&server),
            },
        },
        "components": {
            "schemas": schemas,
            "messages": messages,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer` on the handshake"},
                "token": {"type": "httpApiKey", "name": "token", "in": "query", "description": "`/ws?token=…`"},
            },
        },
    })
}

/// AsyncAPI's schemas are JSON Schema draft 07, the generator writes 2020-12: its one
/// construct that reads differently there, a tuple (`prefixItems` and `items: false`), is
/// written as draft 07 says it (`items` as a list, `additionalItems: false`).
fn as_draft_07(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            if let Some(prefix) = object.remove("prefixItems") {
                object.insert("items".to_owned(), prefix);
                object.insert("additionalItems".to_owned(), Value::Bool(false));
            }
            object.values_mut().for_each(as_draft_07);
        }
        Value::Array(items) => items.iter_mut().for_each(as_draft_07),
        _ => {}
    }
}

fn message(name: &str, summary: &str, payload: Value, example: Value) -> Value {
    json!({
        "name": name,
        "summary": summary,
        "payload": payload,
        "examples": [{"payload": example}],
    })
}

/// An id: a SKU, room, order, platform or command id.
fn id() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": ID_CHARS_MAX,
        "pattern": "^[^\\x00-\\x1F\\x7F-\\x9F]+$",
    })
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

fn kind(kinds: &[&str]) -> Value {
    match kinds {
        [one] => json!({"type": "string", "const": one}),
        many => json!({"type": "string", "enum": many}),
    }
}

fn topic(pattern: &str) -> Value {
    json!({"type": "string", "pattern": pattern})
}

fn seq() -> Value {
    json!({"type": "integer", "minimum": 0, "description": "The topic's sequence number: one more with each change"})
}

fn reference(schema: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{schema}")})
}

/// The body schema `name` with more properties, as one object.
fn merged(schemas: &Map<String, Value>, name: &str, extra: Value, required: &[&str]) -> Value {
    let mut schema = schemas
        .get(name)
        .cloned()
        .unwrap_or_else(|| object(&[], json!({})));
    if let (Some(properties), Value::Object(extra)) = (
        schema.get_mut("properties").and_then(Value::as_object_mut),
        extra,
    ) {
        properties.extend(extra);
    }
    if let Some(list) = schema.get_mut("required").and_then(Value::as_array_mut) {
        list.extend(required.iter().map(|name| json!(name)));
    } else if let Some(schema) = schema.as_object_mut() {
        schema.insert("required".to_owned(), json!(required));
    }
    schema
}

/// A change whose body's fields sit beside `type`, `topic` and `seq`.
fn flat(schemas: &Map<String, Value>, kinds: &[&str], pattern: &str, body: &str) -> Value {
    merged(
        schemas,
        body,
        json!({"type": kind(kinds), "topic": topic(pattern), "seq": seq()}),
        &["type", "topic", "seq"],
    )
}

const SKU_TOPIC: &str = "^sku:";
const ROOM_TOPIC: &str = "^room:";
const ALERTS_TOPIC: &str = "^alerts(:.+)?$";
const ANY_TOPIC: &str = "^(sku:|room:|alerts$|alerts:)";

type Described = (&'static str, &'static str, Value, Value);

fn server_messages(schemas: &Map<String, Value>) -> Vec<Described> {
    let image = &["snapshot", "resync"];
    let epoch = json!({"type": "integer", "minimum": 0, "description": "The server run's (in a cluster, the log's) epoch: sent back with `since`, another epoch resyncs"});
    let stock_example = json!({"sku": "LIP-01", "total": 600, "reserved": 0, "locked": 12, "sold": 300, "available": 288, "halted": false, "version": 845});
    vec![
        (
            "skuSnapshot",
            "A SKU's stock: the first message of a `sku:` topic (`snapshot`), or a fresh one after a gap (`resync`)",
            object(
                &["type", "topic", "seq", "stock"],
                json!({
                    "type": kind(image), "topic": topic(SKU_TOPIC), "seq": seq(),
                    "stock": reference("Stock"), "epoch": epoch,
                }),
            ),
            json!({"type": "snapshot", "topic": "sku:LIP-01", "seq": 845, "stock": stock_example, "epoch": 1_764_000_000_000u64}),
        ),
        (
            "roomSnapshot",
            "A room's whole view, as `GET /api/v1/rooms/{room}`; `null` once the room is gone",
            object(
                &["type", "topic", "seq", "room"],
                json!({
                    "type": kind(image), "topic": topic(ROOM_TOPIC), "seq": seq(),
                    "room": {"oneOf": [reference("RoomView"), {"type": "null"}]}, "epoch": epoch,
                }),
            ),
            json!({"type": "snapshot", "topic": "room:r1", "seq": 0, "room": null, "epoch": 1_764_000_000_000u64}),
        ),
        (
            "alertsSnapshot",
            "The latest alerts (at most 500), oldest first",
            object(
                &["type", "topic", "seq", "alerts"],
                json!({
                    "type": kind(image), "topic": topic(ALERTS_TOPIC), "seq": seq(),
                    "alerts": {"type": "array", "items": reference("Alert")}, "epoch": epoch,
                }),
            ),
            json!({"type": "snapshot", "topic": "alerts", "seq": 0, "alerts": [], "epoch": 1_764_000_000_000u64}),
        ),
        (
            "stock",
            "A SKU's stock changed (on its `sku:` topic and on the `room:` topics that list it), once durable",
            object(
                &["type", "topic", "seq", "stock"],
                json!({
                    "type": kind(&["stock"]), "topic": topic("^(sku|room):"), "seq": seq(), "stock": reference("Stock"),
                }),
            ),
            json!({"type": "stock", "topic": "sku:LIP-01", "seq": 846, "stock": stock_example}),
        ),
        (
            "point",
            "A listing's consumption curve grew: `actual` is its consumption at the end of bucket `bucket`",
            flat(schemas, &["point"], ROOM_TOPIC, "Point"),
            json!({"type": "point", "topic": "room:r1", "seq": 2, "room": "r1", "sku": "LIP", "bucket": 1080, "actual": 80, "at": "2026-11-25T13:30:00.000Z"}),
        ),
        (
            "level",
            "A listing's alert level changed, with the rules and figures behind it",
            flat(schemas, &["level"], ROOM_TOPIC, "Alert"),
            json!({"type": "level", "topic": "room:r1", "seq": 3, "id": 1, "room": "r1", "sku": "LIP", "from": "green", "to": "yellow", "at": "2026-11-25T13:30:00.000Z", "hot": true, "consumed": 80, "forecast": 100, "available": 920, "reasons": [{"rule": "consumed_share", "level": "yellow", "value": 0.8, "threshold": 0.8, "zh-CN": "已消耗预估的 80%，达到预警线 80%", "en": "80 % of the forecast consumed, yellow at 80 %"}]}),
        ),
        (
            "hint",
            "What the host should do changed; `hint` is `null` when there is nothing to do",
            flat(schemas, &["hint"], ROOM_TOPIC, "HintChange"),
            json!({"type": "hint", "topic": "room:r1", "seq": 4, "room": "r1", "sku": "LIP", "level": "orange", "hint": {"key": "slow_the_pace", "zh-CN": "放慢节奏，控制出单", "en": "Slow the pace"}, "at": "2026-11-25T13:30:00.000Z"}),
        ),
        (
            "listing",
            "A listing was halted or resumed in its room (`auto`: by the engine at red)",
            flat(schemas, &["listing"], ROOM_TOPIC, "ListingChange"),
            json!({"type": "listing", "topic": "room:r1", "seq": 9, "room": "r1", "sku": "LIP", "halted": true, "auto": true, "at": "2026-11-25T13:30:00.000Z"}),
        ),
        (
            "lost",
            "Orders naming the room were refused for the listing (for want of stock, or halted): its lost demand now. Counted once the journal holds it, at most a tenth of a second after the refusals",
            flat(schemas, &["lost"], ROOM_TOPIC, "LostChange"),
            json!({"type": "lost", "topic": "room:r1", "seq": 11, "room": "r1", "sku": "LIP", "lost": {"units": 12, "insufficient_stock": 10, "halted": 2, "last_10_min": 12, "platforms": [{"platform": "douyin", "insufficient_stock": 10, "halted": 2}]}, "at": "2026-11-25T13:31:00.000Z"}),
        ),
        (
            "room",
            "The room was changed: its header, `lineup` (every listing's SKU in order) and only the listings that changed; a listing that stayed on its schedule comes without `actual`",
            object(
                &["type", "topic", "seq", "room"],
                json!({
                    "type": kind(&["room"]), "topic": topic(ROOM_TOPIC), "seq": seq(), "room": reference("RoomView"),
                }),
            ),
            json!({"type": "room", "topic": "room:r1", "seq": 10, "room": {"room": "r1", "name": "晚八点专场", "starts_at": "2026-11-25T12:00:00.000Z", "ends_at": "2026-11-25T15:00:00.000Z", "now": "2026-11-25T13:30:00.000Z", "elapsed_s": 5400, "remaining_s": 5400, "totals": {"forecast": 600, "consumed": 80, "available": 920}, "listings": [], "lineup": ["LIP"]}}),
        ),
        (
            "alert",
            "A level change on an `alerts` topic: the same object as `level`",
            flat(schemas, &["alert"], ALERTS_TOPIC, "Alert"),
            json!({"type": "alert", "topic": "alerts", "seq": 1, "id": 1, "room": "r1", "sku": "LIP", "from": "green", "to": "yellow", "at": "2026-11-25T13:30:00.000Z", "hot": true, "consumed": 80, "forecast": 100, "available": 920, "reasons": []}),
        ),
        (
            "alertState",
            "An alert was acknowledged or resolved",
            flat(schemas, &["alert_state"], ALERTS_TOPIC, "StateChange"),
            json!({"type": "alert_state", "topic": "alerts", "seq": 12, "id": 7, "room": "r1", "state": "acknowledged", "acknowledged_by": "小王", "at": "2026-11-25T13:31:02.000Z"}),
        ),
        (
            "reply",
            "The answer to an order command, once its change is durable, in command order: the status the same call would have over HTTP, and the order or the error",
            object(
                &["type", "id", "status"],
                json!({
                    "type": kind(&["reply"]), "id": {"type": "string", "description": "The command's `id`"},
                    "status": {"type": "integer", "minimum": 200, "maximum": 599},
                    "order": reference("OrderResponse"), "error": reference("ErrorDetail"),
                }),
            ),
            json!({"type": "reply", "id": "c-9", "status": 409, "error": {"code": "insufficient_stock", "message": "sku LIP-01 has 0 available, 1 requested"}}),
        ),
        (
            "acked",
            "The answer to `ack`: the alert as `GET /api/v1/alerts` lists it",
            object(
                &["type", "alert"],
                json!({"type": kind(&["acked"]), "alert": reference("AlertRecord")}),
            ),
            json!({"type": "acked", "alert": {"id": 7, "room": "r1", "sku": "LIP", "from": "yellow", "to": "orange", "at": "2026-11-25T13:30:00.000Z", "reasons": [], "hot": true, "consumed": 90, "forecast": 100, "available": 910, "state": "acknowledged", "acknowledged_by": "小王", "acknowledged_at": "2026-11-25T13:31:02.000Z", "resolved_at": null, "escalations": 0, "deliveries": []}}),
        ),
        (
            "error",
            "A client message was refused; the session stays open (20 bad messages close it). Codes: `invalid_message`, `invalid_topic`, `sku_not_found`, `room_not_found`, `alert_not_found`, `unauthorized`, `forbidden`, `too_many_topics`, `rate_limited`, and on `ack` the API's codes",
            object(
                &["type", "code", "message"],
                json!({
                    "type": kind(&["error"]), "code": {"type": "string"}, "message": {"type": "string"},
                }),
            ),
            json!({"type": "error", "code": "invalid_topic", "message": "unknown topic \"shelf:A\"; topics are sku:{id}, room:{id} and alerts"}),
        ),
        (
            "pong",
            "The answer to `ping`",
            object(&["type"], json!({"type": kind(&["pong"])})),
            json!({"type": "pong"}),
        ),
        (
            "authed",
            "The answer to a good `auth`",
            object(&["type"], json!({"type": kind(&["authed"])})),
            json!({"type": "authed"}),
        ),
    ]
}

fn client_messages() -> Vec<Described> {
    let topics = json!({
        "type": "array",
        "maxItems": SESSION_TOPICS_MAX,
        "items": {"type": "string", "pattern": ANY_TOPIC, "description": "`sku:{id}`, `room:{id}`, `alerts` or `alerts:{room}`"},
    });
    let id = || json!({"$ref": "#/components/schemas/Id"});
    let qty = json!({"type": "integer", "minimum": 1, "maximum": LINE_QTY_MAX});
    let order = |op: &str| {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["op", "id", "order_id", "platform"],
            "properties": {
                "op": kind(&[op]), "id": id(), "order_id": id(), "platform": id(),
                "sku": id(), "qty": qty,
                "lines": {"type": "array", "minItems": 1, "maxItems": ORDER_LINES_MAX, "items": {
                    "type": "object", "additionalProperties": false, "required": ["sku", "qty"],
                    "properties": {"sku": id(), "qty": qty},
                }},
                "room": {"oneOf": [id(), {"type": "null"}]},
                "paid": {"type": "boolean", "default": false},
            },
            "oneOf": [{"required": ["sku", "qty"]}, {"required": ["lines"]}],
        })
    };
    let settle = |op: &str| {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["op", "id", "order_id"],
            "properties": {"op": kind(&[op]), "id": id(), "order_id": id()},
        })
    };
    let strict = |required: &[&str], properties: Value| {
        let mut schema = object(required, properties);
        schema["additionalProperties"] = json!(false);
        schema
    };
    vec![
        (
            "subscribe",
            "Follow topics: a snapshot of each comes first, then every change. With `since` (the last `seq` seen per topic), the missed changes instead, nothing when up to date, or a resync",
            strict(
                &["op", "topics"],
                json!({
                    "op": kind(&["subscribe"]), "topics": topics,
                    "since": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
                    "epoch": {"type": ["integer", "null"], "minimum": 0},
                }),
            ),
            json!({"op": "subscribe", "topics": ["sku:LIP-01", "room:r1"], "since": {"sku:LIP-01": 41}, "epoch": 1_764_000_000_000u64}),
        ),
        (
            "unsubscribe",
            "Stop following topics",
            strict(
                &["op", "topics"],
                json!({"op": kind(&["unsubscribe"]), "topics": topics}),
            ),
            json!({"op": "unsubscribe", "topics": ["sku:LIP-01"]}),
        ),
        (
            "ping",
            "Answered by `pong`",
            strict(&["op"], json!({"op": kind(&["ping"])})),
            json!({"op": "ping"}),
        ),
        (
            "auth",
            "Credentials as the first message, when the handshake carried none (answered by `authed`)",
            strict(
                &["op", "token"],
                json!({"op": kind(&["auth"]), "token": {"type": "string"}}),
            ),
            json!({"op": "auth", "token": "sp1.eyJ..."}),
        ),
        (
            "ack",
            "Acknowledge an alert, as `POST /api/v1/alerts/{id}/ack` (answered by `acked`)",
            strict(
                &["op", "id"],
                json!({
                    "op": kind(&["ack"]), "id": {"type": "integer", "minimum": 0},
                    "by": {"type": ["string", "null"], "minLength": 1, "maxLength": ACKNOWLEDGER_CHARS_MAX},
                }),
            ),
            json!({"op": "ack", "id": 7, "by": "小王"}),
        ),
        (
            "reserve",
            "Place an order, as `POST /api/v1/orders` (locked, or sold with `paid`)",
            order("reserve"),
            json!({"op": "reserve", "id": "c-1", "order_id": "dy-0001", "sku": "LIP-01", "qty": 2, "platform": "douyin", "room": "room-1"}),
        ),
        (
            "sell",
            "Place a paid order: sold at once",
            order("sell"),
            json!({"op": "sell", "id": "c-2", "order_id": "dy-0002", "lines": [{"sku": "LIP-01", "qty": 1}], "platform": "douyin"}),
        ),
        (
            "confirm",
            "Confirm a locked order: sold",
            settle("confirm"),
            json!({"op": "confirm", "id": "c-3", "order_id": "dy-0001"}),
        ),
        (
            "cancel",
            "Cancel a locked order: its units come back",
            settle("cancel"),
            json!({"op": "cancel", "id": "c-4", "order_id": "dy-0001"}),
        ),
        (
            "refund",
            "Refund a sold order: its units come back",
            settle("refund"),
            json!({"op": "refund", "id": "c-5", "order_id": "dy-0001"}),
        ),
    ]
}
