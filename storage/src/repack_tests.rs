//! Repacking keeps the content, frees pages, and stays within its budget
//! per transaction.

use std::sync::Arc;

use rand::{Rng, SeedableRng};

use super::repack;
use crate::backend::MemBackend;
use crate::db::Db;

use crate::test_util::opts;

use crate::test_util::all;

/// A tree of 30k keys (some with overflow values) thinned to ~1/4 by
/// single deletes, which leave most leaves a quarter full.
fn thinned(seed: u64) -> Db {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut txn = db.begin().unwrap();
    for i in 0..30_000u32 {
        let len = if i % 997 == 0 { 5000 } else { 80 };
        txn.put(format!("k{:07}", mix(i)).as_bytes(), &vec![i as u8; len])
            .unwrap();
    }
    db.commit(txn, |_| {}, true).unwrap();
    let mut txn = db.begin().unwrap();
    for i in 0..30_000u32 {
        if rng.random_bool(0.75) {
            txn.delete(format!("k{:07}", mix(i)).as_bytes()).unwrap();
        }
    }
    db.commit(txn, |_| {}, true).unwrap();
    db
}

fn mix(i: u32) -> u32 {
    i.wrapping_mul(2_654_435_761) % 10_000_000
}

#[test]
fn repack_keeps_content_and_frees_pages() {
    for batch in [7usize, 100_000] {
        let db = thinned(3);
        let before = all(&*db.snapshot());
        let pages = db.check_integrity().unwrap().tree_pages;
        let r = repack(&db, batch).unwrap();
        db.check_integrity().unwrap();
        assert_eq!(all(&*db.snapshot()), before);
        let after = db.check_integrity().unwrap().tree_pages;
        // Leaves packed to at least 85% on average (plus a few branches).
        let bytes: usize = before
            .iter()
            .map(|(k, v)| 9 + k.len() + if v.len() > 1000 { 8 } else { v.len() })
            .sum();
        let want = (bytes * 100).div_ceil(crate::node::NODE_CAP * 85) as u64 + 3;
        assert!(
            after <= want,
            "batch {batch}: {pages} -> {after} (want <= {want}), {r:?}"
        );
        assert!(r.nodes_saved > 0);
        if batch == 7 {
            // The budget is checked between parents: several passes.
            assert!(r.passes >= 3, "{r:?}");
        }
        // A second run finds nothing worth packing.
        let again = repack(&db, batch).unwrap();
        assert_eq!(again.nodes_saved, 0, "{again:?}");
    }
}

/// Long keys (key chains, and separators long enough to need their own
/// chains) through bulk deletes and repack: nothing leaks and nothing is
/// freed twice (the integrity checker accounts for every page).
#[test]
fn long_keys_survive_bulk_deletes_and_repack() {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let base = vec![b'p'; 3000];
    let key = |i: u32| {
        let mut k = base.clone();
        k.extend_from_slice(format!("{:05}", mix(i) % 100_000).as_bytes());
        k
    };
    let mut txn = db.begin().unwrap();
    for i in 0..600 {
        txn.put(&key(i), &[i as u8; 100]).unwrap();
    }
    db.commit(txn, |_| {}, true).unwrap();
    db.check_integrity().unwrap();

    let mut dead: Vec<Vec<u8>> = (0..600).filter(|i| i % 3 != 0).map(key).collect();
    dead.sort();
    dead.dedup();
    let mut txn = db.begin().unwrap();
    assert!(txn.delete_sorted(&dead).unwrap() > 300);
    db.commit(txn, |_| {}, true).unwrap();
    db.check_integrity().unwrap();

    let before = all(&*db.snapshot());
    let r = repack(&db, 5).unwrap();
    db.check_integrity().unwrap();
    assert_eq!(all(&*db.snapshot()), before);
    assert!(r.nodes_saved > 0, "{r:?}");

    let mut lo = base.clone();
    lo.extend_from_slice(b"2");
    let mut hi = base.clone();
    hi.extend_from_slice(b"7");
    let mut txn = db.begin().unwrap();
    assert!(txn.delete_range(&lo, &hi).unwrap() > 0);
    db.commit(txn, |_| {}, true).unwrap();
    db.check_integrity().unwrap();
    let want: Vec<_> = before
        .into_iter()
        .filter(|(k, _)| !(k.as_slice() >= lo.as_slice() && k.as_slice() < hi.as_slice()))
        .collect();
    assert_eq!(all(&*db.snapshot()), want);
}
