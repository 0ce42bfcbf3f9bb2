//! A synchronous, deterministic in-memory cluster for paper and scenario
//! tests: every Ready is persisted at once, messages go through one FIFO
//! queue that tests can inspect, cut or reorder.

#![allow(dead_code)]

pub mod sim;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use corekv_raftcore::{
    ConfChange, ConfState, Config, Entry, EntryKind, HardState, Message, MessageKind, NodeId,
    RawNode, ReadState, Restored, Role, SnapshotMeta,
};

pub struct Node {
    pub raw: RawNode,
    /// Durable log after `snap`.
    pub wal: Vec<Entry>,
    pub hs: HardState,
    pub snap: Option<SnapshotMeta>,
    /// The state machine: every applied entry, index i at position i - 1
    /// (installing a snapshot copies the leader's prefix).
    pub applied: Vec<Entry>,
    pub conf: ConfState,
    pub read_states: Vec<ReadState>,
}

pub struct Net {
    pub nodes: BTreeMap<NodeId, Node>,
    pub queue: VecDeque<Message>,
    /// Directed links that drop everything.
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Message kinds dropped everywhere.
    pub drop_kinds: BTreeSet<MessageKind>,
    pub initial: ConfState,
    pub cfg: Config,
}

pub fn cfg_for(id: NodeId, base: &Config) -> Config {
    Config {
        id,
        seed: id.wrapping_mul(0x9E37_79B9) ^ base.seed,
        ..base.clone()
    }
}

impl Net {
    pub fn new(voters: &[NodeId], learners: &[NodeId], base: Config) -> Net {
        let initial = ConfState {
            voters: voters.to_vec(),
            learners: learners.to_vec(),
        };
        let mut net = Net {
            nodes: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            drop_kinds: BTreeSet::new(),
            initial,
            cfg: base,
        };
        for &id in voters.iter().chain(learners) {
            net.add_node(id);
        }
        net
    }

    /// Starts a fresh member `id` with an empty log.
    pub fn add_node(&mut self, id: NodeId) {
        let raw = RawNode::new(
            cfg_for(id, &self.cfg),
            self.initial.clone(),
            Restored::default(),
        )
        .expect("valid node");
        self.nodes.insert(
            id,
            Node {
                raw,
                wal: Vec::new(),
                hs: HardState::default(),
                snap: None,
                applied: Vec::new(),
                conf: self.initial.clone(),
                read_states: Vec::new(),
            },
        );
    }

    /// Restarts `id` from its durable state (everything here is durable).
    pub fn restart(&mut self, id: NodeId) {
        let n = self.nodes.get_mut(&id).expect("node");
        let restored = Restored {
            hard_state: n.hs,
            snapshot: n.snap.clone(),
            entries: n.wal.clone(),
            applied: n.applied.len() as u64,
        };
        n.raw =
            RawNode::new(cfg_for(id, &self.cfg), self.initial.clone(), restored).expect("restart");
        n.read_states.clear();
    }

    pub fn node(&mut self, id: NodeId) -> &mut RawNode {
        &mut self.nodes.get_mut(&id).expect("node").raw
    }

    /// Handles one Ready of `id` synchronously; queues its messages.
    pub fn ready(&mut self, id: NodeId) -> bool {
        let n = self.nodes.get_mut(&id).expect("node");
        if !n.raw.has_ready() {
            return false;
        }
        let rd = n.raw.ready();
        if let Some(s) = &rd.snapshot {
            n.snap = Some(s.clone());
            n.wal.clear();
            n.conf = s.conf_state.clone();
        }
        if let Some(first) = rd.entries.first() {
            let base = n.snap.as_ref().map_or(0, |s| s.index);
            n.wal.truncate((first.index - base - 1) as usize);
            n.wal.extend(rd.entries.iter().cloned());
        }
        if let Some(hs) = rd.hard_state {
            n.hs = hs;
        }
        self.queue.extend(rd.messages.iter().cloned());
        if let Some((i, t)) = rd.persisted_upto() {
            n.raw.on_persisted(i, t);
        }
        self.queue.extend(rd.persisted_messages.iter().cloned());
        for e in &rd.committed_entries {
            assert_eq!(e.index, n.applied.len() as u64 + 1, "apply order on {id}");
            if e.kind == EntryKind::ConfChange {
                let cc = ConfChange::decode(&e.data).expect("conf change decodes");
                n.conf = n.raw.apply_conf_change(&cc);
            }
            n.applied.push(e.clone());
        }
        n.read_states.extend(rd.read_states.iter().copied());
        n.raw.advance(rd);
        true
    }

    /// Handles Readys of every node (in id order) until none has one.
    pub fn flush(&mut self) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        loop {
            let mut any = false;
            for &id in &ids {
                any |= self.ready(id);
            }
            if !any {
                return;
            }
        }
    }

    /// Delivers `m` unless its link or kind is cut. Returns whether delivered.
    pub fn deliver(&mut self, m: Message) -> bool {
        if self.cut.contains(&(m.from, m.to)) || self.drop_kinds.contains(&m.kind) {
            return false;
        }
        let from = m.from;
        let Some(_) = self.nodes.get(&m.to) else {
            return false;
        };
        if m.kind == MessageKind::Snapshot {
            // The image travels beside the message.
            let s = m.snapshot.as_ref().expect("snapshot meta");
            let image: Vec<Entry> = self.nodes[&from].applied[..s.index as usize].to_vec();
            let to = self.nodes.get_mut(&m.to).expect("node");
            to.applied = image;
        }
        let to = m.to;
        self.node(to).step(m).expect("step");
        true
    }

    /// Runs Readys and delivers messages until the cluster is quiet.
    /// Returns the delivered messages.
    pub fn stabilize(&mut self) -> Vec<Message> {
        let mut delivered = Vec::new();
        for _ in 0..100_000 {
            self.flush();
            let Some(m) = self.queue.pop_front() else {
                return delivered;
            };
            if self.deliver(m.clone()) {
                delivered.push(m);
            }
        }
        panic!("cluster did not stabilize");
    }

    pub fn tick(&mut self, id: NodeId, times: usize) {
        for _ in 0..times {
            self.node(id).tick();
        }
    }

    pub fn tick_all(&mut self, times: usize) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for _ in 0..times {
            for &id in &ids {
                self.node(id).tick();
            }
        }
    }

    pub fn campaign(&mut self, id: NodeId) {
        self.node(id).campaign().expect("campaign");
        self.stabilize();
    }

    pub fn isolate(&mut self, id: NodeId) {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for other in ids.into_iter().filter(|&o| o != id) {
            self.cut.insert((id, other));
            self.cut.insert((other, id));
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
        self.drop_kinds.clear();
    }

    pub fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.raw.status().role == Role::Leader)
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn propose(&mut self, id: NodeId, data: &[u8]) -> u64 {
        let index = self.node(id).propose(data.to_vec()).expect("propose");
        self.stabilize();
        index
    }

    pub fn applied_data(&self, id: NodeId) -> Vec<Vec<u8>> {
        self.nodes[&id]
            .applied
            .iter()
            .filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty())
            .map(|e| e.data.clone())
            .collect()
    }
}

/// One-line rendering of a message for traces.
pub fn fmt_msg(m: &Message) -> String {
    let mut s = format!("{}->{} {} term={}", m.from, m.to, m.kind.name(), m.term);
    match m.kind {
        MessageKind::App => {
            s += &format!(" prev={}/{} commit={}", m.index, m.log_term, m.commit);
            if !m.entries.is_empty() {
                let es: Vec<String> = m
                    .entries
                    .iter()
                    .map(|e| {
                        let d = String::from_utf8_lossy(&e.data);
                        match e.kind {
                            EntryKind::ConfChange => format!("{}/{}:conf", e.index, e.term),
                            EntryKind::Normal if d.is_empty() => format!("{}/{}", e.index, e.term),
                            EntryKind::Normal => format!("{}/{}:{d}", e.index, e.term),
                        }
                    })
                    .collect();
                s += &format!(" [{}]", es.join(" "));
            }
        }
        MessageKind::AppResp if m.reject => {
            s += &format!(
                " rejected={} hint={}/{}",
                m.index, m.reject_hint, m.log_term
            )
        }
        MessageKind::AppResp | MessageKind::ReadIndexResp => s += &format!(" index={}", m.index),
        MessageKind::Vote | MessageKind::PreVote => {
            s += &format!(" last={}/{}", m.index, m.log_term);
            if m.context != 0 {
                s += " transfer";
            }
        }
        MessageKind::VoteResp | MessageKind::PreVoteResp if m.reject => s += " rejected",
        MessageKind::Heartbeat => s += &format!(" commit={}", m.commit),
        MessageKind::Snapshot => {
            if let Some(meta) = &m.snapshot {
                s += &format!(
                    " snap={}/{} voters={:?} learners={:?}",
                    meta.index, meta.term, meta.conf_state.voters, meta.conf_state.learners
                );
            }
        }
        _ => {}
    }
    if matches!(
        m.kind,
        MessageKind::Heartbeat
            | MessageKind::HeartbeatResp
            | MessageKind::ReadIndex
            | MessageKind::ReadIndexResp
    ) && m.context != 0
    {
        s += &format!(" ctx={}", m.context);
    }
    if m.kind == MessageKind::TransferLeader {
        s += &format!(" to={}", m.context);
    }
    s
}
