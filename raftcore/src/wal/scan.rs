//! Reading one segment's bytes back: header check, record walk, and the
//! decision between "clean end", "torn tail" and "corruption".
//!
//! Torn-tail rule: the writer has at most one write in flight and fsyncs it
//! before the next, and a segment is fsynced before a newer one is created.
//! So a crash can only damage bytes of the *last* segment inside the *last*
//! write, which starts at or before the first bad record (rounded down to a
//! block) and spans at most the header's `max_write_bytes`. Damage in the
//! last segment whose non-zero bytes all lie inside that window is a torn
//! tail; anything else is corruption.

use super::format::{
    BLOCK_BYTES, FrameError, Record, SEGMENT_HEADER_BYTES, SegmentHeader, align_down, decode_frame,
};

/// One decoded record and where it sits.
#[derive(Debug)]
pub struct ScannedRecord {
    pub offset: u64,
    pub frame_len: u32,
    pub seed_crc: u32,
    pub record: Record,
}

/// How the walk through a segment ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ScanEnd {
    /// Only zeros after `end`.
    Clean,
    /// A torn last write: bytes in `end..torn_end` must be discarded.
    Torn { torn_end: u64, reason: String },
    /// Damage that a crash cannot explain.
    Corrupt { offset: u64, reason: String },
}

#[derive(Debug)]
pub struct SegmentScan {
    pub records: Vec<ScannedRecord>,
    /// Offset just after the last good record.
    pub end: u64,
    /// Chained crc after the last good record.
    pub crc: u32,
    pub how: ScanEnd,
}

/// Walks `bytes` (a whole segment file). `is_last` enables the torn-tail
/// rule. The header must already be known good: a segment only gets its
/// final name after its header is durable.
pub fn scan_segment(bytes: &[u8], header: SegmentHeader, is_last: bool) -> SegmentScan {
    let mut off = SEGMENT_HEADER_BYTES;
    let mut crc = 0u32;
    let mut records = Vec::new();
    let failure = loop {
        match decode_frame(&bytes[off..], crc) {
            Ok((record, n, next)) => {
                if records.is_empty() != matches!(record, Record::CrcSeed(_)) {
                    break Some(
                        "a crc seed record must open the segment, and only there".to_string(),
                    );
                }
                records.push(ScannedRecord {
                    offset: off as u64,
                    frame_len: n as u32,
                    seed_crc: crc,
                    record,
                });
                crc = next;
                off += n;
            }
            Err(FrameError::Zero) => {
                if bytes[off..].iter().all(|&b| b == 0) {
                    break None;
                }
                break Some("zeroed record followed by data".to_string());
            }
            Err(FrameError::Bad(reason)) => break Some(reason),
        }
    };
    let how = match failure {
        None => ScanEnd::Clean,
        Some(reason) => classify_damage(bytes, off, header.max_write_bytes, is_last, reason),
    };
    SegmentScan {
        records,
        end: off as u64,
        crc,
        how,
    }
}

fn classify_damage(
    bytes: &[u8],
    off: usize,
    max_write_bytes: u64,
    is_last: bool,
    reason: String,
) -> ScanEnd {
    let last_nonzero = bytes.iter().rposition(|&b| b != 0).map_or(off, |p| p + 1);
    let window_end = align_down(off as u64, BLOCK_BYTES as u64).saturating_add(max_write_bytes);
    if is_last && (last_nonzero as u64) <= window_end {
        ScanEnd::Torn {
            torn_end: last_nonzero.max(off) as u64,
            reason,
        }
    } else {
        ScanEnd::Corrupt {
            offset: off as u64,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Entry, EntryKind};
    use crate::wal::format::RecordWriter;

    fn segment(n: u64, max_write_bytes: u64) -> (Vec<u8>, SegmentHeader, Vec<u64>) {
        let h = SegmentHeader {
            seq: 0,
            first_index: 1,
            max_write_bytes,
        };
        let mut b = vec![0u8; 64 * 1024];
        b[..SEGMENT_HEADER_BYTES].copy_from_slice(&h.encode());
        let mut w = RecordWriter {
            buf: &mut b,
            pos: SEGMENT_HEADER_BYTES,
            crc: 0,
        };
        w.put_crc_seed();
        let mut offs = Vec::new();
        for i in 1..=n {
            let (o, _) = w.put_entry(&Entry {
                term: 1,
                index: i,
                kind: EntryKind::Normal,
                data: vec![7; 100],
            });
            offs.push(o as u64);
        }
        (b, h, offs)
    }

    #[test]
    fn clean_segment_scans_to_the_end() {
        let (b, h, _) = segment(20, 8192);
        let s = scan_segment(&b, h, true);
        assert_eq!(s.how, ScanEnd::Clean);
        assert_eq!(s.records.len(), 21);
    }

    #[test]
    fn damage_near_the_end_of_the_last_segment_is_torn() {
        let (mut b, h, offs) = segment(60, 8192);
        let bad = offs[55] as usize;
        b[bad + 20] ^= 0xff;
        let s = scan_segment(&b, h, true);
        assert!(matches!(s.how, ScanEnd::Torn { .. }), "{:?}", s.how);
        assert_eq!(s.end, offs[55]);
        // The same damage in an older segment is corruption.
        let s = scan_segment(&b, h, false);
        assert!(matches!(s.how, ScanEnd::Corrupt { .. }));
    }

    #[test]
    fn damage_far_before_the_end_is_corruption() {
        let (mut b, h, offs) = segment(60, 4096);
        b[offs[3] as usize + 20] ^= 0xff;
        let s = scan_segment(&b, h, true);
        assert!(matches!(s.how, ScanEnd::Corrupt { offset, .. } if offset == offs[3]));
    }

    #[test]
    fn zeroed_sector_before_later_data_in_window_is_torn() {
        let (mut b, h, offs) = segment(30, 16384);
        let z = offs[20] as usize;
        b[z..z + 512].fill(0);
        let s = scan_segment(&b, h, true);
        assert!(matches!(s.how, ScanEnd::Torn { .. }), "{:?}", s.how);
        assert_eq!(s.records.len(), 21);
    }
}
