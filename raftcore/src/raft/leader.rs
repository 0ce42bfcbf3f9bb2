//! Leader side: becoming leader, proposals, replication with flow control,
//! commit, heartbeats, ReadIndex rounds, leader transfer and membership.

use super::{Raft, Role};
use crate::error::RaftError;
use crate::message::{Message, MessageKind, ReadState};
use crate::progress::ProgressState;
use crate::read_only::ReadRequest;
use crate::types::{ConfChange, ConfState, Entry, EntryKind, NodeId};

impl Raft {
    pub(super) fn become_leader(&mut self) {
        assert!(
            self.role != Role::Follower,
            "follower cannot become leader directly"
        );
        self.reset(self.term);
        self.leader = self.id;
        self.role = Role::Leader;
        if let Some(pr) = self.tracker.progress.get_mut(&self.id) {
            pr.become_replicate();
        }
        // Conf changes wait until this leader's no-op is applied: an
        // uncommitted one from an earlier term may still be in the log, and
        // single-server changes are only safe once this term committed
        // (the fix to the thesis' membership bug).
        self.pending_conf_index = self.append_entry(EntryKind::Normal, Vec::new());
        self.bcast_append();
    }

    fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> u64 {
        let e = Entry {
            term: self.term,
            index: self.log.last_index() + 1,
            kind,
            data,
        };
        self.uncommitted_bytes += e.size_bytes() as u64;
        let index = e.index;
        self.log.truncate_and_append(std::slice::from_ref(&e));
        index
    }

    fn check_can_propose(&self, size: u64) -> Result<(), RaftError> {
        if self.role != Role::Leader {
            return Err(RaftError::NotLeader {
                leader: (self.leader != 0).then_some(self.leader),
            });
        }
        if self.lead_transferee != 0 {
            return Err(RaftError::ProposalDropped {
                reason: "leader transfer in progress",
            });
        }
        if self.uncommitted_bytes > 0
            && self.uncommitted_bytes + size > self.cfg.max_uncommitted_bytes
        {
            return Err(RaftError::ProposalDropped {
                reason: "too many uncommitted bytes",
            });
        }
        Ok(())
    }

    pub(crate) fn propose(&mut self, data: Vec<u8>) -> Result<u64, RaftError> {
        self.check_can_propose(data.len() as u64 + 24)?;
        let index = self.append_entry(EntryKind::Normal, data);
        self.bcast_append();
        Ok(index)
    }

    pub(crate) fn propose_conf_change(
        &mut self,
        cc: ConfChange,
        context: &[u8],
    ) -> Result<u64, RaftError> {
        let data = cc.encode_with_context(context);
        self.check_can_propose(data.len() as u64 + 24)?;
        if self.pending_conf_index > self.log.applied {
            return Err(RaftError::ProposalDropped {
                reason: "a conf change is pending (one at a time)",
            });
        }
        let invalid = |reason| {
            Err(RaftError::InvalidConfChange {
                change: cc.clone(),
                reason,
            })
        };
        let t = &self.tracker;
        match &cc {
            ConfChange::AddVoter { id, .. } | ConfChange::AddLearner { id, .. } if *id == 0 => {
                return invalid("id 0");
            }
            ConfChange::AddVoter { id, .. } if t.is_voter(*id) => {
                return invalid("already a voter");
            }
            ConfChange::AddLearner { id, .. } if t.is_voter(*id) => {
                return invalid("demoting a voter is not supported");
            }
            ConfChange::AddLearner { id, .. } if t.is_learner(*id) => {
                return invalid("already a learner");
            }
            ConfChange::Promote { id } if !t.is_learner(*id) => return invalid("not a learner"),
            ConfChange::Remove { id } if !t.is_voter(*id) && !t.is_learner(*id) => {
                return invalid("not a member");
            }
            ConfChange::Remove { id } if t.is_voter(*id) && t.voters.len() == 1 => {
                return invalid("cannot remove the last voter");
            }
            _ => {}
        }
        let index = self.append_entry(EntryKind::ConfChange, data);
        self.pending_conf_index = index;
        self.bcast_append();
        Ok(index)
    }

    pub(super) fn step_leader(&mut self, m: Message) -> Result<(), RaftError> {
        match m.kind {
            MessageKind::AppResp => self.handle_append_response(m),
            MessageKind::HeartbeatResp => self.handle_heartbeat_response(m),
            // A full queue drops the forwarded read; the asker times out.
            MessageKind::ReadIndex => {
                let _ = self.leader_read(m.from, m.context);
            }
            MessageKind::TransferLeader => self.transfer_to(m.context),
            _ => {}
        }
        Ok(())
    }

    pub(super) fn tick_leader(&mut self) {
        self.heartbeat_elapsed += 1;
        self.election_elapsed += 1;
        if self.election_elapsed >= self.cfg.election_tick {
            self.election_elapsed = 0;
            if self.cfg.check_quorum {
                if !self.tracker.quorum_active(self.id) {
                    self.become_follower(self.term, 0);
                    return;
                }
                self.tracker.reset_recent_active(self.id);
            }
            // A transfer that did not finish within an election timeout failed.
            self.lead_transferee = 0;
        }
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick {
            self.heartbeat_elapsed = 0;
            self.bcast_heartbeat();
        }
    }

    fn peers(&self) -> Vec<NodeId> {
        self.tracker
            .progress
            .keys()
            .copied()
            .filter(|&id| id != self.id)
            .collect()
    }

    pub(super) fn bcast_append(&mut self) {
        for to in self.peers() {
            self.maybe_send_append(to, true);
        }
    }

    fn bcast_heartbeat(&mut self) {
        let ctx = self.read_only.round_id().unwrap_or(0);
        for to in self.peers() {
            let Some(pr) = self.tracker.progress.get(&to) else {
                continue;
            };
            let mut m = Message::new(MessageKind::Heartbeat, to);
            m.commit = pr.match_index.min(self.log.committed);
            m.context = ctx;
            self.send(m);
        }
    }

    /// Sends the next append (or a snapshot) to `to` unless flow control
    /// pauses it. Returns whether a message was sent.
    pub(super) fn maybe_send_append(&mut self, to: NodeId, send_if_empty: bool) -> bool {
        let Some(pr) = self.tracker.progress.get_mut(&to) else {
            return false;
        };
        if pr.is_paused() {
            return false;
        }
        let prev_index = pr.next_index - 1;
        let prev_term = self.log.term(prev_index);
        let ents = self.log.slice(
            pr.next_index,
            self.log.last_index() + 1,
            self.cfg.max_size_per_msg_bytes,
        );
        let (Some(prev_term), Ok(ents)) = (prev_term, ents) else {
            // The follower needs entries we compacted: send the snapshot.
            if !pr.recent_active {
                return false;
            }
            let meta = self.log.latest_snapshot().clone();
            pr.become_snapshot(meta.index);
            let mut m = Message::new(MessageKind::Snapshot, to);
            m.snapshot = Some(meta);
            self.send(m);
            return true;
        };
        if ents.is_empty() && !send_if_empty {
            return false;
        }
        match pr.state {
            ProgressState::Replicate => {
                if let Some(last) = ents.last() {
                    pr.next_index = last.index + 1;
                    pr.inflights.add(last.index);
                }
            }
            ProgressState::Probe => pr.probe_sent = true,
            ProgressState::Snapshot => unreachable!("paused in snapshot state"),
        }
        let mut m = Message::new(MessageKind::App, to);
        m.index = prev_index;
        m.log_term = prev_term;
        m.entries = ents;
        m.commit = self.log.committed;
        self.send(m);
        true
    }

    fn handle_append_response(&mut self, m: Message) {
        let first_index = self.log.first_index();
        let Some(pr) = self.tracker.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        if m.reject {
            let mut probe = m.reject_hint;
            if m.log_term > 0 {
                probe = self.log.find_conflict_by_term(m.reject_hint, m.log_term).0;
            }
            let Some(pr) = self.tracker.progress.get_mut(&m.from) else {
                return;
            };
            if pr.maybe_decr_to(m.index, probe) {
                if pr.state == ProgressState::Replicate {
                    pr.become_probe();
                }
                self.maybe_send_append(m.from, true);
            }
            return;
        }
        let was_paused = pr.is_paused();
        if !pr.maybe_update(m.index) {
            return;
        }
        match pr.state {
            ProgressState::Probe => pr.become_replicate(),
            ProgressState::Snapshot if pr.match_index + 1 >= first_index => {
                pr.become_probe();
                pr.become_replicate();
            }
            ProgressState::Snapshot => {}
            ProgressState::Replicate => pr.inflights.free_to(m.index),
        }
        if self.maybe_commit() {
            self.bcast_append();
        } else if was_paused {
            self.maybe_send_append(m.from, true);
        }
        while self.maybe_send_append(m.from, false) {}
        if m.from == self.lead_transferee
            && self.tracker.progress.get(&m.from).map(|p| p.match_index)
                == Some(self.log.last_index())
        {
            self.send(Message::new(MessageKind::TimeoutNow, m.from));
        }
    }

    fn handle_heartbeat_response(&mut self, m: Message) {
        let last = self.log.last_index();
        let retry_after = self.cfg.election_tick.saturating_mul(10);
        let Some(pr) = self.tracker.progress.get_mut(&m.from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate && pr.inflights.full() {
            pr.inflights.free_first_one();
        }
        if pr.state == ProgressState::Snapshot {
            // The snapshot or its acknowledgement may be lost and the server
            // may not report it: fall back to probing eventually.
            pr.snapshot_heartbeats += 1;
            if pr.snapshot_heartbeats >= retry_after {
                pr.become_probe();
            }
        }
        if pr.match_index < last {
            self.maybe_send_append(m.from, true);
        }
        if m.context != 0 {
            self.read_only.ack(m.context, m.from);
            self.check_read_round();
        }
    }

    /// Commits what a quorum durably matched (current-term entries only).
    pub(super) fn maybe_commit(&mut self) -> bool {
        let old = self.log.committed;
        let index = self.tracker.committed_index();
        if !self.log.maybe_commit(index, self.term) {
            return false;
        }
        let freed: u64 = (old + 1..=self.log.committed)
            .filter_map(|i| self.log.entry(i))
            .filter(|e| e.term == self.term)
            .map(|e| e.size_bytes() as u64)
            .sum();
        self.uncommitted_bytes = self.uncommitted_bytes.saturating_sub(freed);
        self.maybe_start_read_round();
        true
    }

    /// The leader's own log became durable up to `persisted`.
    pub(crate) fn on_self_persisted(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let persisted = self.log.persisted;
        let Some(pr) = self.tracker.progress.get_mut(&self.id) else {
            return;
        };
        if pr.maybe_update(persisted) && self.maybe_commit() {
            self.bcast_append();
        }
    }

    /// Queues a read for `from` (this node for local reads).
    pub(crate) fn leader_read(&mut self, from: NodeId, ctx: u64) -> Result<(), RaftError> {
        if !self.read_only.push(ReadRequest { from, ctx }) {
            return Err(RaftError::ProposalDropped {
                reason: "too many pending read-index requests",
            });
        }
        self.maybe_start_read_round();
        Ok(())
    }

    /// Starts a confirmation round once this term has committed an entry
    /// (before that, the commit index may lag the previous leader's).
    fn maybe_start_read_round(&mut self) {
        if self.role != Role::Leader || self.log.term(self.log.committed) != Some(self.term) {
            return;
        }
        if let Some(round) = self.read_only.start_round(self.log.committed, self.id) {
            if !self.check_read_round() {
                let ctx = round;
                for to in self.peers() {
                    let Some(pr) = self.tracker.progress.get(&to) else {
                        continue;
                    };
                    let mut m = Message::new(MessageKind::Heartbeat, to);
                    m.commit = pr.match_index.min(self.log.committed);
                    m.context = ctx;
                    self.send(m);
                }
            }
        }
    }

    /// Completes the read round if a quorum confirmed it. Returns true if a
    /// round completed.
    fn check_read_round(&mut self) -> bool {
        let confirmed = self
            .read_only
            .acks()
            .is_some_and(|acks| self.tracker.has_quorum(acks));
        if !confirmed {
            return false;
        }
        let Some(round) = self.read_only.finish_round() else {
            return false;
        };
        for req in round.requests {
            if req.from == self.id {
                self.read_states.push(ReadState {
                    ctx: req.ctx,
                    index: round.index,
                });
            } else {
                let mut m = Message::new(MessageKind::ReadIndexResp, req.from);
                m.index = round.index;
                m.context = req.ctx;
                self.send(m);
            }
        }
        self.maybe_start_read_round();
        true
    }

    pub(crate) fn transfer_to(&mut self, target: NodeId) {
        if self.role != Role::Leader
            || target == self.id
            || !self.tracker.is_voter(target)
            || self.lead_transferee == target
        {
            return;
        }
        self.lead_transferee = target;
        // The transfer must finish within one election timeout.
        self.election_elapsed = 0;
        let caught_up = self.tracker.progress.get(&target).map(|p| p.match_index)
            == Some(self.log.last_index());
        if caught_up {
            self.send(Message::new(MessageKind::TimeoutNow, target));
        } else {
            self.maybe_send_append(target, true);
        }
    }

    /// Applies a committed membership change (single-server changes; see
    /// the crate docs for why one at a time is safe).
    pub(crate) fn apply_conf_change(&mut self, cc: &ConfChange) -> ConfState {
        let mut cs = self.tracker.conf_state();
        match cc {
            ConfChange::AddVoter { id, .. } | ConfChange::Promote { id } => {
                cs.learners.retain(|x| x != id);
                if !cs.voters.contains(id) {
                    cs.voters.push(*id);
                }
            }
            ConfChange::AddLearner { id, .. } => {
                if !cs.voters.contains(id) && !cs.learners.contains(id) {
                    cs.learners.push(*id);
                }
            }
            ConfChange::Remove { id } => {
                cs.voters.retain(|x| x != id);
                cs.learners.retain(|x| x != id);
            }
        }
        let known: Vec<NodeId> = self.tracker.progress.keys().copied().collect();
        self.tracker.set_conf(&cs, self.log.last_index() + 1);
        for (id, pr) in self.tracker.progress.iter_mut() {
            if !known.contains(id) {
                // Just added: treat as active so check-quorum and snapshot
                // sending give it a chance to answer.
                pr.recent_active = true;
            }
        }
        if self.role == Role::Leader {
            if !self.tracker.is_voter(self.id) {
                self.become_follower(self.term, 0);
            } else {
                if !self.tracker.is_voter(self.lead_transferee) {
                    self.lead_transferee = 0;
                }
                if self.maybe_commit() {
                    self.bcast_append();
                }
                self.check_read_round();
            }
        }
        self.tracker.conf_state()
    }

    /// The server's report on a snapshot it streamed to `to`.
    pub(crate) fn report_snapshot(&mut self, to: NodeId, success: bool) {
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            if pr.state == ProgressState::Snapshot {
                if !success {
                    pr.pending_snapshot = 0;
                }
                pr.become_probe();
                // Wait for a heartbeat answer before probing.
                pr.probe_sent = true;
            }
        }
    }

    pub(crate) fn report_unreachable(&mut self, to: NodeId) {
        if let Some(pr) = self.tracker.progress.get_mut(&to) {
            if pr.state == ProgressState::Replicate {
                pr.become_probe();
            }
        }
    }
}
