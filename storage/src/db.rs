//! The pager: opening the file, the single writer, commits (durable or not),
//! reader snapshots and the reader registry, remapping, integrity checking.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::backend::{Backend, Mapped};
use crate::error::{Result, StorageError};
use crate::freelist::{self, FreeList};
use crate::node::{KeyRef, Node, NodeRef, PageView, ValRef};
use crate::page::{FIRST_DATA_PAGE, Meta, PAGE_SIZE, TYPE_OVERFLOW};
use crate::tree::{self, MAX_DEPTH, TreeRead};
use crate::txn::TreeTxn;
use crate::verified::Verified;
use crate::writeout::{Overlay, PendingCommit, PendingPage, WriteOut};

/// The file grows by at most 1/`GROWTH_DIVISOR` of its length per step
/// (between 16 pages and [`DbOptions::max_growth_bytes`]), so preallocated
/// space stays within ~3% of the file.
pub const GROWTH_DIVISOR: u64 = 32;

#[derive(Clone, Debug)]
pub struct DbOptions {
    pub verify_checksums: bool,
    /// The file is created (and grown) to at least this size.
    pub initial_file_bytes: u64,
    /// Upper bound of one growth step.
    pub max_growth_bytes: u64,
    /// Distinct older snapshots readers may hold (see [`Db::read_snapshot`]).
    pub max_live_snapshots: usize,
    /// Non-durable commits that may wait for the write-out thread
    /// (`writeout.rs`); 0 writes every commit's pages on the committing
    /// thread. Only file backends whose mapping follows writes use the
    /// thread (a copied mapping could not show pages written later).
    pub writeout_queue_commits: usize,
    /// A commit of fewer dirty pages than this is written on the committing
    /// thread when no commit is queued (a few `pwrite`s into the page cache
    /// cost less than waking the write-out thread).
    pub writeout_min_pages: usize,
    /// Pages a write transaction reads into its own buffers with `pread`
    /// (`txn.rs`) before it falls back to the writer's mapping.
    pub txn_read_pages: usize,
}

/// Default of [`DbOptions::txn_read_pages`]: 16,384 pages (64 MiB), more
/// than a Raft batch, a compaction step or a restore batch touches.
pub const DEFAULT_TXN_READ_PAGES: usize = 16_384;

/// Smallest address-space reservation of a file mapping. A mapping reserves
/// `max(2 * file length, this)` so the file can grow in place: a new mapping
/// would start without page-table entries or verified pages (every page
/// faulted in and checksummed again).
pub const MIN_MAP_RESERVE_BYTES: u64 = 1 << 30;

/// Address space to reserve for a mapping of a `file_len`-byte file.
fn map_reservation(file_len: u64) -> u64 {
    file_len
        .saturating_mul(2)
        .max(MIN_MAP_RESERVE_BYTES)
        .div_ceil(PAGE_SIZE as u64)
        .saturating_mul(PAGE_SIZE as u64)
}

/// Live snapshots by txid (value: number of holders). Its size is the number
/// of distinct live snapshots, at most `max_live_snapshots + 1` (the latest
/// plus the ones readers hold; see [`Db::read_snapshot`]).
#[derive(Default)]
pub struct Registry {
    live: Mutex<BTreeMap<u64, usize>>,
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, usize>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn register(self: &Arc<Self>, txid: u64) -> Registration {
        *self.lock().entry(txid).or_insert(0) += 1;
        Registration {
            registry: self.clone(),
            txid,
        }
    }
    pub fn oldest(&self) -> Option<u64> {
        self.lock().keys().next().copied()
    }
    pub fn live_snapshots(&self) -> usize {
        self.lock().len()
    }
}

pub struct Registration {
    registry: Arc<Registry>,
    txid: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut m = self.registry.lock();
        if let Some(c) = m.get_mut(&self.txid) {
            *c -= 1;
            if *c == 0 {
                m.remove(&self.txid);
            }
        }
    }
}

/// A committed tree state a reader can use from any thread.
pub struct Snapshot {
    pub(crate) map: Arc<dyn Mapped>,
    /// Pages of commits not yet written to the file (`writeout.rs`).
    overlay: Overlay,
    pub(crate) meta: Meta,
    verify: bool,
    verified: Arc<Verified>,
    _reg: Registration,
    /// A scan snapshot ([`Db::scan_snapshot`]): drops its mapping's
    /// resident pages when it goes.
    drop_resident: bool,
}

impl Snapshot {
    pub fn meta(&self) -> &Meta {
        &self.meta
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if self.drop_resident {
            self.map.drop_resident();
        }
    }
}

fn map_page(map: &dyn Mapped, id: u64) -> Result<&[u8]> {
    tree::page_offset(id)
        .and_then(|off| map.slice(off, PAGE_SIZE))
        .ok_or_else(|| StorageError::corrupted(id, "page beyond mapped file"))
}

impl TreeRead for Snapshot {
    fn root(&self) -> u64 {
        self.meta.root
    }
    fn node(&self, id: u64) -> Result<NodeRef<'_>> {
        if id >= self.meta.page_count || id < FIRST_DATA_PAGE {
            return Err(StorageError::corrupted(id, "page id out of range"));
        }
        if let Some(n) = self.overlay.node(id)? {
            return Ok(n);
        }
        let check = self.verify && !self.verified.get(id);
        let view = PageView::new(map_page(&*self.map, id)?, id, check)?;
        if check {
            self.verified.set(id);
        }
        Ok(NodeRef::Page(view))
    }
    fn page_bytes(&self, id: u64) -> Result<Cow<'_, [u8]>> {
        if id >= self.meta.page_count || id < FIRST_DATA_PAGE {
            return Err(StorageError::corrupted(id, "page id out of range"));
        }
        if let Some(b) = self.overlay.raw(id) {
            return Ok(Cow::Borrowed(b));
        }
        Ok(Cow::Borrowed(map_page(&*self.map, id)?))
    }
    fn range_tombs(&self) -> u64 {
        self.meta.range_tombs
    }
    fn prefetch(&self, id: u64) {
        if (FIRST_DATA_PAGE..self.meta.page_count).contains(&id)
            && let Ok(page) = map_page(&*self.map, id)
        {
            crate::mapping::prefetch(page);
        }
    }
}

pub struct Writer {
    pub(crate) backend: Arc<dyn Backend>,
    /// The mapping readers' snapshots use.
    pub(crate) map: Arc<dyn Mapped>,
    /// The writer's own mapping of the same file (the same `Arc` as `map`
    /// when the backend's maps are copies): a transaction that read more
    /// than `txn_read_pages` pages with `pread` reads the rest through it
    /// and drops its resident pages when it ends (`txn.rs`), so the pages
    /// a load or a replay copied do not stay in the process's RSS; `map`
    /// holds only what readers touch.
    pub(crate) wmap: Arc<dyn Mapped>,
    /// A third mapping for whole-store scans (key count, hash, snapshot
    /// stream; [`Db::scan_snapshot`]), kept like `map`; a scan's pages
    /// leave the resident set when its snapshot goes, so they do not
    /// crowd the readers' working set out of the RSS figures.
    pub(crate) smap: Arc<dyn Mapped>,
    pub(crate) free: FreeList,
    /// Last committed state (durable or not).
    pub(crate) meta: Meta,
    /// High-water mark including the open transaction's growth.
    pub(crate) page_count: u64,
    pub(crate) file_len: u64,
    durable_slot: u64,
    pub(crate) durable_txid: u64,
    pub(crate) verify_checksums: bool,
    /// Verification state of `map`'s pages (see `verified.rs`).
    pub(crate) verified: Arc<Verified>,
    /// Earlier mappings possibly still held by snapshots: a truncation lowers
    /// their readable length too (see `mapping.rs`, invariant 1).
    old_maps: Vec<Weak<dyn Mapped>>,
    pub(crate) opts: DbOptions,
    /// The write-out thread, when commits are written off the committing
    /// thread (`writeout.rs`).
    writeout: Option<WriteOut>,
    /// Queued commits, oldest first (written ones are pruned at the next
    /// commit); `overlay` is the same list as readers get it.
    pending: std::collections::VecDeque<Arc<PendingCommit>>,
    pub(crate) overlay: Overlay,
    /// With a write-out thread: page images the open transaction wrote
    /// (overflow chains), written with its commit.
    pub(crate) staged: HashMap<u64, crate::page::PageBuf>,
}

/// Another mapping of the file beside `map` (the writer's, the scan
/// mapping), or `map` itself when the backend's maps are copies.
fn second_map(
    backend: &dyn Backend,
    map: &Arc<dyn Mapped>,
    len: u64,
    capacity: u64,
) -> Result<Arc<dyn Mapped>> {
    if backend.coherent_map() {
        backend.map(len, capacity)
    } else {
        Ok(map.clone())
    }
}

fn read_chunk(
    map: &dyn Mapped,
    backend: &dyn Backend,
    id: u64,
    page_count: u64,
) -> Result<(Vec<u64>, u64)> {
    if id >= page_count || id < FIRST_DATA_PAGE {
        return Err(StorageError::corrupted(id, "free chunk id out of range"));
    }
    match map_page(map, id) {
        Ok(b) => freelist::decode_chunk(b, id, page_count),
        Err(_) => {
            let mut buf = vec![0u8; PAGE_SIZE];
            backend.read_at(id * PAGE_SIZE as u64, &mut buf)?;
            freelist::decode_chunk(&buf, id, page_count)
        }
    }
}

impl Writer {
    pub(crate) fn alloc(&mut self, txid: u64) -> Result<u64> {
        let Writer {
            free,
            map,
            backend,
            page_count,
            ..
        } = self;
        let pc = *page_count;
        let read = |id| read_chunk(&**map, &**backend, id, pc);
        if let Some(id) = free.alloc(txid, &read)? {
            return Ok(id);
        }
        let id = self.page_count;
        self.page_count += 1;
        self.ensure_len()?;
        // Beyond the previous durable high-water mark: not reachable from it.
        self.free.mark_young(id);
        Ok(id)
    }

    /// Takes every reusable page without growing the file.
    pub(crate) fn drain_reusable(&mut self, txid: u64) -> Result<Vec<u64>> {
        let Writer {
            free,
            map,
            backend,
            page_count,
            ..
        } = self;
        let pc = *page_count;
        let read = |id| read_chunk(&**map, &**backend, id, pc);
        free.drain(txid, &read)
    }

    fn ensure_len(&mut self) -> Result<()> {
        let need = self.page_count * PAGE_SIZE as u64;
        if need <= self.file_len {
            return Ok(());
        }
        // A step of 1/GROWTH_DIVISOR of the file bounds the preallocated
        // tail (bytes beyond the high-water mark) to that share of the file;
        // doubling up to `max_growth_bytes` left ~50 MB of tail at 1M keys.
        let step = (self.file_len / GROWTH_DIVISOR).clamp(
            PAGE_SIZE as u64 * 16,
            self.opts.max_growth_bytes.max(PAGE_SIZE as u64),
        );
        let mut new_len = need
            .max(self.file_len + step)
            .max(self.opts.initial_file_bytes);
        new_len = new_len.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64;
        self.backend.grow(self.file_len, new_len)?;
        self.file_len = new_len;
        // The file is that long now; within the reservation the current
        // mapping covers the new pages at once (snapshots still only follow
        // ids below their own page count).
        if self.backend.coherent_map()
            && let Ok(len) = usize::try_from(new_len)
        {
            for m in [&self.map, &self.wmap, &self.smap] {
                m.set_readable_len(len);
            }
        }
        Ok(())
    }

    /// Lowers the readable length of every live mapping to `len` bytes
    /// before the file is cut to that length (`mapping.rs`, invariant 1).
    fn shrink_mappings(&mut self, len: u64) {
        let cut = usize::try_from(len).unwrap_or(usize::MAX);
        self.old_maps.retain(|m| m.strong_count() > 0);
        let live = self.old_maps.iter().filter_map(Weak::upgrade);
        for m in live.chain([self.map.clone(), self.wmap.clone(), self.smap.clone()]) {
            if m.len() > cut {
                m.set_readable_len(cut);
            }
        }
    }

    pub(crate) fn write_page(&mut self, id: u64, bytes: &[u8]) -> Result<()> {
        debug_assert!(id >= FIRST_DATA_PAGE && id < self.page_count);
        self.verified.clear(id);
        self.backend.write_at(id * PAGE_SIZE as u64, bytes)
    }

    /// A page the open transaction writes outside the tree (overflow
    /// chains): staged for the commit's write-out when there is a write-out
    /// thread, written at once otherwise.
    pub(crate) fn stage_page(&mut self, id: u64, page: crate::page::PageBuf) -> Result<()> {
        if self.writeout.is_none() {
            return self.write_page(id, &page[..]);
        }
        debug_assert!(id >= FIRST_DATA_PAGE && id < self.page_count);
        self.verified.clear(id);
        self.staged.insert(id, page);
        Ok(())
    }

    /// Waits until every queued commit is in the file (before a durable
    /// commit, an integrity check, anything that reads the file whole).
    pub(crate) fn flush(&mut self) -> Result<()> {
        if let Some(wo) = &self.writeout {
            if self.pending.iter().all(|c| c.is_written()) {
                wo.check()?;
            } else {
                wo.drain()?;
            }
        }
        self.pending.clear();
        self.overlay = Overlay::default();
        Ok(())
    }

    /// Whether a non-durable commit of `dirty` tree pages (plus the staged
    /// ones) is small enough to write here: only when nothing is queued, so
    /// commits still reach the file in commit order.
    fn writes_inline(&self, dirty: usize) -> bool {
        dirty + self.staged.len() < self.opts.writeout_min_pages
            && self.pending.iter().all(|c| c.is_written())
    }

    /// True when no queued commit waits for the write-out thread.
    #[cfg(test)]
    pub(crate) fn overlay_is_empty(&self) -> bool {
        self.pending.iter().all(|c| c.is_written())
    }

    /// Queues a non-durable commit's pages for the write-out thread.
    fn queue(&mut self, dirty: HashMap<u64, Node>) -> Result<()> {
        let mut pages: Vec<(u64, PendingPage)> = dirty
            .into_iter()
            .map(|(id, n)| (id, PendingPage::Node(n)))
            .collect();
        pages.extend(self.staged.drain().map(|(id, p)| (id, PendingPage::Raw(p))));
        for (id, _) in &pages {
            self.verified.clear(*id);
        }
        let commit = Arc::new(PendingCommit::new(pages));
        while self.pending.front().is_some_and(|c| c.is_written()) {
            self.pending.pop_front();
        }
        self.pending.push_back(commit.clone());
        self.overlay = Overlay::new(self.pending.iter().cloned());
        match &self.writeout {
            Some(wo) => wo.push(commit),
            None => Err(StorageError::Failed("no write-out thread".into())),
        }
    }

    /// Makes `map` cover the whole file: in place within the reservation,
    /// otherwise (or for a backend whose maps are copies) a new mapping.
    fn remap(&mut self) -> Result<()> {
        let coherent = self.backend.coherent_map();
        let covers = |m: &Arc<dyn Mapped>| {
            m.len() as u64 >= self.file_len
                || usize::try_from(self.file_len).is_ok_and(|l| m.set_readable_len(l))
        };
        if coherent && covers(&self.map) && covers(&self.wmap) && covers(&self.smap) {
            return Ok(());
        }
        let capacity = if coherent {
            map_reservation(self.file_len)
        } else {
            self.file_len
        };
        let map = self.backend.map(self.file_len, capacity)?;
        // No snapshot holds the writer's mapping: the old one goes now.
        self.wmap = second_map(&*self.backend, &map, self.file_len, capacity)?;
        let smap = second_map(&*self.backend, &map, self.file_len, capacity)?;
        let old_scan = std::mem::replace(&mut self.smap, smap);
        let pages = map.capacity() as u64 / PAGE_SIZE as u64;
        self.verified = Arc::new(Verified::copy_of(&self.verified, pages));
        // Readers keep the old mapping alive through their snapshot's Arc.
        let old = std::mem::replace(&mut self.map, map);
        if coherent {
            self.old_maps.retain(|m| m.strong_count() > 0);
            for m in [old, old_scan] {
                // Only a mapping a snapshot still holds can be read again.
                if Arc::strong_count(&m) > 1 {
                    self.old_maps.push(Arc::downgrade(&m));
                }
            }
        }
        Ok(())
    }
}

pub struct Db {
    pub(crate) writer: Mutex<Writer>,
    latest: Mutex<Arc<Snapshot>>,
    pub(crate) registry: Arc<Registry>,
    failed: Mutex<Option<String>>,
    verify: bool,
    max_live_snapshots: usize,
}

impl Db {
    pub fn open(backend: Arc<dyn Backend>, opts: DbOptions) -> Result<Db> {
        let len = backend.len()?;
        let (meta, slot) = if len == 0 {
            let meta = Meta {
                txid: 1,
                page_count: FIRST_DATA_PAGE,
                current_revision: 1,
                ..Meta::default()
            };
            let init = opts
                .initial_file_bytes
                .max(FIRST_DATA_PAGE * PAGE_SIZE as u64);
            backend.set_len(init.div_ceil(PAGE_SIZE as u64) * PAGE_SIZE as u64)?;
            backend.write_at(0, &meta.encode()[..])?;
            backend.sync()?;
            (meta, 0)
        } else {
            if len < FIRST_DATA_PAGE * PAGE_SIZE as u64 {
                return Err(StorageError::corrupted(
                    0,
                    "file shorter than the two meta pages",
                ));
            }
            let mut best: Option<(Meta, u64)> = None;
            let mut errs = Vec::new();
            let mut unsupported = None;
            for slot in 0..2u64 {
                let mut buf = vec![0u8; PAGE_SIZE];
                backend.read_at(slot * PAGE_SIZE as u64, &mut buf)?;
                match Meta::decode(&buf, slot) {
                    Ok(m) if best.is_none_or(|(b, _)| m.txid > b.txid) => best = Some((m, slot)),
                    Ok(_) => {}
                    Err(e @ StorageError::UnsupportedFormat { .. }) => unsupported = Some(e),
                    Err(e) => errs.push(e.to_string()),
                }
            }
            if best.is_none()
                && let Some(e) = unsupported
            {
                // A file of another format version: a typed refusal, not
                // "corrupted".
                return Err(e);
            }
            let Some((meta, slot)) = best else {
                return Err(StorageError::corrupted(
                    0,
                    format!("no valid meta page: {}", errs.join("; ")),
                ));
            };
            if meta
                .page_count
                .checked_mul(PAGE_SIZE as u64)
                .is_none_or(|need| need > len)
            {
                return Err(StorageError::corrupted(
                    slot,
                    "meta page count beyond end of file",
                ));
            }
            (meta, slot)
        };
        let file_len = backend.len()?;
        let map = backend.map(file_len, map_reservation(file_len))?;
        let reserve = map_reservation(file_len);
        let wmap = second_map(&*backend, &map, file_len, reserve)?;
        let smap = second_map(&*backend, &map, file_len, reserve)?;
        // Pages pinned by readers at the last durable commit are reusable now.
        let read = |id| read_chunk(&*map, &*backend, id, meta.page_count);
        let (loose, pending_pages) =
            FreeList::read_chain(meta.pending_head, &read, meta.page_count)?;
        let free = FreeList::new(meta.free_head, meta.free_chain_count, loose, pending_pages);
        let registry = Arc::new(Registry::default());
        let verified = Arc::new(Verified::new(map.capacity() as u64 / PAGE_SIZE as u64));
        let snap = Arc::new(Snapshot {
            map: map.clone(),
            overlay: Overlay::default(),
            meta,
            verify: opts.verify_checksums,
            verified: verified.clone(),
            _reg: registry.register(meta.txid),
            drop_resident: false,
        });
        let verify = opts.verify_checksums;
        let max_live_snapshots = opts.max_live_snapshots;
        let writeout = if opts.writeout_queue_commits > 0 && backend.coherent_map() {
            Some(WriteOut::start(
                backend.clone(),
                opts.writeout_queue_commits,
            )?)
        } else {
            None
        };
        let writer = Writer {
            backend: backend.clone(),
            map,
            wmap,
            smap,
            free,
            meta,
            page_count: meta.page_count,
            file_len,
            durable_slot: slot,
            durable_txid: meta.txid,
            verify_checksums: opts.verify_checksums,
            verified,
            old_maps: Vec::new(),
            opts,
            writeout,
            pending: std::collections::VecDeque::new(),
            overlay: Overlay::default(),
            staged: HashMap::new(),
        };
        Ok(Db {
            writer: Mutex::new(writer),
            latest: Mutex::new(snap),
            registry,
            failed: Mutex::new(None),
            verify,
            max_live_snapshots,
        })
    }

    fn check_failed(&self) -> Result<()> {
        match &*self.failed.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(msg) => Err(StorageError::Failed(msg.clone())),
            None => Ok(()),
        }
    }

    fn latch<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(e) = &r {
            let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            if f.is_none() {
                *f = Some(e.to_string());
            }
        }
        r
    }

    /// The latest snapshot, unbounded (tests). Readers use [`Db::read_snapshot`].
    #[cfg(test)]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The latest committed meta (no snapshot is pinned).
    pub fn latest_meta(&self) -> Meta {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).meta
    }

    /// The latest snapshot for a reader, or `TooManyReaders` when readers
    /// already hold `max_live_snapshots` distinct snapshots other than the
    /// latest. Taking the latest never adds a registry entry (it is
    /// registered by its commit), and a commit adds only the new latest, so
    /// readers hold at most `max` distinct snapshots and the registry has
    /// at most `max + 1` entries. The check runs under the `latest` lock,
    /// which commits take to publish, so no commit slips in between.
    pub fn read_snapshot(&self) -> Result<Arc<Snapshot>> {
        let latest = self.latest.lock().unwrap_or_else(|p| p.into_inner());
        let live = self.registry.live_snapshots();
        let max = self.max_live_snapshots;
        // The latest is always registered; the other entries are held by readers.
        if live > max && !Self::held_by_readers(&latest) {
            return Err(StorageError::TooManyReaders {
                live: live - 1,
                max,
            });
        }
        Ok(latest.clone())
    }

    /// The latest state for a scan of the whole store (key count, hash,
    /// snapshot stream): like [`Db::read_snapshot`], but read through the
    /// scan mapping, whose resident pages are dropped when the snapshot
    /// goes (they stay in the page cache). Readers' mapping keeps only what
    /// readers touch.
    pub fn scan_snapshot(&self) -> Result<Arc<Snapshot>> {
        let latest = self.read_snapshot()?;
        let w = self.lock_writer();
        // `w.smap` covers the whole file, so every page of `latest` not in
        // its overlay; `latest` stays registered until ours is.
        Ok(Arc::new(Snapshot {
            map: w.smap.clone(),
            overlay: latest.overlay.clone(),
            meta: latest.meta,
            verify: latest.verify,
            verified: w.verified.clone(),
            _reg: self.registry.register(latest.meta.txid),
            drop_resident: true,
        }))
    }

    /// True when someone besides `Db::latest` holds this snapshot.
    fn held_by_readers(latest: &Arc<Snapshot>) -> bool {
        Arc::strong_count(latest) > 1
    }

    pub fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn begin(&self) -> Result<TreeTxn<'_>> {
        let w = self.lock_writer();
        self.check_failed()?;
        let txid = w.meta.txid + 1;
        let root = w.meta.root;
        let range_tombs = w.meta.range_tombs;
        Ok(TreeTxn {
            w,
            reads: elsa::FrozenMap::new(),
            mapped: std::cell::Cell::new(false),
            dirty: HashMap::new(),
            root,
            range_tombs,
            txid,
            finished: false,
            pool: Vec::new(),
        })
    }

    /// Commits `txn`; `update` fills in the MVCC fields of the new meta.
    pub fn commit(
        &self,
        txn: TreeTxn<'_>,
        update: impl FnOnce(&mut Meta),
        durable: bool,
    ) -> Result<()> {
        self.commit_opt(txn, update, durable, None)
    }

    /// Durable commit that also shrinks the file to `truncate_to` pages.
    /// Preconditions (checked by the caller, see `defrag`): the transaction
    /// changed no tree page, no reachable page lies at or above the target,
    /// and no pending (reader-pinned) page does either.
    pub(crate) fn commit_truncate(&self, txn: TreeTxn<'_>, truncate_to: u64) -> Result<()> {
        self.commit_opt(txn, |_| {}, true, Some(truncate_to))
    }

    fn commit_opt(
        &self,
        mut txn: TreeTxn<'_>,
        update: impl FnOnce(&mut Meta),
        durable: bool,
        truncate: Option<u64>,
    ) -> Result<()> {
        let r = self.commit_inner(&mut txn, update, durable, truncate);
        txn.finished = true;
        self.latch(r)
    }

    fn commit_inner(
        &self,
        txn: &mut TreeTxn<'_>,
        update: impl FnOnce(&mut Meta),
        durable: bool,
        truncate: Option<u64>,
    ) -> Result<()> {
        crate::failpoint::hit("store-commit");
        let txid = txn.txid;
        let root = txn.root;
        let dirty = std::mem::take(&mut txn.dirty);
        let w = &mut *txn.w;
        if w.writeout.is_some() && !durable && !w.writes_inline(dirty.len()) {
            // Encoding, checksums and writes happen on the write-out thread;
            // readers find the pages in the overlay meanwhile.
            w.queue(dirty)?;
        } else {
            // Durable: everything queued before goes to the file first
            // (`writeout.rs`, invariant 3).
            w.flush()?;
            let staged: Vec<_> = w.staged.drain().collect();
            for (id, page) in staged {
                w.write_page(id, &page[..])?;
            }
            let mut ids: Vec<u64> = dirty.keys().copied().collect();
            ids.sort_unstable();
            // One `pwrite` per page, in file order, deliberately not
            // coalesced: the page cache sizes a folio by the write that
            // creates it, and a later one-page rewrite dirties (and
            // writeback rewrites) the whole folio. Coalesced 256 KiB writes
            // made every fdatasync write back about 9x the bytes the commit
            // changed (measured, docs "Benchmark"). The same holds for
            // `pwritev`, which creates folios by its whole length.
            for id in ids {
                let page = dirty[&id].encode();
                w.write_page(id, &page[..])?;
            }
        }
        for id in std::mem::take(&mut txn.pool) {
            w.free.free_own(id);
        }
        w.free.commit_txn(txid);
        let mut meta = w.meta;
        meta.txid = txid;
        meta.root = root;
        update(&mut meta);
        let oldest = self.registry.oldest().unwrap_or(u64::MAX);
        if durable {
            // Pages written before this meta is durable (free-list chunks)
            // must not be reachable from the previous durable meta.
            w.free.release(oldest, w.durable_txid);
            if let Some(t) = truncate {
                w.page_count = t;
            }
            let Writer {
                free, page_count, ..
            } = &mut *w;
            let (writes, free_head, pending_head, chain_count) =
                free.persist(txid, truncate, &mut || {
                    let id = *page_count;
                    *page_count += 1;
                    id
                });
            w.ensure_len()?;
            for (id, p) in &writes {
                w.write_page(*id, &p[..])?;
            }
            meta.free_head = free_head;
            meta.pending_head = pending_head;
            meta.free_chain_count = chain_count;
            meta.page_count = w.page_count;
            w.backend.sync()?;
            crate::failpoint::hit("store-commit-meta");
            let slot = 1 - w.durable_slot;
            w.backend
                .write_at(slot * PAGE_SIZE as u64, &meta.encode()[..])?;
            w.backend.sync()?;
            w.durable_slot = slot;
            w.durable_txid = txid;
            w.free.release(oldest, txid);
            if truncate.is_some() {
                // Only after the new meta is durable: the old one may reference
                // free-list chunks beyond the cut. Mappings may stay longer than
                // the file; nothing reachable lies beyond it (see mapping.rs).
                let len = w.page_count * PAGE_SIZE as u64;
                w.shrink_mappings(len);
                w.backend.set_len(len)?;
                w.file_len = len;
            }
        } else {
            w.free.release(oldest, w.durable_txid);
            meta.page_count = w.page_count;
        }
        w.meta = meta;
        w.remap()?;
        let snap = Arc::new(Snapshot {
            map: w.map.clone(),
            overlay: w.overlay.clone(),
            meta,
            verify: self.verify,
            verified: w.verified.clone(),
            _reg: self.registry.register(txid),
            drop_resident: false,
        });
        *self.latest.lock().unwrap_or_else(|p| p.into_inner()) = snap;
        Ok(())
    }

    /// Makes the last commit durable (an empty durable commit).
    pub fn sync(&self) -> Result<()> {
        let txn = self.begin()?;
        self.commit(txn, |_| {}, true)
    }

    /// `(file bytes, bytes in use)`.
    /// Pages written since the last durable commit: what the next sync
    /// flushes, and about as many old pages no commit can reuse before it
    /// (the durable meta still reaches them).
    pub fn pages_since_durable(&self) -> u64 {
        self.lock_writer().free.young_count()
    }

    pub fn sizes(&self) -> (u64, u64) {
        let w = self.lock_writer();
        let free = w.free.free_count();
        (
            w.file_len,
            (w.meta.page_count.saturating_sub(free)) * PAGE_SIZE as u64,
        )
    }

    /// Verifies the last committed state: every page below the high-water
    /// mark is reachable (tree, overflow, free-list chunk) or free exactly
    /// once, keys are sorted and within their parents' bounds, checksums hold.
    pub fn check_integrity(&self) -> Result<IntegrityReport> {
        let mut w = self.lock_writer();
        w.flush()?;
        let meta = w.meta;
        let pc = meta.page_count;
        let mut seen =
            vec![0u8; usize::try_from(pc).map_err(|_| StorageError::corrupted(0, "page count"))?];
        seen[0] = 1;
        seen[1] = 1;
        let mut mark = |id: u64, what: &str| -> Result<()> {
            let slot = usize::try_from(id).ok().and_then(|i| seen.get_mut(i));
            match slot {
                Some(s) if *s == 0 => {
                    *s = 1;
                    Ok(())
                }
                Some(_) => Err(StorageError::corrupted(
                    id,
                    format!("{what} page accounted twice"),
                )),
                None => Err(StorageError::corrupted(
                    id,
                    format!("{what} page beyond high-water mark"),
                )),
            }
        };
        let snap = Snapshot {
            map: w.smap.clone(),
            overlay: Overlay::default(),
            meta,
            verify: true,
            // Fresh set: the integrity check verifies every page.
            verified: Arc::new(Verified::new(0)),
            _reg: self.registry.register(meta.txid),
            drop_resident: true,
        };
        let mut report = IntegrityReport {
            page_count: pc,
            ..IntegrityReport::default()
        };
        if meta.root != 0 {
            // (page, lower bound, upper bound, depth)
            let mut stack: Vec<WalkItem> = vec![(meta.root, None, None, 0)];
            while let Some((id, lo, hi, depth)) = stack.pop() {
                if depth > MAX_DEPTH {
                    return Err(StorageError::corrupted(id, "tree too deep"));
                }
                mark(id, "tree")?;
                report.tree_pages += 1;
                let NodeRef::Page(p) = snap.node(id)? else {
                    return Err(StorageError::corrupted(id, "unexpected dirty node"));
                };
                // Whole keys (long keys read from their chains, which are
                // checked against their stubs and counted here: every entry
                // owns its own key chain).
                let mut keys = Vec::with_capacity(p.len());
                for i in 0..p.len() {
                    let kr = p.key(i)?;
                    if let KeyRef::Stub { len, chain, .. } = kr {
                        let len = u32::try_from(len)
                            .map_err(|_| StorageError::corrupted(id, "key length"))?;
                        for c in tree::overflow_pages(&snap, chain, len)? {
                            mark(c, "key overflow")?;
                            report.overflow_pages += 1;
                        }
                    }
                    keys.push(tree::load_key(&snap, kr)?);
                }
                let mut prev: Option<&[u8]> = None;
                // Leaf prefix (format 5): within its bound, shared by every
                // key (inline keys include it by construction; long keys are
                // checked here), and slot heads are heads of the suffixes.
                let pre = p.prefix();
                if pre.len() > crate::node::MAX_LEAF_PREFIX {
                    return Err(StorageError::corrupted(id, "key prefix too long"));
                }
                for i in 0..p.len() {
                    let k: &[u8] = &keys[i];
                    if !k.starts_with(pre) {
                        return Err(StorageError::corrupted(id, "key without the leaf's prefix"));
                    }
                    if p.head(i) != Some(crate::node::key_head(&k[pre.len()..])) {
                        return Err(StorageError::corrupted(id, "slot head does not match key"));
                    }
                    let is_first_branch = !p.leaf && i == 0;
                    if is_first_branch && !k.is_empty() {
                        return Err(StorageError::corrupted(id, "branch entry 0 has a key"));
                    }
                    if !is_first_branch {
                        if prev.is_some_and(|pk| pk >= k) {
                            return Err(StorageError::corrupted(id, "keys not sorted"));
                        }
                        if lo.as_deref().is_some_and(|l| k < l)
                            || hi.as_deref().is_some_and(|h| k >= h)
                        {
                            return Err(StorageError::corrupted(id, "key outside parent bounds"));
                        }
                        prev = Some(k);
                    }
                    if p.leaf {
                        report.keys += 1;
                        if let ValRef::Overflow { page, len } = p.val(i)? {
                            let chain = tree::overflow_pages(&snap, page, len)?;
                            tree::load_value(&snap, ValRef::Overflow { page, len })?;
                            for c in chain {
                                mark(c, "overflow")?;
                                report.overflow_pages += 1;
                            }
                            let _ = TYPE_OVERFLOW;
                        }
                    } else {
                        let clo = if i == 0 { lo.clone() } else { Some(k.to_vec()) };
                        let chi = if i + 1 < p.len() {
                            Some(keys[i + 1].to_vec())
                        } else {
                            hi.clone()
                        };
                        stack.push((p.child(i)?, clo, chi, depth + 1));
                    }
                }
            }
        }
        let read = |id| read_chunk(&*w.map, &*w.backend, id, pc);
        let (free, chunks) = w.free.enumerate(&read, pc)?;
        for id in chunks {
            mark(id, "free-list chunk")?;
            report.freelist_pages += 1;
        }
        for id in free {
            mark(id, "free")?;
            report.free_pages += 1;
        }
        if let Some(i) = seen.iter().position(|s| *s == 0) {
            return Err(StorageError::corrupted(
                i as u64,
                "page neither reachable nor free (leak)",
            ));
        }
        Ok(report)
    }
}

/// (page, lower key bound, upper key bound, depth) of a page to check.
type WalkItem = (u64, Option<Vec<u8>>, Option<Vec<u8>>, usize);

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrityReport {
    pub page_count: u64,
    pub tree_pages: u64,
    pub overflow_pages: u64,
    pub freelist_pages: u64,
    pub free_pages: u64,
    pub keys: u64,
}

#[cfg(test)]
#[path = "db_tests.rs"]
mod tests;
