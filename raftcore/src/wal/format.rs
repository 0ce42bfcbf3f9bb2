//! The on-disk byte layout of WAL segments and records (see
//! `docs/wal-format.md` for the diagrams). Pure functions over byte slices:
//! no IO here, so the codec and the recovery scanner are testable without a
//! runtime. Decoding never panics on bad bytes; it returns `None` or a typed
//! reason.

use crate::types::{ConfState, Entry, EntryKind, HardState, SnapshotMeta};

/// First 8 bytes of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"corekvWL";
/// Bumped on any incompatible layout change.
pub const FORMAT_VERSION: u8 = 1;
/// Segment header length; the first record starts here.
pub const SEGMENT_HEADER_BYTES: usize = 48;
/// Record frame header length (length word + crc word).
pub const FRAME_HEADER_BYTES: usize = 16;
/// Every record starts and ends on this boundary, so the 8-byte length word
/// never straddles a sector and cannot be torn.
pub const RECORD_ALIGN: usize = 8;
/// O_DIRECT granularity used for writes and for the in-memory tail block.
pub const BLOCK_BYTES: usize = 4096;

/// Fixed part of an entry payload: term, index, kind.
pub const ENTRY_FIXED_BYTES: usize = 17;
const HARD_STATE_BYTES: usize = 24;
const CRC_SEED_BYTES: usize = 8;

/// What a record carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    Entry = 1,
    HardState = 2,
    SnapshotMarker = 3,
    /// First record of every segment: the chained crc carried over from the
    /// previous segment.
    CrcSeed = 4,
}

impl RecordKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Entry),
            2 => Some(Self::HardState),
            3 => Some(Self::SnapshotMarker),
            4 => Some(Self::CrcSeed),
            _ => None,
        }
    }
}

pub fn align_up(v: u64, align: u64) -> u64 {
    v.div_ceil(align) * align
}

pub fn align_down(v: u64, align: u64) -> u64 {
    v / align * align
}

/// Total bytes a record with `payload_len` payload bytes occupies.
pub fn frame_bytes(payload_len: usize) -> usize {
    (FRAME_HEADER_BYTES + payload_len).div_ceil(RECORD_ALIGN) * RECORD_ALIGN
}

pub fn entry_payload_bytes(e: &Entry) -> usize {
    ENTRY_FIXED_BYTES + e.data.len()
}

/// Fixed part of a snapshot marker payload: index, term, counts, flags.
const SNAPSHOT_FIXED_BYTES: usize = 32;
/// Snapshot marker flag: the writer restarted the log after the snapshot.
const SNAPSHOT_FLAG_RESET: u8 = 1;

pub fn snapshot_payload_bytes(m: &SnapshotMeta) -> usize {
    SNAPSHOT_FIXED_BYTES + 8 * (m.conf_state.voters.len() + m.conf_state.learners.len())
}

pub const HARD_STATE_FRAME_BYTES: usize = FRAME_HEADER_BYTES + HARD_STATE_BYTES;
pub const CRC_SEED_FRAME_BYTES: usize = FRAME_HEADER_BYTES + CRC_SEED_BYTES;

/// Header of one segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    /// Index of the first entry the writer appended to this segment (the
    /// log's next index when the segment was created).
    pub first_index: u64,
    /// Upper bound of one write by the writer of this segment; recovery uses
    /// it to bound how far a torn write can reach.
    pub max_write_bytes: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8] = FORMAT_VERSION;
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..32].copy_from_slice(&self.first_index.to_le_bytes());
        b[32..40].copy_from_slice(&self.max_write_bytes.to_le_bytes());
        let crc = crc32c::crc32c(&b[0..40]);
        b[40..44].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies a header; the error names what is wrong.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(format!(
                "file shorter than the {SEGMENT_HEADER_BYTES}-byte header"
            ));
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("bad magic".into());
        }
        if b[8] != FORMAT_VERSION {
            return Err(format!("unsupported format version {}", b[8]));
        }
        let crc = u32_at(b, 40);
        if crc != crc32c::crc32c(&b[0..40]) {
            return Err("header checksum mismatch".into());
        }
        Ok(Self {
            seq: u64_at(b, 16),
            first_index: u64_at(b, 24),
            max_write_bytes: u64_at(b, 32),
        })
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

/// Appends framed records to a caller-provided byte buffer, keeping the crc
/// chain. The buffer is written as-is to disk.
pub struct RecordWriter<'a> {
    pub buf: &'a mut [u8],
    pub pos: usize,
    pub crc: u32,
}

impl RecordWriter<'_> {
    /// Frames a payload produced by `fill` (which must write exactly
    /// `payload_len` bytes) and returns (offset in buf, crc seed used).
    fn put(
        &mut self,
        kind: RecordKind,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> (usize, u32) {
        let start = self.pos;
        let total = frame_bytes(payload_len);
        let frame = &mut self.buf[start..start + total];
        let pad = total - FRAME_HEADER_BYTES - payload_len;
        let len32 = u32::try_from(payload_len).expect("payload length bounded by max_record_bytes");
        frame[0..4].copy_from_slice(&len32.to_le_bytes());
        frame[4] = kind as u8;
        frame[5] = pad as u8;
        frame[6..8].fill(0);
        frame[12..16].fill(0);
        fill(&mut frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len]);
        frame[FRAME_HEADER_BYTES + payload_len..].fill(0);
        let seed = if kind == RecordKind::CrcSeed {
            0
        } else {
            self.crc
        };
        let crc = record_crc(
            seed,
            &frame[0..8],
            &frame[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len],
        );
        frame[8..12].copy_from_slice(&crc.to_le_bytes());
        let used_seed = self.crc;
        if kind != RecordKind::CrcSeed {
            self.crc = crc;
        }
        self.pos += total;
        (start, used_seed)
    }

    pub fn put_entry(&mut self, e: &Entry) -> (usize, u32) {
        self.put(RecordKind::Entry, entry_payload_bytes(e), |p| {
            p[0..8].copy_from_slice(&e.term.to_le_bytes());
            p[8..16].copy_from_slice(&e.index.to_le_bytes());
            p[16] = match e.kind {
                EntryKind::Normal => 0,
                EntryKind::ConfChange => 1,
            };
            p[ENTRY_FIXED_BYTES..].copy_from_slice(&e.data);
        })
    }

    pub fn put_hard_state(&mut self, hs: &HardState) {
        self.put(RecordKind::HardState, HARD_STATE_BYTES, |p| {
            p[0..8].copy_from_slice(&hs.term.to_le_bytes());
            p[8..16].copy_from_slice(&hs.vote.to_le_bytes());
            p[16..24].copy_from_slice(&hs.commit.to_le_bytes());
        });
    }

    /// `reset`: whether the writer dropped the whole log at this marker (the
    /// replay repeats the writer's decision instead of re-deriving it).
    pub fn put_snapshot(&mut self, m: &SnapshotMeta, reset: bool) {
        self.put(RecordKind::SnapshotMarker, snapshot_payload_bytes(m), |p| {
            p[0..8].copy_from_slice(&m.index.to_le_bytes());
            p[8..16].copy_from_slice(&m.term.to_le_bytes());
            let nv = u32::try_from(m.conf_state.voters.len()).expect("voter count fits u32");
            let nl = u32::try_from(m.conf_state.learners.len()).expect("learner count fits u32");
            p[16..20].copy_from_slice(&nv.to_le_bytes());
            p[20..24].copy_from_slice(&nl.to_le_bytes());
            p[24] = if reset { SNAPSHOT_FLAG_RESET } else { 0 };
            p[25..32].fill(0);
            let ids = m
                .conf_state
                .voters
                .iter()
                .chain(m.conf_state.learners.iter());
            for (i, id) in ids.enumerate() {
                let at = SNAPSHOT_FIXED_BYTES + 8 * i;
                p[at..at + 8].copy_from_slice(&id.to_le_bytes());
            }
        });
    }

    /// The chain continues from `self.crc`, which the seed carries.
    pub fn put_crc_seed(&mut self) {
        let seed = self.crc;
        self.put(RecordKind::CrcSeed, CRC_SEED_BYTES, |p| {
            p[0..4].copy_from_slice(&seed.to_le_bytes());
            p[4..8].fill(0);
        });
    }
}

fn record_crc(seed: u32, len_word: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c_append(seed, len_word), payload)
}

/// A decoded record payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Entry(Entry),
    HardState(HardState),
    /// The marker and whether the writer reset the log at it.
    SnapshotMarker(SnapshotMeta, bool),
    CrcSeed(u32),
}

/// Why a frame could not be read at some offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The length word is zero: no record was ever written here.
    Zero,
    /// The frame is malformed or fails its checksum; the reason says how.
    Bad(String),
}

/// Reads the frame at the start of `b` given the chained crc `prev_crc`.
/// Returns the record, its total frame size and the new chain value.
pub fn decode_frame(b: &[u8], prev_crc: u32) -> Result<(Record, usize, u32), FrameError> {
    if b.len() < FRAME_HEADER_BYTES {
        if b.iter().all(|&x| x == 0) {
            return Err(FrameError::Zero);
        }
        return Err(FrameError::Bad(
            "frame header cut short by end of file".into(),
        ));
    }
    if b[0..8].iter().all(|&x| x == 0) {
        return Err(FrameError::Zero);
    }
    let payload_len = u32_at(b, 0) as usize;
    let kind = RecordKind::from_byte(b[4])
        .ok_or_else(|| FrameError::Bad(format!("unknown record kind {}", b[4])))?;
    let total = frame_bytes(payload_len);
    if usize::from(b[5]) != total - FRAME_HEADER_BYTES - payload_len || b[6] != 0 || b[7] != 0 {
        return Err(FrameError::Bad(
            "inconsistent padding in length word".into(),
        ));
    }
    if b[12..16] != [0; 4] {
        return Err(FrameError::Bad("reserved frame bytes are not zero".into()));
    }
    if total > b.len() {
        return Err(FrameError::Bad(format!(
            "record length {payload_len} runs past the end of the segment"
        )));
    }
    if b[FRAME_HEADER_BYTES + payload_len..total]
        .iter()
        .any(|&x| x != 0)
    {
        return Err(FrameError::Bad("record padding is not zero".into()));
    }
    let payload = &b[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len];
    let seed = if kind == RecordKind::CrcSeed {
        0
    } else {
        prev_crc
    };
    let crc = record_crc(seed, &b[0..8], payload);
    if crc != u32_at(b, 8) {
        return Err(FrameError::Bad("record checksum mismatch".into()));
    }
    let rec = decode_payload(kind, payload).map_err(FrameError::Bad)?;
    let next_crc = match rec {
        Record::CrcSeed(s) => s,
        _ => crc,
    };
    Ok((rec, total, next_crc))
}

/// Verifies one frame against a known crc seed (used by reads of old
/// entries) and decodes it.
pub fn decode_entry_frame(b: &[u8], seed: u32) -> Result<Entry, String> {
    match decode_frame(b, seed) {
        Ok((Record::Entry(e), _, _)) => Ok(e),
        Ok((other, _, _)) => Err(format!("expected an entry record, found {other:?}")),
        Err(FrameError::Zero) => Err("expected an entry record, found zeros".into()),
        Err(FrameError::Bad(r)) => Err(r),
    }
}

fn decode_payload(kind: RecordKind, p: &[u8]) -> Result<Record, String> {
    match kind {
        RecordKind::Entry => {
            if p.len() < ENTRY_FIXED_BYTES {
                return Err("entry payload too short".into());
            }
            let kind = match p[16] {
                0 => EntryKind::Normal,
                1 => EntryKind::ConfChange,
                k => return Err(format!("unknown entry kind {k}")),
            };
            Ok(Record::Entry(Entry {
                term: u64_at(p, 0),
                index: u64_at(p, 8),
                kind,
                data: p[ENTRY_FIXED_BYTES..].to_vec(),
            }))
        }
        RecordKind::HardState => {
            if p.len() != HARD_STATE_BYTES {
                return Err("hard state payload has the wrong size".into());
            }
            Ok(Record::HardState(HardState {
                term: u64_at(p, 0),
                vote: u64_at(p, 8),
                commit: u64_at(p, 16),
            }))
        }
        RecordKind::SnapshotMarker => {
            if p.len() < SNAPSHOT_FIXED_BYTES {
                return Err("snapshot marker payload too short".into());
            }
            let nv = u32_at(p, 16) as usize;
            let nl = u32_at(p, 20) as usize;
            let want = nv
                .checked_add(nl)
                .and_then(|n| n.checked_mul(8))
                .and_then(|n| n.checked_add(SNAPSHOT_FIXED_BYTES));
            if want != Some(p.len()) {
                return Err("snapshot marker member counts do not match its size".into());
            }
            if p[24] & !SNAPSHOT_FLAG_RESET != 0 || p[25..32].iter().any(|&b| b != 0) {
                return Err("snapshot marker has unknown flags".into());
            }
            let ids: Vec<u64> = (0..nv + nl)
                .map(|i| u64_at(p, SNAPSHOT_FIXED_BYTES + 8 * i))
                .collect();
            let meta = SnapshotMeta {
                index: u64_at(p, 0),
                term: u64_at(p, 8),
                conf_state: ConfState {
                    voters: ids[..nv].to_vec(),
                    learners: ids[nv..].to_vec(),
                },
            };
            Ok(Record::SnapshotMarker(meta, p[24] == SNAPSHOT_FLAG_RESET))
        }
        RecordKind::CrcSeed => {
            if p.len() != CRC_SEED_BYTES {
                return Err("crc seed payload has the wrong size".into());
            }
            Ok(Record::CrcSeed(u32_at(p, 0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, len: usize) -> Entry {
        Entry {
            term: 3,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8; len],
        }
    }

    #[test]
    fn header_round_trip_and_rejects_damage() {
        let h = SegmentHeader {
            seq: 7,
            first_index: 42,
            max_write_bytes: 1 << 20,
        };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[20] ^= 1;
        assert!(SegmentHeader::decode(&b).unwrap_err().contains("checksum"));
        b[8] = 9;
        assert!(SegmentHeader::decode(&b).unwrap_err().contains("version"));
    }

    #[test]
    fn records_round_trip_with_chained_crc() {
        let snap = SnapshotMeta {
            index: 5,
            term: 2,
            conf_state: ConfState {
                voters: vec![1, 2, 3],
                learners: vec![9],
            },
        };
        let hs = HardState {
            term: 3,
            vote: 2,
            commit: 4,
        };
        let mut buf = vec![0u8; 4096];
        let mut w = RecordWriter {
            buf: &mut buf,
            pos: 0,
            crc: 0xabcd,
        };
        w.put_crc_seed();
        for len in [0, 1, 7, 8, 9, 300] {
            w.put_entry(&entry(len as u64 + 1, len));
        }
        w.put_hard_state(&hs);
        w.put_snapshot(&snap, true);
        let end = w.pos;
        assert_eq!(end % RECORD_ALIGN, 0);

        let mut off = 0;
        let mut crc = 0;
        let mut got = Vec::new();
        while off < end {
            let (r, n, c) = decode_frame(&buf[off..], crc).unwrap();
            got.push(r);
            off += n;
            crc = c;
        }
        assert_eq!(got[0], Record::CrcSeed(0xabcd));
        assert_eq!(got[3], Record::Entry(entry(8, 7)));
        assert_eq!(got[7], Record::HardState(hs));
        assert_eq!(got[8], Record::SnapshotMarker(snap, true));
        assert_eq!(decode_frame(&buf[off..], crc), Err(FrameError::Zero));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let mut buf = vec![0u8; 256];
        let mut w = RecordWriter {
            buf: &mut buf,
            pos: 0,
            crc: 1,
        };
        w.put_entry(&entry(1, 40));
        let end = w.pos;
        for bit in 0..end * 8 {
            let mut b = buf.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            match decode_frame(&b, 1) {
                Ok((r, _, _)) => panic!("flip of bit {bit} undetected: {r:?}"),
                Err(FrameError::Zero) => assert!(bit < 64),
                Err(FrameError::Bad(_)) => {}
            }
        }
    }

    #[test]
    fn wrong_chain_seed_is_detected() {
        let mut buf = vec![0u8; 128];
        let mut w = RecordWriter {
            buf: &mut buf,
            pos: 0,
            crc: 1,
        };
        w.put_entry(&entry(1, 4));
        assert!(matches!(decode_frame(&buf, 2), Err(FrameError::Bad(_))));
    }
}
