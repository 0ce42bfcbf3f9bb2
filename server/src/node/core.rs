//! The Raft core: shard 0's event loop, the thin driver of the replica
//! state machine (`replica/`).
//!
//! Each turn it takes every queued client proposal, read request and peer
//! message (bounded per turn), feeds them to the replica, and carries out
//! each resulting [`Work`] in the order the Ready contract asks:
//!
//! 1. messages that may leave before persistence (the leader's appends) are
//!    sent first, so followers write their copy while the leader fsyncs;
//! 2. a snapshot marker, then new entries and hard state go to the WAL in
//!    one write + one fdatasync (group commit: everything that queued up
//!    during the previous fsync);
//! 3. messages that must wait for durability (votes, append acks) go out;
//! 4. committed entries are applied to the store in one batch/commit, the
//!    waiting clients are answered and read-index waiters released; then
//!    the whole Ready is advanced.
//!
//! Blocking file IO (snapshot install, store sync) runs on glommio's
//! blocking pool. A WAL or store failure is fatal: the member stops and
//! nothing after the failed write is acknowledged.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use corekv_raftcore::wal::Wal;
use corekv_raftcore::{Message, MessageKind};
use corekv_wire::ApiError;
use futures_lite::future;
use tokio::sync::mpsc;

use super::membership;
use super::peer::{PeerIn, PeerOut, Peers};
use super::replica::snapshot::{InstallPaths, install_image};
use super::replica::{Outbound, Persist, Replica, Work};
use super::{CoreMsg, Shared};
use crate::metrics::METRICS;

pub use super::replica::apply::is_replicated;

/// Most channel messages taken per loop turn, so a flood of proposals cannot
/// delay ticks and Raft traffic unboundedly.
const MAX_DRAIN_PER_TURN: usize = 4096;
/// Time per tick spent on physical compaction steps (writes wait meanwhile).
const COMPACTION_TICK_BUDGET: std::time::Duration = std::time::Duration::from_millis(20);

pub struct Core {
    shared: Arc<Shared>,
    replica: Replica,
    /// The WAL, when no write is in flight (the write's task owns it then).
    wal: Option<Wal>,
    /// The WAL write in flight, if any (at most one).
    writing: Option<Writing>,
    peers: Peers,
    last_snapshot_index: u64,
    last_sync_applied: u64,
    last_leader: u64,
    /// When the running compaction pass was first seen (for its log line).
    compaction_seen: Option<Instant>,
    /// Physically compacted revision at the last tick.
    compaction_done: i64,
}

enum Event {
    Client(CoreMsg),
    Peer(PeerIn),
    /// Boxed: the WAL is large and this is one event per write.
    Written(Box<Written>),
    Tick,
    Closed,
}

struct Writing {
    task: glommio::Task<Box<Written>>,
}

/// A finished WAL write: the WAL handed back, and the Work's writes.
struct Written {
    wal: Wal,
    persist: Persist,
    result: Result<(), corekv_raftcore::wal::WalError>,
    started: Instant,
    synced: Instant,
}

impl Core {
    pub fn new(shared: Arc<Shared>, replica: Replica, wal: Wal, peers: Peers) -> Core {
        let last_snapshot_index = wal.snapshot().map_or(0, |s| s.index);
        let applied = replica.applied();
        let compaction_done = shared.store().compaction_done_revision();
        Core {
            shared,
            replica,
            wal: Some(wal),
            writing: None,
            peers,
            last_snapshot_index,
            last_sync_applied: applied,
            last_leader: 0,
            compaction_seen: None,
            compaction_done,
        }
    }

    pub async fn run(
        mut self,
        mut client_rx: mpsc::Receiver<CoreMsg>,
        mut peer_rx: mpsc::Receiver<PeerIn>,
    ) -> Result<(), String> {
        spawn_key_counter(self.shared.clone());
        super::alarm::spawn_monitor(self.shared.clone());
        super::autocompact::spawn(self.shared.clone());
        super::ready::spawn_barrier(self.shared.clone());
        let result = self.serve(&mut client_rx, &mut peer_rx).await;
        if let Err(reason) = &result {
            self.shared.fail(reason.clone());
        }
        self.replica.fail_all(&ApiError::Stopped);
        result
    }

    async fn serve(
        &mut self,
        client_rx: &mut mpsc::Receiver<CoreMsg>,
        peer_rx: &mut mpsc::Receiver<PeerIn>,
    ) -> Result<(), String> {
        let tick = self.shared.cfg.tick_interval();
        let mut next_tick = Instant::now() + tick;
        self.publish_status();
        while !self.shared.stopping() {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let writing = &mut self.writing;
            let event = future::or(
                future::or(
                    async { peer_rx.recv().await.map_or(Event::Closed, Event::Peer) },
                    async { client_rx.recv().await.map_or(Event::Closed, Event::Client) },
                ),
                future::or(
                    async {
                        match writing {
                            Some(w) => Event::Written((&mut w.task).await),
                            None => future::pending().await,
                        }
                    },
                    async {
                        glommio::timer::sleep(wait).await;
                        Event::Tick
                    },
                ),
            )
            .await;
            match event {
                Event::Client(m) => self.replica.on_client(Instant::now(), m),
                Event::Peer(m) => self.on_peer(m).await?,
                Event::Written(done) => self.on_written(done)?,
                Event::Tick | Event::Closed => {}
            }
            for _ in 0..MAX_DRAIN_PER_TURN {
                match peer_rx.try_recv() {
                    Ok(m) => self.on_peer(m).await?,
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            for _ in 0..MAX_DRAIN_PER_TURN {
                match client_rx.try_recv() {
                    Ok(m) => self.replica.on_client(now, m),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.replica.tick(now);
                // Do not replay ticks missed during a long stall: one per turn.
                next_tick = (next_tick + tick).max(now);
                self.publish_status();
                self.compact_in_background()?;
            }
            self.replica.start_read_round(now);
            self.send_outbox();
            // One WAL write in flight: the next Ready (everything that
            // arrived meanwhile: group commit) is taken when it is durable.
            while self.writing.is_none() && self.replica.has_ready() {
                self.handle_ready().await?;
            }
            if self.writing.is_none() {
                self.maybe_checkpoint().await?;
            }
        }
        if let Some(w) = self.writing.take() {
            // Let the write finish (its outcome no longer matters).
            let _ = w.task.await;
        }
        Ok(())
    }

    async fn on_peer(&mut self, m: PeerIn) -> Result<(), String> {
        match m {
            PeerIn::Raft(msg) => self.replica.step(msg),
            PeerIn::Forward { data } => self.replica.on_forwarded(data),
            PeerIn::Snapshot { path, msg } => self.install_snapshot(path, msg).await?,
            PeerIn::SnapshotSent { to, ok } => self.replica.report_snapshot(to, ok),
            PeerIn::Lease { from, msg } => self.replica.on_lease_msg(Instant::now(), from, msg),
            PeerIn::ForwardMember { data } => {
                self.replica.on_forwarded_member(Instant::now(), data)
            }
            PeerIn::MemberRefused {
                proposal_id,
                run_nonce,
                error,
            } => self
                .replica
                .on_member_refused(proposal_id, run_nonce, &error),
        }
        Ok(())
    }

    fn send_outbox(&mut self) {
        for out in self.replica.take_outbox() {
            match out {
                Outbound::Raft(m) => self.send_message(m),
                Outbound::Lease { to, msg } => {
                    // A lost lease message is answered by the asker's timeout.
                    let _ = self.peers.send(to, PeerOut::Lease(msg));
                }
                Outbound::Forward { to, ticket, data } => {
                    if !self.peers.send(to, PeerOut::Forward { data }) {
                        self.replica.forward_dropped(ticket);
                    }
                }
                Outbound::ForwardMember { to, ticket, data } => {
                    if !self.peers.send(to, PeerOut::ForwardMember { data }) {
                        self.replica.forward_dropped(ticket);
                    }
                }
                Outbound::MemberRefused {
                    to,
                    proposal_id,
                    run_nonce,
                    error,
                } => {
                    // A lost refusal is answered by the asker's timeout.
                    let _ = self.peers.send(
                        to,
                        PeerOut::MemberRefused {
                            proposal_id,
                            run_nonce,
                            error,
                        },
                    );
                }
            }
        }
    }

    /// Pipelined: the Ready's WAL write is started (on a task of its own),
    /// then its committed entries (durable already) are applied and
    /// answered while that write and its fsync are in flight; the write's
    /// completion comes back as `Event::Written`.
    async fn handle_ready(&mut self) -> Result<(), String> {
        let mut work = self.replica.take_ready(Instant::now());
        for m in std::mem::take(&mut work.messages) {
            self.send_message(m);
        }
        let persist = work.take_persist();
        if let Some(meta) = &persist.snapshot {
            self.wal_mut()?
                .save_snapshot_marker(meta)
                .await
                .map_err(|e| format!("wal: {e}"))?;
            self.last_snapshot_index = meta.index;
        }
        if persist.wal_write().is_some() {
            let mut wal = self.wal.take().ok_or("wal: a write is already in flight")?;
            let task = glommio::spawn_local(async move {
                let started = Instant::now();
                let result = match persist.wal_write() {
                    Some((entries, hs)) => wal.append(entries, hs).await,
                    None => Ok(()),
                };
                Box::new(Written {
                    wal,
                    persist,
                    result,
                    started,
                    synced: Instant::now(),
                })
            });
            self.writing = Some(Writing { task });
        } else {
            self.replica.on_persisted(&persist, None);
            for m in persist.persisted_messages {
                self.send_message(m);
            }
        }
        self.apply(&mut work)?;
        self.replica.advance(work);
        Ok(())
    }

    /// A WAL write is durable (or failed: fatal).
    fn on_written(&mut self, done: Box<Written>) -> Result<(), String> {
        self.writing = None;
        self.wal = Some(done.wal);
        done.result.map_err(|e| format!("wal: {e}"))?;
        METRICS.wal_fsync.observe(done.synced - done.started);
        self.replica
            .on_persisted(&done.persist, Some((done.started, done.synced)));
        for m in done.persist.persisted_messages {
            self.send_message(m);
        }
        Ok(())
    }

    fn wal_mut(&mut self) -> Result<&mut Wal, String> {
        self.wal
            .as_mut()
            .ok_or_else(|| "wal: a write is in flight".to_string())
    }

    fn send_message(&mut self, m: Message) {
        let to = m.to;
        if m.kind == MessageKind::Snapshot {
            self.peers.send_snapshot(to, m, self.shared.store());
        } else if !self.peers.send(to, PeerOut::Raft(m)) {
            self.replica.report_unreachable(to);
        }
    }

    fn apply(&mut self, work: &mut Work) -> Result<(), String> {
        let started = Instant::now();
        let store = self.shared.store();
        let Some(done) = self.replica.apply(&store, work, &Instant::now)? else {
            return Ok(());
        };
        METRICS.backend_commit.observe(started.elapsed());
        if let Some(cluster) = done.membership {
            membership::runtime::on_changed(&self.shared, &mut self.peers, cluster);
        }
        self.shared
            .applied_index
            .store(done.applied, Ordering::Release);
        self.shared
            .commit_index
            .fetch_max(done.applied, Ordering::Relaxed);
        if !done.commit.events.is_empty() && self.shared.events.receiver_count() > 0 {
            let batch = super::watch::EventBatch {
                revision: done.commit.revision,
                events: done.commit.events,
                restored: false,
            };
            // No receiver (no serve shard yet) is not an error.
            let _ = self.shared.events.send(Arc::new(batch));
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
                .map_err(|e| format!("store compaction: {e}"))?;
        }
        // Steps also run inside write commits; a pass is seen per tick.
        let pending = store.compaction_pending();
        METRICS
            .compaction_pending
            .store(i64::from(pending), Ordering::Relaxed);
        if pending {
            self.compaction_seen.get_or_insert(started);
            return Ok(());
        }
        // A pass may also start and end between two ticks (inside write
        // commits): the physically compacted revision moved all the same.
        let done = store.compaction_done_revision();
        if done > self.compaction_done {
            let seconds = self
                .compaction_seen
                .map_or(0.0, |since| since.elapsed().as_secs_f64());
            tracing::info!(revision = done, seconds, "physical compaction finished");
        }
        self.compaction_done = done;
        self.compaction_seen = None;
        Ok(())
    }

    /// Makes the store durable every `--store-sync-entries` applied entries
    /// (or `--store-sync-pages` written pages, whichever comes first),
    /// then lets Raft drop (and the WAL release) the log the store covers,
    /// every `--snapshot-count` entries.
    async fn maybe_checkpoint(&mut self) -> Result<(), String> {
        let cfg = &self.shared.cfg;
        if self.replica.applied() < self.last_sync_applied + cfg.store_sync_entries
            && self.shared.store().pages_since_sync() < cfg.store_sync_pages
        {
            return Ok(());
        }
        let snapshot_count = cfg.snapshot_count;
        let store = self.shared.store();
        let started = Instant::now();
        let durable = glommio::executor()
            .spawn_blocking(move || store.sync().map(|()| store.durable_applied_index()))
            .await
            .map_err(|e| format!("store sync: {e}"))?;
        METRICS.store_sync.observe(started.elapsed());
        self.last_sync_applied = durable;
        let Some(meta) =
            self.replica
                .on_store_synced(durable, self.last_snapshot_index, snapshot_count)
        else {
            return Ok(());
        };
        let wal = self.wal_mut()?;
        wal.save_snapshot_marker(&meta)
            .await
            .map_err(|e| format!("wal: {e}"))?;
        wal.release_before(meta.index)
            .await
            .map_err(|e| format!("wal: {e}"))?;
        self.last_snapshot_index = meta.index;
        tracing::info!(index = meta.index, "raft log compacted");
        Ok(())
    }

    /// A snapshot image from the leader arrived: swap the store to it (if
    /// it is ahead of ours) on the blocking pool, then let Raft take the
    /// snapshot message.
    async fn install_snapshot(
        &mut self,
        path: std::path::PathBuf,
        msg: Message,
    ) -> Result<(), String> {
        let cfg = &self.shared.cfg;
        let paths = InstallPaths {
            db: super::start::db_path(&cfg.data_dir()),
            store_options: super::start::store_options(cfg),
            member_meta_key: super::start::MEMBER_META_KEY,
            member_id: self.shared.member_id,
        };
        let current = self.shared.store().applied_index();
        let installed = glommio::executor()
            .spawn_blocking(move || install_image(&path, current, &paths))
            .await?;
        if let Some(store) = &installed {
            // The image carries the leader's auth state.
            self.shared.auth.load(store)?;
            self.replica.reload_leases(store)?;
        }
        let applied = installed.map(|store| {
            let applied = store.applied_index();
            self.shared.applied_index.store(applied, Ordering::Release);
            if let Ok(view) = store.read() {
                self.shared.alarms.reload(&view);
                // The image carries the leader's membership too.
                match membership::load(view.get_meta(membership::CLUSTER_META_KEY)) {
                    Ok(Some(cluster)) => {
                        membership::runtime::on_changed(&self.shared, &mut self.peers, cluster);
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(error = %e, "membership of the installed image"),
                }
            }
            let revision = store.current_revision();
            self.shared.replace_store(Arc::new(store));
            self.last_sync_applied = applied;
            // Watchers synced before the image must not skip its revisions.
            let _ = self
                .shared
                .events
                .send(Arc::new(super::watch::EventBatch::restored(revision)));
            tracing::info!(applied, "installed a snapshot from the leader");
            applied
        });
        self.replica.on_image_installed(applied, msg);
        Ok(())
    }

    fn publish_status(&mut self) {
        let status = self.replica.status();
        let leader = status.leader.unwrap_or(0);
        let s = &self.shared;
        s.term.store(status.term, Ordering::Relaxed);
        s.leader.store(leader, Ordering::Relaxed);
        s.commit_index.store(status.commit, Ordering::Relaxed);
        // Until Raft's configuration includes this member (a member that
        // just joined), the membership record's word stands.
        let cs = &status.conf_state;
        if cs.voters.contains(&s.member_id) || cs.learners.contains(&s.member_id) {
            s.is_learner
                .store(cs.learners.contains(&s.member_id), Ordering::Relaxed);
        }
        METRICS
            .has_leader
            .store(i64::from(leader != 0), Ordering::Relaxed);
        METRICS.is_leader.store(
            i64::from(status.role == corekv_raftcore::Role::Leader),
            Ordering::Relaxed,
        );
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
        METRICS.publish_db_size(&s.store());
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
            // A whole-key-space scan: its pages leave the resident set
            // with the view (`Store::read_scan`).
            if let Ok(view) = shared.store().read_scan() {
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
