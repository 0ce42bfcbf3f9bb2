//! The glommio WAL writer and reader. Opening and recovery live in
//! `open.rs`.

use std::path::{Path, PathBuf};

use glommio::io::{DmaFile, OpenOptions};

use super::error::WalError;
use super::format::{
    BLOCK_BYTES, HARD_STATE_FRAME_BYTES, RecordWriter, align_down, align_up, decode_entry_frame,
    entry_payload_bytes, frame_bytes, snapshot_payload_bytes,
};
use super::indexed::IndexedLog;
use super::segment::{
    PreparedFile, SegmentFile, SegmentStart, create_segment, prepare_segment_file, sync_dir,
    write_all,
};
use super::state::{EntryPos, LogState};
use super::{LogStorage, WalOptions};
use crate::types::{Entry, HardState, SnapshotMeta};

/// Counters since open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub writes: u64,
    pub fsyncs: u64,
    pub bytes_written: u64,
    pub entries_written: u64,
    pub segments_created: u64,
    pub segments_released: u64,
}

/// Injected failure for the fail-stop tests.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailPoint {
    Write,
    Sync,
}

/// The O_DIRECT write-ahead log. Single-threaded: lives on one glommio
/// executor.
///
/// Invariants: `tail == bytes [align_down(end), end)` of the active
/// segment; `crc` is the chain value after the last record at `end`;
/// `cache`, when non-empty, holds exactly the last entries of `state.log`.
pub struct Wal {
    pub(super) dir: PathBuf,
    pub(super) opts: WalOptions,
    /// Oldest first; the last one is the active segment.
    pub(super) segments: Vec<SegmentFile>,
    pub(super) file: DmaFile,
    pub(super) end: u64,
    pub(super) tail: Vec<u8>,
    pub(super) crc: u32,
    /// True once the active segment holds more than its opening records.
    pub(super) seg_has_writes: bool,
    /// Written since the last fdatasync of the active segment.
    pub(super) dirty: bool,
    pub(super) state: LogState<EntryPos>,
    pub(super) cache: IndexedLog<Entry>,
    pub(super) cache_bytes: usize,
    pub(super) failed: Option<String>,
    pub(super) stats: WalStats,
    /// Background preparation of the next segment file, if enabled.
    pub(super) next_segment: Option<glommio::Task<Result<PreparedFile, WalError>>>,
    #[cfg(test)]
    pub(crate) failpoint: Option<FailPoint>,
}

impl Wal {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// Why the WAL is fail-stopped, if it is.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    pub fn first_index(&self) -> u64 {
        self.state.first_index()
    }

    pub fn last_index(&self) -> u64 {
        self.state.last_index()
    }

    pub fn term(&self, index: u64) -> Option<u64> {
        self.state.term(index)
    }

    pub fn hard_state(&self) -> HardState {
        self.state.hard_state
    }

    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.state.snapshot.as_ref()
    }

    /// The segment appends go to, and the offset just after its last record.
    pub fn write_position(&self) -> (&Path, u64) {
        let path = self
            .segments
            .last()
            .map(|s| s.path.as_path())
            .expect("there is always an active segment");
        (path, self.end)
    }

    /// Number of segment files currently in use.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn check_live(&self, op: &'static str) -> Result<(), WalError> {
        match &self.failed {
            Some(cause) => Err(WalError::Failed {
                op,
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Latches the failed state; the returned error goes to the caller.
    fn latch(&mut self, err: WalError) -> WalError {
        if self.failed.is_none() {
            self.failed = Some(err.to_string());
        }
        err
    }

    /// Durably appends `entries` (overwriting from `entries[0].index`) and
    /// `hs`: one O_DIRECT write per `max_batch_bytes` of records, then one
    /// fdatasync. On `Ok` everything is durable.
    pub async fn append(
        &mut self,
        entries: &[Entry],
        hs: Option<HardState>,
    ) -> Result<(), WalError> {
        self.check_live("append")?;
        self.state
            .check_append(entries)
            .map_err(|reason| WalError::InvalidArgument {
                op: "append",
                reason,
            })?;
        for e in entries {
            let bytes = entry_payload_bytes(e);
            if bytes > self.opts.max_record_bytes {
                return Err(WalError::RecordTooLarge {
                    index: e.index,
                    bytes,
                    max_bytes: self.opts.max_record_bytes,
                });
            }
        }
        if entries.is_empty() && hs.is_none() {
            return Ok(());
        }
        let mut rest = entries;
        loop {
            let n = chunk_len(rest, self.opts.max_batch_bytes);
            let (chunk, after) = rest.split_at(n);
            let hs_here = if after.is_empty() { hs.as_ref() } else { None };
            self.write_records(chunk, hs_here, None).await?;
            rest = after;
            if rest.is_empty() {
                break;
            }
        }
        self.sync().await
    }

    /// Durably records a snapshot marker. If the log does not hold
    /// `meta.index` with `meta.term`, the log restarts after it (a follower
    /// installing a leader's snapshot); otherwise entries are kept until
    /// [`Wal::release_before`].
    pub async fn save_snapshot_marker(&mut self, meta: &SnapshotMeta) -> Result<(), WalError> {
        self.check_live("save_snapshot_marker")?;
        if meta.index < self.state.snapshot_index() {
            return Err(WalError::InvalidArgument {
                op: "save_snapshot_marker",
                reason: format!(
                    "snapshot index {} is below the current snapshot {}",
                    meta.index,
                    self.state.snapshot_index()
                ),
            });
        }
        let reset = self.state.snapshot_resets(meta);
        crate::failpoint::hit("wal-snapshot-marker");
        self.write_records(&[], None, Some((meta, reset))).await?;
        self.sync().await?;
        self.state.apply_snapshot(meta.clone(), reset);
        if reset {
            self.cache.reset(meta.index + 1);
            self.cache_bytes = 0;
        }
        Ok(())
    }

    /// Forgets entries below `index` (which must not pass the snapshot
    /// index + 1) and deletes every segment that no live entry needs.
    /// Returns how many segment files were deleted.
    pub async fn release_before(&mut self, index: u64) -> Result<usize, WalError> {
        self.check_live("release_before")?;
        self.state
            .check_release(index)
            .map_err(|reason| WalError::InvalidArgument {
                op: "release_before",
                reason,
            })?;
        self.state.log.drop_before(index);
        while self.cache.first_index() < index {
            match self.cache.pop_front() {
                Some(e) => self.cache_bytes -= e.size_bytes(),
                None => break,
            }
        }
        let active = self.active_seq();
        let min_live = self.state.log.front().map_or(active, |p| p.seq);
        let n = self
            .segments
            .iter()
            .take_while(|s| s.seq < min_live && s.seq != active)
            .count();
        for _ in 0..n {
            let seg = self.segments.remove(0);
            if let Err(e) = std::fs::remove_file(&seg.path) {
                return Err(self.latch(WalError::io("delete released segment", &seg.path, e)));
            }
            self.stats.segments_released += 1;
        }
        if n > 0 {
            if let Err(e) = sync_dir(&self.dir) {
                return Err(self.latch(e));
            }
        }
        Ok(n)
    }

    /// Entries in `[lo, hi)`: from the tail cache where possible, otherwise
    /// read back and verified against their recorded crc.
    pub async fn read_entries(&self, lo: u64, hi: u64) -> Result<Vec<Entry>, WalError> {
        self.check_live("read_entries")?;
        let (first, last) = (self.state.log.first_index(), self.state.log.last_index());
        if lo > hi || lo < first || hi > last + 1 {
            return Err(WalError::Unavailable {
                lo,
                hi,
                first,
                last,
            });
        }
        let mut out = Vec::with_capacity((hi - lo) as usize);
        let cache_lo = if self.cache.is_empty() {
            hi
        } else {
            self.cache.first_index().clamp(lo, hi)
        };
        self.read_from_disk(lo, cache_lo, &mut out).await?;
        for i in cache_lo..hi {
            let e = self.cache.get(i).expect("cache holds the log's suffix");
            out.push(e.clone());
        }
        Ok(out)
    }

    async fn read_from_disk(&self, lo: u64, hi: u64, out: &mut Vec<Entry>) -> Result<(), WalError> {
        let mut i = lo;
        while i < hi {
            let p0 = *self
                .state
                .log
                .get(i)
                .expect("index checked against the log range");
            // A run: same segment, increasing offsets, within read_chunk_bytes.
            let mut j = i + 1;
            let mut span_end = p0.offset + u64::from(p0.frame_len);
            while j < hi {
                let p = self
                    .state
                    .log
                    .get(j)
                    .expect("index checked against the log range");
                let end = p.offset + u64::from(p.frame_len);
                if p.seq != p0.seq
                    || p.offset < span_end
                    || end - p0.offset > self.opts.read_chunk_bytes as u64
                {
                    break;
                }
                span_end = end;
                j += 1;
            }
            let path = self.segment_path(p0.seq);
            let opened = if p0.seq == self.active_seq() {
                None
            } else {
                let f = OpenOptions::new()
                    .read(true)
                    .dma_open(&path)
                    .await
                    .map_err(|e| WalError::io("open segment for read", &path, e))?;
                Some(f)
            };
            let file = opened.as_ref().unwrap_or(&self.file);
            let data = file
                .read_at(p0.offset, (span_end - p0.offset) as usize)
                .await
                .map_err(|e| WalError::io("read entries", &path, e))?;
            for k in i..j {
                let p = self
                    .state
                    .log
                    .get(k)
                    .expect("index checked against the log range");
                let at = (p.offset - p0.offset) as usize;
                let frame = data.get(at..at + p.frame_len as usize).unwrap_or(&[]);
                let e = decode_entry_frame(frame, p.seed_crc)
                    .and_then(|e| {
                        if e.index == k && e.term == p.term {
                            Ok(e)
                        } else {
                            Err(format!(
                                "found entry {}/{} where {k}/{} was written",
                                e.index, e.term, p.term
                            ))
                        }
                    })
                    .map_err(|reason| WalError::Corrupted {
                        path: path.clone(),
                        offset: p.offset,
                        last_good_index: k - 1,
                        reason,
                    })?;
                out.push(e);
            }
            if let Some(f) = opened {
                // Read-only handle: a close error cannot lose data.
                let _ = f.close().await;
            }
            i = j;
        }
        Ok(())
    }

    fn active_seq(&self) -> u64 {
        self.segments
            .last()
            .expect("there is always an active segment")
            .seq
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        match self.segments.binary_search_by_key(&seq, |s| s.seq) {
            Ok(k) => self.segments[k].path.clone(),
            Err(_) => panic!("live entry points at released segment {seq}"),
        }
    }

    /// Starts preparing the file for the segment after the active one.
    pub(super) fn start_preparing_next(&mut self) {
        if self.opts.prepare_next_segment && self.next_segment.is_none() {
            let seq = self.active_seq() + 1;
            let task = glommio::spawn_local(prepare_segment_file(
                self.dir.clone(),
                self.opts.clone(),
                seq,
            ));
            self.next_segment = Some(task);
        }
    }

    /// Closes the active segment. Everything acknowledged is already durable.
    /// A half-prepared next segment is abandoned (its `.tmp` file is removed
    /// by the next open).
    pub async fn close(mut self) -> Result<(), WalError> {
        if let Some(task) = self.next_segment.take() {
            if let Ok(p) = task.await {
                let _ = p.file.close().await;
                let _ = std::fs::remove_file(&p.tmp);
            }
        }
        let path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        self.file
            .close()
            .await
            .map_err(|e| WalError::io("close segment", path, e))
    }

    async fn sync(&mut self) -> Result<(), WalError> {
        #[cfg(test)]
        if self.failpoint == Some(FailPoint::Sync) {
            let e = std::io::Error::other("injected fdatasync failure");
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            return Err(self.latch(WalError::io("fdatasync", path, e)));
        }
        let synced = match crate::failpoint::io_error("wal-fsync") {
            Some(e) => Err(e.into()),
            None => self.file.fdatasync().await,
        };
        if let Err(e) = synced {
            let path = self
                .segments
                .last()
                .map(|s| s.path.clone())
                .unwrap_or_default();
            return Err(self.latch(WalError::io("fdatasync", path, e)));
        }
        self.stats.fsyncs += 1;
        self.dirty = false;
        Ok(())
    }

    /// Closes the active segment (fdatasync first if dirty) and opens the
    /// next one, which starts with the crc seed, hard state and snapshot.
    async fn roll(&mut self) -> Result<(), WalError> {
        crate::failpoint::hit("wal-rotate");
        if self.dirty {
            self.sync().await?;
        }
        let seq = self.active_seq() + 1;
        let prepared = match self.next_segment.take() {
            Some(task) => match task.await {
                Ok(p) => Some(p),
                Err(e) => return Err(self.latch(e)),
            },
            None => None,
        };
        let start = SegmentStart {
            seq,
            first_index: self.state.last_index() + 1,
            crc: self.crc,
            hard_state: &self.state.hard_state,
            snapshot: self.state.snapshot.as_ref(),
        };
        let created = create_segment(&self.dir, &self.opts, start, prepared).await;
        let ns = match created {
            Ok(ns) => ns,
            Err(e) => return Err(self.latch(e)),
        };
        let old = std::mem::replace(&mut self.file, ns.file);
        let old_path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();
        self.segments.push(ns.info);
        self.end = ns.end;
        self.tail = ns.tail;
        self.crc = ns.crc;
        self.seg_has_writes = false;
        self.stats.segments_created += 1;
        self.start_preparing_next();
        if let Err(e) = old.close().await {
            return Err(self.latch(WalError::io("close full segment", old_path, e)));
        }
        Ok(())
    }

    /// Writes records with one O_DIRECT write starting at the block holding
    /// `end`; the in-memory tail block is rewritten with identical bytes,
    /// so a torn rewrite cannot damage records that were already durable.
    /// State changes only after the write completed.
    async fn write_records(
        &mut self,
        entries: &[Entry],
        hs: Option<&HardState>,
        snap: Option<(&SnapshotMeta, bool)>,
    ) -> Result<(), WalError> {
        let bytes = entries
            .iter()
            .map(|e| frame_bytes(entry_payload_bytes(e)))
            .sum::<usize>()
            + hs.map_or(0, |_| HARD_STATE_FRAME_BYTES)
            + snap.map_or(0, |(s, _)| frame_bytes(snapshot_payload_bytes(s)));
        if self.end + bytes as u64 > self.opts.segment_bytes && self.seg_has_writes {
            self.roll().await?;
        }
        let block = BLOCK_BYTES as u64;
        let start = align_down(self.end, block);
        let len = (align_up(self.end + bytes as u64, block) - start) as usize;
        let mut buf = self.file.alloc_dma_buffer(len);
        let b = buf.as_bytes_mut();
        let t = self.tail.len();
        b[..t].copy_from_slice(&self.tail);
        b[t..].fill(0);
        let mut w = RecordWriter {
            buf: b,
            pos: t,
            crc: self.crc,
        };
        let placed: Vec<(usize, u32)> = entries.iter().map(|e| w.put_entry(e)).collect();
        if let Some(hs) = hs {
            w.put_hard_state(hs);
        }
        if let Some((s, reset)) = snap {
            w.put_snapshot(s, reset);
        }
        let (pos, crc) = (w.pos, w.crc);
        let new_tail = b[pos / BLOCK_BYTES * BLOCK_BYTES..pos].to_vec();
        let path = self
            .segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_default();

        #[cfg(test)]
        if self.failpoint == Some(FailPoint::Write) {
            let e = std::io::Error::other("injected write failure");
            return Err(self.latch(WalError::io("write records", path, e)));
        }
        crate::failpoint::hit("wal-write");
        if let Err(e) = write_all(&self.file, buf, start, &path, "write records").await {
            return Err(self.latch(e));
        }
        self.dirty = true;
        self.seg_has_writes = true;
        self.stats.writes += 1;
        self.stats.bytes_written += len as u64;
        self.stats.entries_written += entries.len() as u64;
        let seq = self.active_seq();
        for (e, (off, seed)) in entries.iter().zip(placed) {
            let p = EntryPos {
                seq,
                offset: start + off as u64,
                term: e.term,
                frame_len: frame_bytes(entry_payload_bytes(e)) as u32,
                seed_crc: seed,
            };
            self.state.put(e.index, p);
            self.cache_put(e);
        }
        self.end = start + pos as u64;
        self.tail = new_tail;
        self.crc = crc;
        if let Some(hs) = hs {
            self.state.hard_state = *hs;
        }
        Ok(())
    }

    fn cache_put(&mut self, e: &Entry) {
        if self.opts.cache_max_bytes == 0 {
            return;
        }
        if e.index < self.cache.first_index() || e.index > self.cache.last_index() + 1 {
            self.cache.reset(e.index);
            self.cache_bytes = 0;
        }
        while self.cache.last_index() >= e.index {
            if let Some(old) = self.cache.pop_back() {
                self.cache_bytes -= old.size_bytes();
            }
        }
        self.cache.put(e.index, e.clone());
        self.cache_bytes += e.size_bytes();
        while self.cache_bytes > self.opts.cache_max_bytes {
            match self.cache.pop_front() {
                Some(old) => self.cache_bytes -= old.size_bytes(),
                None => break,
            }
        }
    }
}

/// How many leading entries fit one write of `max_bytes` (at least one).
fn chunk_len(entries: &[Entry], max_bytes: usize) -> usize {
    let mut total = 0;
    for (k, e) in entries.iter().enumerate() {
        total += frame_bytes(entry_payload_bytes(e));
        if total > max_bytes && k > 0 {
            return k;
        }
    }
    entries.len()
}

impl LogStorage for Wal {
    fn append(
        &mut self,
        entries: &[Entry],
        hs: Option<HardState>,
    ) -> impl Future<Output = Result<(), WalError>> {
        Wal::append(self, entries, hs)
    }

    fn save_snapshot_marker(
        &mut self,
        meta: &SnapshotMeta,
    ) -> impl Future<Output = Result<(), WalError>> {
        Wal::save_snapshot_marker(self, meta)
    }

    async fn release_before(&mut self, index: u64) -> Result<(), WalError> {
        Wal::release_before(self, index).await.map(|_| ())
    }

    fn read_entries(&self, lo: u64, hi: u64) -> impl Future<Output = Result<Vec<Entry>, WalError>> {
        Wal::read_entries(self, lo, hi)
    }

    fn first_index(&self) -> u64 {
        Wal::first_index(self)
    }

    fn last_index(&self) -> u64 {
        Wal::last_index(self)
    }

    fn term(&self, index: u64) -> Option<u64> {
        Wal::term(self, index)
    }

    fn hard_state(&self) -> HardState {
        Wal::hard_state(self)
    }

    fn snapshot(&self) -> Option<&SnapshotMeta> {
        Wal::snapshot(self)
    }
}
