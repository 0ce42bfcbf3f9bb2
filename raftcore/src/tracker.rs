//! Membership, quorums and per-peer progress.

use std::collections::{BTreeMap, BTreeSet};

use crate::progress::Progress;
use crate::types::{ConfState, NodeId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Invariant: `progress` has exactly one entry per member of
/// `voters ∪ learners`; `voters ∩ learners = ∅`.
#[derive(Debug)]
pub(crate) struct Tracker {
    pub(crate) voters: BTreeSet<NodeId>,
    pub(crate) learners: BTreeSet<NodeId>,
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    max_inflight: usize,
}

impl Tracker {
    pub(crate) fn new(cs: &ConfState, next_index: u64, max_inflight: usize) -> Tracker {
        let mut t = Tracker {
            voters: BTreeSet::new(),
            learners: BTreeSet::new(),
            progress: BTreeMap::new(),
            votes: BTreeMap::new(),
            max_inflight,
        };
        t.set_conf(cs, next_index);
        t
    }

    pub(crate) fn conf_state(&self) -> ConfState {
        ConfState {
            voters: self.voters.iter().copied().collect(),
            learners: self.learners.iter().copied().collect(),
        }
    }

    /// Replaces the membership, keeping progress of members that stay.
    pub(crate) fn set_conf(&mut self, cs: &ConfState, next_index: u64) {
        self.voters = cs.voters.iter().copied().filter(|&id| id != 0).collect();
        self.learners = cs
            .learners
            .iter()
            .copied()
            .filter(|id| *id != 0 && !self.voters.contains(id))
            .collect();
        let members: BTreeSet<NodeId> = self.voters.union(&self.learners).copied().collect();
        self.progress.retain(|id, _| members.contains(id));
        for id in members {
            self.progress
                .entry(id)
                .or_insert_with(|| Progress::new(next_index, self.max_inflight));
        }
    }

    pub(crate) fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    pub(crate) fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// The largest index a quorum of voters has durably matched.
    pub(crate) fn committed_index(&self) -> u64 {
        if self.voters.is_empty() {
            return 0;
        }
        let mut matched: Vec<u64> = self
            .voters
            .iter()
            .map(|id| self.progress.get(id).map_or(0, |p| p.match_index))
            .collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        matched[self.quorum() - 1]
    }

    pub(crate) fn has_quorum(&self, ids: &BTreeSet<NodeId>) -> bool {
        !self.voters.is_empty() && self.voters.intersection(ids).count() >= self.quorum()
    }

    /// Did a quorum of voters talk to the leader `me` recently?
    pub(crate) fn quorum_active(&self, me: NodeId) -> bool {
        let active: BTreeSet<NodeId> = self
            .progress
            .iter()
            .filter(|(id, p)| **id == me || p.recent_active)
            .map(|(id, _)| *id)
            .collect();
        self.has_quorum(&active)
    }

    pub(crate) fn reset_recent_active(&mut self, me: NodeId) {
        for (id, p) in self.progress.iter_mut() {
            p.recent_active = *id == me;
        }
    }

    pub(crate) fn reset_votes(&mut self) {
        self.votes.clear();
    }

    pub(crate) fn record_vote(&mut self, id: NodeId, granted: bool) {
        self.votes.entry(id).or_insert(granted);
    }

    pub(crate) fn tally(&self) -> VoteResult {
        let granted = self
            .voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&true))
            .count();
        let rejected = self
            .voters
            .iter()
            .filter(|id| self.votes.get(id) == Some(&false))
            .count();
        if self.voters.is_empty() {
            return VoteResult::Lost;
        }
        if granted >= self.quorum() {
            VoteResult::Won
        } else if self.voters.len() - rejected < self.quorum() {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cs(voters: &[NodeId], learners: &[NodeId]) -> ConfState {
        ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        }
    }

    fn set_match(t: &mut Tracker, id: NodeId, m: u64) {
        if let Some(p) = t.progress.get_mut(&id) {
            p.match_index = m;
        }
    }

    #[test]
    fn committed_index_is_the_quorum_match_and_ignores_learners() {
        let mut t = Tracker::new(&cs(&[1, 2, 3], &[4]), 1, 8);
        for (id, m) in [(1, 5), (2, 3), (3, 1), (4, 9)] {
            set_match(&mut t, id, m);
        }
        assert_eq!(t.committed_index(), 3);
        let mut t = Tracker::new(&cs(&[1, 2, 3, 4], &[]), 1, 8);
        for (id, m) in [(1, 5), (2, 3), (3, 1), (4, 9)] {
            set_match(&mut t, id, m);
        }
        assert_eq!(t.committed_index(), 3);
    }

    #[test]
    fn votes_win_lose_pending() {
        let mut t = Tracker::new(&cs(&[1, 2, 3], &[4]), 1, 8);
        t.record_vote(1, true);
        assert_eq!(t.tally(), VoteResult::Pending);
        t.record_vote(4, true);
        assert_eq!(t.tally(), VoteResult::Pending);
        t.record_vote(2, true);
        assert_eq!(t.tally(), VoteResult::Won);
        t.reset_votes();
        t.record_vote(1, true);
        t.record_vote(2, false);
        t.record_vote(3, false);
        assert_eq!(t.tally(), VoteResult::Lost);
    }

    #[test]
    fn set_conf_keeps_existing_progress() {
        let mut t = Tracker::new(&cs(&[1, 2], &[]), 1, 8);
        set_match(&mut t, 2, 7);
        t.set_conf(&cs(&[1, 2, 3], &[2]), 10);
        assert!(t.is_voter(2) && !t.is_learner(2));
        assert_eq!(t.progress[&2].match_index, 7);
        assert_eq!(t.progress[&3].next_index, 10);
        t.set_conf(&cs(&[1, 3], &[]), 10);
        assert!(!t.progress.contains_key(&2));
    }
}
