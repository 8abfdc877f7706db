//! Journal records and snapshot images, as start-up reads them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = stockpulse::fuzzing::journal(data);
});
