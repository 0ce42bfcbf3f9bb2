//! Entry points for the WAL reader fuzz target (fuzz/fuzz_targets/
//! wal_reader.rs): the byte-level recovery path (segment header, record
//! walk with the chained CRC, torn-tail versus corruption decision, and the
//! by-position re-read of entries) without files or a runtime.

use super::format::{
    Record, RecordWriter, SEGMENT_HEADER_BYTES, SegmentHeader, decode_entry_frame,
};
use super::scan::{ScanEnd, scan_segment};
use crate::types::{Entry, EntryKind, HardState};

/// What reading one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSummary {
    pub records: usize,
    pub end: u64,
    /// "clean", "torn" or "corrupt".
    pub how: &'static str,
}

/// Reads `bytes` as one segment file the way recovery does. Any input gives
/// a summary or an error; it must never panic, and every entry the walk
/// returned must read back identically by its recorded position.
pub fn read_segment(bytes: &[u8], is_last: bool) -> Result<SegmentSummary, String> {
    let header = SegmentHeader::decode(bytes)?;
    let scan = scan_segment(bytes, header, is_last);
    for r in &scan.records {
        if let Record::Entry(e) = &r.record {
            let frame = usize::try_from(r.offset)
                .ok()
                .and_then(|o| bytes.get(o..)?.get(..r.frame_len as usize))
                .ok_or("an entry frame lies outside the segment")?;
            let again = decode_entry_frame(frame, r.seed_crc)?;
            assert_eq!(&again, e, "entry re-read by position differs");
        }
    }
    assert!(scan.end as usize <= bytes.len().max(SEGMENT_HEADER_BYTES));
    let how = match scan.how {
        ScanEnd::Clean => "clean",
        ScanEnd::Torn { .. } => "torn",
        ScanEnd::Corrupt { .. } => "corrupt",
    };
    Ok(SegmentSummary {
        records: scan.records.len(),
        end: scan.end,
        how,
    })
}

/// A valid segment of `entries` entries (plus a CRC seed and a hard state),
/// `len` bytes long: seeds for the fuzzer, which cannot find the CRC chain
/// by mutation alone.
pub fn sample_segment(entries: u64, payload: usize, len: usize) -> Vec<u8> {
    let header = SegmentHeader {
        seq: 1,
        first_index: 1,
        max_write_bytes: 8192,
    };
    let mut b = vec![0u8; len.max(SEGMENT_HEADER_BYTES + 4096)];
    b[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    let mut w = RecordWriter {
        buf: &mut b,
        pos: SEGMENT_HEADER_BYTES,
        crc: 0,
    };
    w.put_crc_seed();
    w.put_hard_state(&HardState {
        term: 1,
        vote: 1,
        commit: 0,
    });
    for i in 1..=entries {
        if w.pos + payload + 64 > w.buf.len() {
            break;
        }
        w.put_entry(&Entry {
            term: 1,
            index: i,
            kind: EntryKind::Normal,
            data: vec![i as u8; payload],
        });
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_segments_read_clean() {
        let b = sample_segment(20, 100, 16 * 1024);
        let s = read_segment(&b, true).unwrap();
        assert_eq!(s.how, "clean");
        assert_eq!(s.records, 22);
    }
}

/// Writes fuzz seeds: `COREKV_WAL_SEED_DIR=dir cargo test -p corekv-raftcore
/// --lib write_wal_seeds -- --ignored` (scripts/fuzz.sh does).
#[cfg(test)]
#[test]
#[ignore = "writes the WAL fuzz seed corpus; run by scripts/fuzz.sh"]
fn write_wal_seeds() {
    let dir = std::env::var("COREKV_WAL_SEED_DIR").expect("COREKV_WAL_SEED_DIR");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, (n, payload)) in [(0, 0), (3, 16), (20, 100), (60, 40)]
        .into_iter()
        .enumerate()
    {
        for last in [0u8, 1] {
            let mut seed = vec![last];
            seed.extend(sample_segment(n, payload, 8 * 1024));
            std::fs::write(format!("{dir}/seed-{i}-{last}"), seed).unwrap();
        }
    }
}
