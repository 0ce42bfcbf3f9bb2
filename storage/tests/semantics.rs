//! etcd MVCC semantics, one behaviour per test.

mod common;
use common::*;
use corekv_storage::*;

fn get(v: &ReadView, k: &str) -> Option<KeyValue> {
    v.range(&RangeRequest {
        key: k.into(),
        ..Default::default()
    })
    .unwrap()
    .kvs
    .into_iter()
    .next()
}

#[test]
fn revisions_start_at_one_and_each_put_bumps() {
    let (s, _) = mem_store();
    assert_eq!(s.current_revision(), 1);
    let mut b = s.write().unwrap();
    assert_eq!(put(&mut b, "a", "1").revision, 2);
    assert_eq!(put(&mut b, "a", "2").revision, 3);
    let info = b.commit(7, false).unwrap();
    assert_eq!(info.revision, 3);
    assert_eq!(info.events.len(), 2);
    assert_eq!(info.events[1].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(s.current_revision(), 3);
    assert_eq!(s.applied_index(), 7);
    assert_eq!(s.durable_applied_index(), 0);
    s.sync().unwrap();
    assert_eq!(s.durable_applied_index(), 7);
    let kv = get(&s.read().unwrap(), "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
}

#[test]
fn delete_semantics() {
    let (s, _) = mem_store();
    let mut b = s.write().unwrap();
    let r = b
        .delete_range(&DeleteRangeRequest {
            key: b"nope".to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((r.deleted, r.revision), (0, 1));
    put(&mut b, "a", "1");
    put(&mut b, "b", "2");
    put(&mut b, "c", "3");
    let r = b
        .delete_range(&DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: true,
        })
        .unwrap();
    assert_eq!((r.deleted, r.revision, r.prev_kvs.len()), (2, 5, 2));
    put(&mut b, "a", "again");
    let info = b.commit(1, true).unwrap();
    assert_eq!(
        info.events
            .iter()
            .filter(|e| e.kind == EventKind::Delete)
            .count(),
        2
    );
    let kv = get(&s.read().unwrap(), "a").unwrap();
    assert_eq!((kv.create_revision, kv.version), (6, 1));
    // History is still readable.
    assert_eq!(get_at(&s.read().unwrap(), "b", 4).unwrap().value, b"2");
    assert!(get_at(&s.read().unwrap(), "b", 5).is_none());
}

fn get_at(v: &ReadView, k: &str, rev: i64) -> Option<KeyValue> {
    v.range(&RangeRequest {
        key: k.into(),
        revision: rev,
        ..Default::default()
    })
    .unwrap()
    .kvs
    .into_iter()
    .next()
}

#[test]
fn range_end_forms_limit_sort_count() {
    let (s, _) = mem_store();
    let mut b = s.write().unwrap();
    for (k, v) in [("a", "9"), ("b", "8"), ("c", "7"), ("d", "6")] {
        put(&mut b, k, v);
    }
    put(&mut b, "\u{1}", "x");
    b.commit(1, false).unwrap();
    let v = s.read().unwrap();
    let all = v
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(all.count, 5);
    let from_b = v
        .range(&RangeRequest {
            key: b"b".to_vec(),
            range_end: vec![0],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(from_b.kvs.len(), 3);
    let lim = v
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((lim.kvs.len(), lim.more, lim.count), (2, true, 4));
    let by_val = v
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            limit: 1,
            sort_target: SortTarget::Value,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(by_val.kvs[0].key, b"d");
    let desc = v
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            sort_order: SortOrder::Descend,
            keys_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(desc.kvs[0].key, b"d");
    assert!(desc.kvs[0].value.is_empty());
    let cnt = v
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!((cnt.count, cnt.kvs.len()), (4, 0));
    let filt = v
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            min_mod_revision: 4,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(filt.kvs.len(), 2);
    assert!(matches!(
        v.range(&RangeRequest::default()),
        Err(StorageError::KeyNotProvided)
    ));
    assert!(matches!(
        v.range(&RangeRequest {
            key: b"a".to_vec(),
            revision: 100,
            ..Default::default()
        }),
        Err(StorageError::FutureRevision { .. })
    ));
}

#[test]
fn txn_compare_and_revisions() {
    let (s, _) = mem_store();
    let mut b = s.write().unwrap();
    put(&mut b, "k", "v");
    let cmp_missing = |target| Compare {
        result: CompareResult::Equal,
        target,
        key: b"missing".to_vec(),
        range_end: vec![],
    };
    let put_op = |k: &str| {
        RequestOp::Put(PutRequest {
            key: k.into(),
            value: b"x".to_vec(),
            ..Default::default()
        })
    };
    // Missing key: create revision compares as 0.
    let t = b
        .txn(&TxnRequest {
            compare: vec![cmp_missing(CompareTarget::Create(0))],
            success: vec![put_op("m"), put_op("n")],
            failure: vec![],
        })
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.revision, 3);
    // Value compare on a missing key fails.
    let t = b
        .txn(&TxnRequest {
            compare: vec![cmp_missing(CompareTarget::Value(vec![]))],
            success: vec![],
            failure: vec![],
        })
        .unwrap();
    assert!(!t.succeeded);
    assert_eq!(
        t.revision, 3,
        "a txn that mutates nothing does not bump the revision"
    );
    // Range compare: every key in [k, o) must have version 1.
    let t = b
        .txn(&TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal,
                target: CompareTarget::Version(1),
                key: b"k".to_vec(),
                range_end: b"o".to_vec(),
            }],
            success: vec![
                RequestOp::Range(RangeRequest {
                    key: b"m".to_vec(),
                    ..Default::default()
                }),
                RequestOp::DeleteRange(DeleteRangeRequest {
                    key: b"m".to_vec(),
                    ..Default::default()
                }),
                RequestOp::Range(RangeRequest {
                    key: b"m".to_vec(),
                    ..Default::default()
                }),
            ],
            failure: vec![],
        })
        .unwrap();
    assert!(t.succeeded);
    assert_eq!(t.revision, 4);
    let ResponseOp::Range(r) = &t.responses[2] else {
        panic!("range expected")
    };
    assert!(r.kvs.is_empty(), "ops in a txn see its earlier writes");
    let info = b.commit(2, false).unwrap();
    let revs: Vec<(i64, EventKind)> = info
        .events
        .iter()
        .map(|e| (e.kv.mod_revision, e.kind))
        .collect();
    assert_eq!(
        revs,
        vec![
            (2, EventKind::Put),
            (3, EventKind::Put),
            (3, EventKind::Put),
            (4, EventKind::Delete)
        ]
    );
}

#[test]
fn compaction_semantics() {
    let (s, _) = mem_store();
    let mut b = s.write().unwrap();
    put(&mut b, "a", "1"); // 2
    put(&mut b, "a", "2"); // 3
    put(&mut b, "b", "1"); // 4
    b.delete_range(&DeleteRangeRequest {
        key: b"b".to_vec(),
        ..Default::default()
    })
    .unwrap(); // 5
    put(&mut b, "c", "1"); // 6
    b.commit(1, false).unwrap();
    let before = s.read().unwrap().hash_kv(6).unwrap().0;
    let mut b = s.write().unwrap();
    b.compact(5).unwrap();
    assert!(matches!(b.compact(5), Err(StorageError::Compacted { .. })));
    b.commit(2, false).unwrap();
    assert!(!s.compaction_pending());
    let v = s.read().unwrap();
    assert_eq!(v.compacted_revision(), 5);
    assert!(matches!(
        v.range(&RangeRequest {
            key: b"a".to_vec(),
            revision: 4,
            ..Default::default()
        }),
        Err(StorageError::Compacted { .. })
    ));
    assert_eq!(get_at(&v, "a", 5).unwrap().value, b"2");
    assert_eq!(range_all(&v, 5).len(), 1);
    assert!(v.events_since(4, b"a", &[0], 100).is_err());
    let (ev, next) = v.events_since(6, &[0], &[0], 100).unwrap();
    assert_eq!((ev.len(), next), (1, 7));
    s.check_integrity().unwrap();
    // Key versions a@3 and c@6 survive; revision entries only above the
    // compacted revision (c@6): none below it, and b's tombstone at 5 went.
    let r = s.check_integrity().unwrap();
    assert_eq!(r.keys, 3, "two key versions and one revision entry remain");
    let after = v.hash_kv(6).unwrap();
    assert_eq!(after.1, 5);
    assert_ne!(before, after.0, "hash is computed against the compaction");
}

#[test]
fn hash_is_independent_of_physical_progress() {
    let fast_opts = StoreOptions {
        compaction_commit_entries: 1_000_000,
        ..small_opts()
    };
    let s1 = Store::open_with_backend(std::sync::Arc::new(MemBackend::new()), fast_opts).unwrap();
    let slow_opts = StoreOptions {
        compaction_batch_entries: 3,
        compaction_commit_entries: 3,
        ..small_opts()
    };
    let s2 = Store::open_with_backend(std::sync::Arc::new(MemBackend::new()), slow_opts).unwrap();
    for s in [&s1, &s2] {
        let mut b = s.write().unwrap();
        for i in 0..200 {
            put(&mut b, &format!("k{}", i % 17), &format!("{i}"));
        }
        b.compact(150).unwrap();
        b.commit(1, false).unwrap();
    }
    assert!(!s1.compaction_pending());
    assert!(s2.compaction_pending());
    assert_eq!(
        s1.read().unwrap().hash_kv(0).unwrap(),
        s2.read().unwrap().hash_kv(0).unwrap()
    );
    assert_eq!(
        s1.read().unwrap().hash_kv(170).unwrap(),
        s2.read().unwrap().hash_kv(170).unwrap()
    );
    while s2.compact_step().unwrap() {}
    assert_eq!(
        s1.read().unwrap().hash_kv(0).unwrap(),
        s2.read().unwrap().hash_kv(0).unwrap()
    );
    assert_eq!(
        s1.check_integrity().unwrap().keys,
        s2.check_integrity().unwrap().keys
    );
}

#[test]
fn meta_and_big_values() {
    let (s, b0) = mem_store();
    let mut b = s.write().unwrap();
    b.put_meta(b"members", b"[1,2,3]");
    assert_eq!(b.get_meta(b"members").unwrap(), b"[1,2,3]");
    let big: Vec<u8> = (0..1_572_864u32).map(|i| (i % 251) as u8).collect();
    b.put(&PutRequest {
        key: b"big".to_vec(),
        value: big.clone(),
        ..Default::default()
    })
    .unwrap();
    b.commit(1, true).unwrap();
    assert_eq!(s.read().unwrap().get_meta(b"members").unwrap(), b"[1,2,3]");
    assert_eq!(get(&s.read().unwrap(), "big").unwrap().value, big);
    drop(s);
    let s = Store::open_with_backend(std::sync::Arc::new(b0), small_opts()).unwrap();
    assert_eq!(get(&s.read().unwrap(), "big").unwrap().value, big);
    s.check_integrity().unwrap();
    let too_long = vec![b'x'; MAX_KEY_BYTES + 1];
    let mut b = s.write().unwrap();
    assert!(matches!(
        b.put(&PutRequest {
            key: too_long,
            ..Default::default()
        }),
        Err(StorageError::KeyTooLarge { .. })
    ));
}

#[test]
fn quota_refuses_puts_but_allows_deletes() {
    let b0 = MemBackend::new();
    let opts = StoreOptions {
        quota_bytes: 256 << 10,
        ..small_opts()
    };
    let s = Store::open_with_backend(std::sync::Arc::new(b0), opts).unwrap();
    let mut hit = false;
    for i in 0..1000 {
        let mut b = s.write().unwrap();
        match b.put(&PutRequest {
            key: format!("k{i}").into_bytes(),
            value: vec![1; 4000],
            ..Default::default()
        }) {
            Ok(_) => {
                b.commit(i, false).unwrap();
            }
            Err(StorageError::NoSpace { .. }) => {
                hit = true;
                let r = b
                    .delete_range(&DeleteRangeRequest {
                        key: vec![0],
                        range_end: vec![0],
                        prev_kv: false,
                    })
                    .unwrap();
                assert!(r.deleted > 0);
                b.commit(i, false).unwrap();
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(hit);
}

#[test]
fn txn_validation_errors_leave_the_batch_unchanged() {
    let (s, _) = mem_store();
    let mut b = s.write().unwrap();
    put(&mut b, "a", "1");
    let before = b.revision();
    let bad = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"x".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            }),
            RequestOp::Range(RangeRequest {
                key: b"a".to_vec(),
                revision: 1000,
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    assert!(matches!(
        b.txn(&bad),
        Err(StorageError::FutureRevision { .. })
    ));
    let missing = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"y".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            }),
            RequestOp::Put(PutRequest {
                key: b"nope".to_vec(),
                ignore_value: true,
                ..Default::default()
            }),
        ],
        failure: vec![],
    };
    assert!(matches!(b.txn(&missing), Err(StorageError::KeyNotFound)));
    assert_eq!(b.revision(), before);
    let r = b
        .range(&RangeRequest {
            key: b"x".to_vec(),
            range_end: b"z".to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.count, 0);
    // Nested compares see the state before the txn, as in etcd.
    let nested = TxnRequest {
        compare: vec![],
        success: vec![
            RequestOp::Put(PutRequest {
                key: b"n".to_vec(),
                value: b"1".to_vec(),
                ..Default::default()
            }),
            RequestOp::Txn(TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal,
                    target: CompareTarget::Version(0),
                    key: b"n".to_vec(),
                    range_end: vec![],
                }],
                success: vec![],
                failure: vec![],
            }),
        ],
        failure: vec![],
    };
    let t = b.txn(&nested).unwrap();
    let ResponseOp::Txn(inner) = &t.responses[1] else {
        panic!("txn response expected")
    };
    assert!(inner.succeeded);
}

/// History for the compaction-pass tests: 30 filler keys (revisions 2..=31),
/// then a@32 b@33 a@34 b-deleted@35 c@36 a@37 c@38 d@39.
fn compaction_history(s: &Store) -> i64 {
    let mut b = s.write().unwrap();
    for i in 0..30 {
        put(&mut b, &format!("f{i:02}"), "x");
    }
    let base = b.revision();
    put(&mut b, "a", "1");
    put(&mut b, "b", "1");
    put(&mut b, "a", "2");
    b.delete_range(&DeleteRangeRequest {
        key: b"b".to_vec(),
        ..Default::default()
    })
    .unwrap();
    put(&mut b, "c", "1");
    put(&mut b, "a", "3");
    put(&mut b, "c", "2");
    put(&mut b, "d", "1");
    b.commit(1, false).unwrap();
    base
}

fn compact_to(s: &Store, rev: i64) {
    let mut b = s.write().unwrap();
    b.compact(rev).unwrap();
    b.commit(2, false).unwrap();
}

fn slow(sweep: bool) -> Store {
    let opts = StoreOptions {
        compaction_batch_entries: 1,
        compaction_commit_entries: 0,
        compaction_sweep_ratio: if sweep { u64::MAX } else { 0 },
        ..small_opts()
    };
    Store::open_with_backend(std::sync::Arc::new(MemBackend::new()), opts).unwrap()
}

#[test]
fn new_target_during_a_pass_continues_it_in_both_modes() {
    for sweep in [false, true] {
        let direct = slow(sweep);
        let base = compaction_history(&direct);
        let (c1, c2) = (base + 4, base + 6);
        compact_to(&direct, c2);
        while direct.compact_step().unwrap() {}

        let s = slow(sweep);
        compaction_history(&s);
        compact_to(&s, c1);
        assert!(
            s.compact_step().unwrap(),
            "one step does not finish the pass"
        );
        assert!(s.compaction_pending());
        compact_to(&s, c2);
        let mut steps = 0;
        while s.compact_step().unwrap() {
            steps += 1;
            assert!(steps < 1000, "pass does not finish");
        }
        assert!(!s.compaction_pending());
        let (v, dv) = (s.read().unwrap(), direct.read().unwrap());
        assert_eq!(v.hash_kv(0).unwrap(), dv.hash_kv(0).unwrap());
        for rev in c2..=base + 8 {
            assert_eq!(
                range_all(&v, rev),
                range_all(&dv, rev),
                "sweep {sweep} rev {rev}"
            );
        }
        // Kept versions: 30 fillers, a@37, c@36, c@38, d@39 (b's tombstone
        // went); revision entries only from the compacted revision on, for
        // surviving versions: a@37, c@38, d@39.
        assert_eq!(s.check_integrity().unwrap().keys, 34 + 3, "sweep {sweep}");
        assert_eq!(direct.check_integrity().unwrap().keys, 34 + 3);
        let (ev, next) = v.events_since(c2, &[0], &[0], 100).unwrap();
        let revs: Vec<i64> = ev.iter().map(|e| e.kv.mod_revision).collect();
        assert_eq!(revs, vec![c2, base + 7, base + 8]);
        assert_eq!(next, base + 9);
        assert!(ev[0].prev_kv.is_none(), "a's older versions are compacted");
        assert!(v.events_since(c2 - 1, &[0], &[0], 100).is_err());
    }
}

#[test]
fn compaction_at_a_tombstone_drops_its_event_and_revision_entry() {
    for sweep in [false, true] {
        let s = slow(sweep);
        let base = compaction_history(&s);
        let c = base + 4; // b's delete
        compact_to(&s, c);
        while s.compact_step().unwrap() {}
        let v = s.read().unwrap();
        let (ev, _) = v.events_since(c, &[0], &[0], 100).unwrap();
        assert!(
            ev.iter().all(|e| e.kv.mod_revision > c),
            "sweep {sweep}: {ev:?}"
        );
        assert_eq!(ev.len(), 4);
        // Kept: 30 fillers, a@34, and c@36, a@37, c@38, d@39 above C (35
        // versions); revision entries only for the four above C.
        assert_eq!(s.check_integrity().unwrap().keys, 35 + 4, "sweep {sweep}");
        // Snapshot restore rebuilds the same revision entries.
        let mut buf = Vec::new();
        s.write_snapshot(&mut buf).unwrap();
        let r = Store::restore_snapshot_with_backend(
            std::sync::Arc::new(MemBackend::new()),
            &mut buf.as_slice(),
            small_opts(),
        )
        .unwrap();
        assert_eq!(r.check_integrity().unwrap().keys, 35 + 4);
        assert_eq!(r.read().unwrap().hash_kv(0).unwrap(), v.hash_kv(0).unwrap());
        assert_eq!(
            r.read().unwrap().events_since(c, &[0], &[0], 100).unwrap(),
            (ev, base + 9)
        );
    }
}
