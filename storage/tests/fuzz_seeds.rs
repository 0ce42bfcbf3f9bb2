//! Writes small valid store files as a seed corpus for the `storage_open`
//! fuzz target (random bytes never pass the meta page checksum, so the
//! fuzzer needs real files to mutate). Run by hand:
//! `COREKV_FUZZ_SEED_DIR=fuzz/corpus/storage_open cargo test -p corekv-storage --test fuzz_seeds -- --ignored`

use corekv_storage::{DeleteRangeRequest, PutRequest, Store, StoreOptions};

#[test]
#[ignore = "writes the fuzz seed corpus; run by hand"]
fn write_storage_fuzz_seeds() {
    let dir = std::env::var("COREKV_FUZZ_SEED_DIR").expect("set COREKV_FUZZ_SEED_DIR");
    std::fs::create_dir_all(&dir).expect("seed dir");
    let tmp = tempfile::Builder::new()
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir");
    // Seed 4 holds long keys (format v2 stubs, key chains, long separators);
    // seeds 2 and 3 a range tombstone (format 4 `d` table).
    for (n, keys, long) in [
        (0, 0usize, false),
        (1, 3, false),
        (2, 40, false),
        (3, 400, false),
        (4, 24, true),
    ] {
        let path = tmp.path().join(format!("seed{n}"));
        let store = Store::open(
            &path,
            StoreOptions {
                initial_mmap_bytes: 0,
                range_delete_min_keys: 1,
                ..StoreOptions::default()
            },
        )
        .expect("open");
        let mut batch = store.write().expect("write");
        for i in 0..keys {
            let mut key = format!("key{i:04}").into_bytes();
            if long {
                key.splice(3..3, std::iter::repeat_n(b'/', 1100 + i % 3 * 1000));
            }
            let put = PutRequest {
                key,
                value: vec![b'v'; (i % 7) * 300],
                ..Default::default()
            };
            batch.put(&put).expect("put");
        }
        if keys > 2 {
            let del = DeleteRangeRequest {
                key: b"key0001".to_vec(),
                ..Default::default()
            };
            batch.delete_range(&del).expect("delete");
            batch.compact(2).expect("compact");
        }
        if keys > 20 {
            let del = DeleteRangeRequest {
                key: b"key0010".to_vec(),
                range_end: b"key0020".to_vec(),
                ..Default::default()
            };
            batch.delete_range(&del).expect("range delete");
        }
        batch.put_meta(b"m", b"meta");
        batch.commit(keys as u64, true).expect("commit");
        drop(store);
        let bytes = std::fs::read(&path).expect("read store file");
        std::fs::write(format!("{dir}/seed{n}"), bytes).expect("write seed");
    }
}
