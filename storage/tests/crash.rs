//! Crash tests: fail the n-th IO call of a seeded workload for every n, then
//! lose the unsynced writes (all of them, or a random torn subset), reopen
//! and check that the state is exactly the last durable commit (or the one
//! whose durable commit was in flight) and that the integrity check passes.

mod common;
use std::sync::Arc;

use common::*;
use corekv_storage::*;
use rand::{Rng, SeedableRng};

#[derive(Clone, Debug, PartialEq)]
struct Expect {
    revision: i64,
    applied: u64,
    kvs: Vec<KeyValue>,
}

fn expect_of(store: &Store) -> Expect {
    let v = store.read().unwrap();
    Expect {
        revision: v.revision(),
        applied: v.applied_index(),
        kvs: range_all(&v, 0),
    }
}

/// Runs the workload until an IO error; returns (last durable state, state of
/// a durable commit that failed midway, if any).
fn workload(store: &Store, seed: u64) -> (Expect, Option<Expect>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut durable = expect_of(store);
    for batch in 0..24u64 {
        let Ok(mut b) = store.write() else {
            return (durable, None);
        };
        for _ in 0..rng.random_range(1..12) {
            let mut k = format!("key{:03}", rng.random_range(0..60)).into_bytes();
            if k[5] == b'7' {
                // Long keys (stubs with key chains) sharing a long prefix.
                k.splice(0..0, std::iter::repeat_n(b'L', 1100 + k[4] as usize * 10));
            }
            let r = if rng.random_bool(0.2) {
                b.delete_range(&DeleteRangeRequest {
                    key: k,
                    ..Default::default()
                })
                .map(|_| ())
            } else {
                let len = if rng.random_bool(0.05) {
                    9000
                } else {
                    rng.random_range(1..200)
                };
                b.put(&PutRequest {
                    key: k,
                    value: vec![batch as u8; len],
                    ..Default::default()
                })
                .map(|_| ())
            };
            if r.is_err() {
                return (durable, None);
            }
        }
        if batch == 12 {
            let rev = b.revision() - 3;
            let _ = b.compact(rev);
        }
        let is_durable = batch % 3 == 2;
        // What the state would be if this commit became durable.
        let model_after = {
            let kvs = b
                .range(&RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..Default::default()
                })
                .map(|r| r.kvs);
            kvs.map(|kvs| Expect {
                revision: b.revision(),
                applied: batch + 1,
                kvs,
            })
        };
        let Ok(model_after) = model_after else {
            return (durable, None);
        };
        match b.commit(batch + 1, is_durable) {
            Ok(_) if is_durable => durable = model_after,
            Ok(_) => {}
            Err(_) => return (durable, is_durable.then_some(model_after)),
        }
        if batch % 5 == 4 {
            let pending = expect_of(store);
            match store.sync() {
                Ok(()) => durable = pending,
                Err(_) => return (durable, Some(pending)),
            }
        }
    }
    (durable, None)
}

fn crash_everywhere(seed: u64, partial: bool) -> usize {
    // Dry run to count IO calls.
    let probe = MemBackend::new();
    {
        let store = Store::open_with_backend(Arc::new(probe.clone()), small_opts()).unwrap();
        workload(&store, seed);
    }
    let total = probe.op_count();
    let mut points = 0;
    for n in 0..total {
        let backend = MemBackend::new();
        let store = Store::open_with_backend(Arc::new(backend.clone()), small_opts()).unwrap();
        backend.fail_after(n);
        let (durable, in_flight) = workload(&store, seed);
        drop(store);
        if partial {
            backend.crash_partial(seed ^ n);
        } else {
            backend.crash();
        }
        let store = Store::open_with_backend(Arc::new(backend.clone()), small_opts())
            .unwrap_or_else(|e| panic!("seed {seed} crash at io {n}: reopen failed: {e}"));
        store
            .check_integrity()
            .unwrap_or_else(|e| panic!("seed {seed} crash at io {n}: integrity: {e}"));
        let got = expect_of(&store);
        let ok = got == durable || (partial && in_flight.as_ref() == Some(&got));
        assert!(
            ok,
            "seed {seed} crash at io {n}: state {got:?}\nwant {durable:?}\nor {in_flight:?}"
        );
        // The reopened store keeps working.
        let mut b = store.write().unwrap();
        put(&mut b, "after-crash", "1");
        b.commit(1000, true).unwrap();
        store.check_integrity().unwrap();
        points += 1;
    }
    points
}

#[test]
fn crash_at_every_io_point_drops_unsynced_writes() {
    for seed in [1, 2] {
        assert!(crash_everywhere(seed, false) > 50);
    }
}

#[test]
fn crash_with_torn_partial_writes() {
    for seed in [3, 4] {
        assert!(crash_everywhere(seed, true) > 50);
    }
}

#[test]
fn crash_during_defragmentation() {
    let build = || {
        let backend = MemBackend::new();
        let opts = StoreOptions {
            defrag_batch_pages: 8,
            ..small_opts()
        };
        let store = Store::open_with_backend(Arc::new(backend.clone()), opts).unwrap();
        for round in 0..8u32 {
            let mut b = store.write().unwrap();
            for k in 0..60u32 {
                let mut key = format!("k{:04}", round * 60 + k);
                if k % 6 == 0 {
                    // Long keys: their chains (and long separators) relocate.
                    key.push_str(&"/".repeat(1500));
                }
                b.put(&PutRequest {
                    key: key.into_bytes(),
                    value: vec![round as u8; 150],
                    ..Default::default()
                })
                .unwrap();
            }
            b.commit(round as u64, false).unwrap();
        }
        let mut b = store.write().unwrap();
        b.delete_range(&DeleteRangeRequest {
            key: b"k0000".to_vec(),
            range_end: b"k0400".to_vec(),
            prev_kv: false,
        })
        .unwrap();
        let rev = b.revision();
        b.compact(rev).unwrap();
        b.commit(9, true).unwrap();
        while store.compact_step().unwrap() {}
        store.sync().unwrap();
        (store, backend)
    };
    let (store, probe) = build();
    let want = expect_of(&store);
    let before = probe.op_count();
    store.defragment_report().unwrap();
    let total = probe.op_count() - before;
    assert!(total > 10);
    for n in 0..total {
        for partial in [false, true] {
            let (store, backend) = build();
            backend.fail_after(n);
            let _ = store.defragment();
            drop(store);
            if partial {
                backend.crash_partial(n);
            } else {
                backend.crash();
            }
            let store = Store::open_with_backend(Arc::new(backend), small_opts()).unwrap();
            store
                .check_integrity()
                .unwrap_or_else(|e| panic!("defrag crash at io {n}: {e}"));
            assert_eq!(expect_of(&store), want, "defrag crash at io {n}");
        }
    }
}

/// Options for passes spanning many commits, in revision or sweep mode.
fn slow_compaction(sweep: bool) -> StoreOptions {
    StoreOptions {
        compaction_batch_entries: 2,
        compaction_commit_entries: 1,
        compaction_sweep_ratio: if sweep { u64::MAX } else { 0 },
        ..small_opts()
    }
}

/// Writes with compaction passes in progress: targets at batches 4 and 8
/// (the second arrives mid-pass), `compact_step` commits in between, durable
/// commits and syncs. Returns like [`workload`].
fn compaction_workload(store: &Store, seed: u64) -> (Expect, Option<Expect>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut durable = expect_of(store);
    for batch in 0..14u64 {
        let Ok(mut b) = store.write() else {
            return (durable, None);
        };
        for _ in 0..rng.random_range(3..10) {
            let i = rng.random_range(0..30);
            let k = format!("key{i:02}").into_bytes();
            let r = if rng.random_bool(0.2) {
                // Some deletes cover a range (range tombstones when the
                // options allow them).
                let range_end = if rng.random_bool(0.4) {
                    format!("key{:02}", i + 6).into_bytes()
                } else {
                    Vec::new()
                };
                b.delete_range(&DeleteRangeRequest {
                    key: k,
                    range_end,
                    ..Default::default()
                })
                .map(|_| ())
            } else {
                let len = if rng.random_bool(0.05) { 6000 } else { 100 };
                b.put(&PutRequest {
                    key: k,
                    value: vec![batch as u8; len],
                    ..Default::default()
                })
                .map(|_| ())
            };
            if r.is_err() {
                return (durable, None);
            }
        }
        if batch == 4 || batch == 8 {
            let rev = b.revision() - 2;
            let _ = b.compact(rev);
        }
        let is_durable = batch % 3 == 1;
        let Ok(after) = b
            .range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })
            .map(|r| Expect {
                revision: b.revision(),
                applied: batch + 1,
                kvs: r.kvs,
            })
        else {
            return (durable, None);
        };
        match b.commit(batch + 1, is_durable) {
            Ok(_) if is_durable => durable = after,
            Ok(_) => {}
            Err(_) => return (durable, is_durable.then_some(after)),
        }
        for _ in 0..2 {
            if store.compact_step().is_err() {
                return (durable, None);
            }
        }
        if batch % 4 == 3 {
            let pending = expect_of(store);
            match store.sync() {
                Ok(()) => durable = pending,
                Err(_) => return (durable, Some(pending)),
            }
        }
    }
    (durable, None)
}

#[test]
fn crash_during_compaction_passes() {
    // (sweep, every ranged delete a range tombstone)
    for (sweep, tombs) in [(false, false), (true, false), (false, true)] {
        let opts = StoreOptions {
            range_delete_min_keys: if tombs { 1 } else { usize::MAX },
            ..slow_compaction(sweep)
        };
        let probe = MemBackend::new();
        {
            let store = Store::open_with_backend(Arc::new(probe.clone()), opts.clone()).unwrap();
            compaction_workload(&store, 5);
            assert!(store.compacted_revision() > 0);
        }
        let total = probe.op_count();
        assert!(total > 50);
        for n in 0..total {
            let partial = n % 2 == 1;
            let backend = MemBackend::new();
            let store = Store::open_with_backend(Arc::new(backend.clone()), opts.clone()).unwrap();
            backend.fail_after(n);
            let (durable, in_flight) = compaction_workload(&store, 5);
            drop(store);
            if partial {
                backend.crash_partial(n);
            } else {
                backend.crash();
            }
            let store = Store::open_with_backend(Arc::new(backend.clone()), opts.clone())
                .unwrap_or_else(|e| panic!("sweep {sweep}/{tombs} crash at io {n}: reopen: {e}"));
            store.check_integrity().unwrap_or_else(|e| {
                panic!("sweep {sweep}/{tombs} crash at io {n}: integrity: {e}")
            });
            let got = expect_of(&store);
            assert!(
                got == durable || (partial && in_flight.as_ref() == Some(&got)),
                "sweep {sweep}/{tombs} crash at io {n}: {got:?}\nwant {durable:?}\nor {in_flight:?}"
            );
            // The pass (if any) finishes after the reopen.
            while store.compact_step().unwrap() {}
            store.check_integrity().unwrap();
            assert_eq!(expect_of(&store), got);
        }
    }
}

#[test]
fn crash_during_repack() {
    // Keys inserted in random order leave leaves partly filled; repacking
    // (the first phase of defragmentation) rewrites them.
    let build = || {
        let backend = MemBackend::new();
        let opts = StoreOptions {
            defrag_batch_pages: 6,
            ..small_opts()
        };
        let store = Store::open_with_backend(Arc::new(backend.clone()), opts).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let mut b = store.write().unwrap();
        let mut keys = Vec::new();
        for _ in 0..700 {
            let k = format!("k{:05}", rng.random_range(0..100_000u32));
            let len = if rng.random_bool(0.02) { 5000 } else { 120 };
            keys.push(k.clone().into_bytes());
            b.put(&PutRequest {
                key: k.into_bytes(),
                value: vec![3; len],
                ..Default::default()
            })
            .unwrap();
        }
        b.commit(1, true).unwrap();
        // Leaves fill well under random inserts (redistribution), so
        // delete and compact away every other key to leave them sparse.
        let mut b = store.write().unwrap();
        for k in keys.iter().step_by(2) {
            b.delete_range(&DeleteRangeRequest {
                key: k.clone(),
                ..Default::default()
            })
            .unwrap();
        }
        let rev = b.revision();
        b.compact(rev).unwrap();
        b.commit(2, true).unwrap();
        while store.compact_step().unwrap() {}
        store.sync().unwrap();
        (store, backend)
    };
    let (store, probe) = build();
    let want = expect_of(&store);
    let before = probe.op_count();
    let report = store.defragment_report().unwrap();
    assert!(report.repacked_nodes > 0, "{report:?}");
    let total = probe.op_count() - before;
    for n in 0..total {
        let (store, backend) = build();
        backend.fail_after(n);
        let _ = store.defragment();
        drop(store);
        if n % 2 == 1 {
            backend.crash_partial(n);
        } else {
            backend.crash();
        }
        let store = Store::open_with_backend(Arc::new(backend), small_opts()).unwrap();
        store
            .check_integrity()
            .unwrap_or_else(|e| panic!("repack crash at io {n}: {e}"));
        assert_eq!(expect_of(&store), want, "repack crash at io {n}");
    }
}
