//! Tree-level tests against a `BTreeMap` model.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};

use crate::backend::MemBackend;
use crate::db::Db;
use crate::node;
use crate::tree::{self, TreeRead};

use crate::test_util::opts;

use crate::test_util::collect;

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

/// Keys from families that stress long-key handling: short keys, long keys
/// sharing a 2000-byte prefix (long separators), inline keys sharing a stub's
/// 256-byte prefix, long keys that are prefixes of each other, and short keys
/// equal to or a prefix of a stub's prefix.
fn mixed_key(rng: &mut impl Rng) -> Vec<u8> {
    let n: u32 = rng.random_range(0..60);
    match rng.random_range(0..6) {
        0 => format!("key{n:05}").into_bytes(),
        1 => {
            let mut k = vec![b'a'; 2000];
            k.extend_from_slice(format!("{n:03}").as_bytes());
            k
        }
        2 => {
            let mut k = vec![b'a'; 300];
            k.extend_from_slice(format!("{n:03}").as_bytes());
            k
        }
        3 => vec![b'a'; 1020 + n as usize * 3],
        4 => vec![b'a'; 250 + n as usize % 10],
        _ => {
            let mut k = vec![b'b'; node::KEY_PREFIX_BYTES];
            k.extend(std::iter::repeat_n(b'c', n as usize * 40));
            k
        }
    }
}

fn check_against_model(db: &Db, model: &BTreeMap<Vec<u8>, Vec<u8>>, rng: &mut impl Rng) {
    db.check_integrity().unwrap();
    let snap = db.snapshot();
    let all = collect(&*snap, b"", None, false);
    let want: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(all, want);
    let mut rev = collect(&*snap, b"", None, true);
    rev.reverse();
    assert_eq!(rev, want);
    for _ in 0..8 {
        let (mut a, mut b) = (mixed_key(rng), mixed_key(rng));
        if a > b {
            std::mem::swap(&mut a, &mut b);
        }
        let want: Vec<_> = model
            .range(a.clone()..b.clone())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(collect(&*snap, &a, Some(&b), false), want);
        let mut rev = collect(&*snap, &a, Some(&b), true);
        rev.reverse();
        assert_eq!(rev, want);
        let got = tree::get(&*snap, &a)
            .unwrap()
            .map(|v| tree::load_value(&*snap, v).unwrap().into_owned());
        assert_eq!(got.as_ref(), model.get(&a));
    }
}

#[test]
fn long_keys_match_model_and_survive_reopen() {
    let backend = MemBackend::new();
    let db = Db::open(Arc::new(backend.clone()), opts()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for round in 0..40u8 {
        let mut txn = db.begin().unwrap();
        for _ in 0..rng.random_range(1..80) {
            let k = mixed_key(&mut rng);
            if rng.random_bool(0.3) {
                let had = txn.delete(&k).unwrap();
                assert_eq!(had, model.remove(&k).is_some());
            } else {
                let len = if rng.random_bool(0.1) {
                    rng.random_range(1500..9000)
                } else {
                    rng.random_range(0..200)
                };
                let v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_add(round)).collect();
                txn.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        db.commit(txn, |_| {}, round % 3 == 0).unwrap();
        check_against_model(&db, &model, &mut rng);
    }
    db.sync().unwrap();
    drop(db);
    let db = Db::open(Arc::new(backend), opts()).unwrap();
    check_against_model(&db, &model, &mut rng);
    // Deleting everything frees every key chain (the checker counts pages).
    let mut txn = db.begin().unwrap();
    for k in model.keys() {
        assert!(txn.delete(k).unwrap());
    }
    db.commit(txn, |_| {}, true).unwrap();
    let r = db.check_integrity().unwrap();
    assert_eq!((r.tree_pages, r.overflow_pages, r.keys), (0, 0, 0), "{r:?}");
}

/// Versions of one huge key: MVCC-like keys sharing a long prefix force
/// separators longer than `KEY_INLINE_MAX`, which get their own chains.
#[test]
fn long_separators_own_chains() {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let prefix = vec![b'k'; 3000];
    let key = |i: u32| {
        let mut k = prefix.clone();
        k.extend_from_slice(&i.to_be_bytes());
        k
    };
    let mut txn = db.begin().unwrap();
    for i in 0..400u32 {
        txn.put(&key(i), &[i as u8; 1500]).unwrap();
    }
    db.commit(txn, |_| {}, true).unwrap();
    let r = db.check_integrity().unwrap();
    // Every key chain is one page; branch separators add chains of their own.
    assert!(r.overflow_pages > 400, "{r:?}");
    let snap = db.snapshot();
    let root = snap.node(snap.root()).unwrap();
    assert!(!root.is_leaf());
    assert!(root.key_chain(1).unwrap().is_some(), "separator not long");
    for i in 0..400u32 {
        let v = tree::get(&*snap, &key(i)).unwrap().unwrap();
        assert_eq!(tree::load_value(&*snap, v).unwrap()[0], i as u8);
    }
    assert!(tree::get(&*snap, &prefix).unwrap().is_none());
    drop(snap);
    // Replacing values keeps the keys (no chain churn, no leak); deleting
    // from the middle merges leaves and drops separators.
    let mut txn = db.begin().unwrap();
    for i in 0..400u32 {
        txn.put(&key(i), b"x").unwrap();
    }
    db.commit(txn, |_| {}, true).unwrap();
    db.check_integrity().unwrap();
    let mut txn = db.begin().unwrap();
    for i in (0..400u32).filter(|i| i % 7 != 0) {
        assert!(txn.delete(&key(i)).unwrap());
    }
    db.commit(txn, |_| {}, true).unwrap();
    db.check_integrity().unwrap();
    let all = collect(&*db.snapshot(), b"", None, false);
    let want: Vec<_> = (0..400u32).filter(|i| i % 7 == 0).map(key).collect();
    assert_eq!(all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), want);
    let mut txn = db.begin().unwrap();
    for k in &want {
        assert!(txn.delete(k).unwrap());
    }
    db.commit(txn, |_| {}, true).unwrap();
    let r = db.check_integrity().unwrap();
    assert_eq!((r.tree_pages, r.overflow_pages), (0, 0), "{r:?}");
}

/// Separators pushed up by leaf splits are the shortest distinguishing
/// prefixes, not copies of the keys.
#[test]
fn separators_are_truncated() {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let mut txn = db.begin().unwrap();
    let key = |i: u32| format!("{:08}/{}", i * 7919 % 100_000, "x".repeat(60)).into_bytes();
    for i in 0..3000u32 {
        txn.put(&key(i), &[1u8; 20]).unwrap();
    }
    db.commit(txn, |_| {}, true).unwrap();
    db.check_integrity().unwrap();
    let snap = db.snapshot();
    let root = snap.node(snap.root()).unwrap();
    assert!(!root.is_leaf());
    let mut stack = vec![snap.root()];
    let mut seps = 0;
    while let Some(id) = stack.pop() {
        let n = snap.node(id).unwrap();
        if n.is_leaf() {
            continue;
        }
        for i in 0..n.len() {
            stack.push(n.child(i).unwrap());
            if i > 0 {
                let k = tree::load_key(&*snap, n.key(i).unwrap()).unwrap();
                assert!(k.len() <= 8, "separator {k:?} not truncated");
                seps += 1;
            }
        }
    }
    assert!(seps > 10);
}

/// Keys of the maximal user-key length: insert, get, scan, delete.
#[test]
fn maximal_keys() {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let max = crate::MAX_KEY_BYTES;
    let keys: Vec<Vec<u8>> = (0..4u8)
        .map(|i| {
            let mut k = vec![b'm'; max];
            k[max - 1] = i;
            k
        })
        .chain([vec![b'm'; max - 1], b"short".to_vec()])
        .collect();
    let mut txn = db.begin().unwrap();
    for (i, k) in keys.iter().enumerate() {
        txn.put(k, &[i as u8; 10]).unwrap();
    }
    assert!(matches!(
        txn.put(&vec![0; node::MAX_TREE_KEY + 1], b"v"),
        Err(crate::StorageError::KeyTooLarge { .. })
    ));
    db.commit(txn, |_| {}, true).unwrap();
    db.check_integrity().unwrap();
    let snap = db.snapshot();
    let mut sorted = keys.clone();
    sorted.sort();
    let got: Vec<_> = collect(&*snap, b"", None, false)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(got, sorted);
    let mut back: Vec<_> = collect(&*snap, b"", None, true)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    back.reverse();
    assert_eq!(back, sorted);
    for (i, k) in keys.iter().enumerate() {
        let v = tree::get(&*snap, k).unwrap().unwrap();
        assert_eq!(&*tree::load_value(&*snap, v).unwrap(), &[i as u8; 10]);
    }
    drop(snap);
    let mut txn = db.begin().unwrap();
    for k in &keys {
        assert!(txn.delete(k).unwrap());
    }
    db.commit(txn, |_| {}, true).unwrap();
    let r = db.check_integrity().unwrap();
    assert_eq!((r.tree_pages, r.overflow_pages), (0, 0), "{r:?}");
}

/// Defragmentation relocates key chains (leaf keys and separators).
#[test]
fn defrag_relocates_key_chains() {
    let db = Db::open(Arc::new(MemBackend::new()), opts()).unwrap();
    let mut model = BTreeMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut txn = db.begin().unwrap();
    for i in 0..1500u32 {
        let mut k = vec![b'd'; 1100 + (i as usize % 3) * 2000];
        k.extend_from_slice(&i.to_be_bytes());
        txn.put(&k, &[1u8; 40]).unwrap();
        model.insert(k, vec![1u8; 40]);
    }
    db.commit(txn, |_| {}, true).unwrap();
    // Free most early pages, keep late ones: relocation has work to do.
    let mut txn = db.begin().unwrap();
    let doomed: Vec<_> = model.keys().take(1200).cloned().collect();
    for k in doomed {
        assert!(txn.delete(&k).unwrap());
        model.remove(&k);
    }
    db.commit(txn, |_| {}, true).unwrap();
    let before = db.check_integrity().unwrap();
    let opts = crate::defrag::DefragOptions {
        batch_pages: 37,
        truncate_attempts: 3,
        retry_pause_ms: 1,
    };
    let rep = crate::defrag::defragment(&db, &opts).unwrap();
    assert!(
        rep.truncated && rep.pages_after < before.page_count,
        "{rep:?}"
    );
    check_against_model(&db, &model, &mut rng);
    // The cut went down to about the live size: no chain stayed high.
    let after = db.check_integrity().unwrap();
    let live = after.page_count - after.free_pages - 2;
    assert!(after.page_count <= 2 + live + live / 16 + 64, "{after:?}");
}

#[test]
fn ascending_keys_before_another_table_fill_pages() {
    // Ascending keys of table `a` land in the leaf holding the first keys of
    // table `z` (random): the boundary split keeps `a` leaves full, and the
    // result matches the model.
    let backend = MemBackend::new();
    let db = Db::open(Arc::new(backend), opts()).unwrap();
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for round in 0..20u32 {
        let mut txn = db.begin().unwrap();
        for i in 0..200u32 {
            let a = format!("a{:08}", round * 200 + i).into_bytes();
            let z = format!("z{:08}", rng.random_range(0..1_000_000u32)).into_bytes();
            for k in [a, z] {
                let v = vec![round as u8; 100];
                txn.put(&k, &v).unwrap();
                model.insert(k, v);
            }
        }
        db.commit(txn, |_| {}, round % 2 == 0).unwrap();
        check_against_model(&db, &model, &mut rng);
    }
    // 4000 `a` entries of 10 + 7 + 9 + 100 bytes: ~32 per page when packed.
    let snap = db.snapshot();
    let mut a_leaves = std::collections::HashSet::new();
    // Count the distinct leaves holding `a` keys by descending to each.
    for i in (0..4000u32).step_by(7) {
        let mut id = snap.root();
        let key = format!("a{i:08}").into_bytes();
        loop {
            let n = snap.node(id).unwrap();
            if n.is_leaf() {
                break;
            }
            id = n.child(tree::search(&*snap, &n, &key).unwrap()).unwrap();
        }
        a_leaves.insert(id);
    }
    assert!(a_leaves.len() <= 4000 / 28, "{} leaves", a_leaves.len());
}
