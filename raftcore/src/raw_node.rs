//! `RawNode`: the application's handle on one Raft node, and the `Ready`
//! batches it hands out. The contract is in the crate docs.

use std::collections::{BTreeMap, VecDeque};

use crate::config::Config;
use crate::error::RaftError;
use crate::log::RaftLog;
use crate::message::{Message, MessageKind, ReadState};
use crate::progress::ProgressState;
use crate::raft::{Raft, Role};
use crate::types::{ConfChange, ConfState, Entry, EntryKind, HardState, NodeId, SnapshotMeta};

/// Durable state read back at start-up (from the WAL and the state machine).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub hard_state: HardState,
    /// The latest snapshot the log starts after, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// The index the state machine had applied (durably) before the restart.
    pub applied: u64,
}

/// One batch of work for the application. See the crate docs for the order
/// in which its parts must be handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Persist (with `entries`) if present.
    pub hard_state: Option<HardState>,
    /// Persist; an entry at index `i` replaces the persisted log from `i` on.
    pub entries: Vec<Entry>,
    /// Send now, even before `entries`/`hard_state` are durable.
    pub messages: Vec<Message>,
    /// Send only once this Ready's `snapshot`, `entries` and `hard_state`
    /// are durable.
    pub persisted_messages: Vec<Message>,
    /// Committed and locally durable; apply in order.
    pub committed_entries: Vec<Entry>,
    pub read_states: Vec<ReadState>,
    /// A snapshot from the leader: install its image (which arrived with the
    /// `Snapshot` message) and persist the metadata before `entries`.
    pub snapshot: Option<SnapshotMeta>,
    /// What `advance` marks applied: the last committed entry (or snapshot)
    /// handed out up to this Ready. Kept apart from `committed_entries` so
    /// the caller may move fields out before advancing.
    apply_upto: u64,
}

impl Ready {
    /// The (index, term) to pass to [`RawNode::on_persisted`] once this
    /// Ready's writes are durable; None if it has nothing to persist but
    /// possibly a hard state.
    pub fn persisted_upto(&self) -> Option<(u64, u64)> {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => Some((e.index, e.term)),
            (None, Some(s)) => Some((s.index, s.term)),
            (None, None) => None,
        }
    }
}

/// The leader's view of one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerProgress {
    pub match_index: u64,
    pub next_index: u64,
    pub state: ProgressState,
    pub recent_active: bool,
    pub is_learner: bool,
    pub inflight_msgs: usize,
}

/// A point-in-time summary of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub term: u64,
    pub vote: NodeId,
    pub leader: Option<NodeId>,
    pub role: Role,
    pub commit: u64,
    pub applied: u64,
    /// Highest index durable locally.
    pub persisted: u64,
    pub first_index: u64,
    pub last_index: u64,
    pub conf_state: ConfState,
    /// Per member, only on the leader.
    pub progress: BTreeMap<NodeId, PeerProgress>,
    pub lead_transferee: Option<NodeId>,
}

/// A persistence request handed out in a Ready and not yet acknowledged.
#[derive(Clone, Copy, Debug)]
struct Write {
    /// Lowest index this write may overwrite (1 for a snapshot install).
    first_index: u64,
    last_index: u64,
    last_term: u64,
}

/// One Raft node driven by the application.
pub struct RawNode {
    raft: Raft,
    prev_hard_state: HardState,
    /// Unacknowledged writes in hand-out order; bounded by
    /// `max_inflight_msgs` (older ones merge conservatively).
    writes: VecDeque<Write>,
}

fn restore_err(reason: String) -> RaftError {
    RaftError::InvalidRestore { reason }
}

impl RawNode {
    /// Builds a node from its durable state. `initial` is the membership at
    /// index 0 (the bootstrap membership, identical on every member); it is
    /// used when there is no snapshot. Conf changes in entries up to
    /// `restored.applied` are re-applied here; later ones the application
    /// applies again through `apply_conf_change`.
    pub fn new(cfg: Config, initial: ConfState, restored: Restored) -> Result<RawNode, RaftError> {
        cfg.validate()?;
        let Restored {
            hard_state,
            snapshot,
            entries,
            applied,
        } = restored;
        let base = snapshot.unwrap_or(SnapshotMeta {
            index: 0,
            term: 0,
            conf_state: initial,
        });
        let mut prev_term = base.term;
        for (i, e) in entries.iter().enumerate() {
            if e.index != base.index + 1 + i as u64 {
                return Err(restore_err(format!(
                    "entry {} found where {} was expected",
                    e.index,
                    base.index + 1 + i as u64
                )));
            }
            if e.term < prev_term {
                return Err(restore_err(format!(
                    "entry {} has a decreasing term",
                    e.index
                )));
            }
            prev_term = e.term;
        }
        let last = base.index + entries.len() as u64;
        if hard_state.term < prev_term {
            return Err(restore_err(format!(
                "hard state term {} below last entry term {prev_term}",
                hard_state.term
            )));
        }
        if applied < base.index || applied > last {
            return Err(restore_err(format!(
                "applied {applied} outside the log [{}, {last}]",
                base.index
            )));
        }
        let committed = hard_state.commit.max(applied);
        if committed > last {
            return Err(restore_err(format!(
                "commit {committed} beyond the last entry {last} (lost log tail)"
            )));
        }
        let mut conf = base.conf_state.clone();
        let log = RaftLog::restored(base, entries, committed, applied);
        let mut raft = Raft::new(cfg, hard_state.term, hard_state.vote, log, &conf);
        let replay: Vec<ConfChange> = (raft.log.first_index()..=applied)
            .filter_map(|i| raft.log.entry(i))
            .filter(|e| e.kind == EntryKind::ConfChange)
            .map(|e| ConfChange::decode(&e.data))
            .collect::<Result<_, _>>()?;
        for cc in &replay {
            conf = raft.apply_conf_change(cc);
        }
        let _ = conf;
        Ok(RawNode {
            raft,
            prev_hard_state: hard_state,
            writes: VecDeque::new(),
        })
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.raft.tick();
    }

    /// Feeds a message from a peer. A `Snapshot` message must be stepped
    /// only after its state-machine image has fully arrived.
    pub fn step(&mut self, m: Message) -> Result<(), RaftError> {
        self.raft.step(m)
    }

    /// Appends `data` (leader only); returns its log index. The entry may
    /// still be lost (e.g. leader change); it is only committed when it shows
    /// up in `committed_entries`.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<u64, RaftError> {
        self.raft.propose(data)
    }

    /// Proposes a single-server membership change (leader only). Refused
    /// while an earlier change is not yet applied.
    pub fn propose_conf_change(&mut self, cc: ConfChange) -> Result<u64, RaftError> {
        self.raft.propose_conf_change(cc, &[])
    }

    /// [`RawNode::propose_conf_change`] with an application context carried
    /// in the entry (read back with [`ConfChange::decode_with_context`]).
    pub fn propose_conf_change_with_context(
        &mut self,
        cc: ConfChange,
        context: &[u8],
    ) -> Result<u64, RaftError> {
        self.raft.propose_conf_change(cc, context)
    }

    /// Requests a linearizable read point; the answer appears as a
    /// `ReadState { ctx, .. }` in a later Ready, or never if leadership is
    /// lost meanwhile (callers time out and retry). Followers forward to the
    /// leader.
    pub fn read_index(&mut self, ctx: u64) -> Result<(), RaftError> {
        if self.raft.role == Role::Leader {
            return self.raft.leader_read(self.raft.id, ctx);
        }
        if self.raft.leader == 0 {
            return Err(RaftError::NotLeader { leader: None });
        }
        let mut m = Message::new(MessageKind::ReadIndex, self.raft.leader);
        m.context = ctx;
        self.raft.send(m);
        Ok(())
    }

    /// Asks the leader to hand leadership to `to` (forwarded if this node
    /// is a follower). Proposals are refused while the transfer runs; it is
    /// abandoned after an election timeout.
    pub fn transfer_leader(&mut self, to: NodeId) {
        if self.raft.role == Role::Leader {
            self.raft.transfer_to(to);
        } else if self.raft.leader != 0 {
            let mut m = Message::new(MessageKind::TransferLeader, self.raft.leader);
            m.context = to;
            self.raft.send(m);
        }
    }

    /// Starts an election now (with pre-vote if configured).
    pub fn campaign(&mut self) -> Result<(), RaftError> {
        self.raft.hup(false)
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.raft.term,
            vote: self.raft.vote,
            commit: self.raft.log.committed,
        }
    }

    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        self.hard_state() != self.prev_hard_state
            || r.log.has_pending_snapshot()
            || r.log.has_unstable()
            || !r.msgs.is_empty()
            || !r.persisted_msgs.is_empty()
            || !r.read_states.is_empty()
            || r.log.has_next_committed()
    }

    /// Takes everything new since the previous call.
    pub fn ready(&mut self) -> Ready {
        let hs = self.hard_state();
        let hard_state = (hs != self.prev_hard_state).then_some(hs);
        self.prev_hard_state = hs;
        let r = &mut self.raft;
        let snapshot = r.log.take_pending_snapshot();
        let entries = r.log.take_unstable();
        let write = match (entries.first(), entries.last(), &snapshot) {
            (_, Some(last), Some(_)) => Some((1, last.index, last.term)),
            (Some(first), Some(last), None) => Some((first.index, last.index, last.term)),
            (_, None, Some(s)) => Some((1, s.index, s.term)),
            _ => None,
        };
        if let Some((first_index, last_index, last_term)) = write {
            if self.writes.len() >= self.raft.cfg.max_inflight_msgs.max(2) {
                // Full: extend the newest tracked write instead of tracking a
                // new one. Acks of older writes stay exact; the extended one
                // is acknowledged by this write's (index, term), which is
                // conservative.
                if let Some(back) = self.writes.back_mut() {
                    back.first_index = back.first_index.min(first_index);
                    back.last_index = last_index;
                    back.last_term = last_term;
                }
            } else {
                self.writes.push_back(Write {
                    first_index,
                    last_index,
                    last_term,
                });
            }
        }
        let r = &mut self.raft;
        let committed_entries = r.log.take_committed(r.cfg.max_size_per_msg_bytes);
        Ready {
            hard_state,
            entries,
            messages: std::mem::take(&mut r.msgs),
            persisted_messages: std::mem::take(&mut r.persisted_msgs),
            committed_entries,
            read_states: std::mem::take(&mut r.read_states),
            snapshot,
            apply_upto: r.log.apply_handed,
        }
    }

    /// Reports that `rd.committed_entries` (and `rd.snapshot`), and those of
    /// every earlier Ready, were applied to the state machine. The caller may
    /// move fields out of `rd` first.
    pub fn advance(&mut self, rd: Ready) {
        self.advance_applied(rd.apply_upto);
    }

    /// Like `advance`, for applications that apply asynchronously: every
    /// committed entry up to `index` was applied.
    pub fn advance_applied(&mut self, index: u64) {
        self.raft.log.applied_to(index);
    }

    /// Storage reports that every write handed out up to the one ending at
    /// (`index`, `term`) is durable. Writes must become durable in hand-out
    /// order. Stale or unknown reports are ignored.
    pub fn on_persisted(&mut self, index: u64, term: u64) {
        let Some(pos) = self
            .writes
            .iter()
            .position(|w| w.last_index == index && w.last_term == term)
        else {
            return;
        };
        self.writes.drain(..=pos);
        // A later write still in flight may overwrite from its first index
        // on, so only the prefix below it is known to match the log.
        let cap = self
            .writes
            .iter()
            .map(|w| w.first_index - 1)
            .min()
            .unwrap_or(u64::MAX);
        let log = &mut self.raft.log;
        let matches = log.match_term(index, term) || index <= log.compacted_index();
        let upto = index.min(cap).min(log.last_index());
        if matches && upto > log.persisted {
            log.persisted = upto;
            self.raft.on_self_persisted();
        }
    }

    /// Applies a committed `EntryKind::ConfChange` entry's change to the
    /// membership Raft uses; call it while applying that entry.
    pub fn apply_conf_change(&mut self, cc: &ConfChange) -> ConfState {
        self.raft.apply_conf_change(cc)
    }

    /// The application captured a state-machine image at `meta.index`
    /// (`<= applied`; `meta.conf_state` is the membership there). The log up
    /// to `meta.index - snapshot_catch_up_entries` is dropped, and followers
    /// that need dropped entries get a `Snapshot` message carrying `meta`.
    /// Stale or inconsistent metadata is ignored.
    pub fn on_snapshot_taken(&mut self, meta: SnapshotMeta) {
        let keep = self.raft.cfg.snapshot_catch_up_entries;
        self.raft.log.compact(meta, keep);
    }

    /// The server's report on streaming a snapshot to `to`: failure makes
    /// the leader retry after the next heartbeat answer.
    pub fn report_snapshot(&mut self, to: NodeId, success: bool) {
        self.raft.report_snapshot(to, success);
    }

    /// The transport could not deliver to `to`: stop pipelining to it.
    pub fn report_unreachable(&mut self, to: NodeId) {
        self.raft.report_unreachable(to);
    }

    /// Term of the log entry at `index`, if still in the log (or the
    /// snapshot's last index).
    pub fn term(&self, index: u64) -> Option<u64> {
        self.raft.log.term(index)
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        let progress = if r.role == Role::Leader {
            r.tracker
                .progress
                .iter()
                .map(|(id, p)| {
                    (
                        *id,
                        PeerProgress {
                            match_index: p.match_index,
                            next_index: p.next_index,
                            state: p.state,
                            recent_active: p.recent_active,
                            is_learner: r.tracker.is_learner(*id),
                            inflight_msgs: p.inflights.len(),
                        },
                    )
                })
                .collect()
        } else {
            BTreeMap::new()
        };
        Status {
            id: r.id,
            term: r.term,
            vote: r.vote,
            leader: (r.leader != 0).then_some(r.leader),
            role: r.role,
            commit: r.log.committed,
            applied: r.log.applied,
            persisted: r.log.persisted,
            first_index: r.log.first_index(),
            last_index: r.log.last_index(),
            conf_state: r.tracker.conf_state(),
            progress,
            lead_transferee: (r.lead_transferee != 0).then_some(r.lead_transferee),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[NodeId]) -> ConfState {
        ConfState {
            voters: ids.to_vec(),
            learners: vec![],
        }
    }

    fn ent(index: u64, term: u64) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    fn append(from: NodeId, term: u64, prev: (u64, u64), ents: Vec<Entry>) -> Message {
        let mut m = Message::new(MessageKind::App, 2);
        m.from = from;
        m.term = term;
        m.index = prev.0;
        m.log_term = prev.1;
        m.entries = ents;
        m
    }

    #[test]
    fn single_leader_commits_only_after_its_own_write_is_durable() {
        let mut n = RawNode::new(Config::new(1), voters(&[1]), Restored::default()).expect("node");
        n.campaign().expect("campaign");
        let rd = n.ready();
        assert_eq!(rd.entries.len(), 1);
        assert!(rd.committed_entries.is_empty());
        assert_eq!(n.status().commit, 0, "not durable yet");
        let (i, t) = rd.persisted_upto().expect("write");
        n.advance(rd);
        n.on_persisted(i, t);
        assert_eq!(n.status().commit, 1);
        let rd = n.ready();
        assert_eq!(rd.committed_entries.len(), 1);
        assert_eq!(rd.hard_state.map(|h| h.commit), Some(1));
    }

    #[test]
    fn persisted_is_capped_by_a_truncating_write_still_in_flight() {
        let cfg = Config {
            pre_vote: false,
            check_quorum: false,
            ..Config::new(2)
        };
        let mut n = RawNode::new(cfg, voters(&[1, 2, 3]), Restored::default()).expect("node");
        let w1 = vec![ent(1, 1), ent(2, 1), ent(3, 1)];
        n.step(append(1, 1, (0, 0), w1.clone())).expect("step");
        let r1 = n.ready();
        // Leader of term 2 overwrites from index 1; then the leader of term 3
        // brings back the term-1 entries.
        n.step(append(3, 2, (0, 0), vec![ent(1, 2)])).expect("step");
        let r2 = n.ready();
        n.step(append(1, 3, (0, 0), w1)).expect("step");
        let r3 = n.ready();
        assert_eq!(r2.entries.len(), 1);
        assert_eq!(r3.entries.len(), 3);
        assert!(
            r3.persisted_messages
                .iter()
                .any(|m| m.kind == MessageKind::AppResp)
        );
        n.on_persisted(3, 1); // r1 durable; r2 (which erases it) may land next
        assert_eq!(n.status().persisted, 0);
        n.on_persisted(1, 2); // r2 durable: the log differs from disk
        assert_eq!(n.status().persisted, 0);
        n.on_persisted(3, 1); // r3 durable
        assert_eq!(n.status().persisted, 3);
        for rd in [r1, r2, r3] {
            n.advance(rd);
        }
    }

    #[test]
    fn stale_and_unknown_acks_are_ignored() {
        let mut n = RawNode::new(Config::new(1), voters(&[1]), Restored::default()).expect("node");
        n.campaign().expect("campaign");
        let rd = n.ready();
        n.on_persisted(5, 1);
        n.on_persisted(1, 7);
        assert_eq!(n.status().persisted, 0);
        n.advance(rd);
    }

    #[test]
    fn advance_works_after_fields_were_moved_out() {
        let mut n = RawNode::new(Config::new(1), voters(&[1]), Restored::default()).expect("node");
        n.campaign().expect("campaign");
        let rd = n.ready();
        n.on_persisted(1, 1);
        n.advance(rd);
        let mut rd = n.ready();
        let applied = std::mem::take(&mut rd.committed_entries);
        assert_eq!(applied.len(), 1);
        n.advance(rd);
        assert_eq!(n.status().applied, 1);
    }

    #[test]
    fn restore_rejects_inconsistent_state() {
        let new = |r: Restored| RawNode::new(Config::new(1), voters(&[1]), r).map(|_| ());
        let hs = HardState {
            term: 2,
            vote: 1,
            commit: 2,
        };
        let ok = Restored {
            hard_state: hs,
            snapshot: None,
            entries: vec![ent(1, 1), ent(2, 2)],
            applied: 1,
        };
        assert_eq!(new(ok.clone()), Ok(()));
        let gap = Restored {
            entries: vec![ent(1, 1), ent(3, 2)],
            ..ok.clone()
        };
        let decreasing = Restored {
            entries: vec![ent(1, 2), ent(2, 1)],
            ..ok.clone()
        };
        let commit_beyond = Restored {
            hard_state: HardState { commit: 3, ..hs },
            ..ok.clone()
        };
        let applied_beyond = Restored {
            applied: 3,
            ..ok.clone()
        };
        let term_below_log = Restored {
            hard_state: HardState { term: 1, ..hs },
            ..ok
        };
        for bad in [
            gap,
            decreasing,
            commit_beyond,
            applied_beyond,
            term_below_log,
        ] {
            assert!(
                matches!(new(bad.clone()), Err(RaftError::InvalidRestore { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn restart_replays_conf_changes_up_to_applied_only() {
        let cc = Entry {
            term: 1,
            index: 2,
            kind: EntryKind::ConfChange,
            data: ConfChange::AddLearner {
                id: 4,
                context: vec![],
            }
            .encode(),
        };
        let restored = |applied| Restored {
            hard_state: HardState {
                term: 1,
                vote: 1,
                commit: 2,
            },
            snapshot: None,
            entries: vec![ent(1, 1), cc.clone()],
            applied,
        };
        let n = RawNode::new(Config::new(1), voters(&[1, 2]), restored(2)).expect("node");
        assert_eq!(n.status().conf_state.learners, vec![4]);
        let mut n = RawNode::new(Config::new(1), voters(&[1, 2]), restored(1)).expect("node");
        assert!(n.status().conf_state.learners.is_empty());
        let rd = n.ready();
        assert_eq!(rd.committed_entries.len(), 1, "the app applies it again");
        assert_eq!(
            n.apply_conf_change(&ConfChange::AddLearner {
                id: 4,
                context: vec![]
            })
            .learners,
            vec![4]
        );
    }

    #[test]
    fn corrupt_conf_change_entry_fails_restart_with_an_error() {
        let bad = Entry {
            term: 1,
            index: 1,
            kind: EntryKind::ConfChange,
            data: vec![1, 0xff, 0xff],
        };
        let r = Restored {
            hard_state: HardState {
                term: 1,
                vote: 0,
                commit: 1,
            },
            snapshot: None,
            entries: vec![bad],
            applied: 1,
        };
        let res = RawNode::new(Config::new(1), voters(&[1]), r);
        assert!(matches!(res, Err(RaftError::Decode { .. })));
    }
}
