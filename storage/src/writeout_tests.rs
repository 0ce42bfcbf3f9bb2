//! The write-out thread: readers and the next transaction see queued
//! commits before they reach the file, a durable commit waits for them, a
//! reopened file holds the synced state, and a failed write latches.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use crate::backend::{Backend, FileBackend, Mapped};
use crate::db::Db;
use crate::error::{Result, StorageError};
use crate::test_util::{all, opts};

/// A file backend whose page writes can be held (`closed`) or failed.
struct Gated {
    inner: FileBackend,
    closed: Mutex<bool>,
    opened: Condvar,
    fail: AtomicBool,
}

impl Gated {
    fn new(path: &Path) -> Arc<Gated> {
        Arc::new(Gated {
            inner: FileBackend::open(path).unwrap(),
            closed: Mutex::new(false),
            opened: Condvar::new(),
            fail: AtomicBool::new(false),
        })
    }
    fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }
    fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.opened.notify_all();
    }
}

impl Backend for Gated {
    fn len(&self) -> Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.inner.set_len(len)
    }
    fn grow(&self, from: u64, to: u64) -> Result<()> {
        self.inner.grow(from, to)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.opened.wait(closed).unwrap();
        }
        drop(closed);
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Failed("injected write failure".into()));
        }
        self.inner.write_at(offset, buf)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn map(&self, len: u64, capacity: u64) -> Result<Arc<dyn Mapped>> {
        self.inner.map(len, capacity)
    }
    fn coherent_map(&self) -> bool {
        true
    }
    fn path(&self) -> &Path {
        self.inner.path()
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("corekv-writeout")
        .tempdir_in("/var/tmp")
        .unwrap()
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

/// Values of three sizes: inline, one overflow page, a chain.
fn value(i: u32, round: u32) -> Vec<u8> {
    let len = [40, 5000, 13000][(i % 3) as usize];
    vec![(i + round) as u8; len]
}

fn model(n: u32, round: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n).map(|i| (key(i), value(i, round))).collect()
}

#[test]
fn queued_commits_are_read_from_memory_until_written() {
    let dir = tempdir();
    let path = dir.path().join("db");
    let backend = Gated::new(&path);
    let db = Db::open(backend.clone(), opts()).unwrap();
    // Hold every page write: the commits below stay queued.
    backend.close();
    for round in 0..3 {
        let mut t = db.begin().unwrap();
        for i in 0..300 {
            t.put(&key(i), &value(i, round)).unwrap();
        }
        // The transaction reads the previous (queued) commit's pages.
        if round > 0 {
            assert_eq!(all(&t)[7], (key(7), value(7, round)));
        }
        db.commit(t, |_| {}, false).unwrap();
        let snap = db.read_snapshot().unwrap();
        assert_eq!(all(&*snap), model(300, round), "round {round}");
        assert!(!db.lock_writer().overlay_is_empty(), "still queued");
    }
    let held = db.read_snapshot().unwrap();
    backend.open();
    // A durable commit waits for the queue, then syncs.
    db.sync().unwrap();
    assert!(db.lock_writer().overlay_is_empty());
    // The snapshot taken while queued now reads the file: same answer.
    assert_eq!(all(&*held), model(300, 2));
    db.check_integrity().unwrap();
    drop(held);
    drop(db);
    let db = Db::open(Arc::new(FileBackend::open(&path).unwrap()), opts()).unwrap();
    assert_eq!(all(&*db.read_snapshot().unwrap()), model(300, 2));
    db.check_integrity().unwrap();
}

#[test]
fn queued_commits_not_synced_are_written_on_drop() {
    let dir = tempdir();
    let path = dir.path().join("db");
    let db = Db::open(Arc::new(FileBackend::open(&path).unwrap()), opts()).unwrap();
    let mut t = db.begin().unwrap();
    for i in 0..50 {
        t.put(&key(i), &value(i, 0)).unwrap();
    }
    db.commit(t, |_| {}, true).unwrap();
    let mut t = db.begin().unwrap();
    for i in 0..50 {
        t.put(&key(i), &value(i, 1)).unwrap();
    }
    db.commit(t, |_| {}, false).unwrap();
    drop(db);
    // Reopened at the durable commit; the queued one wrote only free pages.
    let db = Db::open(Arc::new(FileBackend::open(&path).unwrap()), opts()).unwrap();
    assert_eq!(all(&*db.read_snapshot().unwrap()), model(50, 0));
    db.check_integrity().unwrap();
}

#[test]
fn a_failed_write_out_latches() {
    let dir = tempdir();
    let backend = Gated::new(&dir.path().join("db"));
    let db = Db::open(backend.clone(), opts()).unwrap();
    backend.fail.store(true, Ordering::SeqCst);
    let mut t = db.begin().unwrap();
    t.put(b"a", b"1").unwrap();
    // Queued: the failure shows at the next commit or sync.
    db.commit(t, |_| {}, false).unwrap();
    let err = db.sync().unwrap_err();
    assert!(err.to_string().contains("injected write failure"), "{err}");
    backend.fail.store(false, Ordering::SeqCst);
    assert!(db.begin().is_err(), "the failure latched");
}

#[test]
fn small_commits_are_written_inline_only_when_nothing_is_queued() {
    let dir = tempdir();
    let backend = Gated::new(&dir.path().join("db"));
    let small_inline = crate::db::DbOptions {
        writeout_min_pages: 16,
        ..opts()
    };
    let db = Db::open(backend.clone(), small_inline).unwrap();
    // A large commit is queued (its writes are held).
    backend.close();
    let mut t = db.begin().unwrap();
    for i in 0..300 {
        t.put(&key(i), &value(i, 0)).unwrap();
    }
    db.commit(t, |_| {}, false).unwrap();
    // A small one behind it is queued too (commit order in the file).
    let mut t = db.begin().unwrap();
    t.put(b"small", b"1").unwrap();
    db.commit(t, |_| {}, false).unwrap();
    assert!(!db.lock_writer().overlay_is_empty());
    backend.open();
    db.sync().unwrap();
    // Nothing queued: a small commit is written here, so a write failure
    // is the commit's own error at once.
    backend.fail.store(true, Ordering::SeqCst);
    let mut t = db.begin().unwrap();
    t.put(b"small", b"2").unwrap();
    let err = db.commit(t, |_| {}, false).unwrap_err();
    assert!(err.to_string().contains("injected write failure"), "{err}");
}
