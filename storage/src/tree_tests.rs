//! Tree-level tests against a `BTreeMap` model.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};

use crate::backend::MemBackend;
use crate::db::{Db, DbOptions};
use crate::tree::{self, TreeRead};

fn opts() -> DbOptions {
    DbOptions {
        verify_checksums: true,
        initial_file_bytes: 0,
        max_growth_bytes: 1 << 20,
        max_live_snapshots: 1024,
    }
}

fn collect<T: TreeRead>(
    t: &T,
    start: &[u8],
    end: Option<&[u8]>,
    rev: bool,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    tree::scan(t, start, end, rev, |k, v| {
        out.push((k.to_vec(), tree::load_value(t, v)?.into_owned()));
        Ok(true)
    })
    .unwrap();
    out
}

#[test]
fn random_ops_match_model_and_survive_reopen() {
    let backend = MemBackend::new();
    let db = Db::open(Arc::new(backend.clone()), opts()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for round in 0..60 {
        let mut txn = db.begin().unwrap();
        for _ in 0..rng.random_range(1..200) {
            let k = format!("key{:05}", rng.random_range(0..3000)).into_bytes();
            if rng.random_bool(0.3) {
                let had = txn.delete(&k).unwrap();
                assert_eq!(had, model.remove(&k).is_some());
            } else {
                let len = if rng.random_bool(0.05) {
                    rng.random_range(2000..20000)
                } else {
                    rng.random_range(0..300)
                };
                let v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(round)).collect();
                txn.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        let durable = round % 3 == 0;
        db.commit(txn, |_| {}, durable).unwrap();
        db.check_integrity().unwrap();
        let snap = db.snapshot();
        let all = collect(&*snap, b"", None, false);
        let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        assert_eq!(all, want);
        let mut rev = collect(&*snap, b"key01", Some(b"key02"), true);
        rev.reverse();
        let want: Vec<_> = model
            .range(b"key01".to_vec()..b"key02".to_vec())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(rev, want);
    }
    db.sync().unwrap();
    drop(db);
    let db = Db::open(Arc::new(backend), opts()).unwrap();
    db.check_integrity().unwrap();
    let all = collect(&*db.snapshot(), b"", None, false);
    assert_eq!(all.len(), model.len());
}

#[test]
fn delete_everything_frees_all_pages() {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let mut txn = db.begin().unwrap();
    for i in 0..5000u32 {
        txn.put(&i.to_be_bytes(), &[7u8; 100]).unwrap();
    }
    db.commit(txn, |_| {}, true).unwrap();
    let mut txn = db.begin().unwrap();
    for i in 0..5000u32 {
        assert!(txn.delete(&i.to_be_bytes()).unwrap());
    }
    db.commit(txn, |_| {}, true).unwrap();
    let r = db.check_integrity().unwrap();
    assert_eq!(r.tree_pages, 0);
    assert_eq!(r.keys, 0);
}

#[test]
fn snapshot_isolation_across_commits() {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let mut txn = db.begin().unwrap();
    txn.put(b"a", b"1").unwrap();
    db.commit(txn, |_| {}, false).unwrap();
    let old = db.snapshot();
    for i in 0..50 {
        let mut txn = db.begin().unwrap();
        txn.put(b"a", format!("{i}").as_bytes()).unwrap();
        for j in 0..100u32 {
            txn.put(&j.to_be_bytes(), &[i as u8; 64]).unwrap();
        }
        db.commit(txn, |_| {}, i % 2 == 0).unwrap();
    }
    let v = tree::get(&*old, b"a").unwrap().unwrap();
    assert_eq!(&*tree::load_value(&*old, v).unwrap(), b"1");
    assert_eq!(collect(&*old, b"", None, false).len(), 1);
    db.check_integrity().unwrap();
}

#[test]
fn ascending_inserts_fill_pages() {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let mut txn = db.begin().unwrap();
    for i in 0..10_000u64 {
        txn.put(&i.to_be_bytes(), &[1u8; 100]).unwrap();
    }
    db.commit(txn, |_| {}, true).unwrap();
    let r = db.check_integrity().unwrap();
    // 10k entries of ~119 bytes: ~295 full leaves; halving splits would need ~590.
    assert!(r.tree_pages < 340, "{r:?}");
}
