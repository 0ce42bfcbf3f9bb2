//! Repacking keeps the content, frees pages, and stays within its budget
//! per transaction.

use std::sync::Arc;

use rand::{Rng, SeedableRng};

use super::repack;
use crate::backend::MemBackend;
use crate::db::{Db, DbOptions};
use crate::tree::{self, TreeRead};

fn opts() -> DbOptions {
    DbOptions {
        verify_checksums: true,
        initial_file_bytes: 0,
        max_growth_bytes: 1 << 20,
    }
}

fn all<T: TreeRead>(t: &T) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    tree::scan(t, b"", None, false, |k, v| {
        out.push((k.to_vec(), tree::load_value(t, v)?.into_owned()));
        Ok(true)
    })
    .unwrap();
    out
}

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
