//! The log-level rules (overwrite, snapshot markers, release) applied both
//! when the WAL writes and when it replays segments at open, and by the
//! in-memory log. Keeping them in one place is what makes recovery produce
//! exactly the state the writer had.

use super::indexed::IndexedLog;
use crate::types::{Entry, HardState, SnapshotMeta};

/// Anything stored per log index that knows its entry's term.
pub trait Termed {
    fn term(&self) -> u64;
}

impl Termed for Entry {
    fn term(&self) -> u64 {
        self.term
    }
}

/// Where one live entry's record sits on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryPos {
    /// Segment sequence number.
    pub seq: u64,
    /// Byte offset of the record frame in the segment.
    pub offset: u64,
    pub term: u64,
    pub frame_len: u32,
    /// Chained crc the record was written with, so a read of this single
    /// record can verify it.
    pub seed_crc: u32,
}

impl Termed for EntryPos {
    fn term(&self) -> u64 {
        self.term
    }
}

/// Hard state, latest snapshot marker and the live entries.
///
/// Invariants: `log.first_index() <= snapshot_index() + 1` once a release
/// happened (releases never pass the snapshot); every live entry above the
/// snapshot index is present (no gaps) after `finish_replay`.
#[derive(Clone, Debug)]
pub struct LogState<T> {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
    pub log: IndexedLog<T>,
}

impl<T: Termed> LogState<T> {
    pub fn new() -> Self {
        Self {
            hard_state: HardState::default(),
            snapshot: None,
            log: IndexedLog::new(1),
        }
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    pub fn first_index(&self) -> u64 {
        self.log.first_index()
    }

    pub fn last_index(&self) -> u64 {
        self.log.last_index().max(self.snapshot_index())
    }

    /// Term of the entry at `index`, including the snapshot's own index.
    pub fn term(&self, index: u64) -> Option<u64> {
        if let Some(e) = self.log.get(index) {
            return Some(e.term());
        }
        match &self.snapshot {
            Some(s) if s.index == index => Some(s.term),
            _ => None,
        }
    }

    /// Checks the append contract for a run of entries (before any IO).
    pub fn check_append(&self, entries: &[Entry]) -> Result<(), String> {
        let Some(first) = entries.first() else {
            return Ok(());
        };
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(format!(
                    "entries not contiguous: {} followed by {}",
                    w[0].index, w[1].index
                ));
            }
            if w[1].term < w[0].term {
                return Err(format!("term decreases at index {}", w[1].index));
            }
        }
        if first.index <= self.snapshot_index() {
            return Err(format!(
                "first entry {} is at or below the snapshot index {}",
                first.index,
                self.snapshot_index()
            ));
        }
        if first.index < self.log.first_index() || first.index > self.last_index() + 1 {
            return Err(format!(
                "first entry {} outside [{}, {}]",
                first.index,
                self.log.first_index(),
                self.last_index() + 1
            ));
        }
        if let Some(prev) = self.term(first.index - 1) {
            if first.term < prev {
                return Err(format!("term decreases at index {}", first.index));
            }
        }
        Ok(())
    }

    /// Stores one entry written by this process (already checked).
    pub fn put(&mut self, index: u64, item: T) {
        if self.log.is_empty() && index == self.snapshot_index() + 1 {
            self.log.reset(index);
        }
        self.log.put(index, item);
    }

    /// Stores one entry read back from disk. A gap (an index above
    /// `last + 1`) is legal only where a later snapshot marker covers it,
    /// because released segments took those entries; `finish_replay`
    /// refuses a gap that nothing covers.
    pub fn replay_put(&mut self, index: u64, item: T) -> Result<(), String> {
        if index > self.log.last_index() + 1 {
            self.log.reset(index);
        } else if index < self.log.first_index() {
            if index <= self.snapshot_index() {
                return Ok(());
            }
            return Err(format!(
                "entry {index} below the log's first index {}",
                self.log.first_index()
            ));
        }
        self.log.put(index, item);
        Ok(())
    }

    /// Whether a new snapshot marker restarts the log: entries after it
    /// survive only if the log holds the snapshot's own index with the
    /// snapshot's term (log matching then says the rest agrees).
    pub fn snapshot_resets(&self, meta: &SnapshotMeta) -> bool {
        self.term(meta.index) != Some(meta.term)
    }

    /// Applies a snapshot marker with the writer's `reset` decision.
    pub fn apply_snapshot(&mut self, meta: SnapshotMeta, reset: bool) {
        if reset {
            self.log.reset(meta.index + 1);
        }
        self.snapshot = Some(meta);
    }

    /// Drops entries below `index`; `index` must not pass the snapshot.
    pub fn check_release(&self, index: u64) -> Result<(), String> {
        if index > self.snapshot_index() + 1 {
            return Err(format!(
                "release_before({index}) passes the snapshot index {}",
                self.snapshot_index()
            ));
        }
        Ok(())
    }

    /// End of replay: drop what the snapshot covers and require that the
    /// remaining entries start right after it.
    pub fn finish_replay(&mut self) -> Result<(), String> {
        let snap = self.snapshot_index();
        self.log.drop_before(snap + 1);
        if self.log.first_index() > snap + 1 {
            return Err(format!(
                "entries {}..{} are missing (snapshot index {snap})",
                snap + 1,
                self.log.first_index()
            ));
        }
        Ok(())
    }
}

impl<T: Termed> Default for LogState<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn e(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    #[test]
    fn snapshot_marker_keeps_matching_suffix_and_resets_otherwise() {
        let mut s = LogState::new();
        for i in 1..=5 {
            s.put(i, e(1, i));
        }
        let m = SnapshotMeta {
            index: 3,
            term: 1,
            ..Default::default()
        };
        assert!(!s.snapshot_resets(&m));
        s.apply_snapshot(m, false);
        assert_eq!(s.last_index(), 5);
        let m = SnapshotMeta {
            index: 4,
            term: 2,
            ..Default::default()
        };
        assert!(s.snapshot_resets(&m));
        s.apply_snapshot(m, true);
        assert_eq!(s.last_index(), 4);
        assert!(s.log.is_empty());
        s.check_append(&[e(2, 5)]).unwrap();
        s.put(5, e(2, 5));
        assert_eq!(s.term(4), Some(2));
        assert!(s.check_append(&[e(2, 4)]).is_err());
    }

    #[test]
    fn check_append_rejects_gaps_and_decreasing_terms() {
        let mut s = LogState::new();
        s.put(1, e(2, 1));
        assert!(s.check_append(&[e(2, 3)]).is_err());
        assert!(s.check_append(&[e(1, 2)]).is_err());
        assert!(s.check_append(&[e(2, 2), e(2, 4)]).is_err());
        assert!(s.check_append(&[e(3, 1), e(3, 2)]).is_ok());
    }

    #[test]
    fn replay_gap_needs_a_covering_snapshot() {
        let mut s: LogState<Entry> = LogState::new();
        s.replay_put(5, e(1, 5)).unwrap();
        s.replay_put(6, e(1, 6)).unwrap();
        let mut bad = s.clone();
        assert!(bad.finish_replay().unwrap_err().contains("missing"));
        // The writer kept the log at this marker; entries 1..=4 went away
        // with released segments.
        s.apply_snapshot(
            SnapshotMeta {
                index: 4,
                term: 1,
                ..Default::default()
            },
            false,
        );
        s.finish_replay().unwrap();
        assert_eq!((s.first_index(), s.last_index()), (5, 6));
    }
}
