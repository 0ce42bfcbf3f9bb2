//! ReadIndex (Raft thesis 6.4): the leader answers a read with its commit
//! index once a quorum confirmed, by answering a heartbeat sent after the
//! read arrived, that it is still the leader. Reads are batched: all reads
//! that arrive while a confirmation round is in flight share the next round.

use std::collections::BTreeSet;

use crate::types::NodeId;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReadRequest {
    /// The node that asked (the leader itself for local reads).
    pub(crate) from: NodeId,
    pub(crate) ctx: u64,
}

#[derive(Debug)]
pub(crate) struct Round {
    /// Carried in heartbeats' `context`; never 0.
    pub(crate) id: u64,
    /// Commit index when the round started: every read in the round arrived
    /// before that, so this index covers everything committed before them.
    pub(crate) index: u64,
    pub(crate) acks: BTreeSet<NodeId>,
    pub(crate) requests: Vec<ReadRequest>,
}

/// Invariant: `queued.len() + round requests <= max_pending`.
#[derive(Debug)]
pub(crate) struct ReadOnly {
    queued: Vec<ReadRequest>,
    round: Option<Round>,
    next_round_id: u64,
    max_pending: usize,
}

impl ReadOnly {
    pub(crate) fn new(max_pending: usize) -> ReadOnly {
        ReadOnly {
            queued: Vec::new(),
            round: None,
            next_round_id: 1,
            max_pending,
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.queued.len() + self.round.as_ref().map_or(0, |r| r.requests.len())
    }

    /// Queues a read; false if the bound is reached.
    pub(crate) fn push(&mut self, req: ReadRequest) -> bool {
        if self.pending() >= self.max_pending {
            return false;
        }
        self.queued.push(req);
        true
    }

    /// Starts a round with every queued read, if none is in flight. Returns
    /// the new round's id.
    pub(crate) fn start_round(&mut self, commit: u64, me: NodeId) -> Option<u64> {
        if self.round.is_some() || self.queued.is_empty() {
            return None;
        }
        let id = self.next_round_id;
        self.next_round_id += 1;
        self.round = Some(Round {
            id,
            index: commit,
            acks: BTreeSet::from([me]),
            requests: std::mem::take(&mut self.queued),
        });
        Some(id)
    }

    pub(crate) fn round_id(&self) -> Option<u64> {
        self.round.as_ref().map(|r| r.id)
    }

    pub(crate) fn ack(&mut self, round_id: u64, from: NodeId) {
        if let Some(r) = self.round.as_mut().filter(|r| r.id == round_id) {
            r.acks.insert(from);
        }
    }

    pub(crate) fn acks(&self) -> Option<&BTreeSet<NodeId>> {
        self.round.as_ref().map(|r| &r.acks)
    }

    pub(crate) fn finish_round(&mut self) -> Option<Round> {
        self.round.take()
    }

    /// Leadership lost: pending reads are dropped (callers time them out).
    pub(crate) fn reset(&mut self) {
        self.queued.clear();
        self.round = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_batch_into_one_round_and_are_bounded() {
        let mut r = ReadOnly::new(3);
        assert!(r.push(ReadRequest { from: 1, ctx: 10 }));
        assert_eq!(r.start_round(5, 1), Some(1));
        assert!(r.push(ReadRequest { from: 2, ctx: 11 }));
        assert!(r.push(ReadRequest { from: 1, ctx: 12 }));
        assert!(!r.push(ReadRequest { from: 1, ctx: 13 }));
        assert_eq!(r.start_round(6, 1), None, "one round at a time");
        r.ack(1, 2);
        r.ack(7, 3);
        assert_eq!(r.acks().map(|a| a.len()), Some(2));
        let done = r.finish_round().map(|x| (x.index, x.requests.len()));
        assert_eq!(done, Some((5, 1)));
        assert_eq!(r.start_round(8, 1), Some(2));
        assert_eq!(r.finish_round().map(|x| x.requests.len()), Some(2));
    }
}
