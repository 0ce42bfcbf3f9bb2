//! The Raft core: shard 0's event loop.
//!
//! It owns the Raft state machine, the WAL and the apply loop. Each turn it
//! takes every queued client proposal, read request and peer message (bounded
//! per turn), feeds them to Raft, and handles the resulting `Ready`:
//!
//! 1. messages that may leave before persistence (the leader's appends) are
//!    sent first, so followers write their copy while the leader fsyncs;
//! 2. new entries and hard state go to the WAL in one write + one fdatasync
//!    (group commit: everything that queued up during the previous fsync);
//! 3. messages that must wait for durability (votes, append acks) go out;
//! 4. committed entries are applied to the store in one batch/commit, and the
//!    waiting clients are answered; read-index waiters are released.
//!
//! A WAL or store failure is fatal: the member stops and nothing after the
//! failed write is acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use corekv_raftcore::wal::Wal;
use corekv_raftcore::{
    Entry, EntryKind, HardState, Message, MessageKind, RaftError, RawNode, ReadState, Role,
    SnapshotMeta,
};
use corekv_storage::Store;
use corekv_wire::ApiError;
use corekv_wire::messages as w;
use futures_lite::future;
use rkyv::util::AlignedVec;
use tokio::sync::{mpsc, oneshot};

use super::entry;
use super::peer::{PeerIn, PeerOut, Peers};
use super::{CoreMsg, Shared};
use crate::kv;
use crate::metrics::METRICS;

/// Most channel messages taken per loop turn, so a flood of proposals cannot
/// delay ticks and Raft traffic unboundedly.
const MAX_DRAIN_PER_TURN: usize = 4096;
/// Time per tick spent on physical compaction steps (writes wait meanwhile).
const COMPACTION_TICK_BUDGET: std::time::Duration = std::time::Duration::from_millis(20);

type WriteReply = oneshot::Sender<Result<w::Response, ApiError>>;
type ReadReply = oneshot::Sender<Result<(), ApiError>>;

struct Waiter {
    reply: WriteReply,
    deadline: Instant,
}

pub struct Core {
    shared: Arc<Shared>,
    raw: RawNode,
    wal: Wal,
    peers: Peers,
    /// Client writes proposed or forwarded by this member, by proposal id.
    waiters: BTreeMap<u64, Waiter>,
    next_proposal_id: u64,
    /// Reads waiting for the next read-index round (with their deadline).
    queued_reads: Vec<(Instant, ReadReply)>,
    /// Writes that arrived while no leader was known: proposed (or
    /// forwarded) once one is, or answered "no leader" at their deadline,
    /// as etcd does. Bounded by the client channel's depth.
    parked: std::collections::VecDeque<(Instant, corekv_wire::OwnedFrame, WriteReply)>,
    /// Rounds in flight, by ctx.
    read_rounds: HashMap<u64, (Instant, Vec<ReadReply>)>,
    /// Confirmed read points waiting for apply to reach them.
    pending_reads: BTreeMap<u64, Vec<ReadReply>>,
    next_read_ctx: u64,
    applied: u64,
    last_snapshot_index: u64,
    last_sync_applied: u64,
    last_leader: u64,
    /// The hard state last written to the WAL.
    durable_hs: HardState,
}

enum Event {
    Client(CoreMsg),
    Peer(PeerIn),
    Tick,
    Closed,
}

impl Core {
    pub fn new(shared: Arc<Shared>, raw: RawNode, wal: Wal, peers: Peers, applied: u64) -> Core {
        let last_snapshot_index = wal.snapshot().map_or(0, |s| s.index);
        let durable_hs = wal.hard_state();
        Core {
            shared,
            raw,
            wal,
            peers,
            waiters: BTreeMap::new(),
            next_proposal_id: 1,
            queued_reads: Vec::new(),
            parked: std::collections::VecDeque::new(),
            read_rounds: HashMap::new(),
            pending_reads: BTreeMap::new(),
            next_read_ctx: 1,
            applied,
            last_snapshot_index,
            last_sync_applied: applied,
            last_leader: 0,
            durable_hs,
        }
    }

    pub async fn run(
        mut self,
        mut client_rx: mpsc::Receiver<CoreMsg>,
        mut peer_rx: mpsc::Receiver<PeerIn>,
    ) -> Result<(), String> {
        spawn_key_counter(self.shared.clone());
        super::alarm::spawn_monitor(self.shared.clone());
        let tick = self.shared.cfg.tick_interval();
        let mut next_tick = Instant::now() + tick;
        self.publish_status();
        while !self.shared.stopping() {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let event = future::or(
                future::or(
                    async { peer_rx.recv().await.map_or(Event::Closed, Event::Peer) },
                    async { client_rx.recv().await.map_or(Event::Closed, Event::Client) },
                ),
                async {
                    glommio::timer::sleep(wait).await;
                    Event::Tick
                },
            )
            .await;
            match event {
                Event::Client(m) => self.on_client(m),
                Event::Peer(m) => self.on_peer(m)?,
                Event::Tick | Event::Closed => {}
            }
            for _ in 0..MAX_DRAIN_PER_TURN {
                match peer_rx.try_recv() {
                    Ok(m) => self.on_peer(m)?,
                    Err(_) => break,
                }
            }
            for _ in 0..MAX_DRAIN_PER_TURN {
                match client_rx.try_recv() {
                    Ok(m) => self.on_client(m),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raw.tick();
                // Do not replay ticks missed during a long stall: one per turn.
                next_tick = (next_tick + tick).max(now);
                self.expire(now);
                self.publish_status();
                self.unpark();
                self.compact_in_background()?;
            }
            self.start_read_round();
            while self.raw.has_ready() {
                self.handle_ready().await?;
            }
        }
        self.fail_all(ApiError::Stopped);
        Ok(())
    }

    fn on_client(&mut self, m: CoreMsg) {
        match m {
            CoreMsg::Propose { frame, reply } => {
                let deadline = Instant::now() + self.shared.cfg.request_timeout();
                self.propose(deadline, frame, reply);
            }
            CoreMsg::ReadIndex { reply } => {
                let deadline = Instant::now() + self.shared.cfg.request_timeout();
                self.queued_reads.push((deadline, reply));
            }
            CoreMsg::MoveLeader { target, reply } => {
                let status = self.raw.status();
                if status.role != Role::Leader {
                    let _ = reply.send(Err(ApiError::NotLeader {
                        leader_hint: status.leader.unwrap_or(0),
                    }));
                } else if !status.conf_state.voters.contains(&target)
                    || target == self.shared.member_id
                {
                    let _ = reply.send(Err(ApiError::BadLeaderTransferee));
                } else {
                    self.raw.transfer_leader(target);
                    let _ = reply.send(Ok(()));
                }
            }
        }
    }

    fn on_peer(&mut self, m: PeerIn) -> Result<(), String> {
        match m {
            PeerIn::Raft(msg) => {
                if let Err(e) = self.raw.step(msg) {
                    tracing::debug!(error = %e, "dropped a peer message");
                }
            }
            PeerIn::Forward { data } => {
                // Only the leader takes forwarded proposals; otherwise drop and
                // let the origin time out (it retries against the new leader).
                if let Err(e) = self.raw.propose(data) {
                    tracing::debug!(error = %e, "dropped a forwarded proposal");
                }
            }
            PeerIn::Snapshot { path, msg } => self.install_snapshot(&path, msg)?,
            PeerIn::SnapshotSent { to, ok } => self.raw.report_snapshot(to, ok),
        }
        Ok(())
    }

    /// Proposes a client write here (leader), forwards it (follower that
    /// knows the leader), or parks it until a leader is known.
    fn propose(&mut self, deadline: Instant, frame: corekv_wire::OwnedFrame, reply: WriteReply) {
        let id = self.next_proposal_id;
        let data = entry::encode(self.shared.member_id, id, frame.payload());
        match self.raw.propose(data) {
            Ok(_) => {}
            Err(RaftError::NotLeader {
                leader: Some(leader),
            }) => {
                // Forward; this member answers when it applies the entry.
                let data = entry::encode(self.shared.member_id, id, frame.payload());
                if !self.peers.send(leader, PeerOut::Forward { data }) {
                    METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(ApiError::TooManyRequests));
                    return;
                }
            }
            Err(RaftError::NotLeader { leader: None }) => {
                self.parked.push_back((deadline, frame, reply));
                return;
            }
            Err(e) => {
                METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(raft_error(e)));
                return;
            }
        }
        self.next_proposal_id += 1;
        METRICS.proposals_pending.fetch_add(1, Ordering::Relaxed);
        self.waiters.insert(id, Waiter { reply, deadline });
    }

    /// Retries parked writes once a leader is known.
    fn unpark(&mut self) {
        if self.parked.is_empty() || self.shared.leader().is_none() {
            return;
        }
        for (deadline, frame, reply) in std::mem::take(&mut self.parked) {
            self.propose(deadline, frame, reply);
        }
    }

    /// All reads queued since the last round share one read-index round.
    fn start_read_round(&mut self) {
        if self.queued_reads.is_empty() {
            return;
        }
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        match self.raw.read_index(ctx) {
            Ok(()) => {
                let batch = std::mem::take(&mut self.queued_reads)
                    .into_iter()
                    .map(|(_, r)| r)
                    .collect();
                self.read_rounds.insert(ctx, (Instant::now(), batch));
            }
            // No leader yet: the reads wait (until their deadline) for one.
            Err(RaftError::NotLeader { leader: None }) => {}
            Err(e) => {
                let err = raft_error(e);
                for (_, r) in std::mem::take(&mut self.queued_reads) {
                    let _ = r.send(Err(err.clone()));
                }
            }
        }
    }

    fn on_read_state(&mut self, rs: ReadState) {
        let Some((started, batch)) = self.read_rounds.remove(&rs.ctx) else {
            return;
        };
        METRICS.read_index.observe(started.elapsed());
        if rs.index <= self.applied {
            for r in batch {
                let _ = r.send(Ok(()));
            }
        } else {
            self.pending_reads
                .entry(rs.index)
                .or_default()
                .extend(batch);
        }
    }

    fn release_reads(&mut self) {
        let later = self.pending_reads.split_off(&(self.applied + 1));
        for r in std::mem::replace(&mut self.pending_reads, later)
            .into_values()
            .flatten()
        {
            let _ = r.send(Ok(()));
        }
    }

    async fn handle_ready(&mut self) -> Result<(), String> {
        let mut rd = self.raw.ready();
        self.send_messages(std::mem::take(&mut rd.messages));
        if let Some(meta) = &rd.snapshot {
            self.wal
                .save_snapshot_marker(meta)
                .await
                .map_err(|e| self.fatal(format!("wal: {e}")))?;
            self.last_snapshot_index = meta.index;
        }
        // A hard state whose term and vote are unchanged only moved the
        // commit index, which need not be durable (a restarted member learns
        // it again from the leader): it rides along with the next entries
        // instead of costing an fdatasync of its own.
        let durable = self.durable_hs;
        let vote_changed = rd
            .hard_state
            .is_some_and(|hs| hs.term != durable.term || hs.vote != durable.vote);
        if !rd.entries.is_empty() || vote_changed {
            let started = Instant::now();
            let hs = rd.hard_state;
            self.wal
                .append(&rd.entries, hs)
                .await
                .map_err(|e| self.fatal(format!("wal: {e}")))?;
            METRICS.wal_fsync.observe(started.elapsed());
            if let Some(hs) = hs {
                self.durable_hs = hs;
            }
        }
        if let Some((index, term)) = rd.persisted_upto() {
            self.raw.on_persisted(index, term);
        }
        self.send_messages(std::mem::take(&mut rd.persisted_messages));
        let committed = std::mem::take(&mut rd.committed_entries);
        if let Some(last) = committed.last() {
            let last_index = last.index;
            METRICS
                .proposals_committed
                .fetch_add(committed.len() as u64, Ordering::Relaxed);
            self.apply(committed)?;
            self.raw.advance_applied(last_index);
        }
        for rs in std::mem::take(&mut rd.read_states) {
            self.on_read_state(rs);
        }
        self.release_reads();
        self.maybe_checkpoint().await
    }

    fn send_messages(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            let to = m.to;
            if m.kind == MessageKind::Snapshot {
                self.peers.send_snapshot(to, m, self.shared.store());
            } else if !self.peers.send(to, PeerOut::Raft(m)) {
                self.raw.report_unreachable(to);
            }
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<(), String> {
        let started = Instant::now();
        let store = self.shared.store();
        let store_applied = store.applied_index();
        let mut batch = store
            .write()
            .map_err(|e| self.fatal(format!("store: {e}")))?;
        let mut answers: Vec<(WriteReply, Result<w::Response, ApiError>)> = Vec::new();
        let mut last = self.applied;
        let mut aligned = AlignedVec::<16>::new();
        let mut last_term = 0;
        for e in entries {
            last = last.max(e.index);
            last_term = e.term;
            if e.index <= store_applied {
                continue; // already in the store (restart, or a newer snapshot image)
            }
            match e.kind {
                EntryKind::Normal if e.data.is_empty() => {}
                EntryKind::Normal => {
                    let decoded = match entry::decode(&e.data) {
                        Ok(d) => d,
                        Err(reason) => {
                            return Err(self.fatal(format!("entry {}: {reason}", e.index)));
                        }
                    };
                    aligned.clear();
                    aligned.extend_from_slice(decoded.body);
                    let result =
                        match rkyv::access::<w::ArchivedRequest, rkyv::rancor::Error>(&aligned) {
                            Ok(req) => apply_request(&self.shared, &mut batch, req),
                            Err(e) => {
                                Err(Applied::Refused(ApiError::MalformedRequest(e.to_string())))
                            }
                        };
                    let result = match result {
                        Ok(resp) => Ok(resp),
                        Err(Applied::Refused(api)) => Err(api),
                        Err(Applied::Fatal(reason)) => {
                            return Err(self.fatal(format!("apply of entry {}: {reason}", e.index)));
                        }
                    };
                    METRICS.proposals_applied.fetch_add(1, Ordering::Relaxed);
                    if decoded.origin == self.shared.member_id {
                        if let Some(w) = self.waiters.remove(&decoded.proposal_id) {
                            METRICS.proposals_pending.fetch_sub(1, Ordering::Relaxed);
                            answers.push((w.reply, result));
                        }
                    }
                }
                EntryKind::ConfChange => {
                    match rkyv::from_bytes::<corekv_raftcore::ConfChange, rkyv::rancor::Error>(
                        &e.data,
                    ) {
                        Ok(cc) => {
                            let cs = self.raw.apply_conf_change(&cc);
                            tracing::info!(?cs, "membership changed");
                        }
                        Err(err) => {
                            return Err(self.fatal(format!("conf change entry {}: {err}", e.index)));
                        }
                    }
                }
            }
        }
        if last_term != 0 {
            batch.put_meta(
                super::start::APPLIED_TERM_META_KEY,
                &last_term.to_le_bytes(),
            );
        }
        let commit_started = Instant::now();
        let info = batch
            .commit(last, false)
            .map_err(|e| self.fatal(format!("store commit: {e}")))?;
        METRICS.backend_commit.observe(commit_started.elapsed());
        self.applied = last;
        self.shared.applied_index.store(last, Ordering::Release);
        self.shared.commit_index.fetch_max(last, Ordering::Relaxed);
        if !info.events.is_empty() && self.shared.events.receiver_count() > 0 {
            let batch = super::watch::EventBatch {
                revision: info.revision,
                events: info.events,
            };
            // No receiver (no serve shard yet) is not an error.
            let _ = self.shared.events.send(Arc::new(batch));
        }
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
        METRICS.apply.observe(started.elapsed());
        Ok(())
    }

    /// Physical compaction advances a little inside commits; each tick runs
    /// bounded steps (store's `compact_step`, ~10 ms each) for up to
    /// `COMPACTION_TICK_BUDGET`, so a pass finishes without long stalls.
    fn compact_in_background(&mut self) -> Result<(), String> {
        let store = self.shared.store();
        let started = Instant::now();
        while store.compaction_pending() && started.elapsed() < COMPACTION_TICK_BUDGET {
            store
                .compact_step()
                .map_err(|e| self.fatal(format!("store compaction: {e}")))?;
        }
        Ok(())
    }

    /// Makes the store durable every `--store-sync-entries` applied entries,
    /// then lets Raft drop (and the WAL release) the log the store covers,
    /// every `--snapshot-count` entries.
    async fn maybe_checkpoint(&mut self) -> Result<(), String> {
        let cfg = &self.shared.cfg;
        if self.applied < self.last_sync_applied + cfg.store_sync_entries {
            return Ok(());
        }
        let store = self.shared.store();
        let synced = glommio::executor()
            .spawn_blocking(move || store.sync().map(|()| store.durable_applied_index()))
            .await;
        let durable = synced.map_err(|e| self.fatal(format!("store sync: {e}")))?;
        self.last_sync_applied = durable;
        if durable < self.last_snapshot_index + self.shared.cfg.snapshot_count {
            return Ok(());
        }
        let Some(term) = self.raw.term(durable) else {
            return Ok(());
        };
        let meta = SnapshotMeta {
            index: durable,
            term,
            conf_state: self.raw.status().conf_state,
        };
        self.raw.on_snapshot_taken(meta.clone());
        self.wal
            .save_snapshot_marker(&meta)
            .await
            .map_err(|e| self.fatal(format!("wal: {e}")))?;
        self.wal
            .release_before(meta.index)
            .await
            .map_err(|e| self.fatal(format!("wal: {e}")))?;
        self.last_snapshot_index = meta.index;
        tracing::info!(index = meta.index, "raft log compacted");
        Ok(())
    }

    /// A snapshot image from the leader arrived: swap the store to it (if
    /// it is ahead of ours), then let Raft take the snapshot message.
    fn install_snapshot(&mut self, path: &std::path::Path, msg: Message) -> Result<(), String> {
        let current = self.shared.store();
        let mut file =
            std::fs::File::open(path).map_err(|e| format!("snapshot {}: {e}", path.display()))?;
        let db_path = super::start::db_path(&self.shared.cfg.data_dir());
        let staging = db_path.with_extension("restore");
        let restored = Store::restore_snapshot(
            &staging,
            &mut file,
            super::start::store_options(&self.shared.cfg),
        );
        let _ = std::fs::remove_file(path);
        let restored = match restored {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "snapshot image refused");
                let _ = std::fs::remove_file(&staging);
                return Ok(());
            }
        };
        if restored.applied_index() > current.applied_index() {
            // The image carries the leader's identity; this store is ours.
            let applied = restored.applied_index();
            let mut batch = restored
                .write()
                .map_err(|e| self.fatal(format!("snapshot install: {e}")))?;
            batch.put_meta(
                super::start::MEMBER_META_KEY,
                &self.shared.member_id.to_le_bytes(),
            );
            batch
                .commit(applied, true)
                .map_err(|e| self.fatal(format!("snapshot install: {e}")))?;
            drop(restored);
            std::fs::rename(&staging, &db_path)
                .map_err(|e| self.fatal(format!("snapshot install: {e}")))?;
            let store = Store::open(&db_path, super::start::store_options(&self.shared.cfg))
                .map_err(|e| self.fatal(format!("snapshot install: {e}")))?;
            self.applied = store.applied_index();
            self.last_sync_applied = self.applied;
            self.shared
                .applied_index
                .store(self.applied, Ordering::Release);
            if let Ok(view) = store.read() {
                self.shared.alarms.reload(&view);
            }
            self.shared.replace_store(Arc::new(store));
            tracing::info!(
                applied = self.applied,
                "installed a snapshot from the leader"
            );
        } else {
            let _ = std::fs::remove_file(&staging);
        }
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(error = %e, "snapshot message refused");
        }
        Ok(())
    }

    fn expire(&mut self, now: Instant) {
        // Ids do not follow deadlines (a parked write keeps its deadline and
        // gets a new id when retried), so scan; waiters are bounded by the
        // proposal queue depth.
        let expired: Vec<u64> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(w) = self.waiters.remove(&id) {
                METRICS.proposals_pending.fetch_sub(1, Ordering::Relaxed);
                METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
                let _ = w.reply.send(Err(ApiError::Timeout));
            }
        }
        let no_leader = self.shared.leader().is_none();
        let late = |deadline: &Instant| *deadline <= now;
        let err = if no_leader {
            ApiError::NoLeader
        } else {
            ApiError::Timeout
        };
        while self.parked.front().is_some_and(|(d, _, _)| late(d)) {
            if let Some((_, _, reply)) = self.parked.pop_front() {
                METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
                let _ = reply.send(Err(err.clone()));
            }
        }
        let (expired_reads, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.queued_reads)
            .into_iter()
            .partition(|(d, _)| late(d));
        self.queued_reads = waiting;
        for (_, r) in expired_reads {
            let _ = r.send(Err(err.clone()));
        }
        let timeout = self.shared.cfg.request_timeout();
        let expired: Vec<u64> = self
            .read_rounds
            .iter()
            .filter(|(_, (t, _))| now - *t > timeout)
            .map(|(ctx, _)| *ctx)
            .collect();
        for ctx in expired {
            if let Some((_, batch)) = self.read_rounds.remove(&ctx) {
                for r in batch {
                    let _ = r.send(Err(ApiError::Timeout));
                }
            }
        }
    }

    fn publish_status(&mut self) {
        let status = self.raw.status();
        let leader = status.leader.unwrap_or(0);
        let s = &self.shared;
        s.term.store(status.term, Ordering::Relaxed);
        s.leader.store(leader, Ordering::Relaxed);
        s.commit_index.store(status.commit, Ordering::Relaxed);
        s.is_learner.store(
            status.conf_state.learners.contains(&s.member_id),
            Ordering::Relaxed,
        );
        METRICS
            .has_leader
            .store(i64::from(leader != 0), Ordering::Relaxed);
        METRICS
            .is_leader
            .store(i64::from(status.role == Role::Leader), Ordering::Relaxed);
        if leader != self.last_leader {
            if leader != 0 {
                METRICS.leader_changes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    leader = format_args!("{leader:x}"),
                    term = status.term,
                    "leader elected"
                );
            }
            self.last_leader = leader;
        }
        let store = s.store();
        METRICS
            .db_total_size_bytes
            .store(store.db_size_bytes(), Ordering::Relaxed);
        METRICS
            .db_in_use_bytes
            .store(store.db_size_in_use_bytes(), Ordering::Relaxed);
    }

    fn fail_all(&mut self, err: ApiError) {
        for (_, w) in std::mem::take(&mut self.waiters) {
            let _ = w.reply.send(Err(err.clone()));
        }
        for (_, r) in std::mem::take(&mut self.queued_reads) {
            let _ = r.send(Err(err.clone()));
        }
        for (_, _, reply) in std::mem::take(&mut self.parked) {
            let _ = reply.send(Err(err.clone()));
        }
        for (_, (_, batch)) in std::mem::take(&mut self.read_rounds) {
            for r in batch {
                let _ = r.send(Err(err.clone()));
            }
        }
        for r in std::mem::take(&mut self.pending_reads)
            .into_values()
            .flatten()
        {
            let _ = r.send(Err(err.clone()));
        }
    }

    fn fatal(&mut self, reason: String) -> String {
        self.shared.fail(reason.clone());
        self.fail_all(ApiError::Stopped);
        reason
    }
}

/// How often the keys-total gauge is recounted.
const KEY_COUNT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Keeps `etcd_debugging_mvcc_keys_total` current: a count-only range over
/// the whole key space on the blocking pool, every `KEY_COUNT_INTERVAL`
/// (a leaf scan; it never blocks the Raft core).
fn spawn_key_counter(shared: Arc<Shared>) {
    glommio::spawn_local(async move {
        while !shared.stopping() {
            // Too many readers: skip this round (the gauge stays as it was).
            if let Ok(view) = shared.store().read() {
                let counted = glommio::executor()
                    .spawn_blocking(move || {
                        let all = corekv_storage::RangeRequest {
                            key: vec![0],
                            range_end: vec![0],
                            count_only: true,
                            ..Default::default()
                        };
                        view.range(&all).map(|r| r.count)
                    })
                    .await;
                if let Ok(n) = counted {
                    METRICS.keys_total.store(n, Ordering::Relaxed);
                }
            }
            let deadline = Instant::now() + KEY_COUNT_INTERVAL;
            while !shared.stopping() && Instant::now() < deadline {
                glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
            }
        }
    })
    .detach();
}

fn raft_error(e: RaftError) -> ApiError {
    match e {
        RaftError::NotLeader { leader: None } => ApiError::NoLeader,
        RaftError::NotLeader { leader: Some(l) } => ApiError::NotLeader { leader_hint: l },
        RaftError::ProposalDropped { .. } => ApiError::TooManyRequests,
        other => ApiError::Internal(other.to_string()),
    }
}

/// How applying one entry failed: the request is refused (the client gets
/// the error, the member goes on), or the store failed (the member stops).
enum Applied {
    Refused(ApiError),
    Fatal(String),
}

impl From<corekv_storage::StorageError> for Applied {
    fn from(e: corekv_storage::StorageError) -> Applied {
        if kv::is_fatal(&e) {
            Applied::Fatal(e.to_string())
        } else {
            Applied::Refused(kv::storage_error(e))
        }
    }
}

/// Executes one replicated client request on the write batch.
fn apply_request(
    shared: &Shared,
    batch: &mut corekv_storage::WriteBatch<'_>,
    req: &w::ArchivedRequest,
) -> Result<w::Response, Applied> {
    let header = |rev: i64| shared.header(rev);
    super::alarm::check_apply(shared, req).map_err(Applied::Refused)?;
    Ok(match req {
        w::ArchivedRequest::Put(p) => {
            let r = batch.put(&kv::put_request(p))?;
            w::Response::Put(kv::put_response(header(r.revision), r))
        }
        w::ArchivedRequest::DeleteRange(d) => {
            let r = batch.delete_range(&kv::delete_request(d))?;
            w::Response::DeleteRange(kv::delete_response(header(r.revision), r))
        }
        w::ArchivedRequest::Txn(t) => {
            let r = batch.txn(&kv::txn_request(t).map_err(Applied::Refused)?)?;
            w::Response::Txn(kv::txn_response(header(r.revision), r))
        }
        w::ArchivedRequest::Compact(c) => {
            batch.compact(c.revision.to_native())?;
            w::Response::Compact(w::CompactionResponse {
                header: header(batch.revision()),
            })
        }
        w::ArchivedRequest::Alarm(a) => {
            super::alarm::apply(shared, batch, a).map_err(Applied::Refused)?
        }
        other => {
            let reason = format!("{} is not a replicated request", other.name());
            return Err(Applied::Refused(ApiError::MalformedRequest(reason)));
        }
    })
}

/// Whether a request goes through Raft (`Request` variants that write).
pub fn is_replicated(req: &w::ArchivedRequest) -> bool {
    matches!(
        req,
        w::ArchivedRequest::Put(_)
            | w::ArchivedRequest::DeleteRange(_)
            | w::ArchivedRequest::Txn(_)
            | w::ArchivedRequest::Compact(_)
    ) || super::alarm::is_replicated(req)
}
