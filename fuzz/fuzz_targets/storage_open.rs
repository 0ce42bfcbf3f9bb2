//! Opens arbitrary bytes as a corekv-storage data file and runs every read
//! path (integrity check, ranges, events, hash, snapshot export). Corrupted
//! input must produce errors, never a panic or UB.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    corekv_storage::fuzzing::open_and_read(data);
});
