//! Deterministic tests of the replica state machine: an in-memory WAL, a
//! memory-backed store, time as `Instant`s the test moves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_raftcore::{
    ConfState, Config, Entry, HardState, Message, MessageKind, RawNode, Restored, SnapshotMeta,
};
use corekv_storage::{MemBackend, Store, StoreOptions};
use corekv_wire::messages as w;
use corekv_wire::{ApiError, FrameDecoder, OwnedFrame, WireLimits, encode_frame};
use tokio::sync::oneshot;

use super::{Persist, Replica, ReplicaConfig};
use crate::node::CoreMsg;

pub const TIMEOUT: Duration = Duration::from_secs(7);

pub type WriteRx = oneshot::Receiver<Result<w::Response, ApiError>>;

/// The durable part of a member: its WAL, as the test keeps it.
#[derive(Clone, Default)]
pub struct Disk {
    pub hs: HardState,
    pub snapshot: Option<SnapshotMeta>,
    pub entries: Vec<Entry>,
}

impl Disk {
    pub fn persist(&mut self, work: &Persist) {
        if let Some(s) = &work.snapshot {
            self.entries.retain(|e| e.index > s.index);
            self.snapshot = Some(s.clone());
        }
        if let Some((entries, hs)) = work.wal_write() {
            if let Some(first) = entries.first() {
                self.entries.retain(|e| e.index < first.index);
                self.entries.extend(entries.iter().cloned());
            }
            if let Some(hs) = hs {
                self.hs = hs;
            }
        }
    }
}

pub fn voters(ids: &[u64]) -> ConfState {
    ConfState {
        voters: ids.to_vec(),
        learners: vec![],
    }
}

pub fn mem_store() -> Store {
    Store::open_with_backend(Arc::new(MemBackend::new()), StoreOptions::default()).expect("store")
}

pub fn replica_config(id: u64, nonce: u64, cap: usize) -> ReplicaConfig {
    ReplicaConfig {
        member_id: id,
        cluster_id: 0xc1,
        run_nonce: nonce,
        request_timeout: TIMEOUT,
        max_pending_requests: cap,
        applied_term_key: b"test/applied_term",
        alarms: Default::default(),
        auth: std::sync::Arc::new(crate::node::auth::Auth::default()),
        cluster: std::sync::Arc::new(std::sync::RwLock::new(crate::cluster::ClusterInfo {
            cluster_id: 0xc1,
            members: Default::default(),
            bootstrap_voters: Vec::new(),
            removed: Default::default(),
        })),
    }
}

/// Starts (or restarts) a replica from `disk` and `store`.
pub fn start(id: u64, members: &[u64], nonce: u64, disk: &Disk, store: &Store) -> Replica {
    let restored = Restored {
        hard_state: disk.hs,
        snapshot: disk.snapshot.clone(),
        entries: disk.entries.clone(),
        applied: store.applied_index(),
    };
    let mut cfg = Config::new(id);
    cfg.seed = id;
    let raw = RawNode::new(cfg, voters(members), restored).expect("raft");
    Replica::new(
        replica_config(id, nonce, 1024),
        raw,
        store.applied_index(),
        disk.hs,
    )
}

/// Handles every Ready: persist, apply, advance. Returns what to send.
pub fn drive(r: &mut Replica, disk: &mut Disk, store: &Store, now: Instant) -> Vec<Message> {
    let mut out = Vec::new();
    while r.has_ready() {
        let mut work = r.take_ready(now);
        out.append(&mut work.messages);
        let mut persist = work.take_persist();
        disk.persist(&persist);
        r.on_persisted(&persist, None);
        out.append(&mut persist.persisted_messages);
        r.apply(store, &mut work, &Instant::now).expect("apply");
        r.advance(work);
    }
    out
}

pub fn put_frame(key: &[u8], value: &[u8]) -> OwnedFrame {
    let req = w::Request::Put(w::PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        lease: 0,
        prev_kv: false,
        ignore_value: false,
        ignore_lease: false,
    });
    let mut buf = Vec::new();
    encode_frame(1, &req, &mut buf).expect("encode");
    let limits = WireLimits::default();
    let mut dec = FrameDecoder::new(&limits);
    dec.extend(&buf);
    dec.next_owned_frame().expect("frame").expect("one frame")
}

pub fn put(r: &mut Replica, now: Instant, key: &[u8]) -> WriteRx {
    let (reply, rx) = oneshot::channel();
    let frame = put_frame(key, b"v");
    let received = now;
    r.on_client(
        now,
        CoreMsg::Propose {
            frame,
            reply,
            received,
        },
    );
    rx
}

/// Ticks a single member until it leads.
pub fn elect(r: &mut Replica, disk: &mut Disk, store: &Store, now: Instant) {
    for _ in 0..100 {
        if r.status().role == corekv_raftcore::Role::Leader && !r.has_ready() {
            return;
        }
        r.tick(now);
        drive(r, disk, store, now);
    }
    panic!("no leader after 100 ticks");
}

fn revision(rx: &mut WriteRx) -> i64 {
    match rx.try_recv() {
        Ok(Ok(w::Response::Put(p))) => p.header.revision,
        other => panic!("expected a put answer, got {other:?}"),
    }
}

#[test]
fn an_entry_from_before_a_restart_never_answers_a_new_client() {
    let (mut disk, store, t0) = (Disk::default(), mem_store(), Instant::now());
    let mut r = start(1, &[1], 11, &disk, &store);
    elect(&mut r, &mut disk, &store, t0);
    drive(&mut r, &mut disk, &store, t0);
    let _lost = put(&mut r, t0, b"a");
    // The entry reaches the WAL; the member crashes before applying it.
    let mut work = r.take_ready(t0);
    let persist = work.take_persist();
    assert_eq!(persist.wal_write().map(|(e, _)| e.len()), Some(1));
    disk.persist(&persist);
    drop((work, r));

    // The new run's first request has the same proposal id (1).
    let mut r = start(1, &[1], 22, &disk, &store);
    let mut b = put(&mut r, t0, b"b");
    elect(&mut r, &mut disk, &store, t0);
    for _ in 0..3 {
        r.tick(t0);
        drive(&mut r, &mut disk, &store, t0);
    }
    // "a" applied at revision 2 (unanswered: its client is gone), "b" at 3.
    assert_eq!(revision(&mut b), 3);
}

#[test]
fn a_snapshot_only_ready_is_reported_applied() {
    let (mut disk, store, t0) = (Disk::default(), mem_store(), Instant::now());
    let mut r = start(2, &[1, 2, 3], 5, &disk, &store);
    let mut msg = Message::new(MessageKind::Snapshot, 2);
    msg.from = 1;
    msg.term = 1;
    msg.snapshot = Some(SnapshotMeta {
        index: 10,
        term: 1,
        conf_state: voters(&[1, 2, 3]),
    });
    r.on_image_installed(None, msg);
    let mut work = r.take_ready(t0);
    let persist = work.take_persist();
    assert!(persist.snapshot.is_some() && work.committed.is_empty());
    disk.persist(&persist);
    r.on_persisted(&persist, None);
    r.advance(work);
    assert_eq!(r.status().applied, 10);
    drive(&mut r, &mut disk, &store, t0);
}

#[test]
fn waiting_requests_expire_in_deadline_order() {
    let (disk, store, t0) = (Disk::default(), mem_store(), Instant::now());
    // Three members, no leader: writes park, reads queue.
    let mut r = start(1, &[1, 2, 3], 5, &disk, &store);
    let mut early = put(&mut r, t0, b"a");
    let (reply, mut read) = oneshot::channel();
    r.on_client(t0, CoreMsg::ReadIndex { reply });
    let mut late = put(&mut r, t0 + Duration::from_secs(1), b"b");
    assert_eq!(r.waiting_requests(), 3);
    r.tick(t0 + TIMEOUT - Duration::from_millis(1));
    assert_eq!(r.waiting_requests(), 3);
    r.tick(t0 + TIMEOUT);
    assert!(matches!(early.try_recv(), Ok(Err(ApiError::NoLeader))));
    assert!(matches!(read.try_recv(), Ok(Err(ApiError::NoLeader))));
    assert!(late.try_recv().is_err(), "not due yet");
    assert_eq!(r.waiting_requests(), 1);
    r.tick(t0 + TIMEOUT + Duration::from_secs(1));
    assert!(matches!(late.try_recv(), Ok(Err(ApiError::NoLeader))));
    assert_eq!(r.waiting_requests(), 0);
}

#[test]
fn the_request_table_is_capped() {
    let (disk, store, t0) = (Disk::default(), mem_store(), Instant::now());
    let raw = RawNode::new(Config::new(1), voters(&[1, 2, 3]), Restored::default()).expect("raft");
    let mut r = Replica::new(replica_config(1, 5, 2), raw, store.applied_index(), disk.hs);
    let _a = put(&mut r, t0, b"a");
    let _b = put(&mut r, t0, b"b");
    let mut c = put(&mut r, t0, b"c");
    assert!(matches!(c.try_recv(), Ok(Err(ApiError::TooManyRequests))));
    let (reply, mut read) = oneshot::channel();
    r.on_client(t0, CoreMsg::ReadIndex { reply });
    assert!(matches!(
        read.try_recv(),
        Ok(Err(ApiError::TooManyRequests))
    ));
    r.fail_all(&ApiError::Stopped);
    assert_eq!(r.waiting_requests(), 0);
}

#[test]
fn writes_and_reads_are_answered_in_a_single_member() {
    let (mut disk, store, t0) = (Disk::default(), mem_store(), Instant::now());
    let mut r = start(1, &[1], 5, &disk, &store);
    elect(&mut r, &mut disk, &store, t0);
    let mut a = put(&mut r, t0, b"a");
    let (reply, mut read) = oneshot::channel();
    r.on_client(t0, CoreMsg::ReadIndex { reply });
    r.start_read_round(t0);
    drive(&mut r, &mut disk, &store, t0);
    assert_eq!(revision(&mut a), 2);
    assert!(matches!(read.try_recv(), Ok(Ok(()))));
    assert_eq!(r.waiting_requests(), 0);
    assert_eq!(store.applied_index(), r.applied());
}

#[test]
fn a_single_member_leads_without_waiting_for_a_tick() {
    let (mut disk, store, t0) = (Disk::default(), mem_store(), Instant::now());
    for nonce in [1, 2] {
        // First start, then a restart from the same WAL and store.
        let mut r = start(1, &[1], nonce, &disk, &store);
        drive(&mut r, &mut disk, &store, t0);
        assert_eq!(r.status().role, corekv_raftcore::Role::Leader);
    }
    // One voter of three does not campaign on its own.
    let mut r = start(1, &[1, 2, 3], 3, &Disk::default(), &mem_store());
    drive(&mut r, &mut Disk::default(), &mem_store(), t0);
    assert_eq!(r.status().role, corekv_raftcore::Role::Follower);
}
