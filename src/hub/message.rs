//! Server messages as the wire carries them, and their encodings: JSON text
//! (`stockpulse.v1.json`) and MessagePack with field names (`stockpulse.v1.msgpack`).

use axum::body::Bytes;
use serde::Serialize;

use crate::ledger::Stock;

/// The encoding a session chose at the handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Codec {
    Json = 0,
    MessagePack = 1,
}

/// A SKU's quantities, as stock messages carry them.
#[derive(Serialize)]
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
        }
    }

    pub(crate) fn encode(&self, codec: Codec) -> Bytes {
        match codec {
            Codec::Json => Bytes::from(serde_json::to_vec(self).expect("messages encode")),
            Codec::MessagePack => {
                Bytes::from(rmp_serde::to_vec_named(self).expect("messages encode"))
            }
        }
    }
}
