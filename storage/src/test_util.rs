//! Helpers shared by the crate's unit tests.

use crate::db::DbOptions;
use crate::tree::{self, TreeRead};

/// Pager options for tests: checksums verified, small growth steps.
pub(crate) fn opts() -> DbOptions {
    DbOptions {
        verify_checksums: true,
        initial_file_bytes: 0,
        max_growth_bytes: 1 << 20,
        max_live_snapshots: 1024,
        writeout_queue_commits: 16,
        writeout_min_pages: 0,
        txn_read_pages: crate::db::DEFAULT_TXN_READ_PAGES,
    }
}

/// Entries with `start <= key < end` as owned pairs, in scan order.
pub(crate) fn collect<T: TreeRead>(
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

/// Every entry, ascending.
pub(crate) fn all<T: TreeRead>(t: &T) -> Vec<(Vec<u8>, Vec<u8>)> {
    collect(t, b"", None, false)
}
