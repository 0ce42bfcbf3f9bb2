//! Start-up and shutdown of a member: data directory, store, WAL, executors,
//! listeners, signals.
//!
//! Data directory layout (etcd's):
//! ```text
//! <data-dir>/member/snap/db     the store (B+ tree file)
//! <data-dir>/member/snap/*.snap snapshot images in transit
//! <data-dir>/member/wal/        WAL segments
//! <data-dir>/member/removed     present once the cluster removed this member
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use corekv_raftcore::wal::{Wal, WalOptions};
use corekv_raftcore::{ConfState, RawNode, Restored};
use corekv_storage::{MapAdvice, Store, StoreOptions};
use corekv_wire::WireLimits;
use glommio::{LocalExecutorBuilder, Placement};
use tokio::sync::mpsc;

use super::core::Core;
use super::lease::{LeaseConfig, LeaseDriver};
use super::peer::{self, Peers};
use super::replica::{Replica, ReplicaConfig};
use super::route::Api;
use super::{Shared, serve};
use crate::cluster::ClusterInfo;
use crate::config::{Config, MapAdviceArg, url_to_addr};

/// Store meta key holding the cluster's identity and membership (JSON).
pub const CLUSTER_META_KEY: &[u8] = super::membership::CLUSTER_META_KEY;
/// Store meta key holding this member's id.
pub const MEMBER_META_KEY: &[u8] = b"corekv/member_id";
/// Store meta key holding the Raft term of the last applied entry (written
/// with every apply commit, so it always matches the applied index).
pub const APPLIED_TERM_META_KEY: &[u8] = b"corekv/applied_term";
/// Peer messages queued for the Raft core.
const PEER_IN_QUEUE_DEPTH: usize = 16_384;

pub fn snap_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("snap")
}

pub fn db_path(data_dir: &Path) -> PathBuf {
    snap_dir(data_dir).join("db")
}

pub fn wal_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("member").join("wal")
}

pub fn store_options(cfg: &Config) -> StoreOptions {
    StoreOptions {
        writeout_queue_commits: cfg.store_writeout_queue_commits,
        map_advice: match cfg.store_map_advice {
            MapAdviceArg::Random => MapAdvice::Random,
            MapAdviceArg::Normal => MapAdvice::Normal,
        },
        // The quota is enforced by the alarm layer (`node/alarm.rs`) from
        // replicated state; a store-local refusal at apply could make
        // members diverge (their file sizes differ).
        quota_bytes: u64::MAX,
        ..StoreOptions::default()
    }
}

fn wal_options(cfg: &Config) -> WalOptions {
    WalOptions {
        max_batch_bytes: usize::try_from(cfg.wal_batch_max_bytes).unwrap_or(usize::MAX),
        segment_bytes: cfg.wal_segment_bytes,
        ..WalOptions::default()
    }
}

/// Loads the cluster identity from the store, or on first start bootstraps
/// it from the flags (`new`) or asks the cluster (`existing`, a member
/// added with MemberAdd), and records it in the same store. A member the
/// cluster removed refuses to start with its old data.
fn load_cluster(
    cfg: &Config,
    store: &Store,
    peer_tls: Option<&super::PeerTls>,
) -> anyhow::Result<(ClusterInfo, u64)> {
    let marker = super::membership::runtime::removed_marker(&cfg.data_dir());
    if marker.exists() {
        bail!(
            "this member was removed from the cluster ({}, {}); its data dir cannot rejoin: \
             delete it and add the member again (member add, then start with \
             --initial-cluster-state=existing)",
            super::membership::runtime::REMOVED_REASON,
            marker.display()
        );
    }
    let view = store.read().context("reading the cluster identity")?;
    if let (Some(cluster), Some(member)) = (
        view.get_meta(CLUSTER_META_KEY),
        view.get_meta(MEMBER_META_KEY),
    ) {
        let cluster: ClusterInfo =
            serde_json::from_slice(&cluster).context("stored cluster info is corrupt")?;
        let member = <[u8; 8]>::try_from(member.as_slice())
            .map_err(|_| anyhow!("stored member id is corrupt"))?;
        let member = u64::from_le_bytes(member);
        if !cluster.members.contains_key(&member) {
            bail!(
                "member {member:x} was removed from cluster {:x} ({}); its data dir cannot \
                 rejoin: delete it and add the member again (member add, then start with \
                 --initial-cluster-state=existing)",
                cluster.cluster_id,
                super::membership::runtime::REMOVED_REASON
            );
        }
        return Ok((cluster, member));
    }
    let (cluster, id) = if cfg.initial_cluster_state == crate::config::ClusterState::Existing {
        super::membership::join::fetch_identity(cfg, peer_tls.map(|t| t.client.clone()))?
    } else {
        ClusterInfo::bootstrap_member(
            &cfg.initial_cluster_spec(),
            &cfg.initial_cluster_token,
            &cfg.name,
            &cfg.initial_advertise_peer_urls,
        )
        .map_err(|e| anyhow!(e))?
    };
    let mut batch = store.write()?;
    batch.put_meta(CLUSTER_META_KEY, &serde_json::to_vec(&cluster)?);
    batch.put_meta(MEMBER_META_KEY, &id.to_le_bytes());
    batch.commit(store.applied_index(), true)?;
    Ok((cluster, id))
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it and
    // pthread_sigmask only reads it. Blocking here, before any thread starts,
    // makes every thread inherit the mask so sigtimedwait below receives them.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: `set` was initialised by block_signals; a null siginfo is allowed.
    let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Runs a member until SIGINT/SIGTERM or a fatal error; SIGHUP re-reads the
/// TLS certificates and keys (`tls::Reloaders`).
pub fn run(cfg: Config) -> anyhow::Result<()> {
    cfg.validate().map_err(|e| anyhow!(e))?;
    let signals = block_signals();
    let data_dir = cfg.data_dir();
    for dir in [snap_dir(&data_dir), wal_dir(&data_dir)] {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let store = Store::open(&db_path(&data_dir), store_options(&cfg))
        .with_context(|| format!("open store {}", db_path(&data_dir).display()))?;
    let (client_tls, peer_tls, cert_reload) = tls_configs(&cfg)?;
    let (cluster, member_id) = load_cluster(&cfg, &store, peer_tls.as_ref())?;
    let peer_addrs = super::membership::runtime::peer_addrs(&cluster, member_id);
    let peer_listen = url_to_addr(
        cfg.listen_peer_urls
            .first()
            .ok_or_else(|| anyhow!("no --listen-peer-urls"))?,
    )
    .map_err(|e| anyhow!(e))?;
    let http_listen = url_to_addr(
        cfg.listen_client_urls
            .first()
            .ok_or_else(|| anyhow!("no --listen-client-urls"))?,
    )
    .map_err(|e| anyhow!(e))?;
    // Raft replays its log from the bootstrap membership; a store ahead of
    // the WAL restarts from the membership the store holds.
    let initial = ConfState {
        voters: cluster.initial_voters(),
        learners: if cluster.bootstrap_voters.is_empty() {
            cluster.learners()
        } else {
            Vec::new()
        },
    };
    let current = ConfState {
        voters: cluster.voters(),
        learners: cluster.learners(),
    };
    let is_learner = cluster
        .members
        .get(&member_id)
        .is_some_and(|m| m.is_learner);
    let applied = store.applied_index();
    let applied_term = store
        .read()
        .context("reading the applied term")?
        .get_meta(APPLIED_TERM_META_KEY)
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_le_bytes);
    tracing::info!(
        name = %cfg.name,
        member = format_args!("{member_id:x}"),
        cluster = format_args!("{:x}", cluster.cluster_id),
        data_dir = %data_dir.display(),
        applied,
        "starting corekv member"
    );

    let auth = Arc::new(auth_store(&cfg, &store)?);
    let (to_core, core_rx) = mpsc::channel(cfg.proposal_queue_depth);
    let (peer_tx, peer_rx) = mpsc::channel(PEER_IN_QUEUE_DEPTH);
    let limits = WireLimits {
        max_request_bytes: usize::try_from(cfg.max_request_bytes).unwrap_or(usize::MAX),
        max_frame_bytes: usize::try_from(cfg.max_request_bytes).unwrap_or(usize::MAX)
            + corekv_wire::limits::DEFAULT_FRAME_HEADROOM_BYTES,
        max_txn_ops: cfg.max_txn_ops as usize,
        // The store's key limit: longer keys are refused before they reach Raft.
        max_key_bytes: corekv_storage::MAX_KEY_BYTES,
        ..WireLimits::default()
    };
    let alarms = Arc::new(super::alarm::Alarms::load(
        &store.read().context("reading the alarms")?,
    ));
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        member_id,
        cluster: Arc::new(RwLock::new(cluster)),
        alarms,
        store: RwLock::new(Arc::new(store)),
        to_core,
        events: tokio::sync::broadcast::channel(super::watch::WATCH_BROADCAST_DEPTH).0,
        limits,
        term: AtomicU64::new(0),
        leader: AtomicU64::new(0),
        commit_index: AtomicU64::new(0),
        applied_index: AtomicU64::new(applied),
        is_learner: AtomicBool::new(is_learner),
        serving: AtomicBool::new(false),
        shutdown: AtomicBool::new(false),
        fatal: RwLock::new(None),
        auth,
        client_tls,
        peer_tls,
    });

    super::corrupt::spawn(shared.clone(), cfg.experimental_corrupt_check_time)
        .context("start the corruption checker")?;
    let cores = match cfg.cores {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };

    let online = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cores <= online;
    let placement = |i: usize| {
        if pin {
            Placement::Fixed(i)
        } else {
            Placement::Unbound
        }
    };
    let native = cfg.listen_native_addr;

    let core_shared = shared.clone();
    let raft_cfg = raft_config(&cfg, member_id);
    let replica_cfg = ReplicaConfig {
        member_id,
        cluster_id: shared.cluster_id(),
        run_nonce: run_nonce(),
        request_timeout: cfg.request_timeout(),
        max_pending_requests: cfg.max_pending_requests,
        applied_term_key: APPLIED_TERM_META_KEY,
        alarms: shared.alarms.clone(),
        auth: shared.auth.clone(),
        cluster: shared.cluster.clone(),
    };
    let wal_opts = wal_options(&cfg);
    let core = LocalExecutorBuilder::new(placement(0))
        .name("corekv-raft")
        .io_memory(cfg.io_memory_bytes)
        .spawn(move || async move {
            let shared = core_shared;
            let result = async {
                let (wal, recovered) = Wal::open(wal_dir(&shared.cfg.data_dir()), wal_opts)
                    .await
                    .map_err(|e| format!("open WAL: {e}"))?;
                let wal_snapshot = recovered.snapshot.clone();
                let restored = restore_state(recovered, applied, applied_term, &current);
                let mut wal = wal;
                if restored.snapshot != wal_snapshot {
                    // Make the WAL agree: its log now starts after the store.
                    if let Some(meta) = &restored.snapshot {
                        wal.save_snapshot_marker(meta)
                            .await
                            .map_err(|e| format!("WAL snapshot marker: {e}"))?;
                    }
                }
                let durable_hs = wal.hard_state();
                let raw =
                    RawNode::new(raft_cfg, initial, restored).map_err(|e| format!("raft: {e}"))?;
                let leases =
                    LeaseDriver::open(LeaseConfig::from_config(&shared.cfg), &shared.store())?;
                let replica =
                    Replica::new(replica_cfg, raw, applied, durable_hs).with_leases(leases);
                peer::listen(shared.clone(), peer_listen, peer_tx.clone())
                    .map_err(|e| format!("listen peer {peer_listen}: {e}"))?;
                if cores == 1 {
                    serve_clients(&shared, native, http_listen)?;
                }
                let peers = Peers::start(shared.clone(), peer_addrs, peer_tx);
                Core::new(shared.clone(), replica, wal, peers)
                    .run(core_rx, peer_rx)
                    .await
            }
            .await;
            if let Err(reason) = &result {
                shared.fail(reason.clone());
            }
            result
        })
        .map_err(|e| anyhow!("start the Raft core executor: {e}"))?;

    let mut serve_shards = Vec::new();
    for i in 1..cores {
        let s = shared.clone();
        let handle = LocalExecutorBuilder::new(placement(i))
            .name(&format!("corekv-serve-{i}"))
            .io_memory(cfg.io_memory_bytes)
            .spawn(move || async move {
                if let Err(e) = serve_clients(&s, native, http_listen) {
                    s.fail(e);
                    return;
                }
                while !s.stopping() {
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                }
            })
            .map_err(|e| anyhow!("start serve executor {i}: {e}"))?;
        serve_shards.push(handle);
    }
    tracing::info!(%native, client = %http_listen, peer = %peer_listen, cores, pinned = pin, "serving");

    while !shared.stopping() {
        if let Some(sig) = wait_signal(&signals, Duration::from_millis(200)) {
            if sig == libc::SIGHUP {
                tracing::info!("SIGHUP: reloading TLS certificates");
                cert_reload.reload_all();
                continue;
            }
            tracing::info!(signal = sig, "shutting down");
            shared
                .shutdown
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let core_result = core
        .join()
        .map_err(|e| anyhow!("raft core executor: {e}"))?;
    for h in serve_shards {
        let _ = h.join();
    }
    if let Some(reason) = shared.fatal_reason() {
        bail!("member stopped: {reason}");
    }
    core_result.map_err(|e| anyhow!(e))?;
    tracing::info!("stopped");
    Ok(())
}

/// What Raft restarts from. Normally the WAL's state plus the store's applied
/// index. A member that installed a leader's snapshot image can have a store
/// ahead of its WAL (the image is newer than the snapshot's index and the
/// entries in between had not reached the WAL yet): the store itself is then
/// the snapshot, at its applied index and term (with `current`, the
/// membership the store holds), and the WAL entries it covers are dropped.
fn restore_state(
    recovered: corekv_raftcore::wal::Recovered,
    applied: u64,
    applied_term: u64,
    current: &ConfState,
) -> Restored {
    let last = recovered
        .entries
        .last()
        .map(|e| e.index)
        .or(recovered.snapshot.as_ref().map(|s| s.index))
        .unwrap_or(0);
    if applied <= last || applied_term == 0 {
        return Restored {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            entries: recovered.entries,
            applied,
        };
    }
    tracing::warn!(
        applied,
        wal_last = last,
        "store is ahead of the WAL: restarting from the store as a snapshot"
    );
    // The store's membership is Raft's at the store's applied index (both
    // change with the same applied entries); the WAL's snapshot is older.
    let conf_state = current.clone();
    let mut hard_state = recovered.hard_state;
    if hard_state.term < applied_term {
        hard_state.term = applied_term;
        hard_state.vote = 0;
    }
    hard_state.commit = hard_state.commit.max(applied);
    Restored {
        hard_state,
        snapshot: Some(corekv_raftcore::SnapshotMeta {
            index: applied,
            term: applied_term,
            conf_state,
        }),
        entries: Vec::new(),
        applied,
    }
}

/// This run's proposal nonce: random, never 0 (see `entry.rs`).
fn run_nonce() -> u64 {
    loop {
        let n: u64 = rand::random();
        if n != 0 {
            return n;
        }
    }
}

fn raft_config(cfg: &Config, id: u64) -> corekv_raftcore::Config {
    let mut rc = corekv_raftcore::Config::new(id);
    rc.election_tick = cfg.election_ticks();
    rc.heartbeat_tick = 1;
    rc.pre_vote = true;
    rc.check_quorum = true;
    rc.snapshot_catch_up_entries = cfg.snapshot_catchup_entries;
    rc.seed = id
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    rc
}

/// Starts this shard's request layer and its two front-ends: the native
/// protocol and etcd's gRPC/HTTP API on the client URL (both SO_REUSEPORT).
fn serve_clients(
    shared: &Arc<Shared>,
    native: std::net::SocketAddr,
    client: std::net::SocketAddr,
) -> Result<(), String> {
    let api = Api::start(shared.clone());
    serve::listen(api.clone(), native).map_err(|e| format!("listen native {native}: {e}"))?;
    crate::gateway::listen(api, client).map_err(|e| format!("listen client URL {client}: {e}"))?;
    Ok(())
}

/// The auth store from `--auth-token`, `--auth-token-ttl`, `--bcrypt-cost`,
/// with the state the store holds.
fn auth_store(cfg: &Config, store: &Store) -> anyhow::Result<super::auth::Auth> {
    let ttl = std::time::Duration::from_secs(cfg.auth_token_ttl);
    let kind =
        super::auth::token::TokenKind::parse(&cfg.auth_token, ttl).map_err(|e| anyhow!(e))?;
    let auth = super::auth::Auth::new(kind, cfg.bcrypt_cost).map_err(|e| anyhow!(e))?;
    auth.load(store).map_err(|e| anyhow!(e))?;
    Ok(auth)
}

/// The TLS configurations from etcd's flags.
type TlsConfigs = (
    Option<Arc<rustls::ServerConfig>>,
    Option<super::PeerTls>,
    crate::tls::Reloaders,
);

/// TLS from etcd's flags: the client side (native port and client URL),
/// peer TLS (one certificate served and presented), and their sources for
/// SIGHUP.
fn tls_configs(cfg: &Config) -> anyhow::Result<TlsConfigs> {
    let mut reload = crate::tls::Reloaders::default();
    let client = match cfg.client_tls().map_err(|e| anyhow!(e))? {
        // ALPN for gRPC / HTTP on an https client URL; native clients offer none.
        Some(files) => {
            let cert = reload.open(&files).map_err(|e| anyhow!(e))?;
            let alpn: &[&[u8]] = &[b"h2", b"http/1.1"];
            Some(crate::tls::server_config(&files, cert, alpn).map_err(|e| anyhow!(e))?)
        }
        None => None,
    };
    let peer = match cfg.peer_tls().map_err(|e| anyhow!(e))? {
        Some(files) => {
            let cert = reload.open(&files).map_err(|e| anyhow!(e))?;
            Some(super::PeerTls {
                server: crate::tls::server_config(&files, cert.clone(), &[])
                    .map_err(|e| anyhow!(e))?,
                client: crate::tls::peer_client_config(&files, cert).map_err(|e| anyhow!(e))?,
            })
        }
        None => None,
    };
    Ok((client, peer, reload))
}
