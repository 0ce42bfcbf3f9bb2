//! Segment files: names, directory listing, creation (preallocated and
//! zero-filled, header made durable before the file gets its final name).

use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use super::WalOptions;
use super::error::WalError;
use super::format::{
    BLOCK_BYTES, CRC_SEED_FRAME_BYTES, HARD_STATE_FRAME_BYTES, RecordWriter, SEGMENT_HEADER_BYTES,
    SegmentHeader, align_up, frame_bytes, snapshot_payload_bytes,
};
use crate::types::{HardState, SnapshotMeta};

/// A segment known to exist under its final name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    pub seq: u64,
    pub first_index: u64,
    pub path: PathBuf,
}

pub fn segment_name(seq: u64, first_index: u64) -> String {
    format!("{seq:016x}-{first_index:016x}.wal")
}

/// Parses `{seq:016x}-{first_index:016x}.wal`.
pub fn parse_segment_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".wal")?;
    let (a, b) = stem.split_once('-')?;
    if a.len() != 16 || b.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(a, 16).ok()?,
        u64::from_str_radix(b, 16).ok()?,
    ))
}

/// Lists segments in `seq` order and deletes leftover `*.wal.tmp` files (a
/// segment being prepared or created at a crash or close; it never held
/// acknowledged data).
pub fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, WalError> {
    let rd = std::fs::read_dir(dir).map_err(|e| WalError::io("list directory", dir, e))?;
    let mut out = Vec::new();
    let mut removed_tmp = false;
    for ent in rd {
        let ent = ent.map_err(|e| WalError::io("list directory", dir, e))?;
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".wal.tmp") {
            std::fs::remove_file(ent.path())
                .map_err(|e| WalError::io("remove unfinished segment", ent.path(), e))?;
            removed_tmp = true;
        } else if let Some((seq, first_index)) = parse_segment_name(name) {
            out.push(SegmentFile {
                seq,
                first_index,
                path: ent.path(),
            });
        }
    }
    if removed_tmp {
        sync_dir(dir)?;
    }
    out.sort_by_key(|s| s.seq);
    Ok(out)
}

/// Makes creations, renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| WalError::io("fsync directory", dir, e))
}

/// State copied into the first records of every new segment, so that
/// releasing older segments never loses the latest hard state or snapshot.
pub struct SegmentStart<'a> {
    pub seq: u64,
    pub first_index: u64,
    pub crc: u32,
    pub hard_state: &'a HardState,
    pub snapshot: Option<&'a SnapshotMeta>,
}

/// An open, writable segment ready for appends.
pub struct NewSegment {
    pub file: DmaFile,
    pub info: SegmentFile,
    /// Offset just after the initial records.
    pub end: u64,
    pub crc: u32,
    /// Bytes of the partial block at `end` (may be empty).
    pub tail: Vec<u8>,
}

/// A preallocated, zero-filled file that will become segment `seq`; it has
/// no header yet (that needs the chain value and state at roll time).
pub struct PreparedFile {
    pub seq: u64,
    pub file: DmaFile,
    pub tmp: PathBuf,
}

/// Creates `{seq:016x}.next.wal.tmp`, preallocates it to `segment_bytes`
/// and zero-fills it. Zero-filling up front means later appends overwrite
/// already written blocks, so their fdatasync has no extent conversion to
/// journal. Runs in the background while the previous segment fills up.
pub async fn prepare_segment_file(
    dir: PathBuf,
    opts: WalOptions,
    seq: u64,
) -> Result<PreparedFile, WalError> {
    let tmp = dir.join(format!("{seq:016x}.next.wal.tmp"));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&tmp)
        .await
        .map_err(|e| WalError::io("create segment", &tmp, e))?;
    let size = opts.segment_bytes;
    file.pre_allocate(size, false)
        .await
        .map_err(|e| WalError::io("preallocate segment", &tmp, e))?;
    if opts.zero_fill_segments {
        let chunk = opts.zero_fill_chunk_bytes as u64;
        let mut pos = 0;
        while pos < size {
            let n = chunk.min(size - pos);
            let mut z = file.alloc_dma_buffer(n as usize);
            z.as_bytes_mut().fill(0);
            write_all(&file, z, pos, &tmp, "zero-fill segment").await?;
            pos += n;
        }
    }
    Ok(PreparedFile { seq, file, tmp })
}

/// Turns a prepared file (or a freshly prepared one) into segment
/// `start.seq`: writes the header and opening records, fdatasyncs (which
/// also covers the zero-fill), renames it into place and fsyncs the
/// directory. A segment only ever has its final name with a durable header.
pub async fn create_segment(
    dir: &Path,
    opts: &WalOptions,
    start: SegmentStart<'_>,
    prepared: Option<PreparedFile>,
) -> Result<NewSegment, WalError> {
    let PreparedFile { file, tmp, .. } = match prepared {
        Some(p) if p.seq == start.seq => p,
        _ => prepare_segment_file(dir.to_path_buf(), opts.clone(), start.seq).await?,
    };
    let path = dir.join(segment_name(start.seq, start.first_index));
    let head_bytes = SEGMENT_HEADER_BYTES
        + CRC_SEED_FRAME_BYTES
        + HARD_STATE_FRAME_BYTES
        + start
            .snapshot
            .map_or(0, |s| frame_bytes(snapshot_payload_bytes(s)));
    let head_len = align_up(head_bytes as u64, BLOCK_BYTES as u64) as usize;
    let mut head = file.alloc_dma_buffer(head_len);
    let buf = head.as_bytes_mut();
    buf.fill(0);
    let header = SegmentHeader {
        seq: start.seq,
        first_index: start.first_index,
        max_write_bytes: opts.max_write_bytes(),
    };
    buf[..SEGMENT_HEADER_BYTES].copy_from_slice(&header.encode());
    let mut w = RecordWriter {
        buf,
        pos: SEGMENT_HEADER_BYTES,
        crc: start.crc,
    };
    w.put_crc_seed();
    w.put_hard_state(start.hard_state);
    if let Some(s) = start.snapshot {
        // The current snapshot restated: it never resets the log.
        w.put_snapshot(s, false);
    }
    let (end, crc) = (w.pos, w.crc);
    let block_start = end / BLOCK_BYTES * BLOCK_BYTES;
    let tail = head.as_bytes()[block_start..end].to_vec();

    write_all(&file, head, 0, &tmp, "write segment header").await?;
    file.fdatasync()
        .await
        .map_err(|e| WalError::io("fdatasync new segment", &tmp, e))?;
    crate::failpoint::hit("wal-segment-rename");
    file.rename(&path)
        .await
        .map_err(|e| WalError::io("rename new segment", &tmp, e))?;
    sync_dir(dir)?;
    Ok(NewSegment {
        file,
        info: SegmentFile {
            seq: start.seq,
            first_index: start.first_index,
            path,
        },
        end: end as u64,
        crc,
        tail,
    })
}

/// One O_DIRECT write that must land completely.
pub async fn write_all(
    file: &DmaFile,
    buf: glommio::io::DmaBuffer,
    pos: u64,
    path: &Path,
    op: &'static str,
) -> Result<(), WalError> {
    let want = buf.len();
    let n = file
        .write_at(buf, pos)
        .await
        .map_err(|e| WalError::io(op, path, e))?;
    if n != want {
        return Err(WalError::io(
            op,
            path,
            std::io::Error::new(
                std::io::ErrorKind::WriteZero,
                format!("short O_DIRECT write: {n} of {want} bytes at offset {pos}"),
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let n = segment_name(0x1f, 0xabc);
        assert_eq!(n, "000000000000001f-0000000000000abc.wal");
        assert_eq!(parse_segment_name(&n), Some((0x1f, 0xabc)));
        assert_eq!(parse_segment_name("x.wal"), None);
        assert_eq!(parse_segment_name(&format!("{n}.broken")), None);
    }
}
