//! An in-memory [`LogStorage`] for tests and the deterministic simulator.
//! It keeps two states: what the process sees and what a crash would leave.
//! `write` changes only the first; `sync` makes it durable; `crash` drops
//! whatever was not synced (optionally keeping a prefix of the unsynced
//! operations, like a disk that persisted part of a write).

use std::future::{Future, ready};

use super::state::LogState;
use super::{LogStorage, Recovered, WalError};
use crate::types::{Entry, HardState, SnapshotMeta};

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Entry>, Option<HardState>),
    Snapshot(SnapshotMeta),
    Release(u64),
}

/// In-memory log with crash simulation. Applies exactly the rules of the
/// disk WAL (overwrite, snapshot markers, release).
#[derive(Clone, Debug, Default)]
pub struct MemLog {
    visible: LogState<Entry>,
    durable: LogState<Entry>,
    unsynced: Vec<Op>,
}

impl MemLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies an append to the visible state only (not yet durable).
    pub fn write(&mut self, entries: &[Entry], hs: Option<HardState>) -> Result<(), WalError> {
        self.visible
            .check_append(entries)
            .map_err(|reason| WalError::InvalidArgument {
                op: "append",
                reason,
            })?;
        apply(&mut self.visible, &Op::Append(entries.to_vec(), hs));
        self.unsynced.push(Op::Append(entries.to_vec(), hs));
        Ok(())
    }

    /// Records a snapshot marker in the visible state only.
    pub fn write_snapshot_marker(&mut self, meta: &SnapshotMeta) -> Result<(), WalError> {
        if meta.index < self.visible.snapshot_index() {
            return Err(WalError::InvalidArgument {
                op: "save_snapshot_marker",
                reason: format!(
                    "snapshot index {} is below the current snapshot",
                    meta.index
                ),
            });
        }
        let op = Op::Snapshot(meta.clone());
        apply(&mut self.visible, &op);
        self.unsynced.push(op);
        Ok(())
    }

    /// Makes every write so far durable.
    pub fn sync(&mut self) {
        for op in self.unsynced.drain(..) {
            apply(&mut self.durable, &op);
        }
    }

    /// Number of operations written but not synced.
    pub fn unsynced_ops(&self) -> usize {
        self.unsynced.len()
    }

    /// Simulates a crash and restart: the first `keep_unsynced` unsynced
    /// operations reach the disk, the rest are lost. Returns what a
    /// [`Wal::open`](super::Wal::open) would return.
    pub fn crash(&mut self, keep_unsynced: usize) -> Recovered {
        let keep = keep_unsynced.min(self.unsynced.len());
        for op in self.unsynced.drain(..keep) {
            apply(&mut self.durable, &op);
        }
        self.unsynced.clear();
        let snap = self.durable.snapshot_index();
        self.durable.log.drop_before(snap + 1);
        self.visible = self.durable.clone();
        Recovered {
            hard_state: self.durable.hard_state,
            snapshot: self.durable.snapshot.clone(),
            entries: self.durable.log.iter().cloned().collect(),
            torn_tail: None,
        }
    }
}

fn apply(st: &mut LogState<Entry>, op: &Op) {
    match op {
        Op::Append(entries, hs) => {
            for e in entries {
                st.put(e.index, e.clone());
            }
            if let Some(hs) = hs {
                st.hard_state = *hs;
            }
        }
        Op::Snapshot(meta) => {
            let reset = st.snapshot_resets(meta);
            st.apply_snapshot(meta.clone(), reset);
        }
        Op::Release(index) => {
            st.log.drop_before(*index);
        }
    }
}

impl LogStorage for MemLog {
    fn append(
        &mut self,
        entries: &[Entry],
        hs: Option<HardState>,
    ) -> impl Future<Output = Result<(), WalError>> {
        let r = self.write(entries, hs).map(|()| self.sync());
        ready(r)
    }

    fn save_snapshot_marker(
        &mut self,
        meta: &SnapshotMeta,
    ) -> impl Future<Output = Result<(), WalError>> {
        let r = self.write_snapshot_marker(meta).map(|()| self.sync());
        ready(r)
    }

    fn release_before(&mut self, index: u64) -> impl Future<Output = Result<(), WalError>> {
        let r = self
            .visible
            .check_release(index)
            .map_err(|reason| WalError::InvalidArgument {
                op: "release_before",
                reason,
            })
            .map(|()| {
                apply(&mut self.visible, &Op::Release(index));
                self.unsynced.push(Op::Release(index));
                self.sync();
            });
        ready(r)
    }

    fn read_entries(&self, lo: u64, hi: u64) -> impl Future<Output = Result<Vec<Entry>, WalError>> {
        let (first, last) = (
            self.visible.log.first_index(),
            self.visible.log.last_index(),
        );
        if lo > hi || lo < first || hi > last + 1 {
            return ready(Err(WalError::Unavailable {
                lo,
                hi,
                first,
                last,
            }));
        }
        ready(Ok((lo..hi)
            .map(|i| self.visible.log.get(i).expect("range checked").clone())
            .collect()))
    }

    fn first_index(&self) -> u64 {
        self.visible.first_index()
    }

    fn last_index(&self) -> u64 {
        self.visible.last_index()
    }

    fn term(&self, index: u64) -> Option<u64> {
        self.visible.term(index)
    }

    fn hard_state(&self) -> HardState {
        self.visible.hard_state
    }

    fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.visible.snapshot.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;
    use futures_lite::future::block_on;

    fn e(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    #[test]
    fn crash_drops_unsynced_writes() {
        let mut m = MemLog::new();
        block_on(LogStorage::append(&mut m, &[e(1, 1), e(1, 2)], None)).unwrap();
        m.write(
            &[e(1, 3)],
            Some(HardState {
                term: 1,
                vote: 1,
                commit: 2,
            }),
        )
        .unwrap();
        m.write(&[e(2, 3)], None).unwrap();
        assert_eq!(m.last_index(), 3);
        assert_eq!(m.term(3), Some(2));
        let r = m.clone().crash(1);
        assert_eq!(r.entries, vec![e(1, 1), e(1, 2), e(1, 3)]);
        assert_eq!(r.hard_state.commit, 2);
        let r = m.crash(0);
        assert_eq!(r.entries.len(), 2);
        assert_eq!(r.hard_state, HardState::default());
    }

    #[test]
    fn snapshot_and_release_follow_the_wal_rules() {
        let mut m = MemLog::new();
        let ents: Vec<Entry> = (1..=6).map(|i| e(1, i)).collect();
        block_on(LogStorage::append(&mut m, &ents, None)).unwrap();
        let meta = SnapshotMeta {
            index: 4,
            term: 1,
            ..Default::default()
        };
        block_on(m.save_snapshot_marker(&meta)).unwrap();
        assert_eq!(block_on(m.read_entries(2, 7)).unwrap().len(), 5);
        assert!(block_on(LogStorage::release_before(&mut m, 6)).is_err());
        block_on(LogStorage::release_before(&mut m, 5)).unwrap();
        assert_eq!(m.first_index(), 5);
        assert!(block_on(m.read_entries(4, 5)).is_err());
        let r = m.crash(0);
        assert_eq!(r.entries, vec![e(1, 5), e(1, 6)]);
        assert_eq!(r.snapshot, Some(meta));
    }
}
