//! Thousands of corrupted store files: opening and reading them returns
//! errors (usually `Corrupted`), never panics.

mod common;
use std::sync::Arc;

use common::*;
use corekv_storage::*;
use rand::{Rng, SeedableRng};

fn sample_file() -> Vec<u8> {
    let backend = MemBackend::new();
    // Every ranged delete is a range tombstone (the `d` table and the meta
    // page's count are parsed too).
    let opts = StoreOptions {
        range_delete_min_keys: 1,
        ..small_opts()
    };
    let store = Store::open_with_backend(Arc::new(backend.clone()), opts).unwrap();
    for round in 0..6u32 {
        let mut b = store.write().unwrap();
        for k in 0..60u32 {
            let len = if k % 29 == 0 { 7000 } else { 40 };
            let mut key = format!("k{:03}", (k * 7 + round) % 90).into_bytes();
            if k % 5 == 0 {
                // Long keys: stubs, key chains and long separators.
                key.extend_from_slice(&[b'~'; 1500]);
            }
            b.put(&PutRequest {
                key,
                value: vec![k as u8; len],
                ..Default::default()
            })
            .unwrap();
        }
        if round == 3 {
            b.delete_range(&DeleteRangeRequest {
                key: b"k01".to_vec(),
                range_end: b"k03".to_vec(),
                prev_kv: false,
            })
            .unwrap();
            b.compact(b.revision() - 30).unwrap();
        }
        if round == 4 {
            b.delete_range(&DeleteRangeRequest {
                key: b"k05".to_vec(),
                range_end: b"k07".to_vec(),
                prev_kv: false,
            })
            .unwrap();
        }
        b.put_meta(b"m", b"meta");
        b.commit(round as u64, round % 2 == 1).unwrap();
    }
    store.sync().unwrap();
    // Drop the preallocated tail: smaller files make each case cheaper.
    let used = store.check_integrity().unwrap().page_count as usize * PAGE_SIZE;
    let mut bytes = backend.snapshot_bytes();
    bytes.truncate(used);
    bytes
}

#[test]
fn corrupted_files_never_panic() {
    let base = sample_file();
    // The intact file reads fine.
    corekv_storage::fuzzing::open_and_read(&base);
    let pages = base.len() / PAGE_SIZE;
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut corrupted_errors = 0;
    for case in 0..3000 {
        let mut f = base.clone();
        match case % 4 {
            0 => {
                // Random byte flips anywhere.
                for _ in 0..rng.random_range(1..20) {
                    let i = rng.random_range(0..f.len());
                    f[i] ^= rng.random::<u8>() | 1;
                }
            }
            1 => {
                // A data page overwritten with garbage (checksum re-sealed
                // so the structural decoders see the garbage).
                let p = rng.random_range(2..pages);
                let page = &mut f[p * PAGE_SIZE..(p + 1) * PAGE_SIZE];
                for _ in 0..rng.random_range(1..64) {
                    let i = rng.random_range(4..PAGE_SIZE);
                    page[i] = rng.random();
                }
                let crc = corekv_storage::checksum_crc32c(&page[4..]);
                page[..4].copy_from_slice(&crc.to_le_bytes());
            }
            2 => {
                // Truncated file.
                f.truncate(rng.random_range(0..f.len()));
            }
            _ => {
                // One page copied over another (valid checksum, wrong place).
                let a = rng.random_range(0..pages);
                let b = rng.random_range(0..pages);
                let src = f[a * PAGE_SIZE..(a + 1) * PAGE_SIZE].to_vec();
                f[b * PAGE_SIZE..(b + 1) * PAGE_SIZE].copy_from_slice(&src);
            }
        }
        corekv_storage::fuzzing::open_and_read(&f);
        let backend = Arc::new(MemBackend::from_bytes(f));
        if let Err(StorageError::Corrupted { .. }) = Store::open_with_backend(backend, small_opts())
            .and_then(|s| s.check_integrity().map(|_| ()))
        {
            corrupted_errors += 1;
        }
    }
    assert!(
        corrupted_errors > 100,
        "only {corrupted_errors} corruptions detected"
    );
}

/// Every stub of the tree reachable from the newest meta page, as (page, is
/// leaf, stub offset in the file). Parses the documented page format.
fn find_stubs(file: &[u8]) -> Vec<(usize, bool, usize)> {
    let u64_at = |at: usize| u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    let u16_at = |at: usize| u16::from_le_bytes([file[at], file[at + 1]]) as usize;
    // Meta fields start at byte 32: txid, root, ...
    let root = [0usize, 1]
        .into_iter()
        .max_by_key(|m| u64_at(m * PAGE_SIZE + 32))
        .map(|m| u64_at(m * PAGE_SIZE + 40) as usize)
        .unwrap();
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        let base = p * PAGE_SIZE;
        let leaf = file[base + 4] == 1;
        for i in 0..u16_at(base + 6) {
            let off = base + u16_at(base + 16 + 10 * i);
            if !leaf {
                stack.push(u64_at(off + 2) as usize);
            }
            if u16_at(off) == u16::MAX as usize {
                out.push((p, leaf, off + if leaf { 7 } else { 10 }));
            }
        }
    }
    out
}

/// Targeted corruption of long-key stubs (chain page, length, prefix), with
/// valid checksums: the checker and the readers report `Corrupted`.
#[test]
fn corrupted_key_stubs_are_detected() {
    let backend = MemBackend::new();
    let store = Store::open_with_backend(Arc::new(backend.clone()), small_opts()).unwrap();
    for round in 0..4u8 {
        let mut b = store.write().unwrap();
        for k in 0..40u32 {
            let mut key = vec![b'L'; 2000];
            key.extend_from_slice(format!("{k:03}").as_bytes());
            b.put(&PutRequest {
                key,
                value: vec![round; 300],
                ..Default::default()
            })
            .unwrap();
        }
        b.commit(round as u64, true).unwrap();
    }
    let pages = store.check_integrity().unwrap().page_count as usize;
    drop(store);
    let mut base = backend.snapshot_bytes();
    base.truncate(pages * PAGE_SIZE);
    let stubs = find_stubs(&base);
    assert!(
        stubs.iter().any(|s| s.1) && stubs.iter().any(|s| !s.1),
        "{stubs:?}"
    );
    const PREFIX: usize = 256;
    let mut cases = 0;
    // A few branch stubs and a few leaf stubs keep the test fast.
    let leaves: Vec<_> = stubs.iter().filter(|s| s.1).collect();
    let picked: Vec<_> = stubs
        .iter()
        .filter(|s| !s.1)
        .take(3)
        .chain(leaves.iter().step_by(leaves.len() / 4 + 1).copied())
        .collect();
    for &&(page, leaf, at) in &picked {
        let len_at = at + PREFIX;
        let chain_at = len_at + 4;
        let len = u32::from_le_bytes(base[len_at..len_at + 4].try_into().unwrap());
        let chain = u64::from_le_bytes(base[chain_at..chain_at + 8].try_into().unwrap());
        let muts: Vec<(usize, Vec<u8>)> = vec![
            (chain_at, 0u64.to_le_bytes().to_vec()),
            (chain_at, 1u64.to_le_bytes().to_vec()),
            (chain_at, (pages as u64 + 5).to_le_bytes().to_vec()),
            (chain_at, (page as u64).to_le_bytes().to_vec()),
            (chain_at, (chain + 1).to_le_bytes().to_vec()),
            (len_at, (len + 1).to_le_bytes().to_vec()),
            (len_at, (len - 1).to_le_bytes().to_vec()),
            (len_at, 1000u32.to_le_bytes().to_vec()),
            (len_at, u32::MAX.to_le_bytes().to_vec()),
            (at + 10, vec![b'M']),
        ];
        for (pos, bytes) in muts {
            let mut f = base.clone();
            f[pos..pos + bytes.len()].copy_from_slice(&bytes);
            let pg = &mut f[page * PAGE_SIZE..(page + 1) * PAGE_SIZE];
            let crc = corekv_storage::checksum_crc32c(&pg[4..]);
            pg[..4].copy_from_slice(&crc.to_le_bytes());
            corekv_storage::fuzzing::open_and_read(&f);
            corekv_storage::fuzzing::open_and_read_unverified(&f);
            let store = Store::open_with_backend(Arc::new(MemBackend::from_bytes(f)), small_opts())
                .unwrap();
            let r = store.check_integrity();
            assert!(
                matches!(r, Err(StorageError::Corrupted { .. })),
                "page {page} leaf {leaf} at {at} pos {pos} {bytes:?}: {r:?}"
            );
            if leaf {
                // Reading every key loads every leaf key.
                let r = store.read().unwrap().range(&RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..RangeRequest::default()
                });
                assert!(
                    matches!(r, Err(StorageError::Corrupted { .. })),
                    "leaf page {page} pos {pos}: {r:?}"
                );
            }
            cases += 1;
        }
    }
    assert!(cases >= 40, "{cases}");
}
