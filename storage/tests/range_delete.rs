//! Property test: delete-ranges stored as range tombstones behave exactly
//! like the per-key path. The same ops run on two stores, one that never
//! uses range tombstones (`range_delete_min_keys = usize::MAX`) and one
//! that uses them for every standalone delete-range (up to a small count,
//! so the per-key fallback runs too); responses, commit events, reads at
//! every readable revision, watch catch-up, `hash_kv`, lease attachments
//! and the snapshot stream (byte for byte) must be equal, before and after
//! compaction, across reopen.

mod common;
use std::sync::Arc;

use common::*;
use corekv_storage::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8, bool),
    Delete(u8, u8),
    DeleteFrom(u8),
    DeleteOne(u8),
    /// A txn whose success branch deletes a range and puts a key in it.
    TxnDeletePut(u8, u8, u8),
    Compact(u8),
    Commit(bool),
}

/// One-byte keys, keys with zero runs, and long keys (key chains).
fn key(k: u8) -> Vec<u8> {
    match k % 12 {
        10 => {
            let mut v = vec![b'c'];
            v.extend(std::iter::repeat_n(b'x', 3000));
            v
        }
        11 => {
            let mut v = vec![b'f'];
            v.extend(std::iter::repeat_n(0u8, 2000));
            v
        }
        8 | 9 => {
            let mut v = vec![b'g'];
            v.extend(std::iter::repeat_n(0u8, if k % 12 == 8 { 1 } else { 130 }));
            v
        }
        i => vec![b'a' + i],
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), any::<u8>(), any::<bool>()).prop_map(|(k, v, l)| Op::Put(k, v, l)),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(k, e)| Op::Delete(k, e)),
        1 => any::<u8>().prop_map(Op::DeleteFrom),
        1 => any::<u8>().prop_map(Op::DeleteOne),
        1 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(k, e, v)| Op::TxnDeletePut(k, e, v)),
        1 => any::<u8>().prop_map(Op::Compact),
        2 => any::<bool>().prop_map(Op::Commit),
    ]
}

const LEASE: i64 = 7;

fn delete_req(key: Vec<u8>, range_end: Vec<u8>) -> DeleteRangeRequest {
    DeleteRangeRequest {
        key,
        range_end,
        prev_kv: true,
    }
}

/// Applies one op; returns a comparable rendering of its result.
fn apply(w: &mut WriteBatch<'_>, op: &Op) -> String {
    let r = match op {
        Op::Put(k, v, leased) => w
            .put(&PutRequest {
                key: key(*k),
                value: vec![*v; 1 + (*v as usize % 3) * 700],
                lease: if *leased { LEASE } else { 0 },
                prev_kv: true,
                ..Default::default()
            })
            .map(|r| format!("{r:?}")),
        Op::Delete(k, e) => w
            .delete_range(&delete_req(key(*k), key(*e)))
            .map(|r| format!("{r:?}")),
        Op::DeleteFrom(k) => w
            .delete_range(&delete_req(key(*k), vec![0]))
            .map(|r| format!("{r:?}")),
        Op::DeleteOne(k) => w
            .delete_range(&delete_req(key(*k), vec![]))
            .map(|r| format!("{r:?}")),
        Op::TxnDeletePut(k, e, v) => w
            .txn(&TxnRequest {
                compare: vec![],
                success: vec![
                    RequestOp::DeleteRange(delete_req(key(*k), key(*e))),
                    RequestOp::Put(PutRequest {
                        key: key(*k),
                        value: vec![*v],
                        ..Default::default()
                    }),
                ],
                failure: vec![],
            })
            .map(|r| format!("{r:?}")),
        Op::Compact(r) => {
            let target = 1 + (*r as i64) % w.revision();
            w.compact(target).map(|()| format!("compact {target}"))
        }
        Op::Commit(_) => unreachable!("commits are handled by the driver"),
    };
    match r {
        Ok(s) => s,
        Err(e) => format!("error {e}"),
    }
}

/// Short rendering of events for failure messages (values are long).
fn brief(evs: &[Event]) -> String {
    let kv = |kv: &KeyValue| {
        format!(
            "{}@{}/c{}/v{}/l{}/{}B",
            String::from_utf8_lossy(&kv.key[..kv.key.len().min(3)]),
            kv.mod_revision,
            kv.create_revision,
            kv.version,
            kv.lease,
            kv.value.len()
        )
    };
    evs.iter()
        .map(|e| {
            format!(
                "{:?} {} prev {:?}",
                e.kind,
                kv(&e.kv),
                e.prev_kv.as_ref().map(kv)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn same_events(a: &(Vec<Event>, i64), b: &(Vec<Event>, i64), what: &str) {
    assert!(
        a == b,
        "{what}: slow {} next {} / fast {} next {}",
        brief(&a.0),
        a.1,
        brief(&b.0),
        b.1
    );
}

fn snapshot_bytes(s: &Store) -> Vec<u8> {
    let mut buf = Vec::new();
    s.write_snapshot(&mut buf).unwrap();
    buf
}

/// Everything a client can observe, compared between the two stores.
fn compare_views(slow: &Store, fast: &Store, complete: bool) {
    let (a, b) = (slow.read().unwrap(), fast.read().unwrap());
    assert_eq!(a.revision(), b.revision());
    assert_eq!(a.compacted_revision(), b.compacted_revision());
    let c = a.compacted_revision().max(1);
    for rev in c..=a.revision() {
        let (ra, rb) = (range_all(&a, rev), range_all(&b, rev));
        assert!(ra == rb, "range at {rev}: {ra:?} / {rb:?}");
        assert_eq!(
            a.hash_kv(rev).unwrap(),
            b.hash_kv(rev).unwrap(),
            "hash at {rev}"
        );
        // Events at the compacted revision depend on physical progress
        // until the pass is complete.
        if rev > a.compacted_revision() || complete {
            same_events(
                &a.events_since(rev, &[0], &[0], usize::MAX).unwrap(),
                &b.events_since(rev, &[0], &[0], usize::MAX).unwrap(),
                &format!("events since {rev}"),
            );
            // A watch on a sub-range, in small batches.
            let (ka, kb) = (key(2), key(9));
            same_events(
                &a.events_since(rev, &ka, &kb, 1).unwrap(),
                &b.events_since(rev, &ka, &kb, 1).unwrap(),
                &format!("sub-range events since {rev}"),
            );
        }
    }
    assert_eq!(
        a.lease_keys(LEASE, 1000).unwrap(),
        b.lease_keys(LEASE, 1000).unwrap()
    );
    assert_eq!(
        snapshot_bytes(slow),
        snapshot_bytes(fast),
        "snapshot stream"
    );
}

fn open(backend: &MemBackend, opts: &StoreOptions) -> Store {
    Store::open_with_backend(Arc::new(backend.clone()), opts.clone()).unwrap()
}

fn run(ops: Vec<Op>, sweep: bool, budget: usize) {
    let base = StoreOptions {
        compaction_batch_entries: budget,
        compaction_commit_entries: budget / 2,
        compaction_sweep_ratio: if sweep { u64::MAX } else { 0 },
        ..small_opts()
    };
    let slow_opts = StoreOptions {
        range_delete_min_keys: usize::MAX,
        ..base.clone()
    };
    let fast_opts = StoreOptions {
        range_delete_min_keys: 1,
        max_range_tombstones: 3,
        ..base
    };
    let (sb, fb) = (MemBackend::new(), MemBackend::new());
    let (mut slow, mut fast) = (open(&sb, &slow_opts), open(&fb, &fast_opts));
    for s in [&slow, &fast] {
        let mut w = s.write().unwrap();
        w.lease_grant(LEASE, 100).unwrap();
        w.commit(1, true).unwrap();
    }
    let mut ops = ops.into_iter().peekable();
    let mut applied = 1u64;
    while ops.peek().is_some() {
        let (mut ws, mut wf) = (slow.write().unwrap(), fast.write().unwrap());
        let mut durable = true;
        for op in ops.by_ref() {
            if let Op::Commit(d) = op {
                durable = d;
                break;
            }
            let (ra, rb) = (apply(&mut ws, &op), apply(&mut wf, &op));
            assert!(ra == rb, "{op:?}: {} / {}", ra.len(), rb.len());
        }
        applied += 1;
        let (is, inf) = (
            ws.commit(applied, durable).unwrap(),
            wf.commit(applied, durable).unwrap(),
        );
        assert_eq!(is.revision, inf.revision);
        assert!(
            is.events == inf.events,
            "commit events: {} / {}",
            brief(&is.events),
            brief(&inf.events)
        );
        slow.check_integrity().unwrap();
        fast.check_integrity().unwrap();
        compare_views(&slow, &fast, false);
        if durable && applied % 3 == 0 {
            drop((slow, fast));
            slow = open(&sb, &slow_opts);
            fast = open(&fb, &fast_opts);
        }
    }
    // Compact everything: the range tombstones go with the versions they
    // supersede, and both files hold the same entries.
    for s in [&slow, &fast] {
        let mut w = s.write().unwrap();
        let rev = w.revision();
        if rev > w.compacted_revision() {
            w.compact(rev).unwrap();
        }
        w.commit(applied + 1, true).unwrap();
        while s.compact_step().unwrap() {}
    }
    compare_views(&slow, &fast, true);
    assert_eq!(
        slow.check_integrity().unwrap().keys,
        fast.check_integrity().unwrap().keys
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 150, .. ProptestConfig::default() })]
    #[test]
    fn range_tombstones_match_the_per_key_path(
        ops in proptest::collection::vec(op(), 1..80),
        sweep in any::<bool>(),
        budget in 1usize..300,
    ) {
        run(ops, sweep, budget);
    }
}

/// A big prefix delete is one entry: the file barely changes, and the keys
/// come back after compaction-free reads at older revisions.
#[test]
fn big_prefix_delete_is_one_entry() {
    let (s, _b) = mem_store();
    let mut w = s.write().unwrap();
    for i in 0..5000u32 {
        w.put(&PutRequest {
            key: format!("p/{i:06}").into_bytes(),
            value: vec![1; 300],
            ..Default::default()
        })
        .unwrap();
    }
    w.commit(1, true).unwrap();
    let before = s.check_integrity().unwrap();
    let mut w = s.write().unwrap();
    let r = w
        .delete_range(&delete_req(b"p/".to_vec(), b"p0".to_vec()))
        .unwrap();
    assert_eq!(r.deleted, 5000);
    let info = w.commit(2, true).unwrap();
    assert_eq!(info.events.len(), 5000);
    assert!(info.events.iter().all(|e| e.kind == EventKind::Delete
        && e.kv.mod_revision == 5002
        && e.prev_kv.as_ref().is_some_and(|p| p.value.len() == 300)));
    let after = s.check_integrity().unwrap();
    assert_eq!(after.keys, before.keys + 1, "one range tombstone entry");
    let v = s.read().unwrap();
    assert!(range_all(&v, 0).is_empty());
    assert_eq!(range_all(&v, 5001).len(), 5000);
    let (events, _) = v.events_since(5002, b"p/000100", b"p/000110", 1).unwrap();
    assert_eq!(events.len(), 10);
    // A key put again after the delete starts a new life.
    let mut w = s.write().unwrap();
    let p = w
        .put(&PutRequest {
            key: b"p/000007".to_vec(),
            value: b"x".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(p.prev_kv, None);
    w.commit(3, true).unwrap();
    let kv = &range_all(&s.read().unwrap(), 0)[0];
    assert_eq!((kv.version, kv.create_revision), (1, 5003));
}
