//! A sequential model of the whole store: revisions, keys, values,
//! versions, leases, compaction. Same rules as etcd's MVCC: every write
//! that changes something takes the next main revision (a txn's writes all
//! share one), a delete that finds nothing and a txn that writes nothing do
//! not bump the revision, reads inside a txn see the txn's earlier writes.
//!
//! Time is not part of the model: a lease's expiry is a revoke nobody
//! asked for, which the checker adds to the search with the time bounds
//! etcd's lessor guarantees (`lease.rs`). A keep-alive reads the lease.

use std::collections::BTreeMap;

use crate::history::{
    Compare, CompareResult, CompareTarget, EventKind, Kv, Request, Response, TxnOp, TxnOpResult,
    WatchEvent,
};

pub const ERR_COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
pub const ERR_FUTURE_REV: &str = "etcdserver: mvcc: required revision is a future revision";
pub const ERR_LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";
pub const ERR_LEASE_EXISTS: &str = "etcdserver: lease already exists";

/// The store at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    pub revision: i64,
    pub compacted: i64,
    pub kvs: BTreeMap<String, Kv>,
    /// Lease id -> granted TTL (seconds).
    pub leases: BTreeMap<i64, i64>,
}

impl State {
    /// An empty store; etcd's first revision is 1.
    pub fn new(revision: i64) -> State {
        State {
            revision,
            compacted: 0,
            kvs: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }

    /// Keys in `[key, range_end)` with etcd's conventions, sorted.
    pub fn range(&self, key: &str, range_end: &str) -> Vec<Kv> {
        self.kvs
            .values()
            .filter(|kv| in_range(&kv.key, key, range_end))
            .cloned()
            .collect()
    }
}

/// etcd's range convention: empty end = one key, "\0" = from key on.
pub fn in_range(k: &str, key: &str, range_end: &str) -> bool {
    if range_end.is_empty() {
        k == key
    } else if range_end == "\0" {
        k >= key
    } else {
        k >= key && k < range_end
    }
}

/// The result of applying one request to a state.
#[derive(Debug, Clone)]
pub struct Applied {
    pub state: State,
    /// The answer the store must give (errors carry etcd's text).
    pub response: Result<Response, String>,
    /// Watch events of the revision this request created (empty if none).
    pub events: Vec<WatchEvent>,
}

/// One write in progress: a working copy that allocates the revision lazily.
struct Writer {
    state: State,
    next: i64,
    wrote: bool,
    events: Vec<WatchEvent>,
}

impl Writer {
    fn new(state: &State) -> Writer {
        Writer {
            state: state.clone(),
            next: state.revision + 1,
            wrote: false,
            events: Vec::new(),
        }
    }

    fn put(&mut self, key: &str, value: &str, lease: i64) {
        let prev = self.state.kvs.get(key).cloned();
        let kv = Kv {
            key: key.to_owned(),
            value: value.to_owned(),
            create_revision: prev.as_ref().map_or(self.next, |p| p.create_revision),
            mod_revision: self.next,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            lease,
        };
        self.state.kvs.insert(key.to_owned(), kv.clone());
        self.wrote = true;
        self.events.push(WatchEvent {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        });
    }

    fn delete(&mut self, key: &str, range_end: &str) -> i64 {
        let victims = self.state.range(key, range_end);
        for prev in &victims {
            self.state.kvs.remove(&prev.key);
            self.wrote = true;
            self.events.push(WatchEvent {
                kind: EventKind::Delete,
                kv: Kv {
                    key: prev.key.clone(),
                    value: String::new(),
                    create_revision: 0,
                    mod_revision: self.next,
                    version: 0,
                    lease: 0,
                },
                prev_kv: Some(prev.clone()),
            });
        }
        victims.len() as i64
    }

    fn lease_ok(&self, lease: i64) -> bool {
        lease == 0 || self.state.leases.contains_key(&lease)
    }

    /// The revision reads and the response header see now.
    fn revision(&self) -> i64 {
        if self.wrote { self.next } else { self.next - 1 }
    }

    fn finish(mut self, response: Result<Response, String>) -> Applied {
        self.state.revision = self.revision();
        Applied {
            state: self.state,
            response,
            events: self.events,
        }
    }
}

fn unchanged(state: &State, err: &str) -> Applied {
    Applied {
        state: state.clone(),
        response: Err(err.to_owned()),
        events: Vec::new(),
    }
}

/// Applies `req` to `state`. Past-revision and serializable ranges are
/// answered from `state` too; callers that check them pass the state at the
/// revision they asked for.
pub fn apply(state: &State, req: &Request) -> Applied {
    match req {
        Request::Put { key, value, lease } => {
            let mut w = Writer::new(state);
            if !w.lease_ok(*lease) {
                return unchanged(state, ERR_LEASE_NOT_FOUND);
            }
            w.put(key, value, *lease);
            let revision = w.revision();
            w.finish(Ok(Response::Put { revision }))
        }
        Request::Delete { key, range_end } => {
            let mut w = Writer::new(state);
            let deleted = w.delete(key, range_end);
            let revision = w.revision();
            w.finish(Ok(Response::Delete { revision, deleted }))
        }
        Request::Range { key, range_end, .. } => Applied {
            state: state.clone(),
            response: Ok(Response::Range {
                revision: state.revision,
                kvs: state.range(key, range_end),
            }),
            events: Vec::new(),
        },
        Request::Txn {
            compare,
            success,
            failure,
        } => apply_txn(state, compare, success, failure),
        Request::Compact { revision } => {
            if *revision <= state.compacted {
                return unchanged(state, ERR_COMPACTED);
            }
            if *revision > state.revision {
                return unchanged(state, ERR_FUTURE_REV);
            }
            let mut next = state.clone();
            next.compacted = *revision;
            Applied {
                response: Ok(Response::Compact {
                    revision: state.revision,
                }),
                state: next,
                events: Vec::new(),
            }
        }
        Request::LeaseGrant { id, ttl } => {
            if state.leases.contains_key(id) {
                return unchanged(state, ERR_LEASE_EXISTS);
            }
            let mut next = state.clone();
            next.leases.insert(*id, *ttl);
            Applied {
                response: Ok(Response::LeaseGrant {
                    revision: state.revision,
                }),
                state: next,
                events: Vec::new(),
            }
        }
        Request::LeaseRevoke { id } => {
            if !state.leases.contains_key(id) {
                return unchanged(state, ERR_LEASE_NOT_FOUND);
            }
            let mut w = Writer::new(state);
            w.state.leases.remove(id);
            let attached: Vec<String> = w
                .state
                .kvs
                .values()
                .filter(|kv| kv.lease == *id)
                .map(|kv| kv.key.clone())
                .collect();
            for k in attached {
                w.delete(&k, "");
            }
            let revision = w.revision();
            w.finish(Ok(Response::LeaseRevoke { revision }))
        }
        Request::LeaseKeepAlive { id } => Applied {
            state: state.clone(),
            response: Ok(Response::LeaseKeepAlive {
                ttl: state.leases.get(id).copied().unwrap_or(0),
            }),
            events: Vec::new(),
        },
    }
}

/// The store's answer `got` is the one the model gives (`want`): equal,
/// except that a keep-alive only tells whether the lease exists (the
/// server may raise a TTL to its minimum).
pub fn same_answer(want: &Response, got: &Response) -> bool {
    match (want, got) {
        (Response::LeaseKeepAlive { ttl: a }, Response::LeaseKeepAlive { ttl: b }) => {
            (*a > 0) == (*b > 0)
        }
        _ => want == got,
    }
}

fn apply_txn(state: &State, compare: &[Compare], success: &[TxnOp], failure: &[TxnOp]) -> Applied {
    let succeeded = compare.iter().all(|c| compare_holds(state, c));
    let ops = if succeeded { success } else { failure };
    // etcd validates leases of the chosen branch before writing anything.
    let leases_ok = ops.iter().all(|op| match op {
        TxnOp::Put { lease, .. } => *lease == 0 || state.leases.contains_key(lease),
        TxnOp::Delete { .. } | TxnOp::Get { .. } => true,
    });
    if !leases_ok {
        return unchanged(state, ERR_LEASE_NOT_FOUND);
    }
    let mut w = Writer::new(state);
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        results.push(match op {
            TxnOp::Put { key, value, lease } => {
                w.put(key, value, *lease);
                TxnOpResult::Put
            }
            TxnOp::Delete { key } => TxnOpResult::Delete {
                deleted: w.delete(key, ""),
            },
            TxnOp::Get { key } => TxnOpResult::Get {
                kvs: w.state.range(key, ""),
            },
        });
    }
    let revision = w.revision();
    w.finish(Ok(Response::Txn {
        revision,
        succeeded,
        results,
    }))
}

/// etcd's compare: a missing key compares as a zero KeyValue, except that a
/// value compare on a missing key is always false.
pub fn compare_holds(state: &State, c: &Compare) -> bool {
    let kv = state.kvs.get(&c.key);
    let ord = match (&c.target, kv) {
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(kv)) => kv.value.as_str().cmp(v.as_str()),
        (CompareTarget::Version(v), kv) => kv.map_or(0, |kv| kv.version).cmp(v),
        (CompareTarget::CreateRevision(v), kv) => kv.map_or(0, |kv| kv.create_revision).cmp(v),
        (CompareTarget::ModRevision(v), kv) => kv.map_or(0, |kv| kv.mod_revision).cmp(v),
        (CompareTarget::Lease(v), kv) => kv.map_or(0, |kv| kv.lease).cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(k: &str, v: &str) -> Request {
        Request::Put {
            key: k.into(),
            value: v.into(),
            lease: 0,
        }
    }

    #[test]
    fn put_bumps_revision_and_version() {
        let s = State::new(1);
        let a = apply(&s, &put("a", "1"));
        assert_eq!(a.response, Ok(Response::Put { revision: 2 }));
        let b = apply(&a.state, &put("a", "2"));
        let kv = &b.state.kvs["a"];
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        assert_eq!(
            b.events[0].prev_kv.as_ref().map(|p| p.value.as_str()),
            Some("1")
        );
    }

    #[test]
    fn empty_delete_and_failed_readonly_txn_keep_revision() {
        let s = State::new(1);
        let d = apply(
            &s,
            &Request::Delete {
                key: "x".into(),
                range_end: String::new(),
            },
        );
        assert_eq!(d.state.revision, 1);
        let t = apply(
            &s,
            &Request::Txn {
                compare: vec![Compare {
                    key: "x".into(),
                    result: CompareResult::Equal,
                    target: CompareTarget::Value("v".into()),
                }],
                success: vec![TxnOp::Put {
                    key: "x".into(),
                    value: "y".into(),
                    lease: 0,
                }],
                failure: vec![TxnOp::Get { key: "x".into() }],
            },
        );
        assert_eq!(t.state.revision, 1);
        assert!(matches!(
            t.response,
            Ok(Response::Txn {
                succeeded: false,
                ..
            })
        ));
    }

    #[test]
    fn lease_revoke_deletes_attached_keys_in_one_revision() {
        let s = apply(&State::new(1), &Request::LeaseGrant { id: 7, ttl: 60 }).state;
        let s = apply(
            &s,
            &Request::Put {
                key: "a".into(),
                value: "1".into(),
                lease: 7,
            },
        )
        .state;
        let s = apply(
            &s,
            &Request::Put {
                key: "b".into(),
                value: "1".into(),
                lease: 7,
            },
        )
        .state;
        let r = apply(&s, &Request::LeaseRevoke { id: 7 });
        assert_eq!(r.state.revision, 4);
        assert_eq!(r.events.len(), 2);
        assert!(r.state.kvs.is_empty());
    }
}
