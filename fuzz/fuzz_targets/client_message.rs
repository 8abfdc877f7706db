//! WebSocket client messages, as JSON text and as MessagePack.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stockpulse::fuzzing::client_message(data);
});
