//! Hand-written histories: known-bad ones must be rejected with the right
//! violation, known-good ones (including tricky unknown outcomes) accepted.

mod common;

use common::*;
use corekv_checker::ViolationKind as V;
use corekv_checker::history::*;

/// a=1 at 2, b=1 at 3, a=2 at 4: the history every watch test below uses.
fn three_writes() -> Vec<Operation> {
    vec![
        put(1, (0, 10), "a", "1", 2),
        put(1, (20, 30), "b", "1", 3),
        put(1, (40, 50), "a", "2", 4),
    ]
}

fn good_events() -> Vec<WatchEvent> {
    vec![
        put_ev("a", "1", 2, 2, 1, None),
        put_ev("b", "1", 3, 3, 1, None),
        put_ev("a", "2", 2, 4, 2, Some(kv("a", "1", 2, 2, 1))),
    ]
}

#[test]
fn accepts_sequential_puts_and_reads() {
    let mut ops = three_writes();
    ops.push(get(2, (60, 70), "a", 4, vec![kv("a", "2", 2, 4, 2)]));
    let r = run(ops);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.final_revision, 4);
}

#[test]
fn rejects_stale_read() {
    let mut ops = three_writes();
    // Read after a=2 was acknowledged still sees a=1 (with an honest header).
    ops.push(get(2, (60, 70), "a", 4, vec![kv("a", "1", 2, 2, 1)]));
    assert!(run(ops).has(V::NotLinearizable));
    // ... or with the old header revision.
    let mut ops = three_writes();
    ops.push(get(2, (60, 70), "a", 3, vec![kv("a", "1", 2, 2, 1)]));
    assert!(run(ops).has(V::NotLinearizable));
}

#[test]
fn accepts_read_concurrent_with_write_seeing_either_value() {
    for (rev, val, modr, ver) in [(3, "1", 2, 1), (4, "2", 4, 2)] {
        let ops = vec![
            put(1, (0, 10), "a", "1", 2),
            put(1, (20, 30), "b", "1", 3),
            put(1, (40, 100), "a", "2", 4),
            get(2, (50, 60), "a", rev, vec![kv("a", val, 2, modr, ver)]),
        ];
        let r = run(ops);
        assert!(r.ok(), "{rev}: {r:?}");
    }
}

#[test]
fn rejects_lost_acknowledged_write() {
    let ops = vec![
        put(1, (0, 10), "a", "1", 2),
        put(1, (20, 30), "a", "2", 3),
        // After a restart the member serves a=1 again at revision 3.
        get(2, (40, 50), "a", 3, vec![kv("a", "1", 2, 2, 1)]),
    ];
    let r = run(ops);
    assert!(r.has(V::NotLinearizable));
    assert_eq!(r.lost, 1);
    // A key that vanished entirely.
    let ops = vec![
        put(1, (0, 10), "a", "1", 2),
        get(2, (20, 30), "a", 2, vec![]),
    ];
    assert!(run(ops).has(V::NotLinearizable));
}

#[test]
fn rejects_revision_going_back() {
    let ops = vec![
        put(1, (0, 10), "a", "1", 2),
        put(1, (20, 30), "b", "1", 3),
        // Two later reads: the second one's header revision went back.
        get(2, (40, 50), "a", 3, vec![kv("a", "1", 2, 2, 1)]),
        op(
            2,
            (60, 70),
            Request::Range {
                key: "b".into(),
                range_end: String::new(),
                revision: 0,
                serializable: false,
            },
            Outcome::Ok(Response::Range {
                revision: 2,
                kvs: vec![],
            }),
        ),
    ];
    assert!(run(ops).has(V::NotLinearizable));
    // Two acknowledged writes with one revision.
    let ops = vec![put(1, (0, 10), "a", "1", 2), put(2, (20, 30), "b", "1", 2)];
    assert!(run(ops).has(V::NotLinearizable));
}

#[test]
fn unknown_write_observed_is_placed_at_its_revision() {
    let ops = vec![
        put_unknown(1, 0, "a", "1"),
        put(2, (20, 30), "b", "1", 3),
        get(2, (40, 50), "a", 3, vec![kv("a", "1", 2, 2, 1)]),
    ];
    let r = run(ops);
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.unknown, 1);
}

#[test]
fn unknown_write_unobserved_may_fill_a_gap_or_vanish() {
    // Applied: the next acknowledged write is at 3, so revision 2 is it.
    let ops = vec![put_unknown(1, 0, "a", "1"), put(2, (20, 30), "b", "1", 3)];
    assert!(run(ops).ok());
    // Not applied: the next write took revision 2.
    let ops = vec![put_unknown(1, 0, "a", "1"), put(2, (20, 30), "b", "1", 2)];
    assert!(run(ops).ok());
    // But it cannot take effect before it was invoked.
    let ops = vec![put(2, (0, 10), "b", "1", 3), put_unknown(1, 20, "a", "1")];
    assert!(run(ops).has(V::NotLinearizable));
}

#[test]
fn rejects_phantom_and_failed_but_applied_values() {
    let ops = vec![get(2, (40, 50), "a", 2, vec![kv("a", "zz", 2, 2, 1)])];
    assert!(run(ops).has(V::PhantomValue));
    let ops = vec![
        op(
            1,
            (0, 10),
            Request::Put {
                key: "a".into(),
                value: "1".into(),
                lease: 0,
            },
            Outcome::Failed("etcdserver: request is too large".into()),
        ),
        get(2, (40, 50), "a", 2, vec![kv("a", "1", 2, 2, 1)]),
    ];
    assert!(run(ops).has(V::FailedWriteApplied));
}

#[test]
fn txn_compare_and_swap() {
    let cas = |t, expect: &str, new: &str, outcome| {
        op(
            1,
            t,
            Request::Txn {
                compare: vec![Compare {
                    key: "a".into(),
                    result: CompareResult::Equal,
                    target: CompareTarget::Value(expect.into()),
                }],
                success: vec![TxnOp::Put {
                    key: "a".into(),
                    value: new.into(),
                    lease: 0,
                }],
                failure: vec![TxnOp::Get { key: "a".into() }],
            },
            outcome,
        )
    };
    let good = vec![
        put(1, (0, 10), "a", "1", 2),
        cas(
            (20, 30),
            "1",
            "2",
            Outcome::Ok(Response::Txn {
                revision: 3,
                succeeded: true,
                results: vec![TxnOpResult::Put],
            }),
        ),
        cas(
            (40, 50),
            "1",
            "3",
            Outcome::Ok(Response::Txn {
                revision: 3,
                succeeded: false,
                results: vec![TxnOpResult::Get {
                    kvs: vec![kv("a", "2", 2, 3, 2)],
                }],
            }),
        ),
    ];
    assert!(run(good).ok());
    // Both CASes from "1" succeeding is a lost update.
    let bad = vec![
        put(1, (0, 10), "a", "1", 2),
        cas(
            (20, 30),
            "1",
            "2",
            Outcome::Ok(Response::Txn {
                revision: 3,
                succeeded: true,
                results: vec![TxnOpResult::Put],
            }),
        ),
        cas(
            (40, 50),
            "1",
            "3",
            Outcome::Ok(Response::Txn {
                revision: 4,
                succeeded: true,
                results: vec![TxnOpResult::Put],
            }),
        ),
    ];
    assert!(run(bad).has(V::NotLinearizable));
}

#[test]
fn serializable_read_checked_at_its_revision() {
    let ser = |rev, kvs| {
        op(
            3,
            (60, 70),
            Request::Range {
                key: "a".into(),
                range_end: String::new(),
                revision: 0,
                serializable: true,
            },
            Outcome::Ok(Response::Range { revision: rev, kvs }),
        )
    };
    // A stale serializable read is fine if it matches its revision.
    let mut ops = three_writes();
    ops.push(ser(3, vec![kv("a", "1", 2, 2, 1)]));
    assert!(run(ops).ok());
    // Not if it claims revision 4 but shows a=1.
    let mut ops = three_writes();
    ops.push(ser(4, vec![kv("a", "1", 2, 2, 1)]));
    assert!(run(ops).has(V::StaleRead));
}

#[test]
fn accepts_reliable_watch_with_progress_and_resume() {
    let ev = good_events();
    let mut w = watcher(true, vec![resp(2, vec![ev[0].clone()]), resp(2, vec![])]);
    w.segments.push(WatchSegment {
        key: "a".into(),
        range_end: "\0".into(),
        start_revision: 3,
        prev_kv: true,
        created_revision: 3,
        responses: vec![resp(4, vec![ev[1].clone(), ev[2].clone()])],
    });
    let r = run_with(three_writes(), vec![w], Vec::new());
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.watch_events, 3);
}

#[test]
fn rejects_duplicated_watch_event() {
    let ev = good_events();
    let w = watcher(
        true,
        vec![
            resp(3, vec![ev[0].clone(), ev[1].clone()]),
            resp(3, vec![ev[1].clone()]),
            resp(4, vec![ev[2].clone()]),
        ],
    );
    let r = run_with(three_writes(), vec![w], Vec::new());
    assert!(r.has(V::WatchDuplicate), "{r:?}");
}

#[test]
fn rejects_reordered_watch_events() {
    let ev = good_events();
    let w = watcher(
        true,
        vec![
            resp(4, vec![ev[0].clone(), ev[2].clone()]),
            resp(4, vec![ev[1].clone()]),
        ],
    );
    let r = run_with(three_writes(), vec![w], Vec::new());
    assert!(r.has(V::WatchOrder), "{r:?}");
}

#[test]
fn rejects_watch_gap_split_revision_bad_prev_kv_and_flags() {
    let ev = good_events();
    // Gap: revision 3 never delivered, yet revision 4 was.
    let w = watcher(true, vec![resp(4, vec![ev[0].clone(), ev[2].clone()])]);
    assert!(run_with(three_writes(), vec![w], Vec::new()).has(V::WatchGap));
    // Gap hidden behind a progress notification.
    let w = watcher(true, vec![resp(2, vec![ev[0].clone()]), resp(4, vec![])]);
    assert!(run_with(three_writes(), vec![w], Vec::new()).has(V::WatchGap));
    // Wrong prev_kv.
    let mut bad = ev.clone();
    bad[2].prev_kv = None;
    let w = watcher(true, vec![resp(4, bad)]);
    assert!(run_with(three_writes(), vec![w], Vec::new()).has(V::WatchPrevKv));
    // prev_kv sent to a watch that did not ask.
    let w = watcher(false, vec![resp(4, ev.clone())]);
    assert!(run_with(three_writes(), vec![w], Vec::new()).has(V::WatchPrevKv));
    // A modify reported as a create.
    let mut bad = ev.clone();
    bad[2].kv.create_revision = 4;
    let w = watcher(true, vec![resp(4, bad)]);
    assert!(run_with(three_writes(), vec![w], Vec::new()).has(V::WatchFlags));
    // One revision split over two responses (a txn writing two keys).
    let txn_ops = vec![op(
        1,
        (0, 10),
        Request::Txn {
            compare: vec![],
            success: vec![
                TxnOp::Put {
                    key: "a".into(),
                    value: "1".into(),
                    lease: 0,
                },
                TxnOp::Put {
                    key: "b".into(),
                    value: "1".into(),
                    lease: 0,
                },
            ],
            failure: vec![],
        },
        Outcome::Ok(Response::Txn {
            revision: 2,
            succeeded: true,
            results: vec![TxnOpResult::Put, TxnOpResult::Put],
        }),
    )];
    let w = watcher(
        false,
        vec![
            resp(2, vec![put_ev("a", "1", 2, 2, 1, None)]),
            resp(2, vec![put_ev("b", "1", 2, 2, 1, None)]),
        ],
    );
    let r = run_with(txn_ops, vec![w], Vec::new());
    assert!(r.has(V::WatchAtomic), "{r:?}");
}

#[test]
fn rejects_hash_mismatch() {
    let h = |m: &str, hash| MemberHash {
        member: m.into(),
        revision: 4,
        compact_revision: 0,
        hash,
    };
    let r = run_with(
        three_writes(),
        Vec::new(),
        vec![h("m1", 7), h("m2", 7), h("m3", 8)],
    );
    assert!(r.has(V::HashMismatch));
    let r = run_with(three_writes(), Vec::new(), vec![h("m1", 7), h("m2", 7)]);
    assert!(r.ok());
}

#[test]
fn lease_revoke_and_compaction() {
    let ops = vec![
        op(
            1,
            (0, 10),
            Request::LeaseGrant { id: 5, ttl: 600 },
            Outcome::Ok(Response::LeaseGrant { revision: 1 }),
        ),
        op(
            1,
            (20, 30),
            Request::Put {
                key: "a".into(),
                value: "1".into(),
                lease: 5,
            },
            Outcome::Ok(Response::Put { revision: 2 }),
        ),
        op(
            1,
            (40, 50),
            Request::LeaseRevoke { id: 5 },
            Outcome::Ok(Response::LeaseRevoke { revision: 3 }),
        ),
        op(
            1,
            (60, 70),
            Request::Compact { revision: 3 },
            Outcome::Ok(Response::Compact { revision: 3 }),
        ),
        get(2, (80, 90), "a", 3, vec![]),
    ];
    assert!(run(ops.clone()).ok());
    // The key must be gone after the revoke.
    let mut bad = ops;
    bad[4] = get(
        2,
        (80, 90),
        "a",
        3,
        vec![Kv {
            lease: 5,
            ..kv("a", "1", 2, 2, 1)
        }],
    );
    assert!(run(bad).has(V::NotLinearizable));
}

/// etcd's compaction at revision C drops a key whose last version at C is
/// a deletion, so a watch resumed at C (after a compaction cancel) cannot
/// show C's deletions (an 8-minute chaos run resumed both watchers there).
/// A stream that was not cancelled by that compaction must show them.
#[test]
fn watch_resumed_at_a_compaction_may_miss_its_deletions_and_only_then() {
    let ops = vec![
        put(1, (0, 10), "a", "1", 2),
        op(
            1,
            (20, 30),
            Request::Delete {
                key: "a".into(),
                range_end: String::new(),
            },
            Outcome::Ok(Response::Delete {
                revision: 3,
                deleted: 1,
            }),
        ),
        op(
            2,
            (40, 50),
            Request::Compact { revision: 3 },
            Outcome::Ok(Response::Compact { revision: 3 }),
        ),
        put(1, (60, 70), "b", "1", 4),
    ];
    let resumed = |cancel: WatchResponse| {
        let mut w = watcher(
            true,
            vec![resp(2, vec![put_ev("a", "1", 2, 2, 1, None)]), cancel],
        );
        w.segments.push(WatchSegment {
            key: "a".into(),
            range_end: "\0".into(),
            start_revision: 3,
            prev_kv: true,
            created_revision: 3,
            responses: vec![resp(4, vec![put_ev("b", "1", 4, 4, 1, None)])],
        });
        w
    };
    let compacted = WatchResponse {
        header_revision: 0,
        events: Vec::new(),
        canceled: true,
        compact_revision: 3,
    };
    let r = run_with(ops.clone(), vec![resumed(compacted)], Vec::new());
    assert!(r.ok(), "{r:?}");
    let r = run_with(ops, vec![resumed(resp(2, Vec::new()))], Vec::new());
    assert!(r.has(V::WatchGap), "{r:?}");
}

/// A watch resumed at a compaction revision C gets C's events without
/// `prev_kv`: the previous versions are older than C and compacted away
/// (etcd reads prev_kv at C - 1 and leaves it out when that fails). A
/// 2-minute chaos run resumed both watchers at C = 10195, a txn's
/// revision, and the search, unable to place that txn, ran out of budget.
/// A stream not cancelled by that compaction must carry the prev_kv.
#[test]
fn watch_resumed_at_a_compaction_may_lack_its_prev_kvs_and_only_then() {
    let ops = vec![
        put(1, (0, 10), "a", "1", 2),
        put(1, (20, 30), "a", "2", 3),
        op(
            2,
            (40, 50),
            Request::Compact { revision: 3 },
            Outcome::Ok(Response::Compact { revision: 3 }),
        ),
        put(1, (60, 70), "b", "1", 4),
        put(1, (80, 90), "a", "3", 5),
    ];
    let resumed = |cancel: WatchResponse, prev_at_3: Option<Kv>| {
        let mut w = watcher(
            true,
            vec![resp(2, vec![put_ev("a", "1", 2, 2, 1, None)]), cancel],
        );
        w.segments.push(WatchSegment {
            key: "a".into(),
            range_end: "\0".into(),
            start_revision: 3,
            prev_kv: true,
            created_revision: 3,
            responses: vec![resp(
                5,
                vec![
                    put_ev("a", "2", 2, 3, 2, prev_at_3),
                    put_ev("b", "1", 4, 4, 1, None),
                    put_ev("a", "3", 2, 5, 3, Some(kv("a", "2", 2, 3, 2))),
                ],
            )],
        });
        w
    };
    let compacted = WatchResponse {
        header_revision: 0,
        events: Vec::new(),
        canceled: true,
        compact_revision: 3,
    };
    let prev = Some(kv("a", "1", 2, 2, 1));
    for p in [None, prev.clone()] {
        let r = run_with(ops.clone(), vec![resumed(compacted.clone(), p)], Vec::new());
        assert!(r.ok(), "{r:?}");
    }
    // Only C's own events: a missing prev_kv past C is still wrong.
    let mut late = resumed(compacted.clone(), prev.clone());
    late.segments[1].responses[0].events[2].prev_kv = None;
    let r = run_with(ops.clone(), vec![late], Vec::new());
    assert!(r.has(V::WatchPrevKv), "{r:?}");
    // Not resumed at a compaction: the prev_kv must be there.
    let r = run_with(ops, vec![resumed(resp(2, Vec::new()), None)], Vec::new());
    assert!(r.has(V::WatchPrevKv), "{r:?}");
}
