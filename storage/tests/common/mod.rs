//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::sync::Arc;

use corekv_storage::*;

pub fn mem_store() -> (Store, MemBackend) {
    let b = MemBackend::new();
    (
        Store::open_with_backend(Arc::new(b.clone()), small_opts()).unwrap(),
        b,
    )
}

pub fn small_opts() -> StoreOptions {
    StoreOptions {
        initial_mmap_bytes: 64 << 10,
        max_growth_bytes: 1 << 20,
        ..StoreOptions::default()
    }
}

pub fn put(b: &mut WriteBatch<'_>, k: &str, v: &str) -> PutResponse {
    b.put(&PutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
    .unwrap()
}

pub fn range_all(v: &ReadView, rev: i64) -> Vec<KeyValue> {
    v.range(&RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..Default::default()
    })
    .unwrap()
    .kvs
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("corekv-storage")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}
