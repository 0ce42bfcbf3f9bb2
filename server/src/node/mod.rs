//! One cluster member: the Raft core (shard 0), the serve shards, the peer
//! transport and the shared state they use to find each other.
//!
//! Threads: one glommio executor per core. Shard 0 owns the Raft state
//! machine, the WAL, the peer transport and the apply loop (the only writer
//! of the store). Every shard (shard 0 too when `--cores 1`) accepts native
//! client connections on the same address (SO_REUSEPORT) and serves reads
//! from the store directly; writes and read-index rounds go to shard 0 over
//! bounded channels (`Shared::to_core`).

pub mod alarm;
pub mod auth;
pub mod autocompact;
pub mod core;
pub mod corrupt;
pub mod entry;
pub mod internal;
pub mod lease;
pub mod membership;
pub mod peer;
pub mod ready;
pub mod replica;
pub mod route;
pub mod serve;
pub mod snapshot_stream;
pub mod start;
pub mod watch;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use corekv_storage::Store;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame, WireLimits};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::cluster::ClusterInfo;
use crate::config::Config;

/// A client write on its way to shard 0: the validated request frame, and
/// where the answer goes once the entry is applied.
pub enum CoreMsg {
    Propose {
        frame: OwnedFrame,
        reply: oneshot::Sender<Result<w::Response, ApiError>>,
        /// When the shard received the request (the start of the write's
        /// latency budget, see `stages.rs`).
        received: std::time::Instant,
    },
    /// A linearizable read point: answered once the local store has applied
    /// everything committed when the leader confirmed its leadership.
    ReadIndex {
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    MoveLeader {
        target: u64,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    /// A keep-alive or time-to-live question (`lease::LeaseDriver`).
    Lease(lease::Ask),
    /// MemberAdd, MemberRemove or MemberPromote (`membership`): proposed as
    /// a Raft conf change, answered once applied here.
    MemberChange {
        frame: OwnedFrame,
        reply: oneshot::Sender<Result<w::Response, ApiError>>,
    },
}

/// State every shard and the HTTP thread may read. Written by shard 0.
pub struct Shared {
    pub cfg: Config,
    pub member_id: u64,
    pub cluster: Arc<RwLock<ClusterInfo>>,
    /// Active alarms (replicated; written by the apply loop).
    pub alarms: Arc<alarm::Alarms>,
    store: RwLock<Arc<Store>>,
    pub to_core: mpsc::Sender<CoreMsg>,
    /// Applied events, from the core to every shard's watch hub.
    pub events: broadcast::Sender<Arc<watch::EventBatch>>,
    pub limits: WireLimits,
    pub term: AtomicU64,
    /// Leader's member id, 0 when unknown.
    pub leader: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub is_learner: AtomicBool,
    /// Set once the store caught up after start (`ready.rs`); clients are
    /// served only from then on. Never reset.
    pub serving: AtomicBool,
    pub shutdown: AtomicBool,
    /// Set by shard 0 on a fatal error (WAL or store IO): the member stops.
    pub fatal: RwLock<Option<String>>,
    /// Users, roles and tokens (read by every shard, changed by apply).
    pub auth: Arc<auth::Auth>,
    /// TLS of the client-facing ports (`--cert-file` ...), if configured.
    pub client_tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS of the peer port and of dials to peers (`--peer-cert-file` ...).
    pub peer_tls: Option<PeerTls>,
}

/// Both sides of peer TLS.
pub struct PeerTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

impl Shared {
    pub fn store(&self) -> Arc<Store> {
        // A poisoned lock means a thread panicked while swapping the store;
        // the Arc inside is still whole, so keep serving it.
        self.store.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn replace_store(&self, store: Arc<Store>) {
        *self.store.write().unwrap_or_else(|e| e.into_inner()) = store;
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cluster_id
    }

    pub fn header(&self, revision: i64) -> w::ResponseHeader {
        w::ResponseHeader {
            cluster_id: self.cluster_id(),
            member_id: self.member_id,
            revision,
            raft_term: self.term.load(Ordering::Relaxed),
        }
    }

    pub fn leader(&self) -> Option<u64> {
        match self.leader.load(Ordering::Relaxed) {
            0 => None,
            id => Some(id),
        }
    }

    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    pub fn fail(&self, reason: String) {
        tracing::error!(%reason, "fatal: stopping this member");
        *self.fatal.write().unwrap_or_else(|e| e.into_inner()) = Some(reason);
        self.shutdown.store(true, Ordering::SeqCst);
    }

    pub fn fatal_reason(&self) -> Option<String> {
        self.fatal.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
