//! Fuzzes the WAL reader: any bytes read as a segment file (header check,
//! chained-CRC record walk, torn-tail versus corruption decision, re-read
//! of entries by position) give a summary or a typed error, never a panic.
//! The first byte says whether the segment is the last one (torn tails are
//! only accepted there). Seeds: `corekv_raftcore::wal::fuzzing::sample_segment`
//! (scripts/fuzz.sh writes them).
#![no_main]

use corekv_raftcore::wal::fuzzing::read_segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let _ = read_segment(bytes, flags & 1 == 1);
});
