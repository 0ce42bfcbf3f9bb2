//! The replica as a sans-IO state machine: Raft, the request table and the
//! apply decisions. It owns no socket, file, clock or executor: time comes
//! in as `now` and `tick`, persistence and sending go out as [`Work`] and
//! [`Outbound`], and the store it applies to is handed in (a file-backed
//! one in the member, a memory-backed one in tests).
//!
//! The driver (`node/core.rs`) keeps the Ready contract of raftcore with
//! it: for each [`Work`] from [`Replica::take_ready`], send `messages`;
//! hand its [`Persist`] to the WAL (`snapshot` marker, then `wal_write()`),
//! and when that is durable call [`Replica::on_persisted`] and send
//! `persisted_messages`; [`Replica::apply`] the committed entries (at once:
//! they are durable already, this is what lets apply overlap the fsync of
//! the Work's own entries), then [`Replica::advance`] the Work. Works'
//! writes become durable in the order the Works were taken.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use corekv_raftcore::{
    Entry, HardState, Message, NodeId, RaftError, RawNode, Ready, Role, SnapshotMeta, Status,
};
use corekv_storage::{CommitInfo, Store};
use corekv_wire::ApiError;
use corekv_wire::messages as w;

use super::apply;
use super::requests::{NewWrite, ReadReply, Requests, Ticket};
use crate::metrics::METRICS;
use crate::node::CoreMsg;
use crate::node::entry::{self, Origin};
use crate::node::lease::{self, LeaseDriver};
use crate::stages::{Stage, WRITE_STAGES};
use std::sync::atomic::Ordering;

/// Fixed facts of one run of the replica.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub member_id: u64,
    pub cluster_id: u64,
    /// Drawn at process start, never 0: tells this run's proposals from
    /// entries proposed before a restart (see `entry.rs`).
    pub run_nonce: u64,
    pub request_timeout: Duration,
    /// Hard cap on waiting client requests (writes and reads).
    pub max_pending_requests: usize,
    /// Store meta key of the applied entry's term.
    pub applied_term_key: &'static [u8],
    /// The replicated alarm set, shared with the serve shards.
    pub alarms: std::sync::Arc<crate::node::alarm::Alarms>,
    /// The auth store replicated auth requests change.
    pub auth: std::sync::Arc<crate::node::auth::Auth>,
    /// The applied membership (the leader checks changes against it).
    pub cluster: std::sync::Arc<std::sync::RwLock<crate::cluster::ClusterInfo>>,
}

/// What the driver must send.
#[derive(Debug)]
pub enum Outbound {
    Raft(Message),
    /// A client write for the leader; if it cannot be queued, tell the
    /// replica with [`Replica::forward_dropped`].
    Forward {
        to: NodeId,
        ticket: Ticket,
        data: Vec<u8>,
    },
    /// Keep-alive / time-to-live forwarded to the leader, or its answer.
    Lease {
        to: NodeId,
        msg: lease::LeaseMsg,
    },
    /// A membership change for the leader (`replica/member.rs`); if it
    /// cannot be queued, tell the replica with [`Replica::forward_dropped`].
    ForwardMember {
        to: NodeId,
        ticket: Ticket,
        data: Vec<u8>,
    },
    /// The leader's refusal of a change `to` forwarded.
    MemberRefused {
        to: NodeId,
        proposal_id: u64,
        run_nonce: u64,
        error: String,
    },
}

/// One Ready, split into what the driver does with it.
pub struct Work {
    /// Send now (before the writes are durable).
    pub messages: Vec<Message>,
    persist: Option<Persist>,
    /// Committed and locally durable: apply in order (they do not wait for
    /// this Work's own writes).
    pub committed: Vec<Entry>,
    /// When the Ready was taken (its committed entries known committed;
    /// lease deadlines set at apply start here).
    taken_at: Instant,
    ready: Ready,
}

impl Work {
    /// The writes of this Work and what waits for them. Writes must become
    /// durable in the order the Works were taken.
    pub fn take_persist(&mut self) -> Persist {
        self.persist
            .take()
            .expect("take_persist is called once per Work")
    }
}

/// One Work's writes, handed to the WAL; report them with
/// [`Replica::on_persisted`] once durable.
pub struct Persist {
    /// Persist this snapshot marker before the entries.
    pub snapshot: Option<SnapshotMeta>,
    entries: Vec<Entry>,
    /// The hard state to write with the entries, when it must be written.
    hard_state: Option<HardState>,
    /// Send once the writes are durable.
    pub persisted_messages: Vec<Message>,
}

impl Persist {
    /// The WAL write (entries, hard state), if any. A hard state whose term
    /// and vote are unchanged only moved the commit index, which need not be
    /// durable (a restarted member learns it again from the leader): it
    /// rides along with the next entries instead of costing an fdatasync of
    /// its own.
    pub fn wal_write(&self) -> Option<(&[Entry], Option<HardState>)> {
        (!self.entries.is_empty() || self.hard_state.is_some())
            .then_some((&self.entries[..], self.hard_state))
    }
}

/// What an applied batch means for the rest of the member.
pub struct Applied {
    pub applied: u64,
    pub commit: CommitInfo,
    /// The membership after the batch, when the batch changed it.
    pub membership: Option<crate::cluster::ClusterInfo>,
}

pub struct Replica {
    pub(super) raw: RawNode,
    pub(super) cfg: ReplicaConfig,
    pub(super) requests: Requests,
    pub(super) outbox: Vec<Outbound>,
    /// Highest index applied to the store. Invariant: `applied <= commit`.
    applied: u64,
    /// The hard state last written to the WAL.
    durable_hs: HardState,
    /// Recent WAL writes, oldest first, for the stage timings; bounded by
    /// `MAX_TRACKED_WAL_BATCHES`, dropped once applied.
    wal_batches: VecDeque<WalBatch>,
    /// Leases: the lessor (applied with the entries), expiry and
    /// checkpoints on the leader, keep-alives forwarded to the leader.
    lease: LeaseDriver,
    /// Membership changes waiting for the one in flight to be applied
    /// (`replica/member.rs`).
    pub(super) member_retry: Vec<super::member::Retry>,
}

/// Most WAL writes remembered for stage timings.
const MAX_TRACKED_WAL_BATCHES: usize = 1024;

struct WalBatch {
    first: u64,
    last: u64,
    started: Instant,
    synced: Instant,
}

impl Replica {
    /// A member that is the only voter campaigns at once (it needs no one's
    /// vote, so waiting for an election timeout would only delay serving).
    pub fn new(
        cfg: ReplicaConfig,
        mut raw: RawNode,
        applied: u64,
        durable_hs: HardState,
    ) -> Replica {
        assert_ne!(cfg.run_nonce, 0, "a run nonce is never 0");
        if raw.status().conf_state.voters == [cfg.member_id] {
            if let Err(e) = raw.campaign() {
                tracing::debug!(error = %e, "no campaign at start");
            }
        }
        Replica {
            raw,
            requests: Requests::new(cfg.max_pending_requests),
            cfg,
            outbox: Vec::new(),
            applied,
            durable_hs,
            wal_batches: VecDeque::new(),
            lease: LeaseDriver::empty(),
            member_retry: Vec::new(),
        }
    }

    /// Uses `lease` (loaded from the store) instead of an empty lessor.
    pub fn with_leases(mut self, lease: LeaseDriver) -> Replica {
        self.lease = lease;
        self
    }

    /// The store was replaced (a leader's image): reload its leases.
    pub fn reload_leases(&mut self, store: &Store) -> Result<(), String> {
        self.lease.reload(store)
    }

    /// A lease message from peer `from`.
    pub fn on_lease_msg(&mut self, now: Instant, from: NodeId, msg: lease::LeaseMsg) {
        self.lease
            .set_leader(self.raw.status().role == Role::Leader, now);
        let actions = self.lease.on_peer(from, msg, now);
        self.lease_actions(actions);
    }

    /// Carries out what the lease driver asked for: messages go to the
    /// outbox, internal entries are proposed (a lost one is retried by the
    /// lessor: expiry revokes after its retry interval, checkpoints at the
    /// next interval).
    fn lease_actions(&mut self, actions: Vec<lease::Action>) {
        for a in actions {
            match a {
                lease::Action::Send { to, msg } => self.outbox.push(Outbound::Lease { to, msg }),
                lease::Action::Propose(body) => {
                    let origin = Origin {
                        member: self.cfg.member_id,
                        run_nonce: self.cfg.run_nonce,
                        proposal_id: 0,
                    };
                    if let Err(e) = self.raw.propose(entry::encode_internal(origin, &body)) {
                        tracing::debug!(error = %e, "internal lease proposal dropped");
                    }
                }
            }
        }
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn status(&self) -> Status {
        self.raw.status()
    }

    pub fn waiting_requests(&self) -> usize {
        self.requests.len()
    }

    /// Term of the log entry at `index`, if still in the log.
    pub fn term(&self, index: u64) -> Option<u64> {
        self.raw.term(index)
    }

    fn leader_known(&self) -> bool {
        self.raw.status().leader.is_some()
    }

    /// A request from a client shard.
    pub fn on_client(&mut self, now: Instant, m: CoreMsg) {
        let deadline = now + self.cfg.request_timeout;
        match m {
            CoreMsg::Propose {
                frame,
                reply,
                received,
            } => match self.requests.ticket() {
                Ok(ticket) => {
                    WRITE_STAGES.observe(Stage::ToCore, now.saturating_duration_since(received));
                    self.propose(NewWrite {
                        ticket,
                        deadline,
                        taken: now,
                        frame,
                        reply,
                    });
                }
                Err(_) => {
                    METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(ApiError::TooManyRequests));
                }
            },
            CoreMsg::ReadIndex { reply } => self.queue_read(deadline, reply),
            CoreMsg::MemberChange { frame, reply } => self.on_member_change(now, frame, reply),
            CoreMsg::MoveLeader { target, reply } => {
                let _ = reply.send(self.move_leader(target));
            }
            CoreMsg::Lease(ask) => {
                // Follow the role now, not at the next tick: a new leader
                // answers at once instead of forwarding to itself.
                let status = self.raw.status();
                self.lease.set_leader(status.role == Role::Leader, now);
                let actions = self.lease.on_ask(ask, status.leader, now);
                self.lease_actions(actions);
            }
        }
    }

    fn queue_read(&mut self, deadline: Instant, reply: ReadReply) {
        match self.requests.ticket() {
            Ok(ticket) => self.requests.queue_read(ticket, deadline, reply),
            Err(_) => {
                let _ = reply.send(Err(ApiError::TooManyRequests));
            }
        }
    }

    fn move_leader(&mut self, target: u64) -> Result<(), ApiError> {
        let status = self.raw.status();
        if status.role != Role::Leader {
            return Err(ApiError::NotLeader {
                leader_hint: status.leader.unwrap_or(0),
            });
        }
        if !status.conf_state.voters.contains(&target) || target == self.cfg.member_id {
            return Err(ApiError::BadLeaderTransferee);
        }
        self.raw.transfer_leader(target);
        Ok(())
    }

    /// Proposes a client write here (leader), forwards it (follower that
    /// knows the leader), or parks it until a leader is known.
    fn propose(&mut self, write: NewWrite) {
        let NewWrite {
            ticket,
            deadline,
            taken,
            frame,
            reply,
        } = write;
        let origin = Origin {
            member: self.cfg.member_id,
            run_nonce: self.cfg.run_nonce,
            proposal_id: ticket,
        };
        let data = entry::encode(origin, frame.tag(), frame.payload());
        match self.raw.propose(data) {
            Ok(_) => self.requests.proposed(ticket, deadline, taken, reply),
            Err(RaftError::NotLeader {
                leader: Some(leader),
            }) => {
                // Forward; this member answers when it applies the entry.
                let data = entry::encode(origin, frame.tag(), frame.payload());
                self.outbox.push(Outbound::Forward {
                    to: leader,
                    ticket,
                    data,
                });
                self.requests.proposed(ticket, deadline, taken, reply);
            }
            Err(RaftError::NotLeader { leader: None }) => {
                self.requests.park(NewWrite {
                    ticket,
                    deadline,
                    taken,
                    frame,
                    reply,
                });
            }
            Err(e) => {
                METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(raft_error(e)));
            }
        }
    }

    /// The transport could not queue a forwarded write.
    pub fn forward_dropped(&mut self, ticket: Ticket) {
        METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
        self.requests
            .answer_write(ticket, Err(ApiError::TooManyRequests));
    }

    /// What the driver must send now (forwards, and nothing else: Raft's
    /// messages come in [`Work`]).
    pub fn take_outbox(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.outbox)
    }

    pub fn step(&mut self, msg: Message) {
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(error = %e, "dropped a peer message");
        }
    }

    /// A write another member forwarded to us (only a leader takes it;
    /// otherwise it is dropped and the origin times out and retries).
    pub fn on_forwarded(&mut self, data: Vec<u8>) {
        if let Err(e) = self.raw.propose(data) {
            tracing::debug!(error = %e, "dropped a forwarded proposal");
        }
    }

    pub fn report_snapshot(&mut self, to: NodeId, ok: bool) {
        self.raw.report_snapshot(to, ok);
    }

    pub fn report_unreachable(&mut self, to: NodeId) {
        self.raw.report_unreachable(to);
    }

    /// One tick of logical time, at wall time `now`: Raft's timers, the
    /// request deadlines, and parked writes once a leader is known.
    pub fn tick(&mut self, now: Instant) {
        self.raw.tick();
        self.requests.expire(now, self.leader_known());
        self.unpark();
        self.retry_member_changes(now);
        let status = self.raw.status();
        self.lease.set_leader(status.role == Role::Leader, now);
        let actions = self.lease.on_tick(now, status.leader);
        self.lease_actions(actions);
    }

    fn unpark(&mut self) {
        if !self.requests.has_parked() || !self.leader_known() {
            return;
        }
        for write in self.requests.unpark_all() {
            self.propose(write);
        }
    }

    /// All reads queued since the last round share one read-index round.
    pub fn start_read_round(&mut self, now: Instant) {
        if !self.requests.has_queued_reads() {
            return;
        }
        match self.raw.read_index(self.requests.next_read_ctx()) {
            Ok(()) => self.requests.start_round(now),
            // No leader yet: the reads wait (until their deadline) for one.
            Err(RaftError::NotLeader { leader: None }) => {}
            Err(e) => self.requests.fail_queued_reads(&raft_error(e)),
        }
    }

    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Takes the next Ready. Read states in it are taken here.
    pub fn take_ready(&mut self, now: Instant) -> Work {
        let mut rd = self.raw.ready();
        for rs in std::mem::take(&mut rd.read_states) {
            if let Some(started) = self.requests.confirm_round(rs.ctx, rs.index, self.applied) {
                METRICS
                    .read_index
                    .observe(now.saturating_duration_since(started));
            }
        }
        let durable = self.durable_hs;
        let hard_state = rd.hard_state.filter(|hs| {
            !rd.entries.is_empty() || hs.term != durable.term || hs.vote != durable.vote
        });
        let persist = Persist {
            snapshot: rd.snapshot.clone(),
            entries: std::mem::take(&mut rd.entries),
            hard_state,
            persisted_messages: std::mem::take(&mut rd.persisted_messages),
        };
        Work {
            messages: std::mem::take(&mut rd.messages),
            persist: Some(persist),
            committed: std::mem::take(&mut rd.committed_entries),
            taken_at: now,
            ready: rd,
        }
    }

    /// A Work's snapshot marker and WAL write are durable; `wal` is when
    /// its WAL write started and when its fsync was done.
    pub fn on_persisted(&mut self, work: &Persist, wal: Option<(Instant, Instant)>) {
        if let (Some(first), Some(last), Some((started, synced))) =
            (work.entries.first(), work.entries.last(), wal)
        {
            if self.wal_batches.len() == MAX_TRACKED_WAL_BATCHES {
                self.wal_batches.pop_front();
            }
            self.wal_batches.push_back(WalBatch {
                first: first.index,
                last: last.index,
                started,
                synced,
            });
        }
        if let Some(hs) = work.hard_state {
            self.durable_hs = hs;
        }
        let upto = match (work.entries.last(), &work.snapshot) {
            (Some(e), _) => Some((e.index, e.term)),
            (None, Some(s)) => Some((s.index, s.term)),
            (None, None) => None,
        };
        if let Some((index, term)) = upto {
            self.raw.on_persisted(index, term);
        }
    }

    /// Applies the Work's committed entries to `store` and answers this
    /// run's waiting writes. An error is fatal (the store failed).
    /// `clock` reads the time after the store commit (stage timings).
    pub fn apply(
        &mut self,
        store: &Store,
        work: &mut Work,
        clock: &dyn Fn() -> Instant,
    ) -> Result<Option<Applied>, String> {
        let committed = std::mem::take(&mut work.committed);
        if committed.is_empty() {
            return Ok(None);
        }
        METRICS
            .proposals_committed
            .fetch_add(committed.len() as u64, Ordering::Relaxed);
        let header = w::ResponseHeader {
            cluster_id: self.cfg.cluster_id,
            member_id: self.cfg.member_id,
            revision: 0,
            raft_term: self.raw.status().term,
        };
        let lease = apply::LeaseCtx {
            lessor: &mut self.lease.lessor,
            now: work.taken_at,
        };
        let done = apply::apply_batch(
            store,
            &committed,
            &header,
            self.cfg.applied_term_key,
            &self.cfg.alarms,
            lease,
            &self.cfg.auth,
        )?;
        for cc in &done.conf_changes {
            let cs = self.raw.apply_conf_change(cc);
            tracing::info!(?cs, "membership changed");
        }
        METRICS
            .proposals_applied
            .fetch_add(done.requests, Ordering::Relaxed);
        self.applied = self.applied.max(done.last_index);
        let applied_at = clock();
        for (origin, index, result) in done.answers {
            if !self.is_mine(origin) {
                continue;
            }
            if let Some(taken) = self.requests.answer_write(origin.proposal_id, result) {
                self.observe_stages(index, taken, work.taken_at, applied_at);
            }
        }
        while self
            .wal_batches
            .front()
            .is_some_and(|b| b.last <= self.applied)
        {
            self.wal_batches.pop_front();
        }
        self.requests.release_reads(self.applied);
        Ok(Some(Applied {
            applied: self.applied,
            commit: done.commit,
            membership: done.membership,
        }))
    }

    /// Stage timings of one answered write whose entry is at `index`.
    fn observe_stages(&self, index: u64, taken: Instant, committed: Instant, applied: Instant) {
        let since = |later: Instant, earlier: Instant| later.saturating_duration_since(earlier);
        // The latest write of that index is the one that holds it now.
        if let Some(b) = self
            .wal_batches
            .iter()
            .rev()
            .find(|b| b.first <= index && index <= b.last)
        {
            WRITE_STAGES.observe(Stage::BatchWait, since(b.started, taken));
            WRITE_STAGES.observe(Stage::WalWrite, since(b.synced, b.started));
            WRITE_STAGES.observe(Stage::Commit, since(committed, b.synced));
        }
        WRITE_STAGES.observe(Stage::Apply, since(applied, committed));
    }

    fn is_mine(&self, origin: Origin) -> bool {
        origin.member == self.cfg.member_id && origin.run_nonce == self.cfg.run_nonce
    }

    /// The Work's committed entries were applied: the whole Ready is
    /// reported applied (its committed entries, and a snapshot if it carried
    /// one, which was installed before the Ready existed). Its writes may
    /// still be in flight.
    pub fn advance(&mut self, work: Work) {
        debug_assert!(work.committed.is_empty(), "apply before advance");
        if let Some(s) = &work.ready.snapshot {
            self.applied = self.applied.max(s.index);
        }
        self.raw.advance(work.ready);
    }

    /// The store was replaced by a leader's snapshot image at `applied`;
    /// then Raft takes the snapshot message that came with it.
    pub fn on_image_installed(&mut self, applied: Option<u64>, msg: Message) {
        if let Some(applied) = applied {
            self.applied = applied;
        }
        self.step(msg);
    }

    /// The store is durable up to `durable`: if the log before it should be
    /// released (`snapshot_count` entries since `last_snapshot`), Raft
    /// drops it and the metadata to write to the WAL is returned.
    pub fn on_store_synced(
        &mut self,
        durable: u64,
        last_snapshot: u64,
        snapshot_count: u64,
    ) -> Option<SnapshotMeta> {
        if durable < last_snapshot + snapshot_count {
            return None;
        }
        let term = self.raw.term(durable)?;
        let meta = SnapshotMeta {
            index: durable,
            term,
            conf_state: self.raw.status().conf_state,
        };
        self.raw.on_snapshot_taken(meta.clone());
        Some(meta)
    }

    /// Answers every waiting request with `err` (the member stops).
    pub fn fail_all(&mut self, err: &ApiError) {
        self.requests.fail_all(err);
        self.lease.fail_all(err);
    }
}

pub fn raft_error(e: RaftError) -> ApiError {
    match e {
        RaftError::NotLeader { leader: None } => ApiError::NoLeader,
        RaftError::NotLeader { leader: Some(l) } => ApiError::NotLeader { leader_hint: l },
        RaftError::ProposalDropped { .. } => ApiError::TooManyRequests,
        other => ApiError::Internal(other.to_string()),
    }
}
