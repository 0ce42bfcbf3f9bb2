//! Footprint properties read back with the offline byte budget
//! (`corekv_storage::inspect`): every page accounted for, leaf fill after
//! random and ascending loads, the revision table packed, overwrite keeps the
//! file flat once free pages are reusable.

mod common;
use common::*;
use corekv_storage::*;

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 31)
}

fn key(i: u64, random: bool) -> Vec<u8> {
    let mut k = if random {
        format!("{:016x}", mix(i)).into_bytes()
    } else {
        format!("{i:016}").into_bytes()
    };
    k.resize(64, b'.');
    k
}

/// Puts keys `0..n` in commits of 500 (durable), values of `round`.
fn load(s: &Store, n: u64, random: bool, round: u8, applied: &mut u64) {
    for chunk in 0..n.div_ceil(500) {
        let mut b = s.write().unwrap();
        for i in chunk * 500..((chunk + 1) * 500).min(n) {
            b.put(&PutRequest {
                key: key(i, random),
                value: vec![round; 256],
                ..Default::default()
            })
            .unwrap();
        }
        *applied += 1;
        b.commit(*applied, true).unwrap();
    }
}

fn leaf_fill(b: &Budget) -> f64 {
    b.levels.last().unwrap().fill()
}

fn budget_after(n: u64, random: bool) -> Budget {
    let dir = tempdir();
    let path = dir.path().join("db");
    let s = Store::open(&path, small_opts()).unwrap();
    let mut applied = 0;
    load(&s, n, random, 1, &mut applied);
    s.check_integrity().unwrap();
    drop(s);
    let b = inspect(&path).unwrap();
    assert_eq!(b.unaccounted_pages, 0, "{}", b.to_text());
    assert_eq!(b.k.entries, n);
    assert_eq!(b.r.entries, n);
    assert_eq!(b.payload_bytes(), n * (64 + 256));
    assert!(b.to_json().starts_with('{') && b.to_json().ends_with('}'));
    b
}

#[test]
fn random_inserts_fill_leaves() {
    let b = budget_after(20_000, true);
    // Plain halving splits leave random-order leaves ~69% full.
    assert!(leaf_fill(&b) > 0.78, "{}", b.to_text());
}

#[test]
fn ascending_inserts_fill_leaves() {
    let b = budget_after(20_000, false);
    assert!(leaf_fill(&b) > 0.9, "{}", b.to_text());
}
