//! What the leader knows about one follower's log, and the flow control that
//! follows from it (etcd's progress tracker: probe / replicate / snapshot).

use std::collections::VecDeque;

/// How the leader is currently talking to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// The follower's match point is unknown: at most one append in flight,
    /// then wait for an answer (or a heartbeat answer) before the next.
    Probe,
    /// Match point known: stream appends optimistically, at most
    /// `max_inflight_msgs` in flight.
    Replicate,
    /// The follower needs a snapshot; appends are paused until it reports.
    Snapshot,
}

/// Last indices of the appends in flight, oldest first.
/// Invariant: strictly increasing, `len() <= cap`.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    last_indices: VecDeque<u64>,
    cap: usize,
}

impl Inflights {
    pub(crate) fn new(cap: usize) -> Inflights {
        Inflights {
            last_indices: VecDeque::with_capacity(cap.min(1024)),
            cap,
        }
    }

    pub(crate) fn full(&self) -> bool {
        self.last_indices.len() >= self.cap
    }

    pub(crate) fn add(&mut self, last_index: u64) {
        assert!(!self.full(), "inflights overflow");
        debug_assert!(self.last_indices.back().is_none_or(|&b| b < last_index));
        self.last_indices.push_back(last_index);
    }

    /// Frees every append whose last index is `<= index` (acknowledged).
    pub(crate) fn free_to(&mut self, index: u64) {
        while self.last_indices.front().is_some_and(|&f| f <= index) {
            self.last_indices.pop_front();
        }
    }

    pub(crate) fn free_first_one(&mut self) {
        self.last_indices.pop_front();
    }

    pub(crate) fn reset(&mut self) {
        self.last_indices.clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.last_indices.len()
    }
}

/// Invariant: `match_index < next_index`.
#[derive(Clone, Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: u64,
    pub(crate) next_index: u64,
    pub(crate) state: ProgressState,
    /// In `Snapshot` state: the index of the snapshot sent.
    pub(crate) pending_snapshot: u64,
    /// In `Probe` state: an append was sent and not answered yet.
    pub(crate) probe_sent: bool,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// Heartbeat answers seen while in `Snapshot` state; after enough of
    /// them the leader assumes the snapshot was lost and probes again.
    pub(crate) snapshot_heartbeats: u32,
    pub(crate) inflights: Inflights,
}

impl Progress {
    pub(crate) fn new(next_index: u64, max_inflight: usize) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            pending_snapshot: 0,
            probe_sent: false,
            recent_active: false,
            snapshot_heartbeats: 0,
            inflights: Inflights::new(max_inflight),
        }
    }

    fn reset_state(&mut self, state: ProgressState) {
        self.probe_sent = false;
        self.pending_snapshot = 0;
        self.snapshot_heartbeats = 0;
        self.state = state;
        self.inflights.reset();
    }

    pub(crate) fn become_probe(&mut self) {
        if self.state == ProgressState::Snapshot {
            let pending = self.pending_snapshot;
            self.reset_state(ProgressState::Probe);
            self.next_index = (self.match_index + 1).max(pending + 1);
        } else {
            self.reset_state(ProgressState::Probe);
            self.next_index = self.match_index + 1;
        }
    }

    pub(crate) fn become_replicate(&mut self) {
        self.reset_state(ProgressState::Replicate);
        self.next_index = self.match_index + 1;
    }

    pub(crate) fn become_snapshot(&mut self, snapshot_index: u64) {
        self.reset_state(ProgressState::Snapshot);
        self.pending_snapshot = snapshot_index;
        self.next_index = snapshot_index + 1;
    }

    /// An append up to `index` was acknowledged. Returns whether the match
    /// point moved.
    pub(crate) fn maybe_update(&mut self, index: u64) -> bool {
        let updated = self.match_index < index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// An append at `rejected` was refused; `match_hint` is the follower's
    /// guess of its last possibly-matching index. Returns false for a stale
    /// rejection.
    pub(crate) fn maybe_decr_to(&mut self, rejected: u64, match_hint: u64) -> bool {
        if self.state == ProgressState::Replicate {
            if rejected <= self.match_index {
                return false;
            }
            self.next_index = self.match_index + 1;
            return true;
        }
        if self.next_index == 0 || self.next_index - 1 != rejected {
            return false;
        }
        self.next_index = rejected.min(match_hint + 1).max(self.match_index + 1);
        self.probe_sent = false;
        true
    }

    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflights_bound_and_free() {
        let mut f = Inflights::new(3);
        f.add(1);
        f.add(5);
        f.add(9);
        assert!(f.full());
        f.free_to(5);
        assert_eq!(f.len(), 1);
        f.free_first_one();
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn probe_pauses_after_one_send_and_update_resumes() {
        let mut p = Progress::new(5, 4);
        assert!(!p.is_paused());
        p.probe_sent = true;
        assert!(p.is_paused());
        assert!(p.maybe_update(4));
        assert!(!p.is_paused());
        assert_eq!(p.next_index, 5);
        assert!(!p.maybe_update(3));
    }

    #[test]
    fn decr_in_probe_uses_hint_and_ignores_stale() {
        let mut p = Progress::new(10, 4);
        assert!(!p.maybe_decr_to(5, 2));
        assert!(p.maybe_decr_to(9, 3));
        assert_eq!(p.next_index, 4);
        let mut r = Progress::new(10, 4);
        r.match_index = 6;
        r.become_replicate();
        r.next_index = 12;
        assert!(!r.maybe_decr_to(6, 0));
        assert!(r.maybe_decr_to(11, 0));
        assert_eq!(r.next_index, 7);
    }

    #[test]
    fn snapshot_state_pauses_then_probe_resumes_after_it() {
        let mut p = Progress::new(3, 4);
        p.become_snapshot(20);
        assert!(p.is_paused());
        p.become_probe();
        assert_eq!(p.next_index, 21);
        assert!(!p.is_paused());
    }
}
