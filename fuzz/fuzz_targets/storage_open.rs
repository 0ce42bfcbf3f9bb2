//! Opens arbitrary bytes as a corekv-storage data file and runs every read
//! path (integrity check, ranges, events, hash, snapshot export). Corrupted
//! input must produce errors, never a panic or UB. Seeds (valid store files)
//! come from `COREKV_FUZZ_SEED_DIR=fuzz/corpus/storage_open cargo test -p
//! corekv-storage --test fuzz_seeds -- --ignored`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    corekv_storage::fuzzing::open_and_read(data);
    corekv_storage::fuzzing::open_and_read_unverified(data);
});
