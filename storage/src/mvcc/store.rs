//! [`Store`]: the MVCC store handle, and [`ReadView`]: a reader snapshot.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::keys;
use super::range::{self, KvRef, RangeSummary};
use super::read;
use super::types::*;
use super::write::WriteBatch;
use crate::backend::{Backend, FileBackend};
use crate::db::{Db, DbOptions, IntegrityReport, Snapshot};
use crate::error::{Result, StorageError};
use crate::tree;

/// Default of [`StoreOptions::max_live_snapshots`].
pub const DEFAULT_MAX_LIVE_SNAPSHOTS: usize = 1024;

#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Puts fail with `NoSpace` once the file's used pages reach this size.
    pub quota_bytes: u64,
    /// Initial file (and mapping) size; the file grows from here.
    pub initial_mmap_bytes: u64,
    /// Largest single growth step of the file.
    pub max_growth_bytes: u64,
    /// Verify page checksums on every read (integrity checks always verify).
    pub verify_checksums: bool,
    /// Revision entries (about, whole revisions) one [`Store::compact_step`]
    /// processes in revision mode (a sweep step visits 8 times as many key
    /// entries): sized so a step stays around 10 ms on a loaded 2-core VM,
    /// since writers wait for it. etcd uses 1000 revisions per batch; here
    /// each removed version costs about two page copies (leaf and parent).
    pub compaction_batch_entries: usize,
    /// Revision entries compacted inside each write commit while a pass is
    /// pending (0 = none: only `compact_step` compacts). Small, so a commit's
    /// latency barely changes.
    pub compaction_commit_entries: usize,
    /// A compaction pass sweeps the key table in key order (each leaf with
    /// obsolete versions rewritten once) instead of following the revision
    /// entries (about one leaf rewritten per revision) when the revisions to
    /// compact times this ratio reach the pages in use. 0 = never sweep.
    pub compaction_sweep_ratio: u64,
    /// Pages relocated per defragmentation step (one write transaction).
    pub defrag_batch_pages: usize,
    /// Entries per write transaction when restoring a snapshot.
    pub restore_batch_entries: usize,
    /// Shrink attempts (20 ms apart) while old readers pin relocated pages.
    pub defrag_truncate_attempts: u32,
    /// A delete-range outside a txn that deletes at least this many keys is
    /// stored as one range tombstone (`mvcc/range_del.rs`) instead of a
    /// tombstone version per key: it then costs the scan collecting the
    /// deleted keys (for their events), not a copy of every leaf.
    pub range_delete_min_keys: usize,
    /// Most range tombstones a state holds (each costs every read a decode
    /// and a check per key until compaction passes it); beyond, deletes use
    /// the per-key path.
    pub max_range_tombstones: usize,
    /// Distinct older snapshots readers may pin at once: [`Store::read`]
    /// fails with `TooManyReaders` beyond it. Bounds the reader registry
    /// (at most this + 1 entries) and the pages old readers keep from reuse.
    pub max_live_snapshots: usize,
    /// Non-durable commits whose pages may wait for the store's write-out
    /// thread (encode, checksum and write off the committing thread, see
    /// `writeout.rs`); 0 = written by the committing thread.
    pub writeout_queue_commits: usize,
    /// Commits of fewer dirty pages are written by the committing thread
    /// when nothing is queued (cheaper than a hand-over).
    pub writeout_min_pages: usize,
    /// `madvise` advice of the file's read mapping ([`Store::open`] only).
    pub map_advice: crate::MapAdvice,
    /// Pages one write transaction reads with `pread` into its own buffers
    /// (the pages it copies; freed at its end) before it reads the rest
    /// through the writer's mapping. Reading through a mapping maps far
    /// more than the page touched (the kernel maps around each fault), so
    /// a load would keep most of the file resident (`docs/storage-format.md`,
    /// "The writer's mapping").
    pub txn_read_pages: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            quota_bytes: 2 << 30,
            initial_mmap_bytes: 4 << 20,
            max_growth_bytes: 64 << 20,
            verify_checksums: true,
            compaction_batch_entries: 250,
            compaction_commit_entries: 50,
            compaction_sweep_ratio: 16,
            defrag_batch_pages: 4096,
            restore_batch_entries: 10_000,
            defrag_truncate_attempts: 50,
            range_delete_min_keys: 1024,
            max_range_tombstones: 16,
            max_live_snapshots: DEFAULT_MAX_LIVE_SNAPSHOTS,
            writeout_queue_commits: 16,
            writeout_min_pages: 8,
            map_advice: crate::MapAdvice::Random,
            txn_read_pages: crate::db::DEFAULT_TXN_READ_PAGES,
        }
    }
}

pub(crate) struct StoreInner {
    pub(crate) db: Db,
    pub(crate) opts: StoreOptions,
    pub(crate) durable_applied: AtomicU64,
    /// Serialises defragmentation runs.
    pub(crate) defrag_lock: std::sync::Mutex<()>,
    /// Compaction sweep in progress; only read and written by the holder of
    /// the writer lock (a batch takes a copy and stores it back on commit).
    pub(crate) sweep: std::sync::Mutex<Option<super::compact::Sweep>>,
}

impl StoreInner {
    fn sweep(&self) -> Option<super::compact::Sweep> {
        self.sweep.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_sweep(&self, s: Option<super::compact::Sweep>) {
        *self.sweep.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }
}

/// The MVCC store. `Send + Sync`; share it with `Arc<Store>` or clone it
/// (clones share the same store).
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<StoreInner>,
}

/// A consistent snapshot of one commit. Cheap to clone; `Send + Sync + 'static`.
/// While it lives, the pages it can reach are not reused.
#[derive(Clone)]
pub struct ReadView {
    snap: Arc<Snapshot>,
}

impl Store {
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Store> {
        let backend = Arc::new(FileBackend::open_with_advice(path, opts.map_advice)?);
        Store::open_with_backend(backend, opts)
    }

    /// Opens a store on any backend (tests use [`crate::MemBackend`]).
    pub fn open_with_backend(backend: Arc<dyn Backend>, opts: StoreOptions) -> Result<Store> {
        let db = Db::open(
            backend,
            DbOptions {
                verify_checksums: opts.verify_checksums,
                initial_file_bytes: opts.initial_mmap_bytes,
                max_growth_bytes: opts.max_growth_bytes,
                max_live_snapshots: opts.max_live_snapshots,
                writeout_queue_commits: opts.writeout_queue_commits,
                writeout_min_pages: opts.writeout_min_pages,
                txn_read_pages: opts.txn_read_pages,
            },
        )?;
        let applied = db.latest_meta().applied_index;
        Ok(Store {
            inner: Arc::new(StoreInner {
                db,
                opts,
                durable_applied: AtomicU64::new(applied),
                defrag_lock: std::sync::Mutex::new(()),
                sweep: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Snapshot of the last commit. Fails with `TooManyReaders` when
    /// readers already hold [`StoreOptions::max_live_snapshots`] distinct
    /// older snapshots (views of the latest commit are always granted).
    pub fn read(&self) -> Result<ReadView> {
        Ok(ReadView {
            snap: self.inner.db.read_snapshot()?,
        })
    }

    /// [`Store::read`] for a scan of the whole store (key count, hash,
    /// snapshot stream): the pages it touches leave the process's resident
    /// set when the view goes (`Db::scan_snapshot`).
    pub fn read_scan(&self) -> Result<ReadView> {
        Ok(ReadView {
            snap: self.inner.db.scan_snapshot()?,
        })
    }

    /// Starts the (exclusive) write batch; blocks while another is open.
    pub fn write(&self) -> Result<WriteBatch<'_>> {
        let txn = self.inner.db.begin()?;
        let m = txn.w.meta;
        Ok(WriteBatch {
            txn,
            store: &self.inner,
            rev: m.current_revision,
            compacted: m.compacted_revision,
            compact_done: m.compact_done_revision,
            events: Vec::new(),
            sweep: self.inner.sweep(),
            deferred_err: None,
        })
    }

    pub fn current_revision(&self) -> i64 {
        self.inner.db.latest_meta().current_revision
    }

    pub fn compacted_revision(&self) -> i64 {
        self.inner.db.latest_meta().compacted_revision
    }

    pub fn applied_index(&self) -> u64 {
        self.inner.db.latest_meta().applied_index
    }

    pub fn durable_applied_index(&self) -> u64 {
        self.inner.durable_applied.load(Ordering::Acquire)
    }

    /// Pages written since the last durable commit (see
    /// `docs/storage-format.md`, "Free pages"): a checkpoint policy can bound
    /// by it both the next sync's work and the file growth from pages the
    /// durable meta pins.
    pub fn pages_since_sync(&self) -> u64 {
        self.inner.db.pages_since_durable()
    }

    /// Makes the last commit durable (checkpoint).
    pub fn sync(&self) -> Result<()> {
        let applied = self.applied_index();
        crate::failpoint::hit("store-sync-applied");
        self.inner.db.sync()?;
        self.inner
            .durable_applied
            .fetch_max(applied, Ordering::AcqRel);
        Ok(())
    }

    /// File size in bytes.
    pub fn db_size_bytes(&self) -> u64 {
        self.inner.db.sizes().0
    }

    /// Bytes of pages in use (not free).
    pub fn db_size_in_use_bytes(&self) -> u64 {
        self.inner.db.sizes().1
    }

    /// True when a compaction target has not been fully applied yet.
    /// The revision up to which old versions are physically removed.
    pub fn compaction_done_revision(&self) -> i64 {
        self.inner.db.latest_meta().compact_done_revision
    }

    pub fn compaction_pending(&self) -> bool {
        let m = self.inner.db.latest_meta();
        m.compact_done_revision < m.compacted_revision
    }

    /// Runs one bounded physical compaction step in its own (non-durable)
    /// commit; returns true when more work remains. Commits also run a step.
    pub fn compact_step(&self) -> Result<bool> {
        let mut b = self.write()?;
        let budget = self.inner.opts.compaction_batch_entries;
        b.compact_step(budget)?;
        crate::failpoint::hit("store-compact-step");
        let applied = self.applied_index();
        let more = b.compact_done < b.compacted;
        let WriteBatch {
            txn,
            rev,
            compacted,
            compact_done,
            sweep,
            ..
        } = b;
        let range_tombs = txn.range_tombs;
        self.inner.db.commit(
            txn,
            |m| {
                m.range_tombs = range_tombs;
                m.current_revision = rev;
                m.compacted_revision = compacted;
                m.compact_done_revision = compact_done;
                m.applied_index = applied;
            },
            false,
        )?;
        self.inner.set_sweep(sweep);
        Ok(more)
    }

    /// Streams a consistent snapshot of the last commit (see `snapshot.rs`
    /// for the format). Reads and writes continue meanwhile.
    pub fn write_snapshot(&self, out: &mut dyn std::io::Write) -> Result<SnapshotInfo> {
        crate::failpoint::hit("snapshot-write");
        super::snapshot::write_snapshot(&self.read_scan()?, out)
    }

    /// Creates a store at `path` (which must not exist or be empty) from a
    /// stream written by [`Store::write_snapshot`].
    pub fn restore_snapshot(
        path: &Path,
        input: &mut dyn std::io::Read,
        opts: StoreOptions,
    ) -> Result<Store> {
        super::snapshot::restore_snapshot(path, input, opts)
    }

    /// Reads and verifies a stream written by [`Store::write_snapshot`]
    /// (checksum, entry count, every entry) without restoring it.
    pub fn inspect_snapshot(input: &mut dyn std::io::Read) -> Result<SnapshotInfo> {
        super::snapshot::inspect_snapshot(input)
    }

    /// Like [`Store::restore_snapshot`] on any (empty) backend.
    pub fn restore_snapshot_with_backend(
        backend: Arc<dyn Backend>,
        input: &mut dyn std::io::Read,
        opts: StoreOptions,
    ) -> Result<Store> {
        if !backend.is_empty()? {
            return Err(StorageError::InvalidSnapshot(
                "restore target is not empty".into(),
            ));
        }
        super::snapshot::restore_into(backend, input, opts)
    }

    /// Online defragmentation: relocates pages into the free space at the
    /// start of the file in bounded write transactions (writes interleave,
    /// reads never block), then shrinks the file. If long-lived readers keep
    /// relocated pages pinned, the shrink is left to a later run.
    pub fn defragment(&self) -> Result<()> {
        self.defragment_report().map(|_| ())
    }

    /// [`Store::defragment`] returning what it did.
    pub fn defragment_report(&self) -> Result<crate::DefragReport> {
        let _g = self
            .inner
            .defrag_lock
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let opts = crate::defrag::DefragOptions {
            batch_pages: self.inner.opts.defrag_batch_pages,
            truncate_attempts: self.inner.opts.defrag_truncate_attempts,
            retry_pause_ms: 20,
        };
        let r = crate::defrag::defragment(&self.inner.db, &opts)?;
        let applied = self.applied_index();
        self.inner
            .durable_applied
            .fetch_max(applied, Ordering::AcqRel);
        Ok(r)
    }

    /// Full integrity check of the last commit (see [`IntegrityReport`]).
    pub fn check_integrity(&self) -> Result<IntegrityReport> {
        self.inner.db.check_integrity()
    }

    /// Number of distinct snapshots currently pinned by readers (incl. the latest).
    pub fn live_snapshots(&self) -> usize {
        self.inner.db.registry.live_snapshots()
    }
}

impl ReadView {
    pub fn revision(&self) -> i64 {
        self.snap.meta().current_revision
    }

    pub fn compacted_revision(&self) -> i64 {
        self.snap.meta().compacted_revision
    }

    pub fn applied_index(&self) -> u64 {
        self.snap.meta().applied_index
    }

    /// Range at `req.revision` (0 = the view's revision).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let rev = read::resolve_rev(req.revision, self.revision(), self.compacted_revision())?;
        range::range(&*self.snap, req, rev)
    }

    /// [`Self::range`] handing each result to `f` borrowed from the view's
    /// pages, without a heap allocation per result for requests in key
    /// order (see [`KvRef`]); returns `more`, `count` and the revision.
    pub fn range_visit<F: FnMut(&KvRef<'_>)>(
        &self,
        req: &RangeRequest,
        f: F,
    ) -> Result<RangeSummary> {
        let rev = read::resolve_rev(req.revision, self.revision(), self.compacted_revision())?;
        range::range_visit(&*self.snap, req, rev, f)
    }

    /// Events with revision >= `start_revision` up to the view's revision for
    /// keys in `[key, range_end)`, about `max_events` at most (whole
    /// revisions). Returns the events and the next revision to read from.
    pub fn events_since(
        &self,
        start_revision: i64,
        key: &[u8],
        range_end: &[u8],
        max_events: usize,
    ) -> Result<(Vec<Event>, i64)> {
        if start_revision < self.compacted_revision() {
            return Err(StorageError::Compacted {
                requested: start_revision,
                compacted: self.compacted_revision(),
            });
        }
        read::events_since(
            &*self.snap,
            start_revision,
            self.revision(),
            key,
            range_end,
            max_events,
        )
    }

    /// Hash of the key space at `revision` (0 = the view's revision) and the
    /// compacted revision it was computed against.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64)> {
        let rev = read::resolve_rev(revision, self.revision(), self.compacted_revision())?;
        let c = self.compacted_revision();
        Ok((read::hash_kv(&*self.snap, rev, c)?, c))
    }

    pub fn get_meta(&self, name: &[u8]) -> Option<Vec<u8>> {
        let k = keys::meta_entry(name);
        let v = tree::get(&*self.snap, &k).ok()??;
        tree::load_value(&*self.snap, v)
            .ok()
            .map(|c| c.into_owned())
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snap
    }
}
