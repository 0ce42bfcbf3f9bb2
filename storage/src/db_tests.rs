//! The pager's mapping: growth inside the reservation, replacement beyond
//! it, verified-page state across both, and truncation lowering every
//! live mapping's readable length.

use std::sync::Arc;

use super::*;
use crate::backend::FileBackend;
use crate::tree;

use crate::test_util::opts;

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("corekv-db")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn put_range(db: &Db, keys: std::ops::Range<u32>) {
    let mut t = db.begin().unwrap();
    for i in keys {
        t.put(format!("key{i:06}").as_bytes(), &[i as u8; 500])
            .unwrap();
    }
    db.commit(t, |_| {}, false).unwrap();
}

fn count(s: &Snapshot) -> usize {
    let mut n = 0;
    tree::scan(s, b"", None, false, |_, _| {
        n += 1;
        Ok(true)
    })
    .unwrap();
    n
}

#[test]
fn growth_inside_the_reservation_keeps_mapping_and_verified_pages() {
    let dir = tempdir();
    let backend = Arc::new(FileBackend::open(&dir.path().join("db")).unwrap());
    // Pages written on the committing thread: a scan reads (and verifies)
    // them through the mapping at once, not from the write-out overlay.
    let no_writeout = DbOptions {
        writeout_queue_commits: 0,
        ..opts()
    };
    let db = Db::open(backend, no_writeout).unwrap();
    put_range(&db, 0..100);
    let old = db.snapshot();
    assert_eq!(count(&old), 100);
    let (map0, verified0, len0) = {
        let w = db.lock_writer();
        (w.map.clone(), w.verified.clone(), w.file_len)
    };
    assert!(map0.capacity() as u64 >= MIN_MAP_RESERVE_BYTES);
    assert!(verified0.get(old.meta.root), "the scan verified the root");
    for r in 1..20 {
        put_range(&db, r * 500..(r + 1) * 500);
    }
    let w = db.lock_writer();
    assert!(w.file_len > 4 * len0, "{} -> {}", len0, w.file_len);
    assert!(Arc::ptr_eq(&w.map, &map0), "no new mapping");
    assert!(Arc::ptr_eq(&w.verified, &verified0), "no new verified set");
    assert_eq!(w.map.len() as u64, w.file_len);
    drop(w);
    // Pages are rewritten copy-on-write, the old snapshot still reads its state.
    assert_eq!(count(&old), 100);
    assert_eq!(count(&db.snapshot()), 9600);
    db.check_integrity().unwrap();
}

#[test]
fn beyond_the_reservation_a_new_mapping_and_truncation_shrinks_old_ones() {
    let dir = tempdir();
    let backend = Arc::new(FileBackend::open(&dir.path().join("db")).unwrap());
    let db = Db::open(backend, opts()).unwrap();
    put_range(&db, 0..100);
    let mut w = db.lock_writer();
    // A mapping without room to grow, as if the reservation were used up.
    let len = w.file_len;
    w.map = w.backend.map(len, len).unwrap();
    w.verified = Arc::new(Verified::new(len / PAGE_SIZE as u64));
    let small = w.map.clone();
    w.verified.set(FIRST_DATA_PAGE);
    let grown = len + 16 * PAGE_SIZE as u64;
    w.backend.grow(len, grown).unwrap();
    w.file_len = grown;
    assert!(!small.set_readable_len(grown as usize));
    w.remap().unwrap();
    assert!(!Arc::ptr_eq(&w.map, &small), "replaced beyond its capacity");
    assert!(w.map.capacity() as u64 >= MIN_MAP_RESERVE_BYTES);
    assert_eq!(w.map.len() as u64, grown);
    assert_eq!(small.len() as u64, len, "the old mapping is unchanged");
    assert!(
        w.verified.get(FIRST_DATA_PAGE),
        "verified bits carried over"
    );
    assert_eq!(w.old_maps.len(), 1);
    // A truncation lowers the readable length of every live mapping.
    let cut = len / 2;
    w.shrink_mappings(cut);
    assert_eq!(small.len() as u64, cut);
    assert_eq!(w.map.len() as u64, cut);
    assert!(small.slice(cut as usize, PAGE_SIZE).is_none());
    assert_eq!(w.wmap.len() as u64, cut);
    assert_eq!(w.smap.len() as u64, cut);
    // This test did not really cut the file: restore.
    for m in [&w.map, &w.wmap, &w.smap] {
        assert!(m.set_readable_len(grown as usize));
    }
    // A dropped mapping is forgotten at the next replacement or truncation.
    drop(small);
    w.shrink_mappings(grown);
    assert!(w.old_maps.is_empty());
    drop(w);
    put_range(&db, 100..3000);
    assert_eq!(count(&db.snapshot()), 3000);
    db.check_integrity().unwrap();
}

#[test]
fn growth_steps_keep_the_preallocated_tail_a_small_share_of_the_file() {
    let dir = tempdir();
    let backend = Arc::new(FileBackend::open(&dir.path().join("db")).unwrap());
    let db = Db::open(
        backend,
        DbOptions {
            max_growth_bytes: 64 << 20,
            ..opts()
        },
    )
    .unwrap();
    let mut worst = 0.0f64;
    for r in 0..40 {
        put_range(&db, r * 1000..(r + 1) * 1000);
        let w = db.lock_writer();
        let high_water = w.page_count * PAGE_SIZE as u64;
        // Past the first steps (16 pages minimum), the tail beyond the
        // high-water mark stays within one step: 1/GROWTH_DIVISOR of the file.
        if w.file_len > 32 * 16 * PAGE_SIZE as u64 {
            let tail = (w.file_len - high_water) as f64 / w.file_len as f64;
            worst = worst.max(tail);
        }
    }
    assert!(worst > 0.0, "the file grew in steps");
    assert!(
        worst <= 1.0 / GROWTH_DIVISOR as f64 + 0.001,
        "tail share {worst}"
    );
}

#[test]
fn pages_since_durable_counts_writes_until_the_next_sync() {
    let dir = tempdir();
    let backend = Arc::new(FileBackend::open(&dir.path().join("db")).unwrap());
    let db = Db::open(backend, opts()).unwrap();
    assert_eq!(db.pages_since_durable(), 0);
    put_range(&db, 0..500);
    let after_one = db.pages_since_durable();
    assert!(after_one > 0);
    put_range(&db, 500..1000);
    assert!(db.pages_since_durable() > after_one);
    db.sync().unwrap();
    assert_eq!(db.pages_since_durable(), 0);
}

/// Resident bytes (`Rss` in /proc/self/smaps) of every mapping of `path`.
fn mapped_resident(path: &std::path::Path) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let name = path.to_str().unwrap();
    let mut ours = false;
    let mut kb = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            ours = line.ends_with(name);
        } else if ours && let Some(v) = line.strip_prefix("Rss:") {
            kb += v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .unwrap();
        }
    }
    kb * 1024
}

/// A store of 4000 keys of 500 B, overwritten once (the overwrite copies
/// every leaf, ~2 MB of pages), with `txn_read_pages` as given.
fn overwritten(path: &std::path::Path, txn_read_pages: usize) -> Db {
    let backend = Arc::new(FileBackend::open(path).unwrap());
    let o = DbOptions {
        writeout_queue_commits: 0,
        txn_read_pages,
        ..opts()
    };
    let db = Db::open(backend, o).unwrap();
    put_range(&db, 0..4000);
    put_range(&db, 0..4000);
    db
}

#[test]
fn pages_the_writer_copies_are_read_unmapped() {
    let dir = tempdir();
    let path = dir.path().join("db");
    let db = overwritten(&path, DEFAULT_TXN_READ_PAGES);
    let written = mapped_resident(&path);
    assert!(written < 256 << 10, "read with pread: {written} B mapped");
    // What readers touch is mapped.
    assert_eq!(count(&db.snapshot()), 4000);
    let read = mapped_resident(&path);
    assert!(read > 1 << 20, "a reader's scan is mapped: {read} B");
    db.sync().unwrap();
    assert!(mapped_resident(&path) >= read, "readers' pages stay mapped");
}

#[test]
fn beyond_txn_read_pages_the_writers_mapping_is_dropped_when_the_transaction_ends() {
    let dir = tempdir();
    let path = dir.path().join("db");
    let db = overwritten(&path, 0);
    let mut t = db.begin().unwrap();
    for i in 0..4000u32 {
        t.put(format!("key{i:06}").as_bytes(), b"v").unwrap();
    }
    let reading = mapped_resident(&path);
    assert!(
        reading > 1 << 20,
        "the writer's reads are mapped: {reading} B"
    );
    db.commit(t, |_| {}, false).unwrap();
    let after = mapped_resident(&path);
    assert!(
        after < reading / 8,
        "dropped when it ends: {reading} B while open, {after} B after"
    );
}

#[test]
fn a_scan_snapshot_leaves_no_pages_resident_and_readers_keep_theirs() {
    let dir = tempdir();
    let path = dir.path().join("db");
    let backend = Arc::new(FileBackend::open(&path).unwrap());
    let db = Db::open(backend, opts()).unwrap();
    put_range(&db, 0..4000);
    db.sync().unwrap();
    let idle = mapped_resident(&path);
    let scan = db.scan_snapshot().unwrap();
    assert_eq!(count(&scan), 4000);
    let scanning = mapped_resident(&path);
    assert!(
        scanning > idle + (1 << 20),
        "the scan maps the pages: {idle} -> {scanning} B"
    );
    drop(scan);
    let after = mapped_resident(&path);
    assert!(
        after < idle + (256 << 10),
        "dropped with the snapshot: {after} B (idle {idle} B)"
    );
    // A reader's pages stay.
    let reader = db.read_snapshot().unwrap();
    assert_eq!(count(&reader), 4000);
    let read = mapped_resident(&path);
    let scan = db.scan_snapshot().unwrap();
    assert_eq!(count(&scan), 4000);
    drop(scan);
    assert!(
        mapped_resident(&path) >= read,
        "a scan does not drop readers' pages"
    );
}
