//! Invariant checks and the final convergence phase of the simulation.

use corekv_raftcore::{NodeId, Role};

use super::Sim;

impl Sim {
    pub(super) fn check(&mut self) {
        for id in self.live() {
            let s = self.nodes[&id].raw.as_ref().map(|r| r.status());
            let Some(s) = s else { continue };
            if s.role != Role::Leader {
                continue;
            }
            match self.leaders.get(&s.term) {
                Some(&other) if other != id => self.fail(format!(
                    "election safety: {other} and {id} lead term {}",
                    s.term
                )),
                Some(_) => {}
                None => {
                    self.leaders.insert(s.term, id);
                }
            }
            if self.nodes[&id].was_leader_term != s.term {
                self.nodes.get_mut(&id).expect("node").was_leader_term = s.term;
                self.event(format!("node {id} leads term {}", s.term));
                self.check_leader_completeness(id);
            }
        }
        if self.now % 64 == 0 {
            self.check_log_matching();
        }
    }

    fn check_leader_completeness(&self, id: NodeId) {
        let Some(raw) = self.nodes[&id].raw.as_ref() else {
            return;
        };
        let first = raw.status().first_index;
        for (&i, (t, _)) in self.committed.iter() {
            if i < first {
                continue;
            }
            if raw.term(i) != Some(*t) {
                self.fail(format!(
                    "leader completeness: leader {id} has term {:?} at committed {i}/{t}",
                    raw.term(i)
                ));
            }
        }
    }

    fn check_log_matching(&self) {
        let live = self.live();
        for (x, &a) in live.iter().enumerate() {
            for &b in &live[x + 1..] {
                let (Some(ra), Some(rb)) =
                    (self.nodes[&a].raw.as_ref(), self.nodes[&b].raw.as_ref())
                else {
                    continue;
                };
                let (sa, sb) = (ra.status(), rb.status());
                let lo = sa.first_index.max(sb.first_index);
                let hi = sa.last_index.min(sb.last_index);
                let mut matched = false;
                let mut i = hi;
                while i >= lo && i > 0 {
                    let (ta, tb) = (ra.term(i), rb.term(i));
                    if matched && ta != tb {
                        self.fail(format!(
                            "log matching: {a} and {b} agree above {i} but not at {i}"
                        ));
                    }
                    matched |= ta == tb;
                    i -= 1;
                }
            }
        }
    }

    /// Heals everything and runs without faults until every node applied
    /// everything committed and a fresh proposal committed everywhere.
    pub fn converge(&mut self) {
        self.groups.clear();
        let down: Vec<NodeId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.raw.is_none())
            .map(|(id, _)| *id)
            .collect();
        for id in down {
            self.start(id);
            self.event(format!("restart {id} (converge)"));
        }
        let marker = b"final".to_vec();
        let mut proposed_at = None;
        for _ in 0..20_000 {
            self.step(false);
            if proposed_at.is_none() {
                if let Some(l) = self.leader_ids().first().copied() {
                    let r = self.nodes.get_mut(&l).and_then(|n| n.raw.as_mut());
                    if let Some(Ok(i)) = r.map(|r| r.propose(marker.clone())) {
                        proposed_at = Some(i);
                    }
                }
            }
            let (voters, learners) = self.members();
            let members: Vec<NodeId> = voters.iter().chain(&learners).copied().collect();
            let done = !voters.is_empty()
                && members.iter().all(|id| {
                    let n = &self.nodes[id];
                    n.sm.iter().any(|e| e.data == marker)
                        && n.sm.len() as u64 >= self.max_committed()
                });
            if done {
                let first = &self.nodes[&members[0]].sm;
                for (id, n) in &self.nodes {
                    let common = first.len().min(n.sm.len());
                    if n.sm[..common] != first[..common] {
                        self.fail(format!("node {id} state machine differs after convergence"));
                    }
                }
                return;
            }
            if proposed_at.is_some() && !self.committed.values().any(|(_, d)| *d == marker) {
                // Leadership may have changed and dropped it: propose again later.
                if self.now % 500 == 0 {
                    proposed_at = None;
                }
            }
        }
        let summary: Vec<String> = self
            .nodes
            .iter()
            .map(|(id, n)| {
                let s = n.raw.as_ref().map(|r| format!("{:?}", r.status()));
                format!("{id}: applied {} {s:?}", n.sm.len())
            })
            .collect();
        self.fail(format!("no convergence: {}", summary.join("\n")));
    }
}
