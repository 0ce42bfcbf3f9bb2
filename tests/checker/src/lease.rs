//! Lease expiry: a revoke nobody asked for, added to the linearizability
//! search as one operation per granted lease, with the time bounds etcd's
//! lessor guarantees as its invoke and complete times:
//!
//! - **never early**: a lease lives at least its TTL past its grant and
//!   past every keep-alive answered with a TTL (the leader renewed it at
//!   some moment after the keep-alive was sent), so the expiry cannot take
//!   effect before `max(grant, acknowledged keep-alives) invoke + TTL`;
//! - **never much late**: the lease was last renewed no later than the last
//!   answer (or give-up time of an unanswered keep-alive); after that the
//!   leader revokes it within TTL, and a new leader gives it a full TTL plus
//!   one election timeout from its election (etcd's `Promote(extend)`), so
//!   every leader change (`History::leader_changes_ns`) while the lease
//!   may still be alive pushes the bound out. The expiry must have taken
//!   effect by that bound plus an election timeout plus `slack_ms` (the
//!   revoke's Raft round on a loaded host). A lease whose grant has an
//!   unknown outcome has no upper bound (it may have been applied late).
//!
//! The model makes the expiry one revision deleting all the lease's keys,
//! and a no-op if the lease was revoked first; a keep-alive answered with a
//! TTL is a read of the lease's existence.
//!
//! What keeps the search small: the expiry cannot precede any acknowledged
//! *use* of the lease (a put or txn put with it, a keep-alive answered with
//! a TTL, a linearizable read showing a key with it, its revoke), so its
//! invoke time is also at least the last use's invoke. After that point
//! nothing in the search can refute an expiry that deletes no key (the
//! lease's keys were overwritten), so such an expiry is placed once and
//! never backtracked over; one that deletes keys makes a revision, which
//! the watches and the acknowledged revisions pin. A lease with an
//! acknowledged revoke gets no expiry (it existed until the revoke); an
//! acknowledged use invoked past the latest allowed expiry is reported at
//! once (`outlived_uses`). A keep-alive answered TTL 0 is
//! not checked: corekv answers it as soon as the lessor finds the lease
//! expired, before the revoke applies (etcd waits for the revoke).

use std::collections::{BTreeMap, BTreeSet};

use crate::history::{
    EventKind, History, Outcome, Request, Response, TxnOp, TxnOpResult, txn_branch,
};
use crate::linear::{Expect, LinOp};
use crate::model::in_range;

/// What the expiry bounds of one lease were computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    pub id: i64,
    /// History index of the grant.
    pub grant: usize,
    pub ttl_s: i64,
    /// The expiry may not take effect before this time.
    pub earliest_ns: u64,
    /// It must have taken effect by this time (`u64::MAX`: no bound).
    pub deadline_ns: u64,
    /// Invoke time of the last acknowledged use (the expiry comes later).
    pub last_use_ns: u64,
    /// History index of that use.
    pub last_use: usize,
    /// An acknowledged revoke ended it: no expiry.
    pub revoked: bool,
}

#[derive(Default)]
struct Lease {
    grant: Option<usize>,
    acked_grant: bool,
    ttl_s: i64,
    /// Latest invoke time of the grant and of keep-alives answered with a TTL.
    renewed_from_ns: u64,
    /// Latest answer (or give-up) time of the grant and of keep-alives that
    /// may have renewed it.
    renewed_by_ns: u64,
    /// (invoke time, history index) of the last acknowledged use.
    last_use: (u64, usize),
    revoked: bool,
}

impl Lease {
    fn used(&mut self, invoke_ns: u64, index: usize) {
        self.last_use = self.last_use.max((invoke_ns, index));
    }
}

/// Leases an acknowledged operation shows alive when it took effect: puts
/// (plain or in the txn branch that ran) with a lease, keys with a lease in
/// a linearizable read or a txn's read.
fn uses(req: &Request, resp: &Response) -> Vec<i64> {
    let mut out = Vec::new();
    if let Some((ops, results)) = txn_branch(req, resp) {
        for op in ops {
            if let TxnOp::Put { lease, .. } = op {
                out.push(*lease);
            }
        }
        for r in results {
            if let TxnOpResult::Get { kvs } = r {
                out.extend(kvs.iter().map(|kv| kv.lease));
            }
        }
    }
    match (req, resp) {
        (Request::Put { lease, .. }, Response::Put { .. }) => out.push(*lease),
        (
            Request::Range {
                revision: 0,
                serializable: false,
                ..
            },
            Response::Range { kvs, .. },
        ) => out.extend(kvs.iter().map(|kv| kv.lease)),
        _ => {}
    }
    out.retain(|l| *l != 0);
    out
}

const MS: u64 = 1_000_000;

/// Expiry bounds of every lease granted (acknowledged or unknown) in `h`.
pub fn bounds(h: &History, slack_ms: u64) -> Vec<Bounds> {
    let mut leases: BTreeMap<i64, Lease> = BTreeMap::new();
    for (i, op) in h.operations.iter().enumerate() {
        match (&op.request, &op.outcome) {
            (Request::LeaseGrant { id, ttl }, Outcome::Ok(_) | Outcome::Unknown(_)) => {
                let l = leases.entry(*id).or_default();
                if l.grant.is_some() {
                    continue;
                }
                l.grant = Some(i);
                l.acked_grant = matches!(op.outcome, Outcome::Ok(_));
                l.ttl_s = l.ttl_s.max(*ttl);
                l.renewed_from_ns = l.renewed_from_ns.max(op.invoke_ns);
                l.renewed_by_ns = l.renewed_by_ns.max(op.complete_ns);
            }
            (Request::LeaseKeepAlive { id }, Outcome::Ok(Response::LeaseKeepAlive { ttl }))
                if *ttl > 0 =>
            {
                let l = leases.entry(*id).or_default();
                l.ttl_s = l.ttl_s.max(*ttl);
                l.renewed_from_ns = l.renewed_from_ns.max(op.invoke_ns);
                l.renewed_by_ns = l.renewed_by_ns.max(op.complete_ns);
                l.used(op.invoke_ns, i);
            }
            (Request::LeaseRevoke { id }, Outcome::Ok(_)) => {
                let l = leases.entry(*id).or_default();
                l.revoked = true;
                l.used(op.invoke_ns, i);
            }
            (req, Outcome::Ok(resp)) => {
                for id in uses(req, resp) {
                    leases.entry(id).or_default().used(op.invoke_ns, i);
                }
            }
            (Request::LeaseKeepAlive { id }, Outcome::Unknown(_)) => {
                let l = leases.entry(*id).or_default();
                l.renewed_by_ns = l.renewed_by_ns.max(op.complete_ns);
            }
            _ => {}
        }
    }
    let mut changes = h.leader_changes_ns.clone();
    changes.sort_unstable();
    let extend = h.election_timeout_ms.saturating_mul(MS);
    let slack = slack_ms.saturating_mul(MS);
    leases
        .into_iter()
        .filter_map(|(id, l)| {
            let grant = l.grant?;
            let ttl = u64::try_from(l.ttl_s)
                .unwrap_or(0)
                .saturating_mul(1_000 * MS);
            let earliest_ns = l.renewed_from_ns.saturating_add(ttl);
            let deadline_ns = if l.acked_grant {
                let mut due = l.renewed_by_ns.saturating_add(ttl);
                for &at in &changes {
                    // The lease may still be alive when this leader takes
                    // over: it restarts the lease's TTL.
                    if at >= l.renewed_from_ns && at <= due.saturating_add(extend + slack) {
                        due = due.max(at.saturating_add(ttl + extend));
                    }
                }
                due.saturating_add(extend + slack)
            } else {
                u64::MAX
            };
            Some(Bounds {
                id,
                grant,
                ttl_s: l.ttl_s,
                earliest_ns,
                deadline_ns,
                last_use_ns: l.last_use.0,
                last_use: l.last_use.1,
                revoked: l.revoked,
            })
        })
        .collect()
}

/// How much of the bounds the search is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Both bounds.
    Both,
    /// Not late is dropped (finds leases that outlived their bound).
    NoDeadline,
    /// Neither (finds leases that expired early).
    None,
}

/// Acknowledged uses invoked after the lease's latest allowed expiry.
pub fn outlived_uses(bounds: &[Bounds]) -> Vec<String> {
    bounds
        .iter()
        .filter(|b| b.last_use_ns > b.deadline_ns)
        .map(|b| {
            format!(
                "lease {:#x} (TTL {} s, granted by operation #{}) was still used by operation #{}, invoked {} ms past its latest allowed expiry",
                b.id,
                b.ttl_s,
                b.grant,
                b.last_use,
                (b.last_use_ns - b.deadline_ns) / MS
            )
        })
        .collect()
}

/// The expiry operations for the search (none for revoked leases).
pub fn expiries(bounds: &[Bounds], h: &History, strictness: Strictness) -> Vec<LinOp> {
    bounds
        .iter()
        .filter(|b| !b.revoked)
        .map(|b| {
            let grant_invoke = h.operations[b.grant].invoke_ns;
            let (from, complete_ns) = match strictness {
                Strictness::Both => (b.earliest_ns, b.deadline_ns),
                Strictness::NoDeadline => (b.earliest_ns, u64::MAX),
                Strictness::None => (grant_invoke, u64::MAX),
            };
            let invoke_ns = from.max(b.last_use_ns);
            LinOp {
                index: b.grant,
                invoke_ns,
                complete_ns,
                request: Request::LeaseRevoke { id: b.id },
                expect: Expect::Expiry,
            }
        })
        .collect()
}

/// In a linearization found without deadlines: the leases whose expiry is
/// placed after an operation invoked past its deadline (they outlived it).
pub fn outlived(ops: &[LinOp], order: &[usize], bounds: &[Bounds]) -> Vec<String> {
    let mut latest_invoke = 0u64;
    let mut out = Vec::new();
    for &i in order {
        let op = &ops[i];
        if let (Expect::Expiry, Request::LeaseRevoke { id }) = (&op.expect, &op.request) {
            if let Some(b) = bounds.iter().find(|b| b.id == *id) {
                if latest_invoke > b.deadline_ns {
                    out.push(format!(
                        "lease {id:#x} (TTL {} s, granted by operation #{}) still had its keys {} ms past its latest allowed expiry",
                        b.ttl_s,
                        b.grant,
                        (latest_invoke - b.deadline_ns) / MS
                    ));
                }
            }
        } else {
            latest_invoke = latest_invoke.max(op.invoke_ns);
        }
    }
    out
}

/// In a linearization found without any bounds: the leases whose expiry is
/// placed before an operation that completed before its earliest allowed
/// expiry (the effect was seen too early).
pub fn early(ops: &[LinOp], order: &[usize], bounds: &[Bounds]) -> Vec<String> {
    let mut out = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        let (Expect::Expiry, Request::LeaseRevoke { id }) = (&ops[i].expect, &ops[i].request)
        else {
            continue;
        };
        let Some(b) = bounds.iter().find(|b| b.id == *id) else {
            continue;
        };
        let seen_at = order[pos + 1..]
            .iter()
            .map(|&j| &ops[j])
            .filter(|o| o.expect != Expect::Expiry)
            .map(|o| o.complete_ns)
            .min();
        if let Some(t) = seen_at.filter(|t| *t < b.earliest_ns) {
            out.push(format!(
                "lease {id:#x} (TTL {} s, granted by operation #{}) expired at least {} ms before its TTL ran out since its grant or last acknowledged keep-alive",
                b.ttl_s,
                b.grant,
                (b.earliest_ns - t) / MS
            ));
        }
    }
    out
}

/// Without the search: revisions the watches show deleting only keys of
/// one lease, that no operation of the history can have made (no
/// acknowledged write has that revision, no write with an unknown outcome
/// could delete those keys), are that lease's expiry. The expiry happened
/// before any acknowledged operation at or past that revision completed;
/// if that is before the lease's earliest allowed expiry, it was early.
pub fn early_deletions(h: &History, bounds: &[Bounds]) -> Vec<String> {
    // Revisions acknowledged writes made (a write that changed nothing
    // answers the current revision, which may be an expiry's).
    let acked: BTreeSet<i64> = h
        .operations
        .iter()
        .filter_map(|op| match &op.outcome {
            Outcome::Ok(r) => made_revision(&op.request, r),
            Outcome::Failed(_) | Outcome::Unknown(_) => None,
        })
        .collect();
    let unknown: Vec<&Request> = h
        .operations
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Unknown(_)))
        .map(|op| &op.request)
        .collect();
    // Revision -> (lease ids of its deleted keys, 0 = something else; keys).
    let mut seen: BTreeMap<i64, (BTreeSet<i64>, BTreeSet<&str>)> = BTreeMap::new();
    for seg in h.watchers.iter().flat_map(|w| &w.segments) {
        for ev in seg.responses.iter().flat_map(|r| &r.events) {
            let lease = match (&ev.kind, &ev.prev_kv) {
                (EventKind::Delete, Some(prev)) => prev.lease,
                (EventKind::Delete, None) | (EventKind::Put, _) => 0,
            };
            let at = seen.entry(ev.kv.mod_revision).or_default();
            at.0.insert(lease);
            at.1.insert(&ev.kv.key);
        }
    }
    let mut out = Vec::new();
    for (rev, (leases, keys)) in seen {
        let (Some(&id), 1) = (leases.first(), leases.len()) else {
            continue;
        };
        let Some(b) = bounds.iter().find(|b| b.id == id && !b.revoked) else {
            continue;
        };
        if id == 0 || acked.contains(&rev) || unknown.iter().any(|r| may_delete(r, id, &keys)) {
            continue;
        }
        let seen_by = h
            .operations
            .iter()
            .enumerate()
            .filter(|(_, op)| match &op.outcome {
                Outcome::Ok(r) => {
                    write_revision(r).is_some_and(|w| w > rev) || read_at_or_past(op, r, rev)
                }
                Outcome::Failed(_) | Outcome::Unknown(_) => false,
            })
            .min_by_key(|(_, op)| op.complete_ns);
        if let Some((i, op)) = seen_by.filter(|(_, op)| op.complete_ns < b.earliest_ns) {
            out.push(format!(
                "lease {id:#x} (TTL {} s, granted by operation #{}): its keys were deleted at revision {rev} (no request did it), already seen by operation #{i} {} ms before the TTL ran out since its grant or last acknowledged keep-alive",
                b.ttl_s,
                b.grant,
                (b.earliest_ns - op.complete_ns) / MS
            ));
        }
    }
    out
}

/// A request that could have deleted some of `keys` (or revoked `lease`).
fn may_delete(req: &Request, lease: i64, keys: &BTreeSet<&str>) -> bool {
    match req {
        Request::LeaseRevoke { id } => *id == lease,
        Request::Delete { key, range_end } => keys.iter().any(|k| in_range(k, key, range_end)),
        Request::Txn {
            success, failure, ..
        } => success.iter().chain(failure).any(|op| match op {
            TxnOp::Delete { key } => keys.contains(key.as_str()),
            TxnOp::Put { .. } | TxnOp::Get { .. } => false,
        }),
        Request::Put { .. }
        | Request::Range { .. }
        | Request::Compact { .. }
        | Request::LeaseGrant { .. }
        | Request::LeaseKeepAlive { .. } => false,
    }
}

/// The revision an acknowledged put, delete or txn made, if it changed
/// something (a revoke's keys are told apart by their lease instead).
fn made_revision(req: &Request, r: &Response) -> Option<i64> {
    let changed = match r {
        Response::Put { .. } => true,
        Response::Delete { deleted, .. } => *deleted > 0,
        Response::Txn { results, .. } => {
            txn_branch(req, r)
                .is_some_and(|(ops, _)| ops.iter().any(|o| matches!(o, TxnOp::Put { .. })))
                || results
                    .iter()
                    .any(|x| matches!(x, TxnOpResult::Delete { deleted } if *deleted > 0))
        }
        Response::Range { .. }
        | Response::Compact { .. }
        | Response::LeaseGrant { .. }
        | Response::LeaseRevoke { .. }
        | Response::LeaseKeepAlive { .. } => false,
    };
    changed.then(|| write_revision(r)).flatten()
}

/// The revision an acknowledged write made (None for reads, no-ops).
fn write_revision(r: &Response) -> Option<i64> {
    match r {
        Response::Put { revision }
        | Response::Delete { revision, .. }
        | Response::Txn { revision, .. }
        | Response::LeaseRevoke { revision } => Some(*revision),
        Response::Range { .. }
        | Response::Compact { .. }
        | Response::LeaseGrant { .. }
        | Response::LeaseKeepAlive { .. } => None,
    }
}

/// A linearizable read answered at `rev` or later.
fn read_at_or_past(op: &crate::history::Operation, r: &Response, rev: i64) -> bool {
    matches!(
        (&op.request, r),
        (
            Request::Range {
                revision: 0,
                serializable: false,
                ..
            },
            Response::Range { revision, .. },
        ) if *revision >= rev
    )
}
