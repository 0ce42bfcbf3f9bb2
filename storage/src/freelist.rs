//! Free-page management, O(1) per page.
//!
//! Free pages live in three places:
//! - `loose`: reusable now, not yet persisted;
//! - the reusable chain: a persisted stack of chunk pages (up to
//!   [`FREE_CHUNK_CAP`] ids each), consumed from the head chunk;
//! - `pending`: freed by transaction F, reusable once every live reader's
//!   snapshot and the durable commit are at txid >= F.
//!
//! A durable commit pushes `loose` as new chunks onto the chain and writes the
//! whole pending set to a separate "pending chain" (after a restart no reader
//! exists, so those pages become reusable). Allocation and freeing never sort
//! or scan; persisting costs one page write per [`FREE_CHUNK_CAP`] ids that
//! changed state since the last durable commit, plus the pending set.

use std::collections::{HashSet, VecDeque};

use crate::error::{Result, StorageError};
use crate::page::{self, FREE_CHUNK_CAP, HEADER, PageBuf, TYPE_FREE_CHUNK};

pub fn encode_chunk(ids: &[u64], next: u64) -> PageBuf {
    let mut p = page::new_page();
    page::write_header(&mut p[..], TYPE_FREE_CHUNK, ids.len() as u16, next);
    for (i, id) in ids.iter().enumerate() {
        p[HEADER + 8 * i..HEADER + 8 * i + 8].copy_from_slice(&id.to_le_bytes());
    }
    page::seal(&mut p[..]);
    p
}

/// Returns `(ids, next)`, validating ids against `page_count`.
pub fn decode_chunk(bytes: &[u8], id: u64, page_count: u64) -> Result<(Vec<u64>, u64)> {
    let (count, next) = page::check(bytes, id, TYPE_FREE_CHUNK)?;
    let count = count as usize;
    if count > FREE_CHUNK_CAP {
        return Err(StorageError::corrupted(id, "free chunk count too large"));
    }
    let valid = |p: u64| p >= page::FIRST_DATA_PAGE && p < page_count;
    if next != 0 && !valid(next) {
        return Err(StorageError::corrupted(id, "free chunk link out of range"));
    }
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let p = page::le_u64(bytes, HEADER + 8 * i);
        if !valid(p) {
            return Err(StorageError::corrupted(id, "free page id out of range"));
        }
        ids.push(p);
    }
    Ok((ids, next))
}

/// Reads a chunk page: `(ids, next)`.
pub type ChunkReader<'a> = &'a dyn Fn(u64) -> Result<(Vec<u64>, u64)>;

#[derive(Clone, Debug, Default)]
struct Head {
    page: u64,
    /// Remaining ids of the head chunk once loaded.
    ids: Option<Vec<u64>>,
    next: u64,
    chain_count: u64,
}

#[derive(Debug, Default)]
pub struct FreeList {
    loose: Vec<u64>,
    head: Head,
    pending: VecDeque<(u64, Vec<u64>)>,
    pending_total: u64,
    /// Pages of the persisted pending chain (in use until the next durable commit).
    pending_chain: Vec<u64>,
    // ---- per-transaction undo state ----
    txn_popped_loose: Vec<u64>,
    txn_head: Option<Head>,
    txn_freed: Vec<u64>,
    /// Pages allocated and freed within the current transaction.
    txn_reuse: Vec<u64>,
    /// Defragmentation: reusable pages at or above `park_at` are set aside
    /// here and handed out only when nothing lower is free.
    park_at: Option<u64>,
    parked: Vec<u64>,
    /// Pages allocated since the last durable commit. The durable meta cannot
    /// reach them, so once freed only readers pin them (`pending_young`).
    young: HashSet<u64>,
    pending_young: VecDeque<(u64, Vec<u64>)>,
    txn_freed_young: Vec<u64>,
    txn_parked: Vec<u64>,
    txn_unparked: Vec<u64>,
}

impl FreeList {
    pub fn new(free_head: u64, chain_count: u64, loose: Vec<u64>, pending_chain: Vec<u64>) -> Self {
        FreeList {
            loose,
            head: Head {
                page: free_head,
                ids: None,
                next: 0,
                chain_count,
            },
            pending_chain,
            ..FreeList::default()
        }
    }

    /// Pops a reusable page, or `None` when the file must grow.
    pub fn alloc(&mut self, txid: u64, read: ChunkReader<'_>) -> Result<Option<u64>> {
        while let Some(p) = self.pop_source(txid, read)? {
            match self.park_at {
                Some(t) if p >= t => {
                    self.parked.push(p);
                    self.txn_parked.push(p);
                }
                _ => {
                    self.young.insert(p);
                    return Ok(Some(p));
                }
            }
        }
        let p = self.parked.pop();
        if let Some(p) = p {
            self.txn_unparked.push(p);
            self.young.insert(p);
        }
        Ok(p)
    }

    /// Sets (or clears) the threshold above which reusable pages are parked.
    /// Clearing it makes parked pages ordinary reusable pages again.
    pub fn set_park_at(&mut self, at: Option<u64>) {
        self.park_at = at;
        if at.is_none() {
            self.loose.append(&mut self.parked);
        }
    }

    /// Pops every reusable page below the park threshold.
    pub fn drain(&mut self, txid: u64, read: ChunkReader<'_>) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        while let Some(p) = self.pop_source(txid, read)? {
            match self.park_at {
                Some(t) if p >= t => {
                    self.parked.push(p);
                    self.txn_parked.push(p);
                }
                _ => {
                    self.young.insert(p);
                    out.push(p);
                }
            }
        }
        Ok(out)
    }

    fn pop_source(&mut self, txid: u64, read: ChunkReader<'_>) -> Result<Option<u64>> {
        if let Some(p) = self.txn_reuse.pop() {
            return Ok(Some(p));
        }
        if let Some(p) = self.loose.pop() {
            self.txn_popped_loose.push(p);
            return Ok(Some(p));
        }
        loop {
            if self.head.page == 0 {
                return Ok(None);
            }
            if self.txn_head.is_none() {
                self.txn_head = Some(self.head.clone());
            }
            if self.head.ids.is_none() {
                let (ids, next) = read(self.head.page)?;
                self.head.ids = Some(ids);
                self.head.next = next;
            }
            let ids = self.head.ids.as_mut().expect("loaded above");
            if let Some(p) = ids.pop() {
                self.head.chain_count = self.head.chain_count.saturating_sub(1);
                return Ok(Some(p));
            }
            // Chunk exhausted: its page is reachable from the durable meta,
            // so it is freed like any page of this transaction.
            let chunk = self.head.page;
            self.free(chunk, txid);
            self.head = Head {
                page: self.head.next,
                ids: None,
                next: 0,
                chain_count: self.head.chain_count,
            };
        }
    }

    /// Records a page handed out past the high-water mark as young.
    pub fn mark_young(&mut self, id: u64) {
        self.young.insert(id);
    }

    /// Frees a page that committed state (or a reader) may still reach.
    pub fn free(&mut self, id: u64, _txid: u64) {
        if self.young.contains(&id) {
            self.txn_freed_young.push(id);
        } else {
            self.txn_freed.push(id);
        }
    }

    /// Frees a page allocated in the current transaction: nobody else can see it.
    pub fn free_own(&mut self, id: u64) {
        self.txn_reuse.push(id);
    }

    /// Ends the transaction: its frees become pending at `txid`.
    pub fn commit_txn(&mut self, txid: u64) {
        self.txn_popped_loose.clear();
        self.txn_parked.clear();
        self.txn_unparked.clear();
        self.txn_head = None;
        let reuse = std::mem::take(&mut self.txn_reuse);
        self.loose.extend(reuse);
        let freed = std::mem::take(&mut self.txn_freed);
        if !freed.is_empty() {
            self.pending_total += freed.len() as u64;
            self.pending.push_back((txid, freed));
        }
        let freed = std::mem::take(&mut self.txn_freed_young);
        if !freed.is_empty() {
            self.pending_total += freed.len() as u64;
            self.pending_young.push_back((txid, freed));
        }
    }

    /// Undoes every allocation and free of the current transaction.
    pub fn rollback_txn(&mut self) {
        self.txn_reuse.clear();
        self.txn_freed.clear();
        self.txn_freed_young.clear();
        let popped = std::mem::take(&mut self.txn_popped_loose);
        self.loose.extend(popped);
        if let Some(h) = self.txn_head.take() {
            self.head = h;
        }
        if !self.txn_parked.is_empty() {
            let undo: std::collections::HashSet<u64> = self.txn_parked.drain(..).collect();
            self.parked.retain(|p| !undo.contains(p));
        }
        self.parked.append(&mut self.txn_unparked);
    }

    /// Makes reusable the pending pages no reader (snapshot txid >=
    /// `reader_safe`) and, for pages older than the last durable commit, no
    /// durable meta (txid `durable`) can reach.
    pub fn release(&mut self, reader_safe: u64, durable: u64) {
        let old_safe = reader_safe.min(durable);
        for (queue, safe) in [
            (&mut self.pending, old_safe),
            (&mut self.pending_young, reader_safe),
        ] {
            while queue.front().is_some_and(|(f, _)| *f <= safe) {
                if let Some((_, ids)) = queue.pop_front() {
                    self.pending_total -= ids.len() as u64;
                    self.loose.extend(ids);
                }
            }
        }
    }

    /// Pages handed out since the last durable commit.
    pub fn young_count(&self) -> u64 {
        self.young.len() as u64
    }

    /// Number of free pages (reusable or pending).
    pub fn free_count(&self) -> u64 {
        self.loose.len() as u64
            + self.head.chain_count
            + self.pending_total
            + self.txn_reuse.len() as u64
            + self.txn_freed.len() as u64
            + self.txn_freed_young.len() as u64
            + self.parked.len() as u64
    }

    /// Prepares the persisted form at a durable commit `txid` (after
    /// `commit_txn`). `grow` hands out fresh pages past the high-water mark.
    /// Returns the pages to write and `(free_head, pending_head, chain_count)`.
    pub fn persist(
        &mut self,
        txid: u64,
        truncate: Option<u64>,
        grow: &mut dyn FnMut() -> u64,
    ) -> (Vec<(u64, PageBuf)>, u64, u64, u64) {
        let mut extra_freed = Vec::new();
        if let Some(t) = self.park_at {
            // Free-list chunks written below must land below the threshold.
            let (high, low): (Vec<u64>, Vec<u64>) = self.loose.drain(..).partition(|p| *p >= t);
            self.loose = low;
            self.parked.extend(high);
        }
        if let Some(ids) = self.head.ids.take() {
            // A partly consumed head chunk cannot stay on disk with a skip
            // count; its remaining ids move back to `loose`.
            self.head.chain_count -= ids.len() as u64;
            self.loose.extend(ids);
            extra_freed.push(self.head.page);
            self.head.page = self.head.next;
            self.head.next = 0;
        }
        extra_freed.append(&mut self.pending_chain);
        if !extra_freed.is_empty() {
            self.pending_total += extra_freed.len() as u64;
            match self.pending.back_mut() {
                Some((f, v)) if *f == txid => v.extend(extra_freed),
                _ => self.pending.push_back((txid, extra_freed)),
            }
        }
        if let Some(t) = truncate {
            // Pages at or above the cut vanish with it. Callers guarantee the
            // only pending ones are free-list pages of this very commit.
            self.loose.retain(|p| *p < t);
            self.parked.retain(|p| *p < t);
            for queue in [&mut self.pending, &mut self.pending_young] {
                for (_, v) in queue.iter_mut() {
                    v.retain(|p| *p < t);
                }
                queue.retain(|(_, v)| !v.is_empty());
            }
            self.pending_total = self
                .pending
                .iter()
                .chain(self.pending_young.iter())
                .map(|(_, v)| v.len() as u64)
                .sum();
        }
        let mut writes = Vec::new();
        // Pending chain: every pending and parked id (kept out of the
        // reusable chain at runtime), all reusable after a restart.
        let all_pending: Vec<u64> = self
            .pending
            .iter()
            .chain(self.pending_young.iter())
            .flat_map(|(_, v)| v.iter().copied())
            .chain(self.parked.iter().copied())
            .collect();
        let n_pages = all_pending.len().div_ceil(FREE_CHUNK_CAP);
        let mut chain_pages = Vec::with_capacity(n_pages);
        for _ in 0..n_pages {
            chain_pages.push(self.loose.pop().unwrap_or_else(&mut *grow));
        }
        let mut pending_head = 0;
        for (i, chunk) in all_pending.chunks(FREE_CHUNK_CAP).enumerate().rev() {
            writes.push((chain_pages[i], encode_chunk(chunk, pending_head)));
            pending_head = chain_pages[i];
        }
        self.pending_chain = chain_pages;
        // Reusable chain: push `loose` in chunks; each chunk page is one of them.
        while let Some(chunk_page) = self.loose.pop() {
            let take = self.loose.len().min(FREE_CHUNK_CAP);
            let ids = self.loose.split_off(self.loose.len() - take);
            writes.push((chunk_page, encode_chunk(&ids, self.head.page)));
            self.head.chain_count += ids.len() as u64;
            self.head = Head {
                page: chunk_page,
                ids: None,
                next: 0,
                chain_count: self.head.chain_count,
            };
        }
        // Everything allocated so far is part of the new durable state.
        self.young.clear();
        (writes, self.head.page, pending_head, self.head.chain_count)
    }

    /// All pages the free list accounts for, for the integrity checker:
    /// `(free ids, pages holding free-list chunks)`.
    pub fn enumerate(&self, read: ChunkReader<'_>, limit: u64) -> Result<(Vec<u64>, Vec<u64>)> {
        let mut free: Vec<u64> = self.loose.clone();
        free.extend(self.parked.iter().copied());
        free.extend(self.txn_reuse.iter().copied());
        free.extend(self.txn_freed.iter().copied());
        free.extend(self.txn_freed_young.iter().copied());
        for (_, v) in self.pending.iter().chain(self.pending_young.iter()) {
            free.extend(v.iter().copied());
        }
        let mut chunks: Vec<u64> = self.pending_chain.clone();
        let mut page = self.head.page;
        if let Some(ids) = &self.head.ids {
            free.extend(ids.iter().copied());
            chunks.push(page);
            page = self.head.next;
        }
        let mut steps = 0u64;
        while page != 0 {
            steps += 1;
            if steps > limit {
                return Err(StorageError::corrupted(page, "free chain cycle"));
            }
            let (ids, next) = read(page)?;
            free.extend(ids);
            chunks.push(page);
            page = next;
        }
        Ok((free, chunks))
    }

    /// True if a page pinned by a transaction before `txid` lies at or above `target`.
    pub fn pinned_at_or_above(&self, target: u64, txid: u64) -> bool {
        self.pending
            .iter()
            .chain(self.pending_young.iter())
            .any(|(f, v)| *f < txid && v.iter().any(|p| *p >= target))
    }

    /// Reads an entire chain into a list of ids plus its pages.
    pub fn read_chain(
        head: u64,
        read: ChunkReader<'_>,
        limit: u64,
    ) -> Result<(Vec<u64>, Vec<u64>)> {
        let (mut ids, mut pages) = (Vec::new(), Vec::new());
        let mut page = head;
        while page != 0 {
            if pages.len() as u64 > limit {
                return Err(StorageError::corrupted(page, "free chain cycle"));
            }
            let (v, next) = read(page)?;
            ids.extend(v);
            pages.push(page);
            page = next;
        }
        Ok((ids, pages))
    }
}
