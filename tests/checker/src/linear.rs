//! Linearizability search over the whole store (Wing & Gong, with Lowe's
//! memoisation, as in porcupine). Two things keep it tractable without
//! partitioning by key:
//!
//! - revisions pin writes: an acknowledged write with header revision R can
//!   only be placed where the model is at R - 1, and a linearizable read
//!   only where the model is at its header revision;
//! - an operation with an unknown outcome is non-deterministic: placing it
//!   yields both "applied here" and "never applied", so the search carries a
//!   small *set* of states (deduplicated) instead of branching on it.
//!
//! An unknown operation's return time is infinite: it may take effect at any
//! time after its invocation (or never).

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::history::{EventKind, Request, Response, WatchEvent};
use crate::model::{State, apply, in_range, same_answer};

/// What watches saw of one revision: on keys of `[key, range_end)` the
/// revision's events were exactly `events` (compared with `prev_kv` only if
/// the watch asked for it). Lets the search tell which unknown writes
/// applied even when no read saw them (a delete, an overwritten put).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRevision {
    pub key: String,
    pub range_end: String,
    pub prev_kv: bool,
    pub events: Vec<WatchEvent>,
    /// The stream started at a compaction of this revision, so the
    /// revision's deletions may be missing from `events` (etcd drops a
    /// key whose last version at the compaction revision is a deletion)
    /// and its events may lack `prev_kv` (the previous versions are older
    /// than the compaction revision and gone: etcd reads `prev_kv` at the
    /// event's revision - 1 and leaves it out when that is compacted).
    pub deletions_dropped: bool,
}

/// Revision -> what watches saw of it.
pub type Constraints = HashMap<i64, Vec<SeenRevision>>;

fn fits_watches(c: &Constraints, revision: i64, events: &[WatchEvent]) -> bool {
    let Some(seen) = c.get(&revision) else {
        return true;
    };
    seen.iter().all(|w| {
        let mut mine = events
            .iter()
            .filter(|e| in_range(&e.kv.key, &w.key, &w.range_end));
        let dropped = |m: &WatchEvent| w.deletions_dropped && m.kind == EventKind::Delete;
        let same = w.events.iter().all(|s| {
            loop {
                match mine.next() {
                    Some(m)
                        if m.kind == s.kind
                            && m.kv == s.kv
                            && (!w.prev_kv
                                || m.prev_kv == s.prev_kv
                                || (w.deletions_dropped && s.prev_kv.is_none())) =>
                    {
                        break true;
                    }
                    Some(m) if dropped(m) => {}
                    _ => break false,
                }
            }
        });
        same && mine.all(dropped)
    })
}

/// What the history says about one operation that takes part in the search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Acknowledged with this response.
    Ok(Response),
    /// Outcome unknown and never observed: applied or not.
    Unknown,
    /// Outcome unknown, but one of its values was observed at this revision.
    Applied { revision: i64 },
    /// A lease expiry (the request is the lease's revoke): nobody asked for
    /// it, it happens between its invoke and complete times (the bounds
    /// etcd's lessor keeps), and does nothing if the lease is already gone.
    Expiry,
}

/// One operation of the search.
#[derive(Debug, Clone)]
pub struct LinOp {
    /// Index in the history's operation list (for reports; for an expiry,
    /// the lease's grant).
    pub index: usize,
    pub invoke_ns: u64,
    /// `u64::MAX` for unknown outcomes.
    pub complete_ns: u64,
    pub request: Request,
    pub expect: Expect,
}

/// Why the search gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchError {
    /// No order exists. `op` is the position (in the searched operations)
    /// of an operation that could not be placed at the deepest point the
    /// search reached.
    NotLinearizable {
        op: usize,
        placed: usize,
        revisions: Vec<i64>,
    },
    /// The step budget ran out before an answer; `op`, `placed` and
    /// `revisions` as for `NotLinearizable` (where the search was stuck).
    Budget {
        steps: u64,
        op: usize,
        placed: usize,
        revisions: Vec<i64>,
    },
}

/// Model step on a state set: every state the op can lead to given what the
/// history says about it. Empty = the op cannot go here.
pub fn step(states: &[State], op: &LinOp, seen: &Constraints) -> Vec<State> {
    let mut out: Vec<State> = Vec::with_capacity(states.len() * 2);
    for s in states {
        let a = apply(s, &op.request);
        // Applying it here contradicts the watches: only "not applied"
        // remains (for an unknown outcome).
        let fits =
            a.state.revision == s.revision || fits_watches(seen, a.state.revision, &a.events);
        match &op.expect {
            Expect::Ok(want) => {
                if fits && a.response.as_ref().is_ok_and(|got| same_answer(got, want)) {
                    out.push(a.state);
                }
            }
            Expect::Unknown => {
                out.push(s.clone());
                if fits && a.response.is_ok() && a.state != *s {
                    out.push(a.state);
                }
            }
            Expect::Applied { revision } => {
                if fits
                    && a.response.is_ok()
                    && a.state.revision == *revision
                    && *revision > s.revision
                {
                    out.push(a.state);
                }
            }
            Expect::Expiry => match a.response {
                // Revoked or never granted: the expiry does nothing.
                Err(_) => out.push(s.clone()),
                Ok(_) if fits => out.push(a.state),
                Ok(_) => {}
            },
        }
    }
    out.sort();
    out.dedup();
    out
}

const NIL: usize = usize::MAX;

/// A (placed-operations set, state set) pair the search has been at, as a
/// fingerprint: the set's Zobrist hash (128 bits, updated in O(1) per
/// placement) and the state set's hash. Fixed size, so the memo grows by
/// 32 bytes per step, not by a bitset of every operation (with exact
/// bitsets a 180,000-operation history needed 23 KB per step and the
/// search of an 8-minute chaos run took 24 GB). Two different pairs could
/// share a fingerprint only by a 192-bit collision; if they did, the
/// search would skip a branch it had not explored, which can only make it
/// report a violation it should not — never miss one.
type Explored = (u128, u64);

/// The Zobrist key of operation `op`: fixed pseudo-random bits
/// (splitmix64 of the index), so a set's key is the XOR of its members'.
fn zobrist(op: usize) -> u128 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let i = op as u64;
    u128::from(mix(2 * i)) << 64 | u128::from(mix(2 * i + 1))
}

/// The entry list: call and return events sorted by time (calls first on
/// ties, so touching operations count as concurrent), doubly linked so
/// placed operations can be lifted out and put back.
struct Entries {
    /// Operation index (into `ops`) of each entry.
    op: Vec<usize>,
    is_call: Vec<bool>,
    /// For a call entry, its return entry.
    matching: Vec<usize>,
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl Entries {
    fn new(ops: &[LinOp]) -> Entries {
        let mut ev: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            ev.push((o.invoke_ns, true, i));
            ev.push((o.complete_ns.max(o.invoke_ns), false, i));
        }
        // Calls before returns at equal times: (time, !is_call).
        ev.sort_by_key(|&(t, call, i)| (t, !call, i));
        let n = ev.len();
        let head = n;
        let mut e = Entries {
            op: ev.iter().map(|x| x.2).collect(),
            is_call: ev.iter().map(|x| x.1).collect(),
            matching: vec![NIL; n],
            next: (0..=n)
                .map(|i| if i + 1 < n { i + 1 } else { NIL })
                .collect(),
            prev: (0..=n).map(|i| if i == 0 { head } else { i - 1 }).collect(),
            head,
        };
        e.next[head] = if n > 0 { 0 } else { NIL };
        let mut call_of = vec![NIL; ops.len()];
        for i in 0..n {
            if e.is_call[i] {
                call_of[e.op[i]] = i;
            } else {
                e.matching[call_of[e.op[i]]] = i;
            }
        }
        e
    }

    fn lift(&mut self, call: usize) {
        let (p, n) = (self.prev[call], self.next[call]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
        let ret = self.matching[call];
        let (p, n) = (self.prev[ret], self.next[ret]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.matching[call];
        let p = self.prev[ret];
        self.next[p] = ret;
        let n = self.next[ret];
        if n != NIL {
            self.prev[n] = ret;
        }
        let p = self.prev[call];
        self.next[p] = call;
        let n = self.next[call];
        if n != NIL {
            self.prev[n] = call;
        }
    }
}

fn states_hash(states: &[State]) -> u64 {
    let mut h = DefaultHasher::new();
    states.hash(&mut h);
    h.finish()
}

/// Searches for a linearization of `ops` from `init`. On success returns
/// the operations (indices into `ops`) in linearization order.
pub fn search(
    init: &State,
    ops: &[LinOp],
    seen: &Constraints,
    max_steps: u64,
) -> Result<Vec<usize>, SearchError> {
    let mut e = Entries::new(ops);
    // Zobrist key of the placed operations.
    let mut linearized = 0u128;
    let mut states = vec![init.clone()];
    let mut stack: Vec<(usize, Vec<State>)> = Vec::new();
    // (placed set, state set) pairs already explored.
    let mut cache: HashSet<Explored> = HashSet::new();
    let mut best: (usize, usize, Vec<i64>) = (0, 0, Vec::new());
    let mut steps = 0u64;
    let mut entry = e.next[e.head];
    while e.next[e.head] != NIL {
        steps += 1;
        if steps > max_steps {
            return Err(SearchError::Budget {
                steps,
                op: best.1,
                placed: best.0,
                revisions: best.2,
            });
        }
        if entry == NIL {
            // Only reachable with inconsistent entry lists; treat as dead end.
            return Err(SearchError::NotLinearizable {
                op: best.1,
                placed: best.0,
                revisions: best.2,
            });
        }
        let op = e.op[entry];
        if e.is_call[entry] {
            let next_states = step(&states, &ops[op], seen);
            if !next_states.is_empty() {
                let placed = linearized ^ zobrist(op);
                if cache.insert((placed, states_hash(&next_states))) {
                    stack.push((entry, std::mem::replace(&mut states, next_states)));
                    linearized = placed;
                    e.lift(entry);
                    entry = e.next[e.head];
                    continue;
                }
            }
            entry = e.next[entry];
        } else {
            if stack.len() >= best.0 {
                best = (stack.len(), op, states.iter().map(|s| s.revision).collect());
            }
            let Some((call, prev_states)) = stack.pop() else {
                return Err(SearchError::NotLinearizable {
                    op: best.1,
                    placed: best.0,
                    revisions: best.2,
                });
            };
            linearized ^= zobrist(e.op[call]);
            states = prev_states;
            e.unlift(call);
            entry = e.next[call];
        }
    }
    Ok(stack.iter().map(|(call, _)| e.op[*call]).collect())
}

/// Concrete runs along a found order: which unknown operations applied.
/// Returns up to `max_paths` distinct runs (distinct final states), each as
/// the states after each op of `order`. Several exist when unknown
/// operations were neither read nor acknowledged; the caller picks the one
/// the watches agree with. Empty if none fits (cannot happen after a
/// successful `search` on the same order).
pub fn concretize(
    init: &State,
    ops: &[LinOp],
    seen: &Constraints,
    order: &[usize],
    max_paths: usize,
) -> Vec<Vec<State>> {
    // Arena of (state, parent node); frontier deduplicated by state.
    let mut arena: Vec<(State, usize)> = vec![(init.clone(), NIL)];
    let mut frontier: Vec<usize> = vec![0];
    for &i in order {
        let mut next: Vec<usize> = Vec::new();
        for &node in &frontier {
            let s = arena[node].0.clone();
            for t in step(std::slice::from_ref(&s), &ops[i], seen) {
                if !next.iter().any(|&n| arena[n].0 == t) {
                    arena.push((t, node));
                    next.push(arena.len() - 1);
                }
            }
        }
        if next.is_empty() {
            return Vec::new();
        }
        frontier = next;
    }
    frontier
        .iter()
        .take(max_paths)
        .map(|&end| {
            let mut path = Vec::with_capacity(order.len());
            let mut node = end;
            while arena[node].1 != NIL {
                path.push(arena[node].0.clone());
                node = arena[node].1;
            }
            path.reverse();
            path
        })
        .collect()
}
