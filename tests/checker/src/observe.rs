//! What the history observed: every (key, value) seen by a read or a watch,
//! at which mod_revision, and how early. Workloads write each value once,
//! so an observed value names the write that produced it. This resolves
//! unknown outcomes (a timed-out put whose value was read was applied, at
//! that revision, before that read returned) and exposes values no
//! acknowledged or pending write produced.

use std::collections::HashMap;

use crate::history::{History, Outcome, Request, Response, TxnOpResult};
use crate::{Violation, ViolationKind};

#[derive(Debug, Clone, Copy)]
pub struct Seen {
    pub mod_revision: i64,
    /// Earliest completion time of an operation that observed it
    /// (`u64::MAX` if only watches saw it).
    pub by_ns: u64,
}

/// (key, value) -> first observation.
pub type Observed = HashMap<(String, String), Seen>;

pub fn collect(h: &History) -> Observed {
    let mut seen: Observed = HashMap::new();
    let mut note = |key: &str, value: &str, rev: i64, at: u64| {
        let e = seen
            .entry((key.to_owned(), value.to_owned()))
            .or_insert(Seen {
                mod_revision: rev,
                by_ns: at,
            });
        e.by_ns = e.by_ns.min(at);
    };
    for op in &h.operations {
        let Outcome::Ok(resp) = &op.outcome else {
            continue;
        };
        match resp {
            Response::Range { kvs, .. } => {
                for kv in kvs {
                    note(&kv.key, &kv.value, kv.mod_revision, op.complete_ns);
                }
            }
            Response::Txn { results, .. } => {
                for r in results {
                    if let TxnOpResult::Get { kvs } = r {
                        for kv in kvs {
                            note(&kv.key, &kv.value, kv.mod_revision, op.complete_ns);
                        }
                    }
                }
            }
            Response::Put { .. }
            | Response::Delete { .. }
            | Response::Compact { .. }
            | Response::LeaseGrant { .. }
            | Response::LeaseRevoke { .. }
            | Response::LeaseKeepAlive { .. } => {}
        }
    }
    for w in &h.watchers {
        for seg in &w.segments {
            for resp in &seg.responses {
                for ev in &resp.events {
                    if let crate::history::EventKind::Put = ev.kind {
                        note(&ev.kv.key, &ev.kv.value, ev.kv.mod_revision, u64::MAX);
                    }
                    if let Some(p) = &ev.prev_kv {
                        note(&p.key, &p.value, p.mod_revision, u64::MAX);
                    }
                }
            }
        }
    }
    seen
}

/// Values that no write in the history could have produced, and values of
/// writes refused for sure that were nevertheless observed.
pub fn check_sources(h: &History, seen: &Observed, out: &mut Vec<Violation>) {
    let mut writers: HashMap<(&str, &str), &Outcome> = HashMap::new();
    for op in &h.operations {
        for kv in op.request.written_values() {
            writers.insert(kv, &op.outcome);
        }
    }
    let mut phantoms: Vec<_> = seen
        .iter()
        .filter(|((k, v), _)| !writers.contains_key(&(k.as_str(), v.as_str())))
        .collect();
    phantoms.sort_by_key(|(kv, s)| (s.mod_revision, (*kv).clone()));
    if let Some(((k, v), s)) = phantoms.first() {
        out.push(Violation {
            kind: ViolationKind::PhantomValue,
            detail: format!(
                "{} value(s) no write produced, first {k:?}={v:?} at revision {}",
                phantoms.len(),
                s.mod_revision
            ),
        });
    }
    for ((k, v), s) in seen {
        if let Some(Outcome::Failed(why)) = writers.get(&(k.as_str(), v.as_str())) {
            out.push(Violation {
                kind: ViolationKind::FailedWriteApplied,
                detail: format!(
                    "{k:?}={v:?} observed at revision {} but its write failed: {why}",
                    s.mod_revision
                ),
            });
        }
    }
}

/// For an unknown write: the revision and time bound its observed values
/// give, if any was observed. A txn's values are all at one revision.
pub fn resolve(req: &Request, seen: &Observed) -> Option<Seen> {
    req.written_values()
        .into_iter()
        .filter_map(|(k, v)| seen.get(&(k.to_owned(), v.to_owned())).copied())
        .min_by_key(|s| s.by_ns)
}
