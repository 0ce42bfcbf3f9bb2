//! A seeded simulation of three replicas: a network that drops, delays and
//! partitions, members that crash (the store loses every unsynced commit,
//! the WAL keeps what was persisted) and restart with a new run nonce, and
//! clients writing unique keys. Checked at the end, after a fault-free
//! phase: every acknowledged write is on every member at the revision its
//! answer carried, and no two answers carry the same revision (an answer
//! belongs to its own request).
//!
//! Not covered here (see raftcore's simulator for the Raft side): log
//! compaction and snapshot installs, membership changes, reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_raftcore::Message;
use corekv_storage::{MemBackend, RangeRequest, Store, StoreOptions};
use corekv_wire::messages as w;

use super::Outbound;
use super::Persist;
use super::Replica;
use super::tests::{Disk, WriteRx, put, start};

const MEMBERS: [u64; 3] = [1, 2, 3];
const TICK: Duration = Duration::from_millis(100);

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

struct Member {
    replica: Option<Replica>,
    /// The WAL write in flight (the driver keeps at most one).
    writing: Option<Persist>,
    disk: Disk,
    backend: Arc<MemBackend>,
    store: Store,
}

enum Packet {
    Raft(Message),
    Forward {
        to: u64,
        data: Vec<u8>,
    },
    Lease {
        from: u64,
        to: u64,
        msg: crate::node::lease::LeaseMsg,
    },
    ForwardMember {
        to: u64,
        data: Vec<u8>,
    },
    MemberRefused {
        to: u64,
        proposal_id: u64,
        run_nonce: u64,
        error: String,
    },
}

impl Packet {
    fn to(&self) -> u64 {
        match self {
            Packet::Raft(m) => m.to,
            Packet::Forward { to, .. }
            | Packet::Lease { to, .. }
            | Packet::ForwardMember { to, .. }
            | Packet::MemberRefused { to, .. } => *to,
        }
    }
}

struct Sim {
    rng: Rng,
    now: Instant,
    members: BTreeMap<u64, Member>,
    /// (deliver at step, packet)
    net: Vec<(u64, Packet)>,
    /// Member -> partition side; empty: connected.
    side: BTreeMap<u64, u64>,
    clients: Vec<(Vec<u8>, WriteRx)>,
    acked: BTreeMap<Vec<u8>, i64>,
    next_nonce: u64,
    next_key: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut members = BTreeMap::new();
        let mut next_nonce = 1;
        for id in MEMBERS {
            let backend = Arc::new(MemBackend::new());
            let store =
                Store::open_with_backend(backend.clone(), StoreOptions::default()).expect("store");
            let disk = Disk::default();
            let replica = start(id, &MEMBERS, next_nonce, &disk, &store);
            next_nonce += 1;
            members.insert(
                id,
                Member {
                    replica: Some(replica),
                    writing: None,
                    disk,
                    backend,
                    store,
                },
            );
        }
        Sim {
            rng: Rng(seed ^ 0x5EED),
            now: Instant::now(),
            members,
            net: Vec::new(),
            side: BTreeMap::new(),
            clients: Vec::new(),
            acked: BTreeMap::new(),
            next_nonce,
            next_key: 0,
        }
    }

    fn connected(&self, a: u64, b: u64) -> bool {
        self.side.get(&a) == self.side.get(&b)
    }

    fn send(&mut self, step: u64, from: u64, packet: Packet, faulty: bool) {
        let to = packet.to();
        if faulty && (!self.connected(from, to) || self.rng.chance(100)) {
            return;
        }
        let delay = if faulty { self.rng.below(4) } else { 0 };
        self.net.push((step + 1 + delay, packet));
    }

    fn crash(&mut self, id: u64) {
        let m = self.members.get_mut(&id).expect("member");
        m.replica = None;
        // The write in flight never became durable.
        m.writing = None;
        // Power loss: unsynced store commits are gone; the WAL (`disk`)
        // holds exactly what was reported persisted.
        let fresh = Store::open_with_backend(Arc::new(MemBackend::new()), StoreOptions::default())
            .expect("placeholder store");
        drop(std::mem::replace(&mut m.store, fresh));
        m.backend.crash();
        m.store = Store::open_with_backend(m.backend.clone(), StoreOptions::default())
            .expect("reopen store");
    }

    fn restart(&mut self, id: u64) {
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let m = self.members.get_mut(&id).expect("member");
        m.replica = Some(start(id, &MEMBERS, nonce, &m.disk, &m.store));
    }

    fn step(&mut self, step: u64, faulty: bool, writes: bool) {
        self.now += TICK / 4;
        if faulty {
            if self.rng.chance(5) {
                let id = MEMBERS[self.rng.below(3) as usize];
                if self.members[&id].replica.is_some() {
                    self.crash(id);
                } else {
                    self.restart(id);
                }
            }
            if self.rng.chance(10) {
                self.side.clear();
                if self.rng.chance(500) {
                    let alone = MEMBERS[self.rng.below(3) as usize];
                    self.side.insert(alone, 1);
                }
            }
        }
        if writes && self.rng.chance(300) {
            let id = MEMBERS[self.rng.below(3) as usize];
            let key = format!("k{}", self.next_key).into_bytes();
            self.next_key += 1;
            let now = self.now;
            if let Some(r) = self.members.get_mut(&id).and_then(|m| m.replica.as_mut()) {
                let rx = put(r, now, &key);
                self.clients.push((key, rx));
            }
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|(at, _)| *at <= step);
        self.net = later;
        for (_, packet) in due {
            let to = packet.to();
            let Some(r) = self.members.get_mut(&to).and_then(|m| m.replica.as_mut()) else {
                continue;
            };
            match packet {
                Packet::Raft(m) => r.step(m),
                Packet::Forward { data, .. } => r.on_forwarded(data),
                Packet::Lease { from, msg, .. } => r.on_lease_msg(self.now, from, msg),
                Packet::ForwardMember { data, .. } => r.on_forwarded_member(self.now, data),
                Packet::MemberRefused {
                    proposal_id,
                    run_nonce,
                    error,
                    ..
                } => r.on_member_refused(proposal_id, run_nonce, &error),
            }
        }
        let now = self.now;
        let mut out = Vec::new();
        for (&id, m) in &mut self.members {
            let Some(r) = m.replica.as_mut() else {
                continue;
            };
            if step % 4 == 0 {
                r.tick(now);
            }
            r.start_read_round(now);
            for o in r.take_outbox() {
                out.push((
                    id,
                    match o {
                        Outbound::Raft(msg) => Packet::Raft(msg),
                        Outbound::Forward { to, data, .. } => Packet::Forward { to, data },
                        Outbound::Lease { to, msg } => Packet::Lease { from: id, to, msg },
                        Outbound::ForwardMember { to, data, .. } => {
                            Packet::ForwardMember { to, data }
                        }
                        Outbound::MemberRefused {
                            to,
                            proposal_id,
                            run_nonce,
                            error,
                        } => Packet::MemberRefused {
                            to,
                            proposal_id,
                            run_nonce,
                            error,
                        },
                    },
                ));
            }
            // A write in flight completes with probability 1/2 per step.
            let complete = !faulty || self.rng.chance(500);
            for msg in drive_pipelined(r, &mut m.writing, &mut m.disk, &m.store, now, complete) {
                out.push((id, Packet::Raft(msg)));
            }
        }
        for (from, packet) in out {
            self.send(step, from, packet, faulty);
        }
        self.collect_answers();
    }

    fn collect_answers(&mut self) {
        let mut waiting = Vec::new();
        for (key, mut rx) in std::mem::take(&mut self.clients) {
            match rx.try_recv() {
                Ok(Ok(w::Response::Put(p))) => {
                    let rev = p.header.revision;
                    assert!(
                        !self.acked.values().any(|r| *r == rev),
                        "two answers carry revision {rev}"
                    );
                    self.acked.insert(key, rev);
                }
                Ok(Ok(other)) => panic!("a put answered with {other:?}"),
                // Refused, timed out, or its member crashed: outcome unknown.
                Ok(Err(_)) | Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {}
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => waiting.push((key, rx)),
            }
        }
        self.clients = waiting;
    }

    fn check(&self) {
        let applied: BTreeSet<u64> = self
            .members
            .values()
            .map(|m| m.store.applied_index())
            .collect();
        assert_eq!(applied.len(), 1, "members did not converge: {applied:?}");
        for (key, rev) in &self.acked {
            for (id, m) in &self.members {
                let got = m
                    .store
                    .read()
                    .expect("read")
                    .range(&RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })
                    .expect("range");
                let mod_rev = got.kvs.first().map(|kv| kv.mod_revision);
                assert_eq!(
                    mod_rev,
                    Some(*rev),
                    "member {id}: acknowledged {} at revision {rev}",
                    String::from_utf8_lossy(key)
                );
            }
        }
    }
}

/// The driver's pipeline (`core.rs`): one WAL write in flight; a Ready is
/// taken only when none is; its committed entries are applied at once,
/// before its own write is durable.
fn drive_pipelined(
    r: &mut Replica,
    writing: &mut Option<Persist>,
    disk: &mut Disk,
    store: &Store,
    now: Instant,
    complete: bool,
) -> Vec<Message> {
    let mut out = Vec::new();
    if complete {
        if let Some(mut done) = writing.take() {
            disk.persist(&done);
            r.on_persisted(&done, None);
            out.append(&mut done.persisted_messages);
        }
    }
    while writing.is_none() && r.has_ready() {
        let mut work = r.take_ready(now);
        out.append(&mut work.messages);
        let mut persist = work.take_persist();
        if persist.wal_write().is_some() || persist.snapshot.is_some() {
            *writing = Some(persist);
        } else {
            r.on_persisted(&persist, None);
            out.append(&mut persist.persisted_messages);
        }
        r.apply(store, &mut work, &Instant::now).expect("apply");
        r.advance(work);
    }
    out
}

fn run(seed: u64, steps: u64) -> usize {
    let mut sim = Sim::new(seed);
    for step in 0..steps {
        sim.step(step, true, true);
    }
    sim.side.clear();
    for id in MEMBERS {
        if sim.members[&id].replica.is_none() {
            sim.restart(id);
        }
    }
    // Heal: writes go on for a while, then the last ones settle.
    for step in steps..steps + 800 {
        sim.step(step, false, step < steps + 400);
    }
    sim.check();
    sim.acked.len()
}

#[test]
fn seeded_clusters_answer_every_client_with_its_own_result() {
    let seeds: u64 = std::env::var("REPLICA_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let mut acked = 0;
    for seed in 0..seeds {
        let result = std::panic::catch_unwind(|| run(seed, 1500));
        match result {
            Ok(n) => acked += n,
            Err(_) => panic!("replica simulation failed for seed {seed}"),
        }
    }
    assert!(acked > 0, "no write was ever acknowledged");
}
