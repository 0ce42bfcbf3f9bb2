//! The Raft protocol proper: roles, terms, elections and message dispatch.
//! Leader-side replication lives in `leader.rs`, follower-side log handling
//! in `follower.rs`. No IO happens here: outputs accumulate in `msgs`,
//! `persisted_msgs` and `read_states` until `RawNode::ready` takes them.

mod follower;
mod leader;

use crate::config::Config;
use crate::error::RaftError;
use crate::log::RaftLog;
use crate::message::{Message, MessageKind, ReadState};
use crate::read_only::ReadOnly;
use crate::rng::Rng;
use crate::tracker::{Tracker, VoteResult};
use crate::types::{ConfState, NodeId};

/// `Message::context` of a vote request sent because of a leader transfer:
/// receivers grant it even while they still have a live leader.
pub(crate) const CAMPAIGN_TRANSFER: u64 = 1;

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Collecting pre-votes; the term has not been bumped.
    PreCandidate,
    Candidate,
    Leader,
}

pub(crate) struct Raft {
    pub(crate) id: NodeId,
    pub(crate) cfg: Config,
    pub(crate) term: u64,
    /// Voted for in `term`; 0 = nobody.
    pub(crate) vote: NodeId,
    /// Known leader of `term`; 0 = unknown.
    pub(crate) leader: NodeId,
    pub(crate) role: Role,
    pub(crate) log: RaftLog,
    pub(crate) tracker: Tracker,
    pub(crate) read_only: ReadOnly,
    rng: Rng,
    pub(crate) election_elapsed: u32,
    heartbeat_elapsed: u32,
    /// In `[election_tick, 2 * election_tick)`, redrawn at every role change.
    randomized_election_timeout: u32,
    /// Leader transfer target; 0 = none. Proposals are refused meanwhile.
    pub(crate) lead_transferee: NodeId,
    /// Index of the last conf change appended by this leader. A new one is
    /// refused until `applied >= pending_conf_index` (one at a time).
    pub(crate) pending_conf_index: u64,
    /// Bytes of entries appended by this leader and not yet committed.
    pub(crate) uncommitted_bytes: u64,
    pub(crate) msgs: Vec<Message>,
    pub(crate) persisted_msgs: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
}

impl Raft {
    /// A follower with restored state. The caller validated `cfg` and `log`.
    pub(crate) fn new(
        cfg: Config,
        term: u64,
        vote: NodeId,
        log: RaftLog,
        conf: &ConfState,
    ) -> Raft {
        let next = log.last_index() + 1;
        let mut r = Raft {
            id: cfg.id,
            term,
            vote,
            leader: 0,
            role: Role::Follower,
            tracker: Tracker::new(conf, next, cfg.max_inflight_msgs),
            read_only: ReadOnly::new(cfg.max_inflight_msgs),
            rng: Rng::new(cfg.seed),
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: cfg.election_tick,
            lead_transferee: 0,
            pending_conf_index: 0,
            uncommitted_bytes: 0,
            msgs: Vec::new(),
            persisted_msgs: Vec::new(),
            read_states: Vec::new(),
            log,
            cfg,
        };
        r.become_follower(term, 0);
        r
    }

    /// Queues `m` with our id and, unless set already or a forwarded local
    /// request, our term. Messages that reveal durable state (votes, append
    /// acknowledgements, our own candidacy) wait for persistence.
    pub(crate) fn send(&mut self, mut m: Message) {
        m.from = self.id;
        if m.term == 0 && !matches!(m.kind, MessageKind::ReadIndex | MessageKind::TransferLeader) {
            m.term = self.term;
        }
        match m.kind {
            MessageKind::Vote | MessageKind::VoteResp | MessageKind::AppResp => {
                self.persisted_msgs.push(m)
            }
            _ => self.msgs.push(m),
        }
    }

    /// Can this node become leader (a voter, not installing a snapshot)?
    pub(crate) fn promotable(&self) -> bool {
        self.tracker.is_voter(self.id) && !self.log.has_pending_snapshot()
    }

    fn reset(&mut self, term: u64) {
        if term != self.term {
            self.term = term;
            self.vote = 0;
        }
        self.leader = 0;
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.randomized_election_timeout =
            self.cfg.election_tick + self.rng.below(u64::from(self.cfg.election_tick)) as u32;
        self.lead_transferee = 0;
        self.tracker.reset_votes();
        let next = self.log.last_index() + 1;
        let persisted = self.log.persisted;
        for (id, pr) in self.tracker.progress.iter_mut() {
            *pr = crate::progress::Progress::new(next, self.cfg.max_inflight_msgs);
            if *id == self.id {
                pr.match_index = persisted;
                pr.next_index = next;
            }
        }
        self.read_only.reset();
        self.pending_conf_index = 0;
        self.uncommitted_bytes = 0;
    }

    pub(crate) fn become_follower(&mut self, term: u64, leader: NodeId) {
        self.reset(term);
        self.leader = leader;
        self.role = Role::Follower;
    }

    fn become_pre_candidate(&mut self) {
        assert!(self.role != Role::Leader, "leader cannot pre-campaign");
        self.tracker.reset_votes();
        self.leader = 0;
        self.role = Role::PreCandidate;
    }

    fn become_candidate(&mut self) {
        assert!(self.role != Role::Leader, "leader cannot campaign");
        self.reset(self.term + 1);
        self.vote = self.id;
        self.role = Role::Candidate;
    }

    /// Campaigns if allowed: not leader, a voter, and no committed conf
    /// change still waiting to be applied (its configuration could make
    /// this node's view of the quorum stale).
    pub(crate) fn hup(&mut self, transfer: bool) -> Result<(), RaftError> {
        if self.role == Role::Leader {
            return Ok(());
        }
        if !self.promotable() {
            return Err(RaftError::CampaignRefused {
                reason: "not a voter, or installing a snapshot",
            });
        }
        if self.log.has_unapplied_conf_change() {
            return Err(RaftError::CampaignRefused {
                reason: "a committed conf change is not applied yet",
            });
        }
        if self.cfg.pre_vote && !transfer {
            self.become_pre_candidate();
            self.request_votes(MessageKind::PreVote, self.term + 1, false);
        } else {
            self.campaign_for_real(transfer);
        }
        Ok(())
    }

    fn campaign_for_real(&mut self, transfer: bool) {
        self.become_candidate();
        self.request_votes(MessageKind::Vote, self.term, transfer);
    }

    fn request_votes(&mut self, kind: MessageKind, term: u64, transfer: bool) {
        if self.poll(self.id, true) {
            return;
        }
        let me = self.id;
        let voters: Vec<NodeId> = self.tracker.voters.iter().copied().collect();
        for to in voters.into_iter().filter(|&v| v != me) {
            let mut m = Message::new(kind, to);
            m.term = term;
            m.index = self.log.last_index();
            m.log_term = self.log.last_term();
            m.context = if transfer { CAMPAIGN_TRANSFER } else { 0 };
            self.send(m);
        }
    }

    /// Records a (pre-)vote and acts on the result. Returns true if the
    /// election was decided.
    fn poll(&mut self, from: NodeId, granted: bool) -> bool {
        self.tracker.record_vote(from, granted);
        match self.tracker.tally() {
            VoteResult::Won => {
                if self.role == Role::PreCandidate {
                    self.campaign_for_real(false);
                } else {
                    self.become_leader();
                }
                true
            }
            VoteResult::Lost => {
                self.become_follower(self.term, 0);
                true
            }
            VoteResult::Pending => false,
        }
    }

    pub(crate) fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
            return;
        }
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.promotable() && self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            // A refusal (unapplied conf change) just waits for the next timeout.
            let _ = self.hup(false);
        }
    }

    /// Inside the lease: we heard from a leader less than an election
    /// timeout ago, so a vote request is from a disruptive node.
    fn in_lease(&self) -> bool {
        self.cfg.check_quorum && self.leader != 0 && self.election_elapsed < self.cfg.election_tick
    }

    pub(crate) fn step(&mut self, m: Message) -> Result<(), RaftError> {
        if m.to != self.id {
            return Err(RaftError::Misdirected {
                id: self.id,
                to: m.to,
            });
        }
        let local = matches!(m.kind, MessageKind::ReadIndex | MessageKind::TransferLeader);
        if !local && m.term > self.term {
            let is_vote = matches!(m.kind, MessageKind::Vote | MessageKind::PreVote);
            if is_vote && m.context != CAMPAIGN_TRANSFER && self.in_lease() {
                return Ok(());
            }
            match m.kind {
                MessageKind::PreVote => {}
                MessageKind::PreVoteResp if !m.reject => {}
                MessageKind::App | MessageKind::Heartbeat | MessageKind::Snapshot => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, 0),
            }
        } else if !local && m.term < self.term {
            if (self.cfg.check_quorum || self.cfg.pre_vote)
                && matches!(m.kind, MessageKind::App | MessageKind::Heartbeat)
            {
                // Tell a stale leader (e.g. one cut off by a partition whose
                // followers moved on under pre-vote) that it is stale.
                self.send(Message::new(MessageKind::AppResp, m.from));
            } else if m.kind == MessageKind::PreVote {
                let mut r = Message::new(MessageKind::PreVoteResp, m.from);
                r.reject = true;
                self.send(r);
            }
            return Ok(());
        }
        match m.kind {
            MessageKind::Vote | MessageKind::PreVote => {
                self.handle_vote_request(m);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::Candidate | Role::PreCandidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn handle_vote_request(&mut self, m: Message) {
        let pre = m.kind == MessageKind::PreVote;
        let resp_kind = if pre {
            MessageKind::PreVoteResp
        } else {
            MessageKind::VoteResp
        };
        let can_vote = self.vote == m.from
            || (self.vote == 0 && self.leader == 0)
            || (pre && m.term > self.term);
        let mut r = Message::new(resp_kind, m.from);
        if can_vote && self.log.is_up_to_date(m.index, m.log_term) {
            r.term = m.term;
            if !pre {
                self.election_elapsed = 0;
                self.vote = m.from;
            }
        } else {
            r.term = self.term;
            r.reject = true;
        }
        self.send(r);
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), RaftError> {
        match m.kind {
            MessageKind::App => {
                self.become_follower(m.term, m.from);
                self.handle_append(m);
            }
            MessageKind::Heartbeat => {
                self.become_follower(m.term, m.from);
                self.handle_heartbeat(m);
            }
            MessageKind::Snapshot => {
                self.become_follower(m.term, m.from);
                self.handle_snapshot(m)?;
            }
            MessageKind::PreVoteResp if self.role == Role::PreCandidate => {
                self.poll(m.from, !m.reject);
            }
            MessageKind::VoteResp if self.role == Role::Candidate => {
                self.poll(m.from, !m.reject);
            }
            _ => {}
        }
        Ok(())
    }

    fn step_follower(&mut self, m: Message) -> Result<(), RaftError> {
        match m.kind {
            MessageKind::App => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_append(m);
            }
            MessageKind::Heartbeat => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_heartbeat(m);
            }
            MessageKind::Snapshot => {
                self.election_elapsed = 0;
                self.leader = m.from;
                self.handle_snapshot(m)?;
            }
            MessageKind::TransferLeader | MessageKind::ReadIndex if self.leader != 0 => {
                let mut fwd = m;
                fwd.to = self.leader;
                fwd.term = 0;
                self.msgs.push(fwd);
            }
            MessageKind::TimeoutNow => {
                // Refusals (learner, unapplied conf change) drop the transfer;
                // the old leader times it out.
                let _ = self.hup(true);
            }
            MessageKind::ReadIndexResp => self.read_states.push(ReadState {
                ctx: m.context,
                index: m.index,
            }),
            _ => {}
        }
        Ok(())
    }
}
