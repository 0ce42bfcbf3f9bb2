//! The writer's copy-on-write transaction on the B+ tree.
//!
//! Invariant: a page reachable from the last committed root is never written;
//! modifying it copies it to a freshly allocated page (kept in `dirty` until
//! commit) and frees the original at this transaction's txid.
//!
//! Key chains (keys longer than `KEY_INLINE_MAX`): the entry holding a key
//! owns its chain. A leaf entry's chain is written when the key is inserted
//! and freed when the entry is deleted (a put replacing the value keeps it).
//! A branch separator that is long after truncation gets its own chain,
//! freed when the branch entry is dropped (leaf merge, empty-child removal,
//! clearing entry 0's key, root collapse). Copy-on-write copies the stub:
//! old and new page versions share the immutable chain, like value chains.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use crate::db::Writer;
use crate::error::{Result, StorageError};
use crate::leaf_fill;
use crate::node::{
    self, INLINE_LIMIT, KEY_INLINE_MAX, Key, KeyBuf, MAX_TREE_KEY, NODE_CAP, Node, NodeRef,
    PageView, Val,
};
use crate::page::{self, OVERFLOW_CAP, PAGE_SIZE, TYPE_OVERFLOW};
use crate::tree::{self, MAX_DEPTH, TreeRead};

pub struct TreeTxn<'a> {
    pub(crate) w: std::sync::MutexGuard<'a, Writer>,
    /// Clean pages this transaction read, with `pread` (up to
    /// `DbOptions::txn_read_pages`, then through `Writer::wmap`): reading
    /// through a mapping would leave the kernel's mapped neighbourhood of
    /// every page copied resident in the process. Append-only, so a page
    /// borrowed from it stays put for the transaction.
    pub(crate) reads: elsa::FrozenMap<u64, Box<[u8]>>,
    /// Read through `Writer::wmap` (beyond `txn_read_pages`): its resident
    /// pages are dropped when the transaction ends.
    pub(crate) mapped: std::cell::Cell<bool>,
    pub(crate) dirty: HashMap<u64, Node>,
    pub(crate) root: u64,
    /// Range tombstones in this transaction's state (MVCC layer's count,
    /// stored into `Meta::range_tombs` by its commit).
    pub(crate) range_tombs: u64,
    pub(crate) txid: u64,
    pub(crate) finished: bool,
    /// Defragmentation: low page ids handed out first (sorted descending).
    pub(crate) pool: Vec<u64>,
}

impl TreeTxn<'_> {
    /// Page `id` as the file has it (a page no pending commit rewrites):
    /// read into `reads` once, or through the writer's mapping beyond
    /// `txn_read_pages` pages. `None` beyond the file.
    fn clean_page(&self, id: u64) -> Result<Option<&[u8]>> {
        if let Some(b) = self.reads.get(&id) {
            return Ok(Some(b));
        }
        let Some(off) = tree::page_offset(id) else {
            return Ok(None);
        };
        if self.reads.len() >= self.w.opts.txn_read_pages || !self.w.backend.coherent_map() {
            self.mapped.set(true);
            return Ok(self.w.wmap.slice(off, PAGE_SIZE));
        }
        if (off + PAGE_SIZE) as u64 > self.w.file_len {
            return Ok(None);
        }
        let mut buf = vec![0u8; PAGE_SIZE].into_boxed_slice();
        self.w.backend.read_at(off as u64, &mut buf)?;
        Ok(Some(self.reads.insert(id, buf)))
    }
}

impl TreeRead for TreeTxn<'_> {
    fn root(&self) -> u64 {
        self.root
    }

    fn node(&self, id: u64) -> Result<NodeRef<'_>> {
        match self.dirty.get(&id) {
            // Read raw branches in place, like clean pages.
            Some(Node::RawBranch { page, .. }) => {
                return Ok(NodeRef::Page(PageView::new(&page[..], id, false)?));
            }
            Some(n) => return Ok(NodeRef::Owned(n)),
            None => {}
        }
        if let Some(n) = self.w.overlay.node(id)? {
            return Ok(n);
        }
        let bytes = self
            .clean_page(id)?
            .ok_or_else(|| StorageError::corrupted(id, "tree page beyond file"))?;
        let check = self.w.verify_checksums && !self.w.verified.get(id);
        let view = PageView::new(bytes, id, check)?;
        if check {
            self.w.verified.set(id);
        }
        Ok(NodeRef::Page(view))
    }

    fn page_bytes(&self, id: u64) -> Result<Cow<'_, [u8]>> {
        // Written by this transaction, or by a commit not yet written out.
        if let Some(p) = self.w.staged.get(&id) {
            return Ok(Cow::Borrowed(&p[..]));
        }
        if let Some(b) = self.w.overlay.raw(id) {
            return Ok(Cow::Borrowed(b));
        }
        // A non-coherent map is a copy from the last commit and misses the
        // overflow pages this transaction wrote.
        if self.w.backend.coherent_map()
            && let Some(b) = self.clean_page(id)?
        {
            return Ok(Cow::Borrowed(b));
        }
        if id >= self.w.page_count {
            return Err(StorageError::corrupted(id, "page beyond high-water mark"));
        }
        let mut buf = vec![0u8; PAGE_SIZE];
        self.w.backend.read_at(id * PAGE_SIZE as u64, &mut buf)?;
        Ok(Cow::Owned(buf))
    }

    fn range_tombs(&self) -> u64 {
        self.range_tombs
    }
}

/// Node size below which a node is merged with a sibling when possible.
const MERGE_BELOW: usize = NODE_CAP / 4;

/// Two sibling leaves are redistributed instead of split only when together
/// they fit in this many bytes, so each keeps ~1/16 of a page free.
const REDISTRIBUTE_FILL: usize = 2 * NODE_CAP - NODE_CAP / 8;

impl TreeTxn<'_> {
    pub(crate) fn alloc(&mut self) -> Result<u64> {
        if let Some(p) = self.pool.pop() {
            return Ok(p);
        }
        self.w.alloc(self.txid)
    }

    pub(crate) fn free_page(&mut self, id: u64) {
        if self.dirty.remove(&id).is_some() {
            self.w.free.free_own(id);
        } else {
            self.w.free.free(id, self.txid);
        }
    }

    pub(crate) fn free_val(&mut self, v: &Val) -> Result<()> {
        if let Val::Overflow { page, len } = *v {
            self.free_chain(page, len as usize)?;
        }
        Ok(())
    }

    pub(crate) fn free_chain(&mut self, first: u64, len: usize) -> Result<()> {
        let len = u32::try_from(len).map_err(|_| StorageError::corrupted(first, "chain length"))?;
        for id in tree::overflow_pages(self, first, len)? {
            self.w.free.free(id, self.txid);
        }
        Ok(())
    }

    /// Frees the chain owned by a key that is being dropped.
    pub(crate) fn free_key(&mut self, k: &Key) -> Result<()> {
        if k.chain != 0 {
            self.free_chain(k.chain, k.bytes.len())?;
        }
        Ok(())
    }

    /// A key for a new entry, with a freshly written chain if it is long.
    pub(crate) fn make_key(&mut self, bytes: &[u8]) -> Result<Key> {
        let chain = if bytes.len() > KEY_INLINE_MAX {
            self.write_chain(bytes)?
        } else {
            0
        };
        Ok(Key {
            bytes: KeyBuf::from_slice(bytes),
            chain,
        })
    }

    /// Copies a committed node into a dirty one; returns its (new) id.
    pub(crate) fn cow(&mut self, id: u64) -> Result<u64> {
        if self.dirty.contains_key(&id) {
            return Ok(id);
        }
        let node = match self.node(id)? {
            NodeRef::Page(p) if !p.leaf => p.to_raw_branch()?,
            NodeRef::Page(p) => p.to_node(self)?,
            NodeRef::Owned(n) => n.clone(),
        };
        if node.size() > NODE_CAP {
            return Err(StorageError::corrupted(id, "node entries overlap"));
        }
        let new = self.alloc()?;
        self.w.free.free(id, self.txid);
        self.dirty.insert(new, node);
        Ok(new)
    }

    /// Decodes dirty node `id` if it is a raw branch (before changes other
    /// than child pointers). No-op otherwise.
    pub(crate) fn materialize(&mut self, id: u64) -> Result<()> {
        if !matches!(self.dirty.get(&id), Some(Node::RawBranch { .. })) {
            return Ok(());
        }
        let Some(raw) = self.dirty.remove(&id) else {
            return Err(StorageError::corrupted(id, "dirty node vanished"));
        };
        let Node::RawBranch { page, .. } = &raw else {
            return Err(StorageError::corrupted(id, "dirty node changed kind"));
        };
        let decoded = PageView::new(&page[..], id, false).and_then(|v| v.to_node(self));
        match decoded {
            Ok(n) => {
                self.dirty.insert(id, n);
                Ok(())
            }
            Err(e) => {
                self.dirty.insert(id, raw);
                Err(e)
            }
        }
    }

    /// Child index and id covering `key` in dirty branch `id`.
    fn descend(&self, id: u64, key: &[u8]) -> Result<(usize, u64)> {
        match self.dirty.get(&id) {
            Some(Node::Branch(entries)) => {
                let i = branch_index(entries, key);
                Ok((i, entries[i].1))
            }
            Some(Node::RawBranch { .. }) => {
                let n = self.node(id)?;
                let i = tree::search(self, &n, key)?;
                Ok((i, n.child(i)?))
            }
            Some(Node::Leaf(_)) => Err(StorageError::corrupted(id, "descending into a leaf")),
            None => Err(StorageError::corrupted(id, "dirty node vanished")),
        }
    }

    fn node_size(&self, id: u64) -> Result<usize> {
        Ok(match self.node(id)? {
            NodeRef::Owned(n) => n.size(),
            NodeRef::Page(p) => p.size()?,
        })
    }

    pub(crate) fn write_overflow(&mut self, value: &[u8]) -> Result<Val> {
        Ok(Val::Overflow {
            page: self.write_chain(value)?,
            len: value.len() as u32,
        })
    }

    /// Writes `value` to a new overflow chain; returns its first page.
    pub(crate) fn write_chain(&mut self, value: &[u8]) -> Result<u64> {
        let chunks: Vec<&[u8]> = value.chunks(OVERFLOW_CAP).collect();
        let mut ids = Vec::with_capacity(chunks.len());
        for _ in 0..chunks.len() {
            ids.push(self.alloc()?);
        }
        for (i, c) in chunks.iter().enumerate() {
            let next = ids.get(i + 1).copied().unwrap_or(0);
            let mut p = page::new_page();
            page::write_header(&mut p[..], TYPE_OVERFLOW, c.len() as u16, next);
            p[page::HEADER..page::HEADER + c.len()].copy_from_slice(c);
            page::seal(&mut p[..]);
            self.w.stage_page(ids[i], p)?;
        }
        Ok(ids[0])
    }

    /// Inserts or replaces `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if key.len() > MAX_TREE_KEY {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                max: MAX_TREE_KEY,
            });
        }
        let val = if node::key_page_len(key.len()) + value.len() > INLINE_LIMIT {
            self.write_overflow(value)?
        } else {
            Val::Inline(value.to_vec())
        };
        if self.root == 0 {
            let k = self.make_key(key)?;
            let id = self.alloc()?;
            self.dirty.insert(id, Node::Leaf(vec![(k, val)]));
            self.root = id;
            return Ok(());
        }
        let (mut pieces, old) = self.insert_rec(self.root, key, val, 0)?;
        if let Some(old) = old {
            self.free_val(&old)?;
        }
        if pieces.len() == 1 {
            // A root leaf left oversized (no parent to redistribute with).
            pieces = self.split(pieces[0].1, false)?;
        }
        self.root = self.new_root(pieces)?;
        Ok(())
    }

    pub(crate) fn new_root(&mut self, mut pieces: Pieces) -> Result<u64> {
        while pieces.len() > 1 {
            let id = self.alloc()?;
            // Piece 0's separator is empty (split never makes one for it).
            let first = std::mem::take(&mut pieces[0].0);
            self.free_key(&first)?;
            self.dirty.insert(id, Node::Branch(pieces));
            pieces = self.split(id, false)?;
        }
        Ok(pieces[0].1)
    }

    fn insert_rec(
        &mut self,
        id: u64,
        key: &[u8],
        val: Val,
        depth: usize,
    ) -> Result<(Pieces, Option<Val>)> {
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupted(id, "tree too deep"));
        }
        let id = self.cow(id)?;
        if let Some(Node::Leaf(entries)) = self.dirty.get(&id) {
            let found = entries.binary_search_by(|(k, _)| k.bytes.as_slice().cmp(key));
            return self.insert_leaf(id, found, key, val);
        }
        let (i, child_id) = self.descend(id, key)?;
        let (mut pieces, old) = self.insert_rec(child_id, key, val, depth + 1)?;
        // Only leaves are left oversized (branches split themselves); the
        // kind test keeps a wide branch from being summed on every put.
        let oversized_leaf = |n: &Node| matches!(n, Node::Leaf(_)) && n.size() > NODE_CAP;
        if pieces.len() == 1 && self.dirty.get(&pieces[0].1).is_some_and(oversized_leaf) {
            // A leaf overflowed in the middle of the key space: move entries
            // to a sibling with room before splitting (see `redistribute`).
            self.materialize(id)?;
            self.set_child(id, i, pieces[0].1);
            if self.redistribute(id, i)? {
                // The separator changed length: the parent may have to split.
                return Ok((self.split(id, false)?, old));
            }
            pieces = self.split(pieces[0].1, false)?;
        }
        if pieces.len() == 1 {
            // Only the child pointer changed: the node's size did not, so it
            // cannot need a split (saves summing a wide branch per put).
            self.set_child(id, i, pieces[0].1);
            return Ok((pieces_of(id), old));
        }
        self.materialize(id)?;
        let mut append = false;
        if let Some(Node::Branch(entries)) = self.dirty.get_mut(&id) {
            let added = pieces.len() - 1;
            entries[i].1 = pieces[0].1;
            for (j, p) in pieces.into_iter().enumerate().skip(1) {
                entries.insert(i + j, p);
            }
            append = i + added + 1 == entries.len();
        }
        Ok((self.split(id, append)?, old))
    }

    /// Puts `key` into dirty leaf `id` at `found` (a binary search result):
    /// a replaced entry keeps its key (and key chain).
    fn insert_leaf(
        &mut self,
        id: u64,
        found: std::result::Result<usize, usize>,
        key: &[u8],
        val: Val,
    ) -> Result<(Pieces, Option<Val>)> {
        let new_key = match found {
            Ok(_) => None,
            Err(_) => Some(self.make_key(key)?),
        };
        let Some(Node::Leaf(entries)) = self.dirty.get_mut(&id) else {
            return Err(StorageError::corrupted(id, "dirty node vanished"));
        };
        let (old, at) = match (found, new_key) {
            (Ok(i), _) => (Some(std::mem::replace(&mut entries[i].1, val)), i),
            (Err(i), Some(k)) => {
                entries.insert(i, (k, val));
                (None, i)
            }
            (Err(_), None) => unreachable!("new key made above"),
        };
        if at + 1 == entries.len() {
            // Ascending inserts: fill the left piece, start a new one.
            return Ok((self.split(id, true)?, old));
        }
        if entries[at + 1].0.bytes.first() != key.first() {
            // The new key is the last of its table (first byte) in this
            // leaf: ascending inserts at the end of a table that is not the
            // tree's last (the `k` table, followed by `m` and `r`). Split
            // right after it, filling the left part, so the next key
            // appends to a leaf of its own table.
            return Ok((self.split_leaf_at(id, at + 1)?, old));
        }
        // Left oversized on purpose: the caller redistributes it with a
        // sibling or splits it.
        Ok((pieces_of(id), old))
    }

    /// Dirty leaf `i` of dirty branch `parent` is oversized: if it and an
    /// adjacent sibling together fit in [`REDISTRIBUTE_FILL`] bytes, their
    /// entries are spread over the two pages (the separator between them is
    /// recomputed) and no page is added. Returns false when neither sibling
    /// has room (the caller splits). Random inserts fill leaves to ~69%
    /// with plain halving splits; moving the overflow to a neighbour first
    /// (B*-tree style) keeps them fuller.
    fn redistribute(&mut self, parent: u64, i: usize) -> Result<bool> {
        let Some(Node::Branch(entries)) = self.dirty.get(&parent) else {
            return Ok(false);
        };
        let len = entries.len();
        let xid = entries[i].1;
        let x_size = match self.dirty.get(&xid) {
            Some(n @ Node::Leaf(_)) => n.size(),
            _ => return Ok(false),
        };
        let mut candidates = Vec::with_capacity(2);
        if i > 0 {
            candidates.push(i - 1);
        }
        if i + 1 < len {
            candidates.push(i + 1);
        }
        for s in candidates {
            let sid = match self.dirty.get(&parent) {
                Some(Node::Branch(e)) => e[s].1,
                _ => return Ok(false),
            };
            if !self.node(sid)?.is_leaf() || self.node_size(sid)? + x_size > REDISTRIBUTE_FILL {
                continue;
            }
            let sid = self.cow(sid)?;
            self.set_child(parent, s, sid);
            let (l, r) = if s < i { (s, i) } else { (i, s) };
            let (lid, rid) = if s < i { (sid, xid) } else { (xid, sid) };
            let take = |t: &mut Self, id: u64| match t.dirty.get_mut(&id) {
                Some(Node::Leaf(e)) => Ok(std::mem::take(e)),
                _ => Err(StorageError::corrupted(id, "sibling is not a dirty leaf")),
            };
            let mut all = take(self, lid)?;
            let left_len = all.len();
            all.extend(take(self, rid)?);
            let Some(at) = leaf_fill::balanced_leaf_cut(&all) else {
                // No cut fits both pages (large entries): undo, split instead.
                let right = all.split_off(left_len);
                self.dirty.insert(lid, Node::Leaf(all));
                self.dirty.insert(rid, Node::Leaf(right));
                return Ok(false);
            };
            let right = all.split_off(at);
            let sep = self.make_key(separator(&all[at - 1].0.bytes, &right[0].0.bytes))?;
            self.dirty.insert(lid, Node::Leaf(all));
            self.dirty.insert(rid, Node::Leaf(right));
            let old_sep = match self.dirty.get_mut(&parent) {
                Some(Node::Branch(e)) => std::mem::replace(&mut e[r].0, sep),
                _ => return Err(StorageError::corrupted(parent, "parent vanished")),
            };
            debug_assert!(l + 1 == r);
            self.free_key(&old_sep)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Splits an oversized dirty node; returns `(separator, id)` pieces
    /// (piece 0's separator is empty: the parent keeps its own key for it).
    /// Leaf pieces get the shortest separator that is greater than the left
    /// piece's last key and at most the right piece's first key; branch
    /// pieces move their first key (and its chain) up unchanged.
    /// `append`: the insert went to the node's end (ascending keys, like the
    /// revision table), so left pieces are filled up instead of halved.
    pub(crate) fn split(&mut self, id: u64, append: bool) -> Result<Pieces> {
        let Some(node) = self.dirty.get_mut(&id) else {
            return Err(StorageError::corrupted(id, "dirty node vanished"));
        };
        let size = node.size();
        if size <= NODE_CAP {
            return Ok(pieces_of(id));
        }
        let n_pieces = size.div_ceil(NODE_CAP * 7 / 8).max(2);
        let target = if append {
            NODE_CAP * 15 / 16
        } else {
            size / n_pieces
        };
        let node = std::mem::replace(node, Node::Leaf(Vec::new()));
        let mut out = Vec::new();
        match node {
            Node::RawBranch { .. } => {
                unreachable!("raw branches are copies of pages: they never exceed one")
            }
            Node::Leaf(entries) => {
                let pieces = leaf_fill::cut_leaf(entries, target);
                return self.leaf_pieces(id, pieces);
            }
            Node::Branch(entries) => {
                for mut piece in cut(entries, target, |(k, _)| node::branch_entry_size(k)) {
                    let sep = std::mem::take(&mut piece[0].0);
                    out.push((sep, Node::Branch(piece)));
                }
            }
        }
        self.place_pieces(id, out)
    }

    /// Splits dirty leaf `id` (if oversized) with a cut before entry `at`:
    /// the entries before it are packed like appends (pieces filled to
    /// 15/16), the rest form their own piece(s).
    fn split_leaf_at(&mut self, id: u64, at: usize) -> Result<Pieces> {
        let Some(Node::Leaf(entries)) = self.dirty.get_mut(&id) else {
            return Err(StorageError::corrupted(id, "dirty node vanished"));
        };
        if leaf_fill::leaf_size(entries) <= NODE_CAP {
            return Ok(pieces_of(id));
        }
        let mut left = std::mem::take(entries);
        let right = left.split_off(at);
        let mut pieces = leaf_fill::cut_leaf(left, NODE_CAP * 15 / 16);
        pieces.extend(leaf_fill::cut_leaf(right, NODE_CAP * 15 / 16));
        self.leaf_pieces(id, pieces)
    }

    /// Places leaf pieces (from a split of dirty leaf `id`) with their
    /// separators: the shortest key greater than the previous piece's last
    /// key and at most the piece's first key.
    fn leaf_pieces(&mut self, id: u64, pieces: Vec<Vec<(Key, Val)>>) -> Result<Pieces> {
        let mut prev_last: Option<&[u8]> = None;
        let mut seps = Vec::with_capacity(pieces.len());
        for piece in &pieces {
            seps.push(prev_last.map(|l| separator(l, &piece[0].0.bytes).to_vec()));
            prev_last = piece.last().map(|(k, _)| k.bytes.as_slice());
        }
        let mut out = Vec::with_capacity(pieces.len());
        for (piece, sep) in pieces.into_iter().zip(seps) {
            let sep = match sep {
                Some(s) => self.make_key(&s)?,
                None => Key::default(),
            };
            out.push((sep, Node::Leaf(piece)));
        }
        self.place_pieces(id, out)
    }

    /// Stores split pieces: the first keeps page `id`, the others get new pages.
    fn place_pieces(&mut self, id: u64, out: Vec<(Key, Node)>) -> Result<Pieces> {
        let mut res = Vec::with_capacity(out.len());
        for (i, (sep, n)) in out.into_iter().enumerate() {
            let pid = if i == 0 { id } else { self.alloc()? };
            self.dirty.insert(pid, n);
            res.push((sep, pid));
        }
        Ok(res)
    }

    /// Removes `key`; returns its old value if it existed.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        if tree::get(self, key)?.is_none() {
            return Ok(false);
        }
        let (new_root, (old_key, old)) = self.delete_rec(self.root, key, 0)?;
        self.free_key(&old_key)?;
        self.free_val(&old)?;
        self.root = new_root;
        // Collapse the root.
        loop {
            let root = self.root;
            self.materialize(root)?;
            let replace = match self.dirty.get(&root) {
                Some(Node::Leaf(e)) if e.is_empty() => Some(0),
                Some(Node::Branch(e)) if e.is_empty() => Some(0),
                Some(Node::Branch(e)) if e.len() == 1 => Some(e[0].1),
                _ => None,
            };
            match replace {
                Some(r) => {
                    self.free_page(root);
                    self.root = r;
                }
                None => break,
            }
        }
        Ok(true)
    }

    fn delete_rec(&mut self, id: u64, key: &[u8], depth: usize) -> Result<(u64, (Key, Val))> {
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupted(id, "tree too deep"));
        }
        let id = self.cow(id)?;
        if let Some(Node::Leaf(entries)) = self.dirty.get_mut(&id) {
            let i = entries
                .binary_search_by(|(k, _)| k.bytes.as_slice().cmp(key))
                .map_err(|_| StorageError::corrupted(id, "key vanished during delete"))?;
            return Ok((id, entries.remove(i)));
        }
        let (i, child_id) = self.descend(id, key)?;
        let (new_child, old) = self.delete_rec(child_id, key, depth + 1)?;
        self.set_child(id, i, new_child);
        let child_empty = self.dirty.get(&new_child).is_some_and(|n| n.is_empty());
        if child_empty {
            self.free_page(new_child);
            self.materialize(id)?;
            let mut dropped = Vec::with_capacity(2);
            if let Some(Node::Branch(entries)) = self.dirty.get_mut(&id) {
                dropped.push(entries.remove(i).0);
                if let Some(first) = entries.first_mut() {
                    dropped.push(std::mem::take(&mut first.0));
                }
            }
            for k in &dropped {
                self.free_key(k)?;
            }
        } else if self
            .dirty
            .get(&new_child)
            .is_some_and(|n| n.size() < MERGE_BELOW)
        {
            self.try_merge(id, i)?;
        }
        Ok((id, old))
    }

    fn set_child(&mut self, parent: u64, i: usize, child: u64) {
        match self.dirty.get_mut(&parent) {
            Some(Node::Branch(entries)) => entries[i].1 = child,
            Some(Node::RawBranch { page, .. }) => node::raw_set_child(page, i, child),
            _ => {}
        }
    }

    /// Merges child `i` of dirty branch `parent` with a neighbour if both fit one page.
    fn try_merge(&mut self, parent: u64, i: usize) -> Result<()> {
        self.materialize(parent)?;
        let Some(Node::Branch(entries)) = self.dirty.get(&parent) else {
            return Ok(());
        };
        let (l, r) = if i + 1 < entries.len() {
            (i, i + 1)
        } else if i > 0 {
            (i - 1, i)
        } else {
            return Ok(());
        };
        let (lid, rid, sep) = (entries[l].1, entries[r].1, entries[r].0.clone());
        let leaves = self.node(lid)?.is_leaf();
        let merged = if leaves {
            // The merged leaf's prefix may be shorter than either's.
            leaf_fill::merged_leaf_size(&self.node(lid)?, &self.node(rid)?)?
        } else {
            self.node_size(lid)? + self.node_size(rid)? + node::key_page_len(sep.bytes.len())
        };
        if merged > NODE_CAP {
            return Ok(());
        }
        let lid = self.cow(lid)?;
        self.materialize(lid)?;
        self.set_child(parent, l, lid);
        let right = match self.node(rid)? {
            NodeRef::Page(p) => p.to_node(self)?,
            NodeRef::Owned(n) => n.clone(),
        };
        self.free_page(rid);
        match (self.dirty.get_mut(&lid), right) {
            (Some(Node::Leaf(le)), Node::Leaf(re)) => le.extend(re),
            (Some(Node::Branch(le)), Node::Branch(mut re)) => {
                // The separator (and its chain) moves down into the merged
                // node; right's entry 0 key is empty.
                if let Some(first) = re.first_mut() {
                    first.0 = sep;
                }
                le.extend(re);
            }
            _ => return Err(StorageError::corrupted(lid, "siblings of different kinds")),
        }
        let removed = match self.dirty.get_mut(&parent) {
            Some(Node::Branch(entries)) => Some(entries.remove(r).0),
            _ => None,
        };
        if leaves && let Some(k) = removed {
            // Leaves merged: the separator between them is gone.
            self.free_key(&k)?;
        }
        Ok(())
    }
}

/// `(separator key, page)` pieces replacing one child after a split.
pub(crate) type Pieces = Vec<(Key, u64)>;

/// The pieces of a node that did not split.
fn pieces_of(id: u64) -> Pieces {
    vec![(Key::default(), id)]
}

/// Shortest prefix of `right` that is greater than `left` (requires
/// `left < right`): the separator of two adjacent leaves.
pub(crate) fn separator<'r>(left: &[u8], right: &'r [u8]) -> &'r [u8] {
    debug_assert!(left < right);
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    &right[..(common + 1).min(right.len())]
}

/// Index of the child of a branch covering `key` (entry 0 covers everything below entry 1).
fn branch_index(entries: &[(Key, u64)], key: &[u8]) -> usize {
    entries
        .partition_point(|(k, _)| k.bytes.as_slice() <= key)
        .saturating_sub(1)
        .min(entries.len() - 1)
}

/// Cuts entries into consecutive pieces of about `target` bytes, none over `NODE_CAP`.
fn cut<T>(entries: Vec<T>, target: usize, size: impl Fn(&T) -> usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut cur_size = 0;
    for e in entries {
        let s = size(&e);
        if !cur.is_empty() && (cur_size + s > NODE_CAP || cur_size >= target) {
            out.push(std::mem::take(&mut cur));
            cur_size = 0;
        }
        cur_size += s;
        cur.push(e);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Drop for TreeTxn<'_> {
    fn drop(&mut self) {
        if self.mapped.get() && !Arc::ptr_eq(&self.w.wmap, &self.w.map) {
            self.w.wmap.drop_resident();
        }
        if !self.finished {
            // Abandoned transaction: undo its allocations and frees.
            self.pool.clear();
            self.w.staged.clear();
            self.w.free.rollback_txn();
            self.w.page_count = self.w.meta.page_count;
        }
    }
}
