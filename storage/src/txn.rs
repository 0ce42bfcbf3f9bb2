//! The writer's copy-on-write transaction on the B+ tree.
//!
//! Invariant: a page reachable from the last committed root is never written;
//! modifying it copies it to a freshly allocated page (kept in `dirty` until
//! commit) and frees the original at this transaction's txid.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::db::Writer;
use crate::error::{Result, StorageError};
use crate::node::{self, INLINE_LIMIT, MAX_TREE_KEY, NODE_CAP, Node, NodeRef, PageView, Val};
use crate::page::{self, OVERFLOW_CAP, PAGE_SIZE, TYPE_OVERFLOW};
use crate::tree::{self, MAX_DEPTH, TreeRead};

pub struct TreeTxn<'a> {
    pub(crate) w: std::sync::MutexGuard<'a, Writer>,
    pub(crate) dirty: HashMap<u64, Node>,
    pub(crate) root: u64,
    pub(crate) txid: u64,
    pub(crate) finished: bool,
    /// Defragmentation: low page ids handed out first (sorted descending).
    pub(crate) pool: Vec<u64>,
}

impl TreeRead for TreeTxn<'_> {
    fn root(&self) -> u64 {
        self.root
    }

    fn node(&self, id: u64) -> Result<NodeRef<'_>> {
        if let Some(n) = self.dirty.get(&id) {
            return Ok(NodeRef::Owned(n));
        }
        let bytes = tree::page_offset(id)
            .and_then(|off| self.w.map.slice(off, PAGE_SIZE))
            .ok_or_else(|| StorageError::corrupted(id, "tree page beyond file"))?;
        let check = self.w.verify_checksums && !self.w.verified.get(id);
        let view = PageView::new(bytes, id, check)?;
        if check {
            self.w.verified.set(id);
        }
        Ok(NodeRef::Page(view))
    }

    fn page_bytes(&self, id: u64) -> Result<Cow<'_, [u8]>> {
        // A non-coherent map is a copy from the last commit and misses the
        // overflow pages this transaction wrote.
        if self.w.backend.coherent_map()
            && let Some(b) = tree::page_offset(id).and_then(|off| self.w.map.slice(off, PAGE_SIZE))
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
}

/// Node size below which a node is merged with a sibling when possible.
const MERGE_BELOW: usize = NODE_CAP / 4;

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
            for id in tree::overflow_pages(self, page, len)? {
                self.w.free.free(id, self.txid);
            }
        }
        Ok(())
    }

    /// Copies a committed node into a dirty one; returns its (new) id.
    pub(crate) fn cow(&mut self, id: u64) -> Result<u64> {
        if self.dirty.contains_key(&id) {
            return Ok(id);
        }
        let node = match self.node(id)? {
            NodeRef::Page(p) => p.to_node()?,
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

    fn node_size(&self, id: u64) -> Result<usize> {
        Ok(match self.node(id)? {
            NodeRef::Owned(n) => n.size(),
            NodeRef::Page(p) => p.to_node()?.size(),
        })
    }

    pub(crate) fn write_overflow(&mut self, value: &[u8]) -> Result<Val> {
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
            self.w.write_page(ids[i], &p[..])?;
        }
        Ok(Val::Overflow {
            page: ids[0],
            len: value.len() as u32,
        })
    }

    /// Inserts or replaces `key`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if key.len() > MAX_TREE_KEY {
            return Err(StorageError::KeyTooLarge {
                len: key.len(),
                max: MAX_TREE_KEY,
            });
        }
        let val = if key.len() + value.len() > INLINE_LIMIT {
            self.write_overflow(value)?
        } else {
            Val::Inline(value.to_vec())
        };
        if self.root == 0 {
            let id = self.alloc()?;
            self.dirty.insert(id, Node::Leaf(vec![(key.to_vec(), val)]));
            self.root = id;
            return Ok(());
        }
        let (pieces, old) = self.insert_rec(self.root, key, val, 0)?;
        if let Some(old) = old {
            self.free_val(&old)?;
        }
        self.root = self.new_root(pieces)?;
        Ok(())
    }

    pub(crate) fn new_root(&mut self, mut pieces: Vec<(Vec<u8>, u64)>) -> Result<u64> {
        while pieces.len() > 1 {
            let id = self.alloc()?;
            pieces[0].0.clear();
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
        let child = match self.dirty.get_mut(&id) {
            Some(Node::Leaf(entries)) => {
                let (old, at) = match entries.binary_search_by(|(k, _)| k.as_slice().cmp(key)) {
                    Ok(i) => (Some(std::mem::replace(&mut entries[i].1, val)), i),
                    Err(i) => {
                        entries.insert(i, (key.to_vec(), val));
                        (None, i)
                    }
                };
                let append = at + 1 == entries.len();
                return Ok((self.split(id, append)?, old));
            }
            Some(Node::Branch(entries)) => {
                let i = branch_index(entries, key);
                (i, entries[i].1)
            }
            None => return Err(StorageError::corrupted(id, "dirty node vanished")),
        };
        let (i, child_id) = child;
        let (pieces, old) = self.insert_rec(child_id, key, val, depth + 1)?;
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

    /// Splits an oversized dirty node; returns `(separator, id)` pieces.
    /// `append`: the insert went to the node's end (ascending keys, like the
    /// revision table), so left pieces are filled up instead of halved.
    pub(crate) fn split(&mut self, id: u64, append: bool) -> Result<Vec<(Vec<u8>, u64)>> {
        let Some(node) = self.dirty.get_mut(&id) else {
            return Err(StorageError::corrupted(id, "dirty node vanished"));
        };
        let size = node.size();
        if size <= NODE_CAP {
            return Ok(vec![(Vec::new(), id)]);
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
            Node::Leaf(entries) => {
                for piece in cut(entries, target, |(k, v)| node::leaf_entry_size(k, v)) {
                    let sep = piece[0].0.clone();
                    out.push((sep, Node::Leaf(piece)));
                }
            }
            Node::Branch(entries) => {
                for mut piece in cut(entries, target, |(k, _)| node::branch_entry_size(k)) {
                    let sep = std::mem::take(&mut piece[0].0);
                    out.push((sep, Node::Branch(piece)));
                }
            }
        }
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
        let (new_root, old) = self.delete_rec(self.root, key, 0)?;
        self.free_val(&old)?;
        self.root = new_root;
        // Collapse the root.
        loop {
            let root = self.root;
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

    fn delete_rec(&mut self, id: u64, key: &[u8], depth: usize) -> Result<(u64, Val)> {
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupted(id, "tree too deep"));
        }
        let id = self.cow(id)?;
        let (i, child_id) = match self.dirty.get_mut(&id) {
            Some(Node::Leaf(entries)) => {
                let i = entries
                    .binary_search_by(|(k, _)| k.as_slice().cmp(key))
                    .map_err(|_| StorageError::corrupted(id, "key vanished during delete"))?;
                let (_, v) = entries.remove(i);
                return Ok((id, v));
            }
            Some(Node::Branch(entries)) => {
                let i = branch_index(entries, key);
                (i, entries[i].1)
            }
            None => return Err(StorageError::corrupted(id, "dirty node vanished")),
        };
        let (new_child, old) = self.delete_rec(child_id, key, depth + 1)?;
        self.set_child(id, i, new_child);
        let child_empty = self.dirty.get(&new_child).is_some_and(|n| n.is_empty());
        if child_empty {
            self.free_page(new_child);
            if let Some(Node::Branch(entries)) = self.dirty.get_mut(&id) {
                entries.remove(i);
                if let Some(first) = entries.first_mut() {
                    first.0.clear();
                }
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
        if let Some(Node::Branch(entries)) = self.dirty.get_mut(&parent) {
            entries[i].1 = child;
        }
    }

    /// Merges child `i` of dirty branch `parent` with a neighbour if both fit one page.
    fn try_merge(&mut self, parent: u64, i: usize) -> Result<()> {
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
        let sep_cost = if self.node(lid)?.is_leaf() {
            0
        } else {
            sep.len()
        };
        if self.node_size(lid)? + self.node_size(rid)? + sep_cost > NODE_CAP {
            return Ok(());
        }
        let lid = self.cow(lid)?;
        self.set_child(parent, l, lid);
        let right = match self.node(rid)? {
            NodeRef::Page(p) => p.to_node()?,
            NodeRef::Owned(n) => n.clone(),
        };
        self.free_page(rid);
        match (self.dirty.get_mut(&lid), right) {
            (Some(Node::Leaf(le)), Node::Leaf(re)) => le.extend(re),
            (Some(Node::Branch(le)), Node::Branch(mut re)) => {
                if let Some(first) = re.first_mut() {
                    first.0 = sep;
                }
                le.extend(re);
            }
            _ => return Err(StorageError::corrupted(lid, "siblings of different kinds")),
        }
        if let Some(Node::Branch(entries)) = self.dirty.get_mut(&parent) {
            entries.remove(r);
        }
        Ok(())
    }
}

/// `(separator key, page)` pieces replacing one child after a split.
type Pieces = Vec<(Vec<u8>, u64)>;

/// Index of the child of a branch covering `key` (entry 0 covers everything below entry 1).
fn branch_index(entries: &[(Vec<u8>, u64)], key: &[u8]) -> usize {
    entries
        .partition_point(|(k, _)| k.as_slice() <= key)
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
        if !self.finished {
            // Abandoned transaction: undo its allocations and frees.
            self.pool.clear();
            self.w.free.rollback_txn();
            self.w.page_count = self.w.meta.page_count;
        }
    }
}
