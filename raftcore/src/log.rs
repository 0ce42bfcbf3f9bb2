//! The in-memory Raft log: a snapshot base plus the entries after it
//! (etcd's MemoryStorage model). Durability is the caller's job (the WAL);
//! this type tracks which part was handed out for persisting and which part
//! is known durable.

use crate::types::{Entry, EntryKind, SnapshotMeta};

/// Index bookkeeping. Invariants (checked by `check` in tests):
/// `snapshot.index <= applied <= apply_handed <= committed <= last_index()`,
/// `apply_handed <= max(persisted, snapshot.index)`,
/// `persisted <= last_index()`, `unstable <= last_index() + 1`,
/// `entries[i].index == snapshot.index + 1 + i`.
#[derive(Debug)]
pub(crate) struct RaftLog {
    /// The log is compacted up to and including `snapshot.index`. Its
    /// `conf_state` is only meaningful when it equals `latest`.
    snapshot: SnapshotMeta,
    /// The newest state-machine snapshot, sent to followers that need
    /// compacted entries. Invariant: `latest.index >= snapshot.index`
    /// (a catch-up tail of entries may be kept before it).
    latest: SnapshotMeta,
    entries: Vec<Entry>,
    /// Highest index known committed.
    pub(crate) committed: u64,
    /// Highest index the application reported applied (via `advance`).
    pub(crate) applied: u64,
    /// Highest committed index handed out in a Ready.
    pub(crate) apply_handed: u64,
    /// Highest index known durable *with the content of the current log*.
    pub(crate) persisted: u64,
    /// First index not yet handed out for persisting.
    pub(crate) unstable: u64,
    /// A snapshot received from the leader, not yet handed out in a Ready.
    pending_snapshot: Option<SnapshotMeta>,
}

/// `slice` asked for entries that were compacted away.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Compacted;

impl RaftLog {
    /// A log restored from durable state. The caller validated that
    /// `entries` are contiguous after `snapshot` and that
    /// `snapshot.index <= applied <= committed <= last index`.
    pub(crate) fn restored(
        snapshot: SnapshotMeta,
        entries: Vec<Entry>,
        committed: u64,
        applied: u64,
    ) -> RaftLog {
        let last = snapshot.index + entries.len() as u64;
        RaftLog {
            latest: snapshot.clone(),
            snapshot,
            entries,
            committed,
            applied,
            apply_handed: applied,
            persisted: last,
            unstable: last + 1,
            pending_snapshot: None,
        }
    }

    /// The compaction point (the entry before the first in memory).
    pub(crate) fn compacted_index(&self) -> u64 {
        self.snapshot.index
    }

    /// The snapshot to send to followers that need compacted entries.
    pub(crate) fn latest_snapshot(&self) -> &SnapshotMeta {
        &self.latest
    }

    pub(crate) fn first_index(&self) -> u64 {
        self.snapshot.index + 1
    }

    pub(crate) fn last_index(&self) -> u64 {
        self.snapshot.index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.term, |e| e.term)
    }

    /// Term of the entry at `index`; None if compacted or beyond the end.
    pub(crate) fn term(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        if index < self.snapshot.index || index > self.last_index() {
            return None;
        }
        Some(self.entries[(index - self.first_index()) as usize].term)
    }

    pub(crate) fn match_term(&self, index: u64, term: u64) -> bool {
        self.term(index) == Some(term)
    }

    /// Raft paper 5.4.1: is a log ending at (`last_index`, `last_term`) at
    /// least as up to date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: u64, last_term: u64) -> bool {
        let my_term = self.last_term();
        last_term > my_term || (last_term == my_term && last_index >= self.last_index())
    }

    /// The entry at `index`, if present in memory.
    pub(crate) fn entry(&self, index: u64) -> Option<&Entry> {
        if index < self.first_index() || index > self.last_index() {
            return None;
        }
        Some(&self.entries[(index - self.first_index()) as usize])
    }

    /// The largest index `<= index` whose term is `<= term` (or whose term is
    /// unknown because compacted), with its term (0 if unknown). Used to skip
    /// a whole conflicting term per append rejection.
    pub(crate) fn find_conflict_by_term(&self, index: u64, term: u64) -> (u64, u64) {
        let mut i = index.min(self.last_index());
        loop {
            match self.term(i) {
                Some(t) if t > term => i -= 1,
                Some(t) => return (i, t),
                None => return (i, 0),
            }
        }
    }

    /// Follower side of AppendEntries: if the entry before `ents` matches,
    /// append (truncating a conflicting suffix), advance commit, and return
    /// the last index now known to match the leader.
    pub(crate) fn maybe_append(
        &mut self,
        prev_index: u64,
        prev_term: u64,
        commit: u64,
        ents: &[Entry],
    ) -> Option<u64> {
        if !self.match_term(prev_index, prev_term) {
            return None;
        }
        let last_new = prev_index + ents.len() as u64;
        if let Some(pos) = ents.iter().position(|e| !self.match_term(e.index, e.term)) {
            let conflict = ents[pos].index;
            assert!(
                conflict > self.committed,
                "raft safety violated: entry {conflict} conflicts with committed index {}",
                self.committed
            );
            self.truncate_and_append(&ents[pos..]);
        }
        self.commit_to(commit.min(last_new));
        Some(last_new)
    }

    /// Appends `ents` (contiguous, starting at most at `last_index() + 1`),
    /// dropping any existing entries from `ents[0].index` on.
    pub(crate) fn truncate_and_append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first().map(|e| e.index) else {
            return;
        };
        assert!(
            first > self.committed && first >= self.first_index() && first <= self.last_index() + 1,
            "append at {first} outside ({}, {}]",
            self.committed,
            self.last_index() + 1
        );
        self.entries.truncate((first - self.first_index()) as usize);
        self.entries.extend_from_slice(ents);
        self.unstable = self.unstable.min(first);
        self.persisted = self.persisted.min(first - 1);
    }

    pub(crate) fn commit_to(&mut self, index: u64) {
        if index > self.committed {
            assert!(
                index <= self.last_index(),
                "commit {index} beyond last index {}",
                self.last_index()
            );
            self.committed = index;
        }
    }

    /// Commits `index` if it is newer and its entry is from `term` (paper
    /// 5.4.2: only current-term entries commit by counting).
    pub(crate) fn maybe_commit(&mut self, index: u64, term: u64) -> bool {
        if index > self.committed && self.match_term(index, term) {
            self.commit_to(index);
            return true;
        }
        false
    }

    /// Entries `[lo, hi)` up to `max_bytes` (at least one if any).
    pub(crate) fn slice(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<Entry>, Compacted> {
        if lo < self.first_index() {
            return Err(Compacted);
        }
        let hi = hi.min(self.last_index() + 1);
        let mut out = Vec::new();
        let mut size = 0u64;
        let mut i = lo;
        while i < hi {
            let e = &self.entries[(i - self.first_index()) as usize];
            size += e.size_bytes() as u64;
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
            i += 1;
        }
        Ok(out)
    }

    pub(crate) fn has_unstable(&self) -> bool {
        self.unstable <= self.last_index()
    }

    /// Hands out the entries not yet given to the caller for persisting.
    pub(crate) fn take_unstable(&mut self) -> Vec<Entry> {
        if !self.has_unstable() {
            return Vec::new();
        }
        let from = (self.unstable.max(self.first_index()) - self.first_index()) as usize;
        self.unstable = self.last_index() + 1;
        self.entries[from..].to_vec()
    }

    fn apply_limit(&self) -> u64 {
        self.committed.min(self.persisted.max(self.snapshot.index))
    }

    pub(crate) fn has_next_committed(&self) -> bool {
        self.apply_handed < self.apply_limit()
    }

    /// Hands out committed, locally durable entries not handed out yet.
    pub(crate) fn take_committed(&mut self, max_bytes: u64) -> Vec<Entry> {
        if !self.has_next_committed() {
            return Vec::new();
        }
        let ents = self
            .slice(self.apply_handed + 1, self.apply_limit() + 1, max_bytes)
            .unwrap_or_default();
        if let Some(last) = ents.last() {
            self.apply_handed = last.index;
        }
        ents
    }

    /// Records that the application applied everything up to `index`.
    pub(crate) fn applied_to(&mut self, index: u64) {
        if index > self.applied {
            assert!(
                index <= self.apply_handed.max(self.snapshot.index),
                "applied {index} beyond handed-out {}",
                self.apply_handed
            );
            self.applied = index;
        }
    }

    /// Does (applied, committed] hold a membership change not yet applied?
    pub(crate) fn has_unapplied_conf_change(&self) -> bool {
        (self.applied + 1..=self.committed)
            .filter_map(|i| self.entry(i))
            .any(|e| e.kind == EntryKind::ConfChange)
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub(crate) fn restore(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.committed, "restoring an old snapshot");
        self.entries.clear();
        self.committed = meta.index;
        self.apply_handed = meta.index;
        self.persisted = self.persisted.min(meta.index);
        self.unstable = meta.index + 1;
        self.snapshot = meta.clone();
        self.latest = meta.clone();
        self.pending_snapshot = Some(meta);
    }

    pub(crate) fn has_pending_snapshot(&self) -> bool {
        self.pending_snapshot.is_some()
    }

    pub(crate) fn take_pending_snapshot(&mut self) -> Option<SnapshotMeta> {
        self.pending_snapshot.take()
    }

    /// Records a state-machine image at `meta.index` (the application has
    /// it durably) and drops entries up to `meta.index - keep_entries`, so
    /// followers lagging by less than `keep_entries` still catch up from the
    /// log. Returns false (and changes nothing) for a stale snapshot or one
    /// that does not describe this log.
    pub(crate) fn compact(&mut self, meta: SnapshotMeta, keep_entries: u64) -> bool {
        if meta.index <= self.latest.index
            || meta.index > self.applied
            || !self.match_term(meta.index, meta.term)
        {
            return false;
        }
        let cut = meta.index.saturating_sub(keep_entries);
        if cut > self.snapshot.index {
            let Some(cut_term) = self.term(cut) else {
                unreachable!("{cut} is inside the log");
            };
            let drop = (cut - self.snapshot.index) as usize;
            self.entries.drain(..drop);
            self.snapshot = SnapshotMeta {
                index: cut,
                term: cut_term,
                conf_state: meta.conf_state.clone(),
            };
        }
        self.latest = meta;
        true
    }

    #[cfg(test)]
    pub(crate) fn check(&self) {
        assert!(self.snapshot.index <= self.applied);
        assert!(self.applied <= self.apply_handed.max(self.snapshot.index));
        assert!(self.apply_handed <= self.committed);
        assert!(self.committed <= self.last_index());
        assert!(self.persisted <= self.last_index());
        assert!(self.latest.index >= self.snapshot.index);
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(e.index, self.snapshot.index + 1 + i as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    fn log_of(terms: &[u64]) -> RaftLog {
        let ents = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| ent(i as u64 + 1, t))
            .collect();
        RaftLog::restored(SnapshotMeta::default(), ents, 0, 0)
    }

    #[test]
    fn maybe_append_rejects_mismatch_and_truncates_conflicts() {
        let mut l = log_of(&[1, 1, 2]);
        assert_eq!(l.maybe_append(3, 1, 0, &[]), None);
        assert_eq!(l.maybe_append(4, 2, 0, &[]), None);
        assert_eq!(l.maybe_append(2, 1, 0, &[ent(3, 3), ent(4, 3)]), Some(4));
        assert_eq!(l.term(3), Some(3));
        assert_eq!(l.last_index(), 4);
        assert_eq!(l.unstable, 3);
        assert_eq!(l.persisted, 2);
        // Re-sending a matching prefix must not truncate.
        assert_eq!(l.maybe_append(1, 1, 2, &[ent(2, 1)]), Some(2));
        assert_eq!(l.last_index(), 4);
        assert_eq!(l.committed, 2);
        l.check();
    }

    #[test]
    #[should_panic(expected = "safety violated")]
    fn truncating_a_committed_entry_is_a_broken_invariant() {
        let mut l = log_of(&[1, 1, 1]);
        l.commit_to(3);
        l.maybe_append(1, 1, 0, &[ent(2, 2)]);
    }

    #[test]
    fn find_conflict_by_term_skips_terms() {
        let l = log_of(&[1, 1, 2, 2, 4, 4]);
        assert_eq!(l.find_conflict_by_term(6, 3), (4, 2));
        assert_eq!(l.find_conflict_by_term(6, 4), (6, 4));
        assert_eq!(l.find_conflict_by_term(9, 1), (2, 1));
        assert_eq!(l.find_conflict_by_term(6, 0), (0, 0));
    }

    #[test]
    fn up_to_date_compares_term_then_index() {
        let l = log_of(&[1, 2]);
        assert!(l.is_up_to_date(2, 2));
        assert!(l.is_up_to_date(1, 3));
        assert!(!l.is_up_to_date(5, 1));
        assert!(!l.is_up_to_date(1, 2));
    }

    #[test]
    fn slice_is_byte_bounded_but_never_empty() {
        let l = log_of(&[1, 1, 1, 1]);
        let one = ent(1, 1).size_bytes() as u64;
        assert_eq!(l.slice(1, 5, 0).map(|v| v.len()), Ok(1));
        assert_eq!(l.slice(1, 5, 2 * one).map(|v| v.len()), Ok(2));
        assert_eq!(l.slice(2, 9, u64::MAX).map(|v| v.len()), Ok(3));
    }

    #[test]
    fn committed_entries_wait_for_local_durability() {
        let mut l = log_of(&[]);
        l.truncate_and_append(&[ent(1, 1), ent(2, 1), ent(3, 1)]);
        l.persisted = 1;
        l.commit_to(3);
        assert_eq!(l.take_committed(u64::MAX).len(), 1);
        assert!(!l.has_next_committed());
        l.persisted = 3;
        assert_eq!(l.take_committed(u64::MAX).len(), 2);
        l.applied_to(3);
        l.check();
    }

    #[test]
    fn compact_then_slice_below_is_compacted() {
        let mut l = log_of(&[1, 1, 2, 2]);
        l.commit_to(4);
        l.apply_handed = 4;
        l.applied_to(3);
        let meta = SnapshotMeta {
            index: 3,
            term: 2,
            conf_state: Default::default(),
        };
        assert!(!l.compact(
            SnapshotMeta {
                term: 1,
                ..meta.clone()
            },
            0
        ));
        assert!(l.compact(meta.clone(), 0));
        assert!(!l.compact(meta, 0));
        assert_eq!(l.first_index(), 4);
        assert_eq!(l.term(3), Some(2));
        assert_eq!(l.term(2), None);
        assert_eq!(l.slice(3, 5, u64::MAX), Err(Compacted));
        assert_eq!(l.slice(4, 5, u64::MAX).map(|v| v.len()), Ok(1));
        l.check();
    }

    #[test]
    fn compact_keeps_a_catch_up_tail() {
        let mut l = log_of(&[1, 1, 2, 2, 3, 3]);
        l.commit_to(6);
        l.apply_handed = 6;
        l.applied_to(6);
        let meta = |index, term| SnapshotMeta {
            index,
            term,
            conf_state: Default::default(),
        };
        assert!(l.compact(meta(5, 3), 2));
        assert_eq!((l.first_index(), l.term(3)), (4, Some(2)));
        assert_eq!(l.latest_snapshot().index, 5);
        assert!(!l.compact(meta(4, 2), 0), "older than the latest snapshot");
        assert!(
            l.compact(meta(6, 3), 10),
            "a tail longer than the log keeps it all"
        );
        assert_eq!((l.first_index(), l.latest_snapshot().index), (4, 6));
        l.check();
    }

    #[test]
    fn restore_replaces_everything() {
        let mut l = log_of(&[1, 1]);
        l.restore(SnapshotMeta {
            index: 10,
            term: 3,
            conf_state: Default::default(),
        });
        assert_eq!(l.last_index(), 10);
        assert_eq!(l.committed, 10);
        assert!(l.has_pending_snapshot());
        assert!(!l.has_next_committed());
        assert_eq!(l.take_pending_snapshot().map(|m| m.index), Some(10));
        l.applied_to(10);
        l.check();
    }
}
