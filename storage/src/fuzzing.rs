//! Entry point for the `storage_open` fuzz target and the corrupted-file
//! test: open arbitrary bytes as a store and exercise every read path.
//! Any outcome but a panic (or UB) is acceptable.

use std::sync::Arc;

use crate::backend::MemBackend;
use crate::mvcc::{RangeRequest, SortOrder, SortTarget, Store, StoreOptions};

/// Opens `data` as a store file and reads everything it can.
pub fn open_and_read(data: &[u8]) {
    open_and_read_with(data, true);
}

/// Like [`open_and_read`] with data-page checksums off, so that mutated
/// pages reach the page parsers instead of stopping at the checksum (the
/// meta pages are still checked). Used by the fuzz target.
pub fn open_and_read_unverified(data: &[u8]) {
    open_and_read_with(data, false);
}

fn open_and_read_with(data: &[u8], verify_checksums: bool) {
    let backend = Arc::new(MemBackend::from_bytes(data.to_vec()));
    let opts = StoreOptions {
        initial_mmap_bytes: 0,
        verify_checksums,
        ..StoreOptions::default()
    };
    let Ok(store) = Store::open_with_backend(backend, opts) else {
        return;
    };
    let _ = store.check_integrity();
    let Ok(v) = store.read() else {
        return;
    };
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..RangeRequest::default()
    };
    let _ = v.range(&all);
    let _ = v.range(&RangeRequest {
        sort_order: SortOrder::Descend,
        sort_target: SortTarget::Mod,
        limit: 3,
        revision: v.compacted_revision().max(1),
        ..all.clone()
    });
    let _ = v.events_since(v.compacted_revision().max(1), &[0], &[0], 1000);
    let _ = v.hash_kv(0);
    let _ = v.get_meta(b"m");
    let _ = store.write_snapshot(&mut std::io::sink());
}
