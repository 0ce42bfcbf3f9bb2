//! `Wal::open`: replay every segment, repair a torn tail, rebuild the
//! position index and the tail cache.
//!
//! Segments are read with plain buffered reads: this runs once at start-up
//! before the member serves anything, so blocking the executor is harmless,
//! and it keeps recovery independent of the io_uring setup.

use std::io::Write;
use std::path::{Path, PathBuf};

use glommio::io::OpenOptions;

use super::error::WalError;
use super::format::{BLOCK_BYTES, Record, SegmentHeader, align_down, align_up};
use super::indexed::IndexedLog;
use super::log::{Wal, WalStats};
use super::scan::{ScanEnd, scan_segment};
use super::segment::{SegmentStart, create_segment, list_segments, sync_dir, write_all};
use super::state::{EntryPos, LogState, Termed};
use super::{Recovered, TornTail, WalOptions};
use crate::types::{Entry, HardState};

struct Replayed {
    pos: EntryPos,
    entry: Entry,
}

impl Termed for Replayed {
    fn term(&self) -> u64 {
        self.entry.term
    }
}

/// The active segment as found on disk.
struct LastSegment {
    bytes: Vec<u8>,
    end: u64,
    crc: u32,
    has_writes: bool,
    how: ScanEnd,
}

fn corrupted(path: &Path, offset: u64, last_good_index: u64, reason: String) -> WalError {
    WalError::Corrupted {
        path: path.to_path_buf(),
        offset,
        last_good_index,
        reason,
    }
}

impl Wal {
    /// Opens (or creates) the WAL in `dir` and returns it with everything it
    /// holds. Must run on a glommio executor.
    ///
    /// Refuses with [`WalError::Corrupted`] when bytes before the tail do not
    /// verify or segments are missing; a torn last write is cut off and
    /// reported in [`Recovered::torn_tail`].
    pub async fn open(
        dir: impl AsRef<Path>,
        opts: WalOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| WalError::io("create directory", &dir, e))?;
        super::runtime::prime_io_poll_probe(&dir).await?;
        let segments = list_segments(&dir)?;
        if segments.is_empty() {
            return Self::create_fresh(dir, opts).await;
        }
        for w in segments.windows(2) {
            if w[1].seq != w[0].seq + 1 {
                return Err(corrupted(
                    &w[1].path,
                    0,
                    0,
                    format!("segment sequence jumps from {} to {}", w[0].seq, w[1].seq),
                ));
            }
        }

        let mut st: LogState<Replayed> = LogState::new();
        let mut prev_crc: Option<u32> = None;
        let mut last = None;
        for (k, seg) in segments.iter().enumerate() {
            let is_last = k + 1 == segments.len();
            let bytes =
                std::fs::read(&seg.path).map_err(|e| WalError::io("read segment", &seg.path, e))?;
            let header = SegmentHeader::decode(&bytes).map_err(|r| {
                corrupted(
                    &seg.path,
                    0,
                    st.last_index(),
                    format!("segment header: {r}"),
                )
            })?;
            if header.seq != seg.seq || header.first_index != seg.first_index {
                return Err(corrupted(
                    &seg.path,
                    0,
                    st.last_index(),
                    "segment header disagrees with the file name".into(),
                ));
            }
            let scan = scan_segment(&bytes, header, is_last);
            let mut has_writes = scan.records.len() > 3;
            for r in scan.records {
                let bad = |reason: String, st: &LogState<Replayed>| {
                    corrupted(&seg.path, r.offset, st.last_index(), reason)
                };
                match r.record {
                    Record::CrcSeed(seed) => {
                        if prev_crc.is_some_and(|p| p != seed) {
                            return Err(bad("crc chain broken between segments".into(), &st));
                        }
                    }
                    Record::Entry(entry) => {
                        has_writes = true;
                        let pos = EntryPos {
                            seq: seg.seq,
                            offset: r.offset,
                            term: entry.term,
                            frame_len: r.frame_len,
                            seed_crc: r.seed_crc,
                        };
                        let index = entry.index;
                        st.replay_put(index, Replayed { pos, entry })
                            .map_err(|m| bad(m, &st))?;
                    }
                    Record::HardState(hs) => st.hard_state = hs,
                    Record::SnapshotMarker(meta, reset) => st.apply_snapshot(meta, reset),
                }
            }
            if let ScanEnd::Corrupt { offset, reason } = scan.how {
                return Err(corrupted(&seg.path, offset, st.last_index(), reason));
            }
            prev_crc = Some(scan.crc);
            if is_last {
                last = Some(LastSegment {
                    bytes,
                    end: scan.end,
                    crc: scan.crc,
                    has_writes,
                    how: scan.how,
                });
            }
        }
        let last = last.expect("segments is not empty");
        let active = segments.last().expect("segments is not empty").clone();
        st.finish_replay()
            .map_err(|m| corrupted(&active.path, 0, st.last_index(), m))?;

        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .dma_open(&active.path)
            .await
            .map_err(|e| WalError::io("open active segment", &active.path, e))?;
        let torn_tail = match &last.how {
            ScanEnd::Torn { torn_end, reason } => Some(
                repair_torn_tail(
                    &file,
                    &active.path,
                    &last.bytes,
                    last.end,
                    *torn_end,
                    reason,
                )
                .await?,
            ),
            _ => None,
        };

        let mut state: LogState<EntryPos> = LogState {
            hard_state: st.hard_state,
            snapshot: st.snapshot.clone(),
            log: IndexedLog::new(st.log.first_index()),
        };
        let mut entries = Vec::with_capacity(st.log.len());
        let first = st.log.first_index();
        for (k, r) in st.log.iter().enumerate() {
            state.log.put(first + k as u64, r.pos);
            entries.push(r.entry.clone());
        }
        drop(st);

        let mut cache = IndexedLog::new(state.log.last_index() + 1);
        let mut cache_bytes = 0;
        if opts.cache_max_bytes > 0 {
            let mut start = entries.len();
            while start > 0 && cache_bytes + entries[start - 1].size_bytes() <= opts.cache_max_bytes
            {
                start -= 1;
                cache_bytes += entries[start].size_bytes();
            }
            cache.reset(state.log.last_index() + 1 - (entries.len() - start) as u64);
            for e in &entries[start..] {
                cache.put(e.index, e.clone());
            }
        }

        let tail_start = align_down(last.end, BLOCK_BYTES as u64) as usize;
        let wal = Wal {
            dir,
            opts,
            segments,
            file,
            end: last.end,
            tail: last.bytes[tail_start..last.end as usize].to_vec(),
            crc: last.crc,
            seg_has_writes: last.has_writes,
            dirty: false,
            state,
            cache,
            cache_bytes,
            failed: None,
            stats: WalStats::default(),
            next_segment: None,
            #[cfg(test)]
            failpoint: None,
        };
        let mut wal = wal;
        wal.start_preparing_next();
        let recovered = Recovered {
            hard_state: wal.state.hard_state,
            snapshot: wal.state.snapshot.clone(),
            entries,
            torn_tail,
        };
        Ok((wal, recovered))
    }

    async fn create_fresh(dir: PathBuf, opts: WalOptions) -> Result<(Wal, Recovered), WalError> {
        let hs = HardState::default();
        let start = SegmentStart {
            seq: 0,
            first_index: 1,
            crc: 0,
            hard_state: &hs,
            snapshot: None,
        };
        let ns = create_segment(&dir, &opts, start, None).await?;
        let wal = Wal {
            dir,
            opts,
            segments: vec![ns.info],
            file: ns.file,
            end: ns.end,
            tail: ns.tail,
            crc: ns.crc,
            seg_has_writes: false,
            dirty: false,
            state: LogState::new(),
            cache: IndexedLog::new(1),
            cache_bytes: 0,
            failed: None,
            stats: WalStats {
                segments_created: 1,
                ..WalStats::default()
            },
            next_segment: None,
            #[cfg(test)]
            failpoint: None,
        };
        let mut wal = wal;
        wal.start_preparing_next();
        Ok((wal, Recovered::default()))
    }
}

/// Copies `bytes[end..torn_end]` to `{segment}.{end:016x}.broken`, then
/// zeroes that range in the segment (keeping the preallocation) and makes
/// both durable.
async fn repair_torn_tail(
    file: &glommio::io::DmaFile,
    path: &Path,
    bytes: &[u8],
    end: u64,
    torn_end: u64,
    reason: &str,
) -> Result<TornTail, WalError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("segment");
    let copy = path.with_file_name(format!("{name}.{end:016x}.broken"));
    let broken = &bytes[end as usize..torn_end as usize];
    let mut f = std::fs::File::create(&copy)
        .map_err(|e| WalError::io("create broken-tail copy", &copy, e))?;
    f.write_all(broken)
        .and_then(|()| f.sync_all())
        .map_err(|e| WalError::io("write broken-tail copy", &copy, e))?;

    let block = BLOCK_BYTES as u64;
    let start = align_down(end, block);
    let stop = align_up(torn_end, block);
    let mut buf = file.alloc_dma_buffer((stop - start) as usize);
    let b = buf.as_bytes_mut();
    b.fill(0);
    b[..(end - start) as usize].copy_from_slice(&bytes[start as usize..end as usize]);
    write_all(file, buf, start, path, "zero torn tail").await?;
    file.fdatasync()
        .await
        .map_err(|e| WalError::io("fdatasync repaired segment", path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(TornTail {
        segment: path.to_path_buf(),
        offset: end,
        bytes: torn_end - end,
        copy,
        reason: reason.to_string(),
    })
}
