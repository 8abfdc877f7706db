//! HTTP JSON bodies: orders, batches, SKU updates, rooms.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stockpulse::fuzzing::http_bodies(data);
});
