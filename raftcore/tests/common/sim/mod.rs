//! Deterministic cluster simulation: N nodes, a seeded network that drops,
//! delays, duplicates, reorders and partitions messages, asynchronous
//! storage whose unsynced writes are lost on crash, and tick-driven time.
//! Safety invariants are checked after every step; a run ends with a
//! fault-free phase that must converge (nothing committed was lost).

mod checks;

use std::collections::{BTreeMap, VecDeque};

use corekv_raftcore::{
    ConfChange, ConfState, Config, Entry, EntryKind, HardState, Message, MessageKind, NodeId,
    RaftError, RawNode, Restored, Role, SnapshotMeta,
};

/// SplitMix64, owned here so seeds replay identically forever.
pub struct SimRng(u64);

impl SimRng {
    pub fn new(seed: u64) -> SimRng {
        SimRng(seed ^ 0x5EED_5EED_5EED_5EED)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Debug)]
pub struct SimOptions {
    pub seed: u64,
    pub steps: u64,
    /// Print every event (for replaying one seed).
    pub verbose: bool,
}

#[derive(Clone, Default)]
struct Disk {
    hs: HardState,
    snap: Option<(SnapshotMeta, Vec<Entry>)>,
    entries: Vec<Entry>,
}

struct Write {
    snapshot: Option<(SnapshotMeta, Vec<Entry>)>,
    entries: Vec<Entry>,
    hs: Option<HardState>,
    msgs: Vec<Message>,
    upto: Option<(u64, u64)>,
}

struct SimNode {
    raw: Option<RawNode>,
    disk: Disk,
    pending: VecDeque<Write>,
    /// The state machine: applied entries, index i at position i - 1.
    sm: Vec<Entry>,
    conf: ConfState,
    incoming_image: Option<Vec<Entry>>,
    /// Outstanding reads: ctx -> highest index known committed (applied
    /// anywhere) when the read was issued.
    reads: BTreeMap<u64, u64>,
    was_leader_term: u64,
}

struct InFlight {
    msg: Message,
    image: Option<Vec<Entry>>,
    deliver_at: u64,
}

/// Net fault rates in per mille, drawn per seed.
struct Faults {
    drop: u64,
    duplicate: u64,
    crash: u64,
    partition: u64,
    max_delay: u64,
    restart: u64,
    sync: u64,
}

pub struct Sim {
    rng: SimRng,
    opts: SimOptions,
    cfg: Config,
    initial: ConfState,
    now: u64,
    nodes: BTreeMap<NodeId, SimNode>,
    net: Vec<InFlight>,
    /// node -> partition group; empty = fully connected.
    groups: BTreeMap<NodeId, u64>,
    faults: Faults,
    /// Every entry applied anywhere: index -> (term, data).
    committed: BTreeMap<u64, (u64, Vec<u8>)>,
    leaders: BTreeMap<u64, NodeId>,
    /// (voter, term) -> candidate, from every granted vote sent.
    votes: BTreeMap<(NodeId, u64), NodeId>,
    next_payload: u64,
    next_ctx: u64,
    log: VecDeque<String>,
    pub reads_served: u64,
}

const LOG_KEEP: usize = 400;

impl Sim {
    pub fn new(opts: SimOptions) -> Sim {
        let mut rng = SimRng::new(opts.seed);
        let n = if rng.chance(500) { 3 } else { 5 };
        let voters: Vec<NodeId> = (1..=n).collect();
        let cfg = Config {
            pre_vote: rng.chance(700),
            check_quorum: rng.chance(700),
            max_inflight_msgs: 1 + rng.below(8) as usize,
            max_size_per_msg_bytes: 30 + rng.below(200),
            max_uncommitted_bytes: 2000,
            snapshot_catch_up_entries: rng.below(20),
            ..Config::new(1)
        };
        let faults = Faults {
            drop: rng.below(100),
            duplicate: rng.below(50),
            crash: rng.below(25),
            partition: rng.below(6),
            max_delay: 1 + rng.below(6),
            restart: 5 + rng.below(60),
            sync: 50 + rng.below(500),
        };
        // A third of the seeds get a slow disk and frequent crashes, which
        // widens the window between a Ready and its durability.
        let faults = if rng.chance(330) {
            Faults {
                sync: 10 + rng.below(40),
                crash: 10 + rng.below(30),
                restart: 50 + rng.below(100),
                ..faults
            }
        } else {
            faults
        };
        let initial = ConfState {
            voters,
            learners: vec![],
        };
        let mut sim = Sim {
            rng,
            opts,
            cfg,
            initial,
            now: 0,
            nodes: BTreeMap::new(),
            net: Vec::new(),
            groups: BTreeMap::new(),
            faults,
            committed: BTreeMap::new(),
            leaders: BTreeMap::new(),
            votes: BTreeMap::new(),
            next_payload: 0,
            next_ctx: 1,
            log: VecDeque::new(),
            reads_served: 0,
        };
        // Two spare nodes start outside the membership; conf changes add them.
        for id in 1..=n + 2 {
            sim.nodes.insert(
                id,
                SimNode {
                    raw: None,
                    disk: Disk::default(),
                    pending: VecDeque::new(),
                    sm: Vec::new(),
                    conf: sim.initial.clone(),
                    incoming_image: None,
                    reads: BTreeMap::new(),
                    was_leader_term: 0,
                },
            );
            sim.start(id);
        }
        sim
    }

    fn event(&mut self, s: String) {
        if self.opts.verbose {
            println!("[{}] {s}", self.now);
        }
        if self.log.len() >= LOG_KEEP {
            self.log.pop_front();
        }
        self.log.push_back(format!("[{}] {s}", self.now));
    }

    fn fail(&self, what: String) -> ! {
        let recent: Vec<&str> = self.log.iter().map(|s| s.as_str()).collect();
        panic!(
            "invariant violated at step {}: {what}\nrecent events:\n{}",
            self.now,
            recent.join("\n")
        );
    }

    fn node_cfg(&self, id: NodeId) -> Config {
        Config {
            id,
            seed: self.opts.seed.wrapping_mul(31).wrapping_add(id) ^ self.now,
            ..self.cfg.clone()
        }
    }

    /// (Re)starts `id` from its disk.
    fn start(&mut self, id: NodeId) {
        let cfg = self.node_cfg(id);
        let initial = self.initial.clone();
        let n = self.nodes.get_mut(&id).expect("node");
        let (snap_meta, image) = match &n.disk.snap {
            Some((m, img)) => (Some(m.clone()), img.clone()),
            None => (None, Vec::new()),
        };
        n.conf = snap_meta
            .as_ref()
            .map_or(initial.clone(), |m| m.conf_state.clone());
        n.sm = image;
        n.pending.clear();
        n.incoming_image = None;
        n.reads.clear();
        n.was_leader_term = 0;
        let restored = Restored {
            hard_state: n.disk.hs,
            applied: snap_meta.as_ref().map_or(0, |m| m.index),
            snapshot: snap_meta,
            entries: n.disk.entries.clone(),
        };
        match RawNode::new(cfg, initial, restored) {
            Ok(raw) => n.raw = Some(raw),
            Err(e) => self.fail(format!("node {id} cannot restart: {e}")),
        }
    }

    fn live(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raw.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    fn leader_ids(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.raw
                    .as_ref()
                    .is_some_and(|r| r.status().role == Role::Leader)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    fn pick(&mut self, ids: &[NodeId]) -> Option<NodeId> {
        if ids.is_empty() {
            return None;
        }
        Some(ids[self.rng.below(ids.len() as u64) as usize])
    }

    fn max_committed(&self) -> u64 {
        self.committed.keys().next_back().copied().unwrap_or(0)
    }

    /// One random input or fault, then network delivery, Readys and syncs.
    pub fn step(&mut self, faults_on: bool) {
        self.now += 1;
        let live = self.live();
        let roll = self.rng.below(1000);
        match roll {
            0..=199 => {
                for &id in &live {
                    if let Some(r) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
                        r.tick();
                    }
                }
            }
            200..=449 => {
                let leaders = self.leader_ids();
                let target = if self.rng.chance(800) {
                    self.pick(&leaders)
                } else {
                    self.pick(&live)
                };
                if let Some(id) = target {
                    self.next_payload += 1;
                    let data = format!("p{}", self.next_payload).into_bytes();
                    let raw = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut());
                    if let Some(Ok(i)) = raw.map(|r| r.propose(data)) {
                        self.event(format!("propose p{} on {id} at {i}", self.next_payload));
                    }
                }
            }
            450..=499 => {
                if let Some(id) = self.pick(&live) {
                    let ctx = self.next_ctx;
                    self.next_ctx += 1;
                    let floor = self.max_committed();
                    let n = self.nodes.get_mut(&id).expect("node");
                    if let Some(Ok(())) = n.raw.as_mut().map(|r| r.read_index(ctx)) {
                        n.reads.insert(ctx, floor);
                        self.event(format!("read_index ctx={ctx} on {id} floor={floor}"));
                    }
                }
            }
            500..=509 => {
                let leaders = self.leader_ids();
                let voters = self.members().0;
                if let (Some(l), Some(to)) = (self.pick(&leaders), self.pick(&voters)) {
                    if let Some(r) = self.nodes.get_mut(&l).and_then(|n| n.raw.as_mut()) {
                        r.transfer_leader(to);
                    }
                    self.event(format!("transfer leader {l} -> {to}"));
                }
            }
            510..=569 => {
                if let Some(id) = self.pick(&live) {
                    self.take_snapshot(id);
                }
            }
            580..=639 => self.change_membership(),
            570..=579 => {
                if let Some(id) = self.pick(&live) {
                    let r = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut());
                    if let Some(Ok(())) = r.map(|r| r.campaign()) {
                        self.event(format!("campaign {id}"));
                    }
                }
            }
            _ => {}
        }
        if faults_on {
            self.maybe_fault(&live);
        }
        self.deliver(faults_on);
        for id in self.live() {
            self.handle_readys(id);
        }
        for id in self.live() {
            if self.rng.chance(self.faults.sync) || !faults_on {
                self.sync(id);
            }
        }
        self.check();
    }

    fn maybe_fault(&mut self, live: &[NodeId]) {
        if self.rng.chance(self.faults.crash) {
            if let Some(id) = self.pick(live) {
                let n = self.nodes.get_mut(&id).expect("node");
                let lost = n.pending.len();
                n.raw = None;
                n.pending.clear();
                self.event(format!("crash {id} (lost {lost} unsynced writes)"));
            }
        }
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raw.is_none())
            .map(|(id, _)| *id)
            .collect();
        if !down.is_empty() && self.rng.chance(self.faults.restart) {
            if let Some(id) = self.pick(&down) {
                self.start(id);
                self.event(format!("restart {id}"));
            }
        }
        if self.groups.is_empty() && self.rng.chance(self.faults.partition) {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            for id in ids {
                let g = self.rng.below(2);
                self.groups.insert(id, g);
            }
            self.event(format!("partition {:?}", self.groups));
        } else if !self.groups.is_empty() && self.rng.chance(8) {
            self.groups.clear();
            self.event("heal".to_string());
        }
    }

    /// Membership as the current leader (or else node 1) sees it.
    fn members(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let from = self.leader_ids().first().copied().unwrap_or(1);
        match self.nodes[&from].raw.as_ref() {
            Some(r) => {
                let cs = r.status().conf_state;
                (cs.voters, cs.learners)
            }
            None => (self.initial.voters.clone(), Vec::new()),
        }
    }

    /// A random single-server change proposed on the leader, keeping at
    /// least three voters.
    fn change_membership(&mut self) {
        let leaders = self.leader_ids();
        let Some(l) = self.pick(&leaders) else {
            return;
        };
        let (voters, learners) = self.members();
        let outside: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|id| !voters.contains(id) && !learners.contains(id))
            .collect();
        let cc = match self.rng.below(4) {
            0 => self.pick(&outside).map(|id| ConfChange::AddLearner {
                id,
                context: vec![],
            }),
            1 => self.pick(&outside).map(|id| ConfChange::AddVoter {
                id,
                context: vec![],
            }),
            2 => self.pick(&learners).map(|id| ConfChange::Promote { id }),
            _ if voters.len() > 3 || !learners.is_empty() => {
                let all: Vec<NodeId> = if voters.len() > 3 {
                    voters.iter().chain(&learners).copied().collect()
                } else {
                    learners.clone()
                };
                self.pick(&all).map(|id| ConfChange::Remove { id })
            }
            _ => None,
        };
        let Some(cc) = cc else { return };
        let raw = self.nodes.get_mut(&l).and_then(|n| n.raw.as_mut());
        match raw.map(|r| r.propose_conf_change(cc.clone())) {
            Some(Ok(i)) => self.event(format!("conf change {cc:?} on {l} at {i}")),
            Some(Err(e)) => {
                let st = self.nodes[&l].raw.as_ref().map(|r| {
                    (
                        r.status().applied,
                        r.status().commit,
                        r.status().persisted,
                        r.status().last_index,
                    )
                });
                self.event(format!("conf change {cc:?} on {l} refused: {e} {st:?}"))
            }
            None => {}
        }
    }

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.groups.get(&a) == self.groups.get(&b)
    }

    fn deliver(&mut self, faults_on: bool) {
        let mut due = Vec::new();
        let mut i = 0;
        while i < self.net.len() {
            if self.net[i].deliver_at <= self.now {
                due.push(self.net.swap_remove(i));
            } else {
                i += 1;
            }
        }
        // Random order: reordering.
        for k in (1..due.len()).rev() {
            let j = self.rng.below(k as u64 + 1) as usize;
            due.swap(k, j);
        }
        for f in due {
            if !self.connected(f.msg.from, f.msg.to) {
                continue;
            }
            if faults_on && self.rng.chance(self.faults.drop) {
                if f.msg.kind == MessageKind::Snapshot {
                    self.report_snapshot(f.msg.from, f.msg.to, false);
                }
                continue;
            }
            if faults_on && self.rng.chance(self.faults.duplicate) {
                let at = self.now + 1 + self.rng.below(self.faults.max_delay);
                self.net.push(InFlight {
                    msg: f.msg.clone(),
                    image: f.image.clone(),
                    deliver_at: at,
                });
            }
            self.step_message(f);
        }
    }

    fn report_snapshot(&mut self, from: NodeId, to: NodeId, ok: bool) {
        if let Some(r) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut()) {
            r.report_snapshot(to, ok);
        }
    }

    fn step_message(&mut self, f: InFlight) {
        let to = f.msg.to;
        let Some(n) = self.nodes.get_mut(&to) else {
            return;
        };
        if n.raw.is_none() {
            return;
        }
        let snap_index = f.msg.snapshot.as_ref().map(|m| m.index);
        if f.msg.kind == MessageKind::Snapshot {
            n.incoming_image = f.image;
            let from = f.msg.from;
            self.event(format!("deliver snapshot {snap_index:?} {from} -> {to}"));
        }
        let Some(raw) = self.nodes.get_mut(&to).and_then(|n| n.raw.as_mut()) else {
            return;
        };
        match raw.step(f.msg) {
            Ok(()) => {}
            Err(RaftError::Misdirected { .. }) => self.fail("misdirected".to_string()),
            Err(e) => self.fail(format!("step failed on {to}: {e}")),
        }
    }

    fn send(&mut self, msgs: Vec<Message>, sm: &[Entry]) {
        for m in msgs {
            if m.kind == MessageKind::VoteResp && !m.reject {
                match self.votes.get(&(m.from, m.term)) {
                    Some(&c) if c != m.to => self.fail(format!(
                        "vote safety: {} voted for {c} and {} in term {}",
                        m.from, m.to, m.term
                    )),
                    Some(_) => {}
                    None => {
                        self.votes.insert((m.from, m.term), m.to);
                    }
                }
            }
            let image = (m.kind == MessageKind::Snapshot).then(|| {
                let idx = m.snapshot.as_ref().map_or(0, |s| s.index) as usize;
                sm[..idx].to_vec()
            });
            let at = self.now + self.rng.below(self.faults.max_delay + 1);
            self.net.push(InFlight {
                msg: m,
                image,
                deliver_at: at,
            });
        }
    }

    fn handle_readys(&mut self, id: NodeId) {
        for _ in 0..16 {
            let n = self.nodes.get_mut(&id).expect("node");
            let Some(raw) = n.raw.as_mut() else { return };
            if !raw.has_ready() {
                return;
            }
            let mut rd = raw.ready();
            if let Some(s) = &rd.snapshot {
                let Some(image) = n.incoming_image.take() else {
                    self.fail(format!("node {id}: snapshot {} without its image", s.index));
                };
                if image.len() as u64 != s.index {
                    self.fail(format!(
                        "node {id}: image length {} for snapshot {}",
                        image.len(),
                        s.index
                    ));
                }
                n.sm = image;
                n.conf = s.conf_state.clone();
            }
            let msgs = std::mem::take(&mut rd.messages);
            let sm_for_send = n.sm.clone();
            let write = Write {
                snapshot: rd.snapshot.clone().map(|s| (s, n.sm.clone())),
                entries: rd.entries.clone(),
                hs: rd.hard_state,
                msgs: std::mem::take(&mut rd.persisted_messages),
                upto: rd.persisted_upto(),
            };
            n.pending.push_back(write);
            self.send(msgs, &sm_for_send);
            let committed = std::mem::take(&mut rd.committed_entries);
            for e in &committed {
                self.apply(id, e);
            }
            let read_states = std::mem::take(&mut rd.read_states);
            for rs in read_states {
                let n = self.nodes.get_mut(&id).expect("node");
                if let Some(floor) = n.reads.remove(&rs.ctx) {
                    if rs.index < floor {
                        self.fail(format!(
                            "node {id}: read ctx={} got index {} below committed {floor}",
                            rs.ctx, rs.index
                        ));
                    }
                    self.reads_served += 1;
                    self.event(format!(
                        "read ctx={} served at {} on {id}",
                        rs.ctx, rs.index
                    ));
                }
            }
            let n = self.nodes.get_mut(&id).expect("node");
            if let Some(raw) = n.raw.as_mut() {
                raw.advance(rd);
            }
        }
    }

    fn apply(&mut self, id: NodeId, e: &Entry) {
        let n = self.nodes.get_mut(&id).expect("node");
        if e.index != n.sm.len() as u64 + 1 {
            let have = n.sm.len();
            self.fail(format!("node {id}: applying {} after {have}", e.index));
        }
        n.sm.push(e.clone());
        if e.kind == EntryKind::ConfChange {
            match ConfChange::decode(&e.data) {
                Ok(cc) => {
                    if let Some(raw) = n.raw.as_mut() {
                        n.conf = raw.apply_conf_change(&cc);
                    }
                }
                Err(err) => self.fail(format!("conf change does not decode: {err}")),
            }
        }
        match self.committed.get(&e.index) {
            Some((t, d)) if *t != e.term || *d != e.data => {
                let what = format!(
                    "state machine safety: node {id} applied {}/{} {:?}, another applied {}/{t} {:?}",
                    e.index,
                    e.term,
                    String::from_utf8_lossy(&e.data),
                    e.index,
                    String::from_utf8_lossy(d)
                );
                self.fail(what);
            }
            Some(_) => {}
            None => {
                self.committed.insert(e.index, (e.term, e.data.clone()));
            }
        }
    }

    /// Makes some of `id`'s pending writes durable (one "fsync").
    fn sync(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).expect("node");
        if n.pending.is_empty() || n.raw.is_none() {
            return;
        }
        let k = 1 + self.rng.below(n.pending.len() as u64) as usize;
        let mut msgs = Vec::new();
        let mut upto = None;
        for w in n.pending.drain(..k) {
            if let Some((meta, image)) = w.snapshot {
                n.disk.entries.clear();
                n.disk.snap = Some((meta, image));
            }
            if let Some(first) = w.entries.first() {
                let base = n.disk.snap.as_ref().map_or(0, |(m, _)| m.index);
                n.disk.entries.truncate((first.index - base - 1) as usize);
                n.disk.entries.extend(w.entries);
            }
            if let Some(hs) = w.hs {
                n.disk.hs = hs;
            }
            msgs.extend(w.msgs);
            upto = w.upto.or(upto);
        }
        if let (Some((i, t)), Some(raw)) = (upto, n.raw.as_mut()) {
            raw.on_persisted(i, t);
        }
        let sm = n.sm.clone();
        self.send(msgs, &sm);
    }

    fn take_snapshot(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).expect("node");
        let applied = n.sm.len() as u64;
        let base = n.disk.snap.as_ref().map_or(0, |(m, _)| m.index);
        if applied <= base + 3 {
            return;
        }
        // The image must cover only what is durable, and no write still in
        // flight may touch the log below it (e.g. an unsynced snapshot
        // install): take snapshots when the disk is idle.
        let persisted = base + n.disk.entries.len() as u64;
        if applied > persisted || !n.pending.is_empty() {
            return;
        }
        let meta = SnapshotMeta {
            index: applied,
            term: n.sm[applied as usize - 1].term,
            conf_state: n.conf.clone(),
        };
        n.disk.entries.drain(..(applied - base) as usize);
        n.disk.snap = Some((meta.clone(), n.sm.clone()));
        if let Some(raw) = n.raw.as_mut() {
            raw.on_snapshot_taken(meta);
        }
        self.event(format!("snapshot on {id} at {applied}"));
    }

    pub fn run(&mut self) {
        for _ in 0..self.opts.steps {
            self.step(true);
        }
        self.converge();
    }

    pub fn committed_count(&self) -> usize {
        self.committed.len()
    }
}
