//! Server messages as the wire carries them, and their encodings: JSON text
//! (`stockpulse.v1.json`) and MessagePack with field names (`stockpulse.v1.msgpack`).

use axum::body::Bytes;
use serde::Serialize;

use crate::alert::{Alert, RoomEvent, RoomView};
use crate::ledger::Stock;

/// The encoding a session chose at the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Json = 0,
    MessagePack = 1,
}

impl Codec {
    /// `message` in this encoding: the one place the JSON/MessagePack choice is made. Server
    /// messages are plain values (strings, numbers, maps keyed by strings), which always
    /// encode.
    pub(crate) fn encode<T: Serialize + ?Sized>(self, message: &T) -> Bytes {
        match self {
            Codec::Json => Bytes::from(serde_json::to_vec(message).expect("messages encode")),
            Codec::MessagePack => {
                Bytes::from(rmp_serde::to_vec_named(message).expect("messages encode"))
            }
        }
    }
}

/// A SKU's quantities, as stock messages carry them.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Stock)]
pub(crate) struct StockBody<'a> {
    pub(crate) sku: &'a str,
    pub(crate) total: u64,
    pub(crate) reserved: u64,
    pub(crate) locked: u64,
    pub(crate) sold: u64,
    pub(crate) available: u64,
    pub(crate) halted: bool,
    pub(crate) version: u64,
}

/// One server message.
#[derive(Serialize)]
pub(crate) struct ServerMessage<'a> {
    /// `snapshot`, `resync`, `stock`, `pong`, `error`, `subscribed`.
    #[serde(rename = "type")]
    pub(crate) kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) topic: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) stock: Option<StockBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<&'a str>,
    /// On snapshots: this server run's epoch, which a resuming client sends back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) epoch: Option<u64>,
}

impl<'a> ServerMessage<'a> {
    pub(crate) fn stock(kind: &'a str, topic: &'a str, seq: u64, stock: &'a Stock) -> Self {
        ServerMessage {
            kind,
            topic: Some(topic),
            seq: Some(seq),
            stock: Some(StockBody {
                sku: stock.sku.as_str(),
                total: stock.total,
                reserved: stock.reserved,
                locked: stock.locked,
                sold: stock.sold,
                available: stock.available,
                halted: stock.halted,
                version: stock.version,
            }),
            code: None,
            message: None,
            epoch: None,
        }
    }

    /// The same message marked with the server run's epoch.
    pub(crate) fn with_epoch(self, epoch: u64) -> Self {
        ServerMessage {
            epoch: Some(epoch),
            ..self
        }
    }

    pub(crate) fn error(code: &'a str, message: &'a str) -> Self {
        ServerMessage {
            kind: "error",
            topic: None,
            seq: None,
            stock: None,
            code: Some(code),
            message: Some(message),
            epoch: None,
        }
    }

    pub(crate) fn bare(kind: &'a str) -> Self {
        ServerMessage {
            kind,
            topic: None,
            seq: None,
            stock: None,
            code: None,
            message: None,
            epoch: None,
        }
    }

    pub(crate) fn encode(&self, codec: Codec) -> Bytes {
        codec.encode(self)
    }
}

/// A message whose body's fields sit beside `type`, `topic` and `seq`.
#[derive(Serialize)]
struct Flat<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    topic: &'a str,
    seq: u64,
    #[serde(flatten)]
    body: &'a T,
}

/// A message with one named body field: `{"type", "topic", "seq", "<name>": body}`.
#[derive(Serialize)]
struct Named<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    topic: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alerts: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
}

fn encode<T: Serialize>(message: &T, codec: Codec) -> Bytes {
    codec.encode(message)
}

fn flat<T: Serialize>(kind: &str, topic: &str, seq: u64, body: &T, codec: Codec) -> Bytes {
    encode(
        &Flat {
            kind,
            topic,
            seq,
            body,
        },
        codec,
    )
}

/// A room event as its room topic carries it: `stock`, `level`, `hint`, `point`, `listing`
/// or `room` (the whole room again, after it changed).
pub(crate) fn event(topic: &str, seq: u64, event: &RoomEvent, codec: Codec) -> Bytes {
    match event {
        RoomEvent::Stock { stock, .. } => {
            ServerMessage::stock("stock", topic, seq, stock).encode(codec)
        }
        RoomEvent::Level { alert, .. } => flat("level", topic, seq, alert.as_ref(), codec),
        RoomEvent::Hint { change, .. } => flat("hint", topic, seq, change, codec),
        RoomEvent::Point { point, .. } => flat("point", topic, seq, point, codec),
        RoomEvent::Listing { change, .. } => flat("listing", topic, seq, change, codec),
        RoomEvent::Lost { change, .. } => flat("lost", topic, seq, change, codec),
        RoomEvent::Room { view, .. } => room("room", topic, seq, Some(view.as_ref()), None, codec),
        // The engine sends these on the alerts topics only.
        RoomEvent::AlertState { change, .. } => flat("alert_state", topic, seq, change, codec),
    }
}

/// A level change as the alerts topic carries it.
pub(crate) fn alert(topic: &str, seq: u64, alert: &Alert, codec: Codec) -> Bytes {
    flat("alert", topic, seq, alert, codec)
}

/// An alert's new state on the alerts topic.
pub(crate) fn alert_state(
    topic: &str,
    seq: u64,
    change: &crate::alert::StateChange,
    codec: Codec,
) -> Bytes {
    flat("alert_state", topic, seq, change, codec)
}

/// A room's whole view (`snapshot`, `resync` or `room`); `null` once the room is gone.
pub(crate) fn room(
    kind: &str,
    topic: &str,
    seq: u64,
    view: Option<&RoomView>,
    epoch: Option<u64>,
    codec: Codec,
) -> Bytes {
    encode(
        &Named {
            kind,
            topic,
            seq,
            room: Some(&view),
            alerts: None,
            epoch,
        },
        codec,
    )
}

/// The alerts topic's snapshot: the latest alerts, oldest first.
pub(crate) fn alerts(
    kind: &str,
    topic: &str,
    seq: u64,
    alerts: &[std::sync::Arc<Alert>],
    epoch: u64,
    codec: Codec,
) -> Bytes {
    let alerts: Vec<&Alert> = alerts.iter().map(AsRef::as_ref).collect();
    encode(
        &Named {
            kind,
            topic,
            seq,
            room: None,
            alerts: Some(&alerts),
            epoch: Some(epoch),
        },
        codec,
    )
}

/// Encoded messages queued for one session: one message, or several that the writer sends
/// inside one array frame (JSON: the messages joined by commas, without the brackets;
/// MessagePack: the messages one after the other, without the array header).
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    pub(crate) messages: u32,
    pub(crate) bytes: Bytes,
    /// The topic the messages belong to (its number in the hub; 0 for none) and the
    /// sequence of the last of them, so a session can drop what a newer snapshot covers.
    pub(crate) topic: u64,
    pub(crate) last: u64,
}

impl Chunk {
    pub(crate) fn one(bytes: Bytes) -> Chunk {
        Chunk {
            messages: 1,
            bytes,
            topic: 0,
            last: 0,
        }
    }

    /// The same messages, marked as a topic's up to sequence `last`.
    pub(crate) fn of_topic(self, topic: u64, last: u64) -> Chunk {
        Chunk {
            topic,
            last,
            ..self
        }
    }

    /// Several encoded messages as one chunk.
    pub(crate) fn join(codec: Codec, messages: impl IntoIterator<Item = Bytes>) -> Chunk {
        let mut joined = Vec::new();
        let mut count = 0u32;
        for message in messages {
            if codec == Codec::Json && 0 < count {
                joined.push(b',');
            }
            joined.extend_from_slice(&message);
            count += 1;
        }
        Chunk {
            messages: count,
            bytes: Bytes::from(joined),
            topic: 0,
            last: 0,
        }
    }

    /// The payload of one frame: a single message as it is, several as one array.
    pub(crate) fn frame(codec: Codec, chunks: &[Chunk]) -> Bytes {
        let count: u32 = chunks.iter().map(|chunk| chunk.messages).sum();
        if let [chunk] = chunks
            && chunk.messages == 1
        {
            return chunk.bytes.clone();
        }
        let length: usize = chunks.iter().map(|chunk| chunk.bytes.len()).sum();
        let mut frame = Vec::with_capacity(length + chunks.len() + 8);
        match codec {
            Codec::Json => {
                frame.push(b'[');
                for (index, chunk) in chunks.iter().enumerate() {
                    if 0 < index {
                        frame.push(b',');
                    }
                    frame.extend_from_slice(&chunk.bytes);
                }
                frame.push(b']');
            }
            Codec::MessagePack => {
                rmp::encode::write_array_len(&mut frame, count).expect("writing to a Vec");
                for chunk in chunks {
                    frame.extend_from_slice(&chunk.bytes);
                }
            }
        }
        Bytes::from(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(seq: u64) -> serde_json::Value {
        serde_json::json!({"type": "stock", "seq": seq})
    }

    fn encoded(codec: Codec, seq: u64) -> Bytes {
        codec.encode(&message(seq))
    }

    fn decoded(codec: Codec, frame: &[u8]) -> serde_json::Value {
        match codec {
            Codec::Json => serde_json::from_slice(frame).expect("a JSON frame"),
            Codec::MessagePack => rmp_serde::from_slice(frame).expect("a MessagePack frame"),
        }
    }

    #[test]
    fn one_message_travels_alone_and_several_chunks_make_one_flat_array() {
        for codec in [Codec::Json, Codec::MessagePack] {
            let alone = Chunk::frame(codec, &[Chunk::one(encoded(codec, 1))]);
            assert_eq!(decoded(codec, &alone), message(1));

            let chunks = [
                Chunk::join(codec, [encoded(codec, 1), encoded(codec, 2)]),
                Chunk::one(encoded(codec, 3)),
                Chunk::join(codec, [encoded(codec, 4)]),
            ];
            let frame = Chunk::frame(codec, &chunks);
            let expected: Vec<_> = (1..=4).map(message).collect();
            assert_eq!(decoded(codec, &frame), serde_json::Value::from(expected));

            let pair = Chunk::frame(codec, &chunks[..1]);
            assert_eq!(
                decoded(codec, &pair),
                serde_json::Value::from(vec![message(1), message(2)])
            );
        }
    }
}
