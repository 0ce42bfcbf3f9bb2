//! corekv's history checker: is what the clients saw possible for a
//! correct etcd-compatible store?
//!
//! - Linearizability of the whole store ([`linear`]): acknowledged writes,
//!   linearizable reads and operations with unknown outcome are placed in one
//!   order consistent with real time and with the sequential [`model`]
//!   (revisions, keys, values, versions, leases, compaction).
//! - Serializable and past-revision reads must equal the linearized store at
//!   the revision they report or asked for.
//! - Watch guarantees ([`watch`]) against the linearized history.
//! - HashKV agreement between members at one revision.
//! - Leases ([`lease`]): expiry is a revoke in the search, held between
//!   the earliest and latest times etcd's lessor allows.
//! - Lost acknowledged writes: an acknowledged write that a later read of
//!   its key does not reflect (counted separately for the chaos summary).

pub mod history;
pub mod lease;
pub mod linear;
pub mod model;
pub mod observe;
pub mod recorder;
pub mod truth;
pub mod watch;

use std::collections::BTreeMap;

use history::{History, Outcome, Request, Response, TxnOp, TxnOpResult, txn_branch};
use lease::Strictness;
use linear::{Constraints, Expect, LinOp, SearchError};
use model::State;
use serde::Serialize;
use truth::Truth;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ViolationKind {
    /// No order of the operations fits the model.
    NotLinearizable,
    /// A serializable or past-revision read disagrees with the history.
    StaleRead,
    /// A read or watch showed a value no write produced.
    PhantomValue,
    /// A write refused for sure was applied.
    FailedWriteApplied,
    /// An acknowledged response does not fit its request.
    Malformed,
    WatchOrder,
    WatchDuplicate,
    WatchAtomic,
    WatchGap,
    WatchPrevKv,
    WatchFlags,
    /// An event that is not the history's event.
    WatchEvent,
    HashMismatch,
    /// A lease's keys vanished before its TTL ran out since its grant or
    /// an acknowledged keep-alive.
    LeaseExpiredEarly,
    /// A lease's keys were still there past TTL + election timeout + slack
    /// after its last renewal (leader changes allowed for).
    LeaseOutlived,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    pub kind: ViolationKind,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Steps the linearizability search may take before giving up.
    pub max_search_steps: u64,
    /// Added to TTL + election timeout for the latest allowed expiry of a
    /// lease (the revoke's Raft round and apply on a loaded host).
    pub lease_slack_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_search_steps: 20_000_000,
            lease_slack_ms: 3_000,
        }
    }
}

/// The verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub operations: usize,
    pub acknowledged: usize,
    pub unknown: usize,
    pub failed: usize,
    pub watch_events: usize,
    pub final_revision: i64,
    /// Leases granted (acknowledged or unknown outcome).
    pub leases: usize,
    /// Leases whose expiry took effect in the linearization (revoked ones
    /// are not counted).
    pub expired: usize,
    /// Acknowledged writes a later read does not reflect.
    pub lost: usize,
    /// Set when the search ran out of budget (no verdict on linearizability).
    pub inconclusive: Option<String>,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.inconclusive.is_none()
    }

    pub fn has(&self, kind: ViolationKind) -> bool {
        self.violations.iter().any(|v| v.kind == kind)
    }
}

/// Concrete runs (choices of which unknown writes applied) compared with
/// the reads and watches before the checker settles on one.
const MAX_CONCRETE_RUNS: usize = 64;

/// Checks everything in `h`.
pub fn check(h: &History, opts: &Options) -> Report {
    let mut report = Report {
        operations: h.operations.len(),
        ..Report::default()
    };
    for op in &h.operations {
        match op.outcome {
            Outcome::Ok(_) => report.acknowledged += 1,
            Outcome::Failed(_) => report.failed += 1,
            Outcome::Unknown(_) => report.unknown += 1,
        }
    }
    let seen = observe::collect(h);
    observe::check_sources(h, &seen, &mut report.violations);
    let (base, past_reads) = prepare(h, &seen, &mut report.violations);
    let bounds = lease::bounds(h, opts.lease_slack_ms);
    report.leases = bounds.len();
    report.violations.extend(
        lease::outlived_uses(&bounds)
            .into_iter()
            .map(|detail| Violation {
                kind: ViolationKind::LeaseOutlived,
                detail,
            }),
    );
    let init = State::new(h.initial_revision);
    let mut truth = None;
    let watched = watch::constraints(&h.watchers);
    let free = Constraints::new();
    // Strict first. If no order exists, relaxations tell what is wrong:
    // lease bounds dropped (a lease expired early or outlived its bound),
    // then the watches' view of each revision dropped (the watch checks
    // below then say what the watches got wrong).
    //
    // An early expiry the watches show directly is reported as such, and
    // the search starts without lease bounds (with them it would fail only
    // after exhausting every order).
    let early = lease::early_deletions(h, &bounds);
    let early_seen = !early.is_empty();
    let strictness: &[Strictness] = match (bounds.is_empty(), early.is_empty()) {
        (true, _) => &[Strictness::Both],
        (false, true) => &[Strictness::Both, Strictness::NoDeadline, Strictness::None],
        (false, false) => &[Strictness::None],
    };
    report
        .violations
        .extend(early.into_iter().map(|detail| Violation {
            kind: ViolationKind::LeaseExpiredEarly,
            detail,
        }));
    let mut attempts: Vec<_> = strictness.iter().map(|s| (&watched, *s)).collect();
    if !watched.is_empty() {
        attempts.extend(strictness.iter().map(|s| (&free, *s)));
    }
    let mut failed: Option<(SearchError, Vec<LinOp>)> = None;
    let mut found = None;
    for (used, strictness) in attempts {
        let mut ops = base.clone();
        ops.extend(lease::expiries(&bounds, h, strictness));
        match linear::search(&init, &ops, used, opts.max_search_steps) {
            Ok(order) => {
                found = Some((ops, order, used, strictness));
                break;
            }
            Err(e @ SearchError::Budget { .. }) => {
                if failed.is_none() {
                    failed = Some((e, ops));
                }
                break;
            }
            Err(e) => {
                if failed.is_none() {
                    failed = Some((e, ops));
                }
            }
        }
    }
    if let Some((ops, order, used, strictness)) = found {
        if !early_seen {
            lease_violations(&ops, &order, &bounds, strictness, &mut report.violations);
        }
        // Of the concrete runs the order allows, the first that the
        // reads and watches agree with (else the one with fewest
        // disagreements, which are then reported).
        let mut best: Option<(Truth, Vec<Violation>, usize, usize)> = None;
        for path in linear::concretize(&init, &ops, used, &order, MAX_CONCRETE_RUNS) {
            let t = Truth::build(&init, &ops, &order, &path);
            let mut v = Vec::new();
            check_past_reads(h, &past_reads, &t, &mut v);
            let mut events = 0;
            for w in &h.watchers {
                events += watch::check_watcher(w, Some(&t), &mut v);
            }
            let done = v.is_empty();
            if best.as_ref().is_none_or(|b| v.len() < b.1.len()) {
                best = Some((t, v, events, expired(&init, &ops, &order, &path)));
            }
            if done {
                break;
            }
        }
        if let Some((t, v, events, expired)) = best {
            report.final_revision = t.final_revision;
            report.violations.extend(v);
            report.watch_events = events;
            report.expired = expired;
            truth = Some(t);
        }
    } else {
        match failed {
            Some((
                SearchError::Budget {
                    steps,
                    op,
                    placed,
                    revisions,
                },
                ops,
            )) => {
                report.inconclusive = Some(format!(
                    "search budget of {steps} steps exhausted; deepest point: {placed} ops placed, model at revision(s) {revisions:?}, {} not placed there",
                    describe(h, &ops[op])
                ));
            }
            Some((
                SearchError::NotLinearizable {
                    op,
                    placed,
                    revisions,
                },
                ops,
            )) => {
                report.violations.push(Violation {
                    kind: ViolationKind::NotLinearizable,
                    detail: format!(
                        "{} cannot be placed; deepest point: {placed} ops placed, model at revision(s) {revisions:?}",
                        describe(h, &ops[op])
                    ),
                });
            }
            None => {}
        }
    }
    if truth.is_none() {
        // Without a linearized history only the history-free watch
        // properties (order, uniqueness, atomicity, flags) are checked.
        for w in &h.watchers {
            report.watch_events += watch::check_watcher(w, None, &mut report.violations);
        }
    }
    check_hashes(h, &mut report.violations);
    report.lost = lost_writes(h);
    report
}

/// What a search operation is, for a report.
fn describe(h: &History, op: &LinOp) -> String {
    match (&op.expect, &op.request) {
        (Expect::Expiry, Request::LeaseRevoke { id }) => {
            format!(
                "the expiry of lease {id:#x} (granted by operation #{})",
                op.index
            )
        }
        _ => format!(
            "operation #{} ({:?} -> {:?})",
            op.index, h.operations[op.index].request, h.operations[op.index].outcome
        ),
    }
}

/// The lease rule a relaxed search had to drop to find an order.
fn lease_violations(
    ops: &[LinOp],
    order: &[usize],
    bounds: &[lease::Bounds],
    strictness: Strictness,
    out: &mut Vec<Violation>,
) {
    let (kind, found, fallback) = match strictness {
        Strictness::Both => return,
        Strictness::NoDeadline => (
            ViolationKind::LeaseOutlived,
            lease::outlived(ops, order, bounds),
            "the operations fit only if some lease's keys outlive TTL + election timeout + slack",
        ),
        Strictness::None => (
            ViolationKind::LeaseExpiredEarly,
            lease::early(ops, order, bounds),
            "the operations fit only if some lease expires before its TTL ran out",
        ),
    };
    if found.is_empty() {
        out.push(Violation {
            kind,
            detail: fallback.into(),
        });
    }
    out.extend(found.into_iter().map(|detail| Violation { kind, detail }));
}

/// Leases whose expiry took effect along `path`.
fn expired(init: &State, ops: &[LinOp], order: &[usize], path: &[State]) -> usize {
    let mut prev = init;
    let mut n = 0;
    for (&i, next) in order.iter().zip(path) {
        if ops[i].expect == Expect::Expiry && next.leases.len() < prev.leases.len() {
            n += 1;
        }
        prev = next;
    }
    n
}

/// Splits the history into search operations and reads checked afterwards.
/// Failed operations and unknown reads have no effect and are left out.
fn prepare(
    h: &History,
    seen: &observe::Observed,
    out: &mut Vec<Violation>,
) -> (Vec<LinOp>, Vec<usize>) {
    let mut ops = Vec::new();
    let mut past = Vec::new();
    for (index, op) in h.operations.iter().enumerate() {
        // A keep-alive answered with a TTL reads the lease's existence
        // at the leader; one answered TTL 0 is not checked (lease.rs).
        let linearizable_read = match (&op.request, &op.outcome) {
            (
                Request::Range {
                    revision: 0,
                    serializable: false,
                    ..
                },
                _,
            ) => true,
            (Request::LeaseKeepAlive { .. }, Outcome::Ok(Response::LeaseKeepAlive { ttl })) => {
                if *ttl <= 0 {
                    continue;
                }
                true
            }
            _ => false,
        };
        let (expect, complete_ns) = match (&op.outcome, op.request.is_write()) {
            (Outcome::Failed(_), _) | (Outcome::Unknown(_), false) => continue,
            (Outcome::Ok(resp), _) => {
                if !fits(&op.request, resp) {
                    out.push(Violation {
                        kind: ViolationKind::Malformed,
                        detail: format!("operation #{index}: {:?} answered {resp:?}", op.request),
                    });
                    continue;
                }
                if !op.request.is_write() && !linearizable_read {
                    past.push(index);
                    continue;
                }
                (Expect::Ok(resp.clone()), op.complete_ns)
            }
            (Outcome::Unknown(_), true) => match observe::resolve(&op.request, seen) {
                Some(s) => (
                    Expect::Applied {
                        revision: s.mod_revision,
                    },
                    s.by_ns,
                ),
                None => (Expect::Unknown, u64::MAX),
            },
        };
        ops.push(LinOp {
            index,
            invoke_ns: op.invoke_ns,
            complete_ns,
            request: op.request.clone(),
            expect,
        });
    }
    (ops, past)
}

/// The response is the kind the request gets.
fn fits(req: &Request, resp: &Response) -> bool {
    match (req, resp) {
        (Request::Put { .. }, Response::Put { .. })
        | (Request::Delete { .. }, Response::Delete { .. })
        | (Request::Range { .. }, Response::Range { .. })
        | (Request::Compact { .. }, Response::Compact { .. })
        | (Request::LeaseGrant { .. }, Response::LeaseGrant { .. })
        | (Request::LeaseRevoke { .. }, Response::LeaseRevoke { .. })
        | (Request::LeaseKeepAlive { .. }, Response::LeaseKeepAlive { .. }) => true,
        (Request::Txn { .. }, Response::Txn { .. }) => {
            txn_branch(req, resp).is_some_and(|(ops, results)| {
                ops.len() == results.len()
                    && ops.iter().zip(results).all(|(o, r)| {
                        matches!(
                            (o, r),
                            (TxnOp::Put { .. }, TxnOpResult::Put)
                                | (TxnOp::Delete { .. }, TxnOpResult::Delete { .. })
                                | (TxnOp::Get { .. }, TxnOpResult::Get { .. })
                        )
                    })
            })
        }
        _ => false,
    }
}

/// Serializable reads equal the store at their header revision; reads at a
/// past revision equal the store at that revision.
fn check_past_reads(h: &History, idx: &[usize], t: &Truth, out: &mut Vec<Violation>) {
    for &i in idx {
        let op = &h.operations[i];
        let (
            Request::Range {
                key,
                range_end,
                revision,
                ..
            },
            Outcome::Ok(Response::Range {
                revision: header,
                kvs,
            }),
        ) = (&op.request, &op.outcome)
        else {
            continue;
        };
        let at = if *revision > 0 { *revision } else { *header };
        match t.range_at(at, key, range_end) {
            Some(want) if want == *kvs => {}
            Some(want) => out.push(Violation {
                kind: ViolationKind::StaleRead,
                detail: format!(
                    "operation #{i}: read of {key:?} at revision {at} returned {kvs:?}, the history has {want:?}"
                ),
            }),
            None => out.push(Violation {
                kind: ViolationKind::StaleRead,
                detail: format!(
                    "operation #{i}: read at revision {at}, past the history's last revision {}",
                    t.final_revision
                ),
            }),
        }
    }
}

fn check_hashes(h: &History, out: &mut Vec<Violation>) {
    let mut by_rev: BTreeMap<i64, Vec<&history::MemberHash>> = BTreeMap::new();
    for m in &h.hashes {
        by_rev.entry(m.revision).or_default().push(m);
    }
    for (rev, ms) in by_rev {
        let first = ms[0];
        for m in &ms[1..] {
            if m.hash != first.hash || m.compact_revision != first.compact_revision {
                out.push(Violation {
                    kind: ViolationKind::HashMismatch,
                    detail: format!(
                        "HashKV at revision {rev}: {} has {:#010x} (compact {}), {} has {:#010x} (compact {})",
                        first.member,
                        first.hash,
                        first.compact_revision,
                        m.member,
                        m.hash,
                        m.compact_revision
                    ),
                });
            }
        }
    }
}

/// Acknowledged puts (plain or in a txn) that a read at a revision at or
/// after theirs shows overwritten by an *older* version of the key.
pub fn lost_writes(h: &History) -> usize {
    // (key, revision) of each acknowledged write.
    let mut acked: Vec<(&str, i64)> = Vec::new();
    for op in &h.operations {
        match (&op.request, &op.outcome) {
            (Request::Put { key, .. }, Outcome::Ok(Response::Put { revision })) => {
                acked.push((key, *revision));
            }
            (
                Request::Txn { success, .. },
                Outcome::Ok(Response::Txn {
                    revision,
                    succeeded: true,
                    ..
                }),
            ) => {
                for o in success {
                    if let TxnOp::Put { key, .. } = o {
                        acked.push((key, *revision));
                    }
                }
            }
            _ => {}
        }
    }
    // key -> [(read revision, mod_revision seen)].
    let mut reads: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for op in &h.operations {
        if let (
            Request::Range { revision, .. },
            Outcome::Ok(Response::Range {
                revision: header,
                kvs,
            }),
        ) = (&op.request, &op.outcome)
        {
            let at = if *revision > 0 { *revision } else { *header };
            for kv in kvs {
                reads
                    .entry(&kv.key)
                    .or_default()
                    .push((at, kv.mod_revision));
            }
        }
    }
    acked
        .iter()
        .filter(|(key, rev)| {
            reads
                .get(key)
                .is_some_and(|rs| rs.iter().any(|&(at, m)| at >= *rev && m < *rev))
        })
        .count()
}
