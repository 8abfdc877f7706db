//! Every decoder of outside bytes behind one door, for the property tests in `cargo test`
//! and the fuzz targets in `fuzz/`: HTTP JSON bodies (orders, batches, SKUs, rooms),
//! WebSocket client messages (JSON and MessagePack), and journal records and snapshots read
//! at start-up. Each returns whether the bytes were accepted; none may panic.

use crate::api;

/// An order body, a batch, a SKU update and a room, as the HTTP API decodes and checks them.
pub fn http_bodies(bytes: &[u8]) -> [bool; 4] {
    api::decode_bodies(bytes)
}

/// A WebSocket client message as text (JSON) and as binary (MessagePack).
pub fn client_message(bytes: &[u8]) -> [bool; 2] {
    [
        api::decode_client_message(bytes, crate::hub::Codec::Json),
        api::decode_client_message(bytes, crate::hub::Codec::MessagePack),
    ]
}

/// A journal record and a snapshot image.
pub fn journal(bytes: &[u8]) -> [bool; 2] {
    let (fact, image) = crate::journal::decode_untrusted(bytes);
    [fact, image]
}
