//! The reader registry is bounded: `Store::read` refuses a reader once
//! readers hold `max_live_snapshots` distinct older snapshots.

mod common;

use common::*;
use corekv_storage::*;

fn store_with_max(max: usize) -> Store {
    let opts = StoreOptions {
        max_live_snapshots: max,
        ..small_opts()
    };
    Store::open_with_backend(std::sync::Arc::new(MemBackend::new()), opts).unwrap()
}

fn commit_one(s: &Store, i: u64) {
    let mut b = s.write().unwrap();
    put(&mut b, &format!("k{i}"), "v");
    b.commit(i, false).unwrap();
}

#[test]
fn holding_max_snapshots_refuses_the_next_reader_until_one_drops() {
    let max = 3;
    let s = store_with_max(max);
    let mut held = Vec::new();
    for i in 1..=max as u64 {
        held.push(s.read().unwrap());
        commit_one(&s, i);
    }
    // Readers hold `max` distinct snapshots, none of them the latest.
    assert_eq!(s.live_snapshots(), max + 1);
    match s.read() {
        Err(StorageError::TooManyReaders { live, max: m }) => {
            assert_eq!((live, m), (max, max));
        }
        other => panic!(
            "expected TooManyReaders, got {:?}",
            other.map(|v| v.revision())
        ),
    }
    // Commits are never refused and do not grow the registry past max + 1.
    commit_one(&s, 10);
    assert_eq!(s.live_snapshots(), max + 1);
    assert!(matches!(s.read(), Err(StorageError::TooManyReaders { .. })));
    // Dropping one reader's snapshot makes room again.
    held.remove(1);
    assert_eq!(s.live_snapshots(), max);
    let v = s.read().unwrap();
    assert_eq!(v.revision(), s.current_revision());
    assert_eq!(s.live_snapshots(), max);
    // More views of the latest commit add no registry entry.
    let more: Vec<ReadView> = (0..10).map(|_| s.read().unwrap()).collect();
    assert_eq!(s.live_snapshots(), max);
    // The old views still read their own state.
    assert_eq!(range_all(&held[0], 0).len(), 0);
    assert_eq!(range_all(&held[1], 0).len(), 2);
    // Readers hold `max` distinct snapshots again once a commit moves on.
    commit_one(&s, 12);
    assert_eq!(s.live_snapshots(), max + 1);
    assert!(matches!(s.read(), Err(StorageError::TooManyReaders { .. })));
    drop(more);
    drop(v);
    drop(held);
    assert_eq!(s.live_snapshots(), 1);
    commit_one(&s, 14);
    assert!(s.read().is_ok());
}

#[test]
fn registry_never_exceeds_max_plus_one() {
    let max = 5;
    let s = store_with_max(max);
    let mut held: Vec<ReadView> = Vec::new();
    let mut refused = 0;
    for i in 1..200u64 {
        match s.read() {
            Ok(v) => held.push(v),
            Err(StorageError::TooManyReaders { live, max: m }) => {
                assert_eq!((live, m), (max, max));
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
        if i % 7 == 0 && !held.is_empty() {
            held.remove((i as usize * 31) % held.len());
        }
        commit_one(&s, i);
        assert!(s.live_snapshots() <= max + 1, "{}", s.live_snapshots());
    }
    assert!(refused > 0);
    // Snapshot streaming takes a reader too and reports the same error.
    let mut out = Vec::new();
    let full = held.len() >= max;
    assert_eq!(
        matches!(
            s.write_snapshot(&mut out),
            Err(StorageError::TooManyReaders { .. })
        ),
        full && s.live_snapshots() == max + 1
    );
}
