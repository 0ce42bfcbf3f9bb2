//! The write-ahead log: Raft entries, hard state and snapshot markers in
//! segment files written with O_DIRECT through io_uring (glommio
//! [`DmaFile`](glommio::io::DmaFile)), one fdatasync per batch.
//!
//! The byte layout, crc chaining, alignment and recovery rules are in
//! `docs/wal-format.md`. In short:
//!
//! - [`Wal::append`] writes one Ready's entries (+ hard state) with one
//!   O_DIRECT write (several only above [`WalOptions::max_batch_bytes`]) and
//!   one fdatasync. The partial last 4 KiB block is kept in memory and
//!   rewritten, with identical old bytes, by the next write.
//! - [`GroupCommitter`] lets many tasks on one executor submit entries; all
//!   submissions that arrive while a write+fdatasync is in flight form the
//!   next batch.
//! - [`Wal::open`] replays every segment, truncates a torn tail (keeping a
//!   `.broken` copy) and refuses to start on corruption before the tail.
//! - The first failed write or fdatasync latches the WAL: every later call
//!   returns [`WalError::Failed`]; nothing is retried or acknowledged.
//! - [`LogStorage`] is implemented by [`Wal`] and by [`MemLog`], an
//!   in-memory log that can lose unsynced writes on a simulated crash.
//!
//! Executors: see [`runtime`] for the glommio settings that keep io_uring
//! buffer registration inside an 8 MiB `RLIMIT_MEMLOCK`.

pub mod bench;
mod error;
pub(crate) mod format;
pub mod fuzzing;
mod group;
mod indexed;
mod log;
mod memory;
mod open;
pub mod runtime;
mod scan;
mod segment;
mod state;
#[cfg(test)]
mod wal_tests;

use std::future::Future;
use std::path::PathBuf;

pub use error::WalError;
pub use group::{GroupCommitter, GroupOptions, GroupStats};
pub use log::{Wal, WalStats};
pub use memory::MemLog;
pub use segment::{parse_segment_name, segment_name};

use crate::types::{Entry, HardState, SnapshotMeta};
use format::{BLOCK_BYTES, ENTRY_FIXED_BYTES, HARD_STATE_FRAME_BYTES, frame_bytes};

/// WAL settings. Every size is a bound on some buffer or write.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size each segment is preallocated (and zero-filled) to; a new segment
    /// starts when the next write would not fit. Multiple of 4096.
    pub segment_bytes: u64,
    /// Upper bound of one O_DIRECT write of records; an append above it is
    /// split into several writes followed by one fdatasync.
    pub max_batch_bytes: usize,
    /// Largest entry payload accepted (`data` + 17 bytes of term, index,
    /// kind).
    pub max_record_bytes: usize,
    /// Bytes of recent entries kept in memory for `read_entries`.
    pub cache_max_bytes: usize,
    /// Largest single read when `read_entries` goes to disk. Keep it at or
    /// below the device's `max_sectors_kb`: glommio 0.9 reads above it can
    /// hang on some kernels (glommio PR #635).
    pub read_chunk_bytes: usize,
    /// Write zeros over a new segment before use, so appends never convert
    /// unwritten extents (which makes every fdatasync a journal commit).
    pub zero_fill_segments: bool,
    /// Size of each zero-fill write (kept at or below `max_sectors_kb`, see
    /// `read_chunk_bytes`).
    pub zero_fill_chunk_bytes: usize,
    /// Prepare (preallocate and zero-fill) the next segment in a background
    /// task while the current one fills, so a roll costs one header write,
    /// one fdatasync and a rename instead of a full zero-fill.
    pub prepare_next_segment: bool,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            max_batch_bytes: 1 << 20,
            max_record_bytes: 4 << 20,
            cache_max_bytes: 16 << 20,
            read_chunk_bytes: 128 << 10,
            zero_fill_segments: true,
            zero_fill_chunk_bytes: 128 << 10,
            prepare_next_segment: true,
        }
    }
}

impl WalOptions {
    /// Largest single write this configuration can issue (recorded in each
    /// segment header for the torn-tail rule).
    pub fn max_write_bytes(&self) -> u64 {
        (self.max_batch_bytes
            + frame_bytes(ENTRY_FIXED_BYTES + self.max_record_bytes)
            + HARD_STATE_FRAME_BYTES
            + 2 * BLOCK_BYTES) as u64
    }

    pub fn validate(&self) -> Result<(), WalError> {
        let bad = |m: &str| Err(WalError::InvalidOptions(m.to_string()));
        if self.segment_bytes < 64 * 1024 || self.segment_bytes % BLOCK_BYTES as u64 != 0 {
            return bad("segment_bytes must be a multiple of 4096 and at least 64 KiB");
        }
        if self.max_batch_bytes < BLOCK_BYTES {
            return bad("max_batch_bytes must be at least 4096");
        }
        if self.max_record_bytes > (u32::MAX as usize) - 64 {
            return bad("max_record_bytes must fit the 32-bit length field");
        }
        if self.read_chunk_bytes < BLOCK_BYTES {
            return bad("read_chunk_bytes must be at least 4096");
        }
        if self.zero_fill_chunk_bytes < BLOCK_BYTES || self.zero_fill_chunk_bytes % BLOCK_BYTES != 0
        {
            return bad("zero_fill_chunk_bytes must be a positive multiple of 4096");
        }
        Ok(())
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Latest hard state (default if none was ever written).
    pub hard_state: HardState,
    /// Latest snapshot marker.
    pub snapshot: Option<SnapshotMeta>,
    /// Every live entry after the snapshot, contiguous, overwritten
    /// suffixes already resolved.
    pub entries: Vec<Entry>,
    /// Set when a torn tail was cut off, for the operator log.
    pub torn_tail: Option<TornTail>,
}

/// A torn last write that recovery discarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub segment: PathBuf,
    /// Offset where the good data ends.
    pub offset: u64,
    /// Bytes discarded (copied to `copy` first).
    pub bytes: u64,
    pub copy: PathBuf,
    pub reason: String,
}

/// Durable Raft log storage: the glommio [`Wal`] and the in-memory
/// [`MemLog`] implement it, so tests and the simulator can run without
/// disks. Futures of `MemLog` are always ready.
///
/// Contract: when `append`/`save_snapshot_marker` resolve `Ok`, the data is
/// durable. After any `Err` from an IO failure, the storage is fail-stopped.
pub trait LogStorage {
    /// Appends entries (overwriting any suffix from `entries[0].index`) and
    /// optionally a hard state, durably.
    fn append(
        &mut self,
        entries: &[Entry],
        hs: Option<HardState>,
    ) -> impl Future<Output = Result<(), WalError>>;

    /// Records that a snapshot covers the log up to `meta.index`.
    fn save_snapshot_marker(
        &mut self,
        meta: &SnapshotMeta,
    ) -> impl Future<Output = Result<(), WalError>>;

    /// Forgets entries below `index` (at most the snapshot index + 1) and
    /// deletes storage no longer needed.
    fn release_before(&mut self, index: u64) -> impl Future<Output = Result<(), WalError>>;

    /// Entries in `[lo, hi)`.
    fn read_entries(&self, lo: u64, hi: u64) -> impl Future<Output = Result<Vec<Entry>, WalError>>;

    /// First readable index.
    fn first_index(&self) -> u64;
    /// Last index (the snapshot index when no entry follows it).
    fn last_index(&self) -> u64;
    /// Term at `index`, including the snapshot's own index.
    fn term(&self, index: u64) -> Option<u64>;
    fn hard_state(&self) -> HardState;
    fn snapshot(&self) -> Option<&SnapshotMeta>;
}
