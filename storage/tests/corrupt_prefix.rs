//! Targeted corruption of format 5 leaf key prefixes (prefix length, prefix
//! bytes, heads, suffix lengths) with valid checksums: the integrity checker
//! reports `Corrupted`, readers return errors, nothing panics. And a file of
//! the previous format is refused with the typed error naming the upgrade.

mod common;
use std::sync::Arc;

use common::*;
use corekv_storage::*;

/// Kubernetes-like keys (long shared prefixes), several versions each, and
/// a few long keys (stubs inside prefixed leaves).
fn sample() -> (Vec<u8>, usize) {
    let backend = MemBackend::new();
    let store = Store::open_with_backend(Arc::new(backend.clone()), small_opts()).unwrap();
    for round in 0..3u8 {
        let mut b = store.write().unwrap();
        for i in 0..300u32 {
            let mut key = format!("/registry/pods/ns-{:03}/pod-{:08}", i % 7, i * 13).into_bytes();
            if i % 50 == 0 {
                key.extend_from_slice(&[b'~'; 1500]);
            }
            b.put(&PutRequest {
                key,
                value: vec![round; 40],
                ..Default::default()
            })
            .unwrap();
        }
        b.commit(round as u64, true).unwrap();
    }
    let pages = store.check_integrity().unwrap().page_count as usize;
    drop(store);
    let mut f = backend.snapshot_bytes();
    f.truncate(pages * PAGE_SIZE);
    (f, pages)
}

fn u16_at(f: &[u8], at: usize) -> usize {
    u16::from_le_bytes([f[at], f[at + 1]]) as usize
}

fn u64_at(f: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(f[at..at + 8].try_into().unwrap())
}

/// Tree pages reachable from the newest meta page: (page, is leaf).
fn tree_pages(f: &[u8]) -> Vec<(usize, bool)> {
    let root = [0usize, 1]
        .into_iter()
        .max_by_key(|m| u64_at(f, m * PAGE_SIZE + 32))
        .map(|m| u64_at(f, m * PAGE_SIZE + 40) as usize)
        .unwrap();
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        let base = p * PAGE_SIZE;
        let leaf = f[base + 4] == 1;
        if !leaf {
            for i in 0..u16_at(f, base + 6) {
                let off = base + u16_at(f, base + 16 + 10 * i);
                stack.push(u64_at(f, off + 2) as usize);
            }
        }
        out.push((p, leaf));
    }
    out
}

fn reseal(f: &mut [u8], page: usize) {
    let pg = &mut f[page * PAGE_SIZE..(page + 1) * PAGE_SIZE];
    let crc = checksum_crc32c(&pg[4..]);
    pg[..4].copy_from_slice(&crc.to_le_bytes());
}

/// The corrupted file gives `Corrupted` from the checker and from a read
/// of every key, and the fuzzing entry points do not panic.
fn assert_detected(f: Vec<u8>, what: &str) {
    corekv_storage::fuzzing::open_and_read(&f);
    corekv_storage::fuzzing::open_and_read_unverified(&f);
    let store =
        Store::open_with_backend(Arc::new(MemBackend::from_bytes(f)), small_opts()).unwrap();
    let r = store.check_integrity();
    assert!(
        matches!(r, Err(StorageError::Corrupted { .. })),
        "{what}: {r:?}"
    );
}

#[test]
fn corrupted_leaf_prefixes_are_detected() {
    let (base, _) = sample();
    let pages = tree_pages(&base);
    let prefixed: Vec<usize> = pages
        .iter()
        .filter(|(p, leaf)| *leaf && base[p * PAGE_SIZE + 5] > 0)
        .map(|(p, _)| *p)
        .collect();
    assert!(prefixed.len() >= 3, "{pages:?}");
    let mut cases = 0;
    for &p in prefixed.iter().step_by(prefixed.len() / 3) {
        let b = p * PAGE_SIZE;
        let plen = base[b + 5] as usize;
        let count = u16_at(&base, b + 6);
        let prefix_at = b + 16 + 10 * count;
        // Prefix length longer (the prefix runs into the first entry) or
        // at its maximum.
        for bad in [plen + 1, 255] {
            let mut f = base.clone();
            f[b + 5] = bad as u8;
            reseal(&mut f, p);
            assert_detected(f, &format!("page {p} prefix length {plen} -> {bad}"));
            cases += 1;
        }
        // A prefix byte changed: a long key's stub no longer starts with
        // the prefix, or the keys leave their parent's bounds or order.
        let mut f = base.clone();
        f[prefix_at] ^= 0x40;
        reseal(&mut f, p);
        assert_detected(f, &format!("page {p} prefix byte 0"));
        cases += 1;
        // A slot head that is not the head of its suffix.
        let mut f = base.clone();
        f[b + 16 + 2 + 7] ^= 1;
        reseal(&mut f, p);
        assert_detected(f, &format!("page {p} slot head"));
        cases += 1;
        // An inline suffix length making the whole key longer than 1024.
        let mut f = base.clone();
        let off = b + u16_at(&base, b + 16);
        if u16_at(&base, off) != u16::MAX as usize {
            f[off..off + 2].copy_from_slice(&((1025 - plen) as u16).to_le_bytes());
            reseal(&mut f, p);
            assert_detected(f, &format!("page {p} suffix length"));
            cases += 1;
        }
    }
    // A branch page with a prefix length.
    let (branch, _) = *pages.iter().find(|(_, leaf)| !leaf).unwrap();
    let mut f = base.clone();
    f[branch * PAGE_SIZE + 5] = 3;
    reseal(&mut f, branch);
    assert_detected(f, "branch with a prefix");
    assert!(cases >= 12, "{cases}");
}

#[test]
fn format_4_files_are_refused_with_the_upgrade_path() {
    let (mut f, _) = sample();
    for slot in 0..2 {
        f[slot * PAGE_SIZE + 20] = 4;
        reseal(&mut f, slot);
    }
    let r = Store::open_with_backend(Arc::new(MemBackend::from_bytes(f)), small_opts());
    match r {
        Err(
            e @ StorageError::UnsupportedFormat {
                found: 4,
                supported: 5,
            },
        ) => {
            let msg = e.to_string();
            assert!(
                msg.contains("snapshot save") && msg.contains("snapshot restore"),
                "{msg}"
            );
        }
        Err(e) => panic!("format 4 file: {e}"),
        Ok(_) => panic!("format 4 file opened"),
    }
}
