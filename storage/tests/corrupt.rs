//! Thousands of corrupted store files: opening and reading them returns
//! errors (usually `Corrupted`), never panics.

mod common;
use std::sync::Arc;

use common::*;
use corekv_storage::*;
use rand::{Rng, SeedableRng};

fn sample_file() -> Vec<u8> {
    let backend = MemBackend::new();
    let store = Store::open_with_backend(Arc::new(backend.clone()), small_opts()).unwrap();
    for round in 0..6u32 {
        let mut b = store.write().unwrap();
        for k in 0..60u32 {
            let len = if k % 29 == 0 { 7000 } else { 40 };
            b.put(&PutRequest {
                key: format!("k{:03}", (k * 7 + round) % 90).into_bytes(),
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
