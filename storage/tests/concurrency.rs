//! Readers on other threads during writes, and defragmentation under load.

mod common;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::*;
use corekv_storage::*;

/// Each commit writes the same counter value to every key; a reader must
/// always see all keys with one value (no partial commit).
fn check_consistent(v: &ReadView) {
    let kvs = range_all(v, 0);
    if let Some(first) = kvs.first() {
        assert!(
            kvs.iter().all(|kv| kv.value[..4] == first.value[..4]),
            "torn read at rev {}",
            v.revision()
        );
    }
}

/// Whether a load thread goes on: until `stop`, and at least once, so the
/// test still sees every thread do its work when a busy host schedules it
/// late.
fn go_on(stop: &AtomicBool, did_some: bool) -> bool {
    !did_some || !stop.load(Ordering::Relaxed)
}

#[test]
fn readers_see_whole_commits_while_writer_runs() {
    let dir = tempdir();
    let store = Store::open(&dir.path().join("db"), small_opts()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..2 {
        let s = store.clone();
        let stop = stop.clone();
        readers.push(thread::spawn(move || {
            let mut held: Vec<(ReadView, Vec<KeyValue>)> = Vec::new();
            let mut n = 0u64;
            while go_on(&stop, n > 0) {
                let v = s.read().unwrap();
                check_consistent(&v);
                // Keep some snapshots for a while: their pages must stay intact.
                if n % 7 == 0 {
                    let kvs = range_all(&v, 0);
                    held.push((v, kvs));
                    if held.len() > 8 {
                        let (old, kvs) = held.remove(0);
                        assert_eq!(range_all(&old, 0), kvs, "snapshot changed under a reader");
                    }
                }
                n += 1;
            }
            n
        }));
    }
    for i in 0..300u32 {
        let mut b = store.write().unwrap();
        for k in 0..40 {
            let len = if k == 0 { 5000 } else { 100 };
            let mut value = vec![0u8; len];
            value[..4].copy_from_slice(&i.to_be_bytes());
            b.put(&PutRequest {
                key: format!("k{k:02}").into_bytes(),
                value,
                ..Default::default()
            })
            .unwrap();
        }
        if i % 50 == 49 {
            let rev = b.revision() - 40;
            b.compact(rev).unwrap();
        }
        b.commit(i as u64, i % 10 == 0).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    store.check_integrity().unwrap();
}

#[test]
fn defrag_under_load_shrinks_and_keeps_data() {
    let dir = tempdir();
    let opts = StoreOptions {
        defrag_batch_pages: 64,
        ..small_opts()
    };
    let store = Store::open(&dir.path().join("db"), opts).unwrap();
    // Fill, then delete most of it and compact so the file has holes.
    for round in 0..20u32 {
        let mut b = store.write().unwrap();
        for k in 0..200u32 {
            b.put(&PutRequest {
                key: format!("key{:05}", round * 200 + k).into_bytes(),
                value: vec![round as u8; 300],
                ..Default::default()
            })
            .unwrap();
        }
        b.commit(round as u64, false).unwrap();
    }
    let mut b = store.write().unwrap();
    b.delete_range(&DeleteRangeRequest {
        key: b"key00000".to_vec(),
        range_end: b"key03500".to_vec(),
        prev_kv: false,
    })
    .unwrap();
    let rev = b.revision();
    b.compact(rev).unwrap();
    b.commit(100, true).unwrap();
    while store.compact_step().unwrap() {}
    store.sync().unwrap();
    let size_before = store.db_size_bytes();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let s = store.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut i = 0u32;
            while go_on(&stop, i > 0) {
                let mut b = s.write().unwrap();
                b.put(&PutRequest {
                    key: format!("live{:03}", i % 100).into_bytes(),
                    value: vec![7; 200],
                    ..Default::default()
                })
                .unwrap();
                // A steady load with periodic checkpoints, as the server runs.
                b.commit(1000 + i as u64, i % 10 == 0).unwrap();
                i += 1;
                thread::sleep(std::time::Duration::from_micros(300));
            }
            i
        })
    };
    let reader = {
        let s = store.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0;
            while go_on(&stop, n > 0) {
                let v = s.read().unwrap();
                let r = v
                    .range(&RangeRequest {
                        key: b"key03500".to_vec(),
                        range_end: b"key04000".to_vec(),
                        ..Default::default()
                    })
                    .unwrap();
                assert_eq!(r.count, 500);
                n += 1;
            }
            n
        })
    };
    let report = store.defragment_report().unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    let reads = reader.join().unwrap();
    assert!(writes > 0 && reads > 0);
    store.check_integrity().unwrap();
    assert!(report.relocated_pages > 0, "{report:?}");
    assert!(report.truncated, "{report:?}");
    let size_after = store.db_size_bytes();
    assert!(
        size_after < size_before / 2,
        "{size_before} -> {size_after} ({report:?})"
    );
    let v = store.read().unwrap();
    let r = v
        .range(&RangeRequest {
            key: b"key".to_vec(),
            range_end: b"kez".to_vec(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.count, 500);
    drop(v);
    // Survives a reopen.
    let path = dir.path().join("db");
    store.sync().unwrap();
    drop(store);
    let store = Store::open(&path, small_opts()).unwrap();
    store.check_integrity().unwrap();
    assert_eq!(
        range_all(&store.read().unwrap(), 0).len(),
        500 + writes.min(100) as usize
    );
}

#[test]
fn repack_under_load_with_readers_and_writer() {
    let dir = tempdir();
    let opts = StoreOptions {
        defrag_batch_pages: 16,
        ..small_opts()
    };
    let store = Store::open(&dir.path().join("db"), opts).unwrap();
    // Keys in scattered order leave leaves partly filled.
    let key = |i: u32| format!("key{:06}", i.wrapping_mul(7919) % 4000).into_bytes();
    let mut b = store.write().unwrap();
    for i in 0..4000u32 {
        b.put(&PutRequest {
            key: key(i),
            value: vec![1; 150],
            ..Default::default()
        })
        .unwrap();
    }
    b.commit(1, true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The writer overwrites keys inside the ranges being repacked.
    let writer = {
        let s = store.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            let mut i = 0u32;
            while go_on(&stop, i > 0) {
                let mut b = s.write().unwrap();
                b.put(&PutRequest {
                    key: key(i * 13),
                    value: vec![2; 150],
                    ..Default::default()
                })
                .unwrap();
                b.commit(10 + i as u64, i % 10 == 0).unwrap();
                i += 1;
                thread::sleep(std::time::Duration::from_micros(200));
            }
            i
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let s = store.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                let mut n = 0;
                while go_on(&stop, n > 0) {
                    let v = s.read().unwrap();
                    assert_eq!(range_all(&v, 0).len(), 4000);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let report = store.defragment_report().unwrap();
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    assert!(writes > 0);
    assert!(report.repacked_nodes > 0 && report.passes > 1, "{report:?}");
    store.check_integrity().unwrap();
    let v = store.read().unwrap();
    let all = range_all(&v, 0);
    assert_eq!(all.len(), 4000);
    assert!(all.iter().all(|kv| kv.value.len() == 150));
}
