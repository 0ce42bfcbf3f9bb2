//! Bulk deletion on the writer's transaction: many sorted keys or a key
//! range removed in one descent, each touched node copied (copy-on-write)
//! once, subtrees entirely inside a range freed without being copied, and
//! under-filled dirty nodes merged with a sibling on the way back up.
//!
//! Used by MVCC compaction (`mvcc/write.rs`), which deletes in key order so
//! consecutive deletions land in the same, already dirty, leaves.
//!
//! Keys and values are opaque here. Chain ownership follows `txn.rs`: the
//! value and key chains of removed leaf entries are freed
//! ([`TreeTxn::free_val`], [`TreeTxn::free_key`]), so are the key chains of
//! branch entries that are dropped (removed children, entry 0's cleared key,
//! the separator between two merged leaves); a separator pulled down by a
//! branch merge moves with its chain (as `try_merge` in `txn.rs` does).
//!
//! Invariants kept: all leaves at the same depth (a subtree is either kept
//! whole-depth or removed entirely), no empty node below the root, a branch's
//! entry 0 has an empty key, every node fits `NODE_CAP`.

use std::cmp::Ordering;

use crate::error::{Result, StorageError};
use crate::leaf_fill;
use crate::node::{self, Key, NODE_CAP, Node, NodeRef, Val};
use crate::tree::{self, MAX_DEPTH, TreeRead};
use crate::txn::TreeTxn;

/// A dirty node is merged with an adjacent sibling when both together fit in
/// this many bytes: the result keeps 1/32 of a page free, so an insert or two
/// fit before it splits again. (With 1/16, two halves of nodes that appends
/// filled to 15/16 would never merge.)
pub(crate) const MERGE_FILL: usize = NODE_CAP * 31 / 32;

/// What to remove from a subtree.
#[derive(Clone, Copy)]
enum Sel<'k> {
    /// Sorted, deduplicated keys (absent ones are ignored).
    Keys(&'k [Vec<u8>]),
    /// Every key in `[start, end)`.
    Range(&'k [u8], &'k [u8]),
}

impl Sel<'_> {
    fn is_empty(&self) -> bool {
        match self {
            Sel::Keys(k) => k.is_empty(),
            Sel::Range(s, e) => s >= e,
        }
    }
}

fn vanished(id: u64) -> StorageError {
    StorageError::corrupted(id, "dirty node vanished")
}

impl TreeTxn<'_> {
    /// Removes every key of `keys` (sorted ascending, no duplicates) that is
    /// present, in one descent (no lookup first); returns how many were
    /// removed. A single key is `delete_sorted(&[key])`.
    pub(crate) fn delete_sorted(&mut self, keys: &[Vec<u8>]) -> Result<usize> {
        if keys.windows(2).any(|w| w[0] >= w[1]) {
            panic!("delete_sorted: keys not strictly ascending (caller invariant)");
        }
        self.bulk(Sel::Keys(keys))
    }

    /// Removes every key in `[start, end)`; returns how many were removed.
    pub(crate) fn delete_range(&mut self, start: &[u8], end: &[u8]) -> Result<usize> {
        self.bulk(Sel::Range(start, end))
    }

    fn bulk(&mut self, sel: Sel<'_>) -> Result<usize> {
        if self.root == 0 || sel.is_empty() {
            return Ok(0);
        }
        let (new_root, removed) = self.bulk_rec(self.root, sel, 0)?;
        self.root = new_root.unwrap_or(0);
        self.collapse_root()?;
        Ok(removed)
    }

    /// Replaces a dirty root branch with a single child by that child.
    pub(crate) fn collapse_root(&mut self) -> Result<()> {
        loop {
            let root = self.root;
            self.materialize(root)?;
            let replace = match self.dirty.get(&root) {
                Some(n) if n.is_empty() => 0,
                Some(Node::Branch(e)) if e.len() == 1 => e[0].1,
                _ => break,
            };
            self.free_page(root);
            self.root = replace;
        }
        Ok(())
    }

    /// Bytes a node's entries use, without decoding a clean page.
    pub(crate) fn node_bytes(&self, id: u64) -> Result<usize> {
        match self.node(id)? {
            NodeRef::Owned(n) => Ok(n.size()),
            NodeRef::Page(p) => p.size(),
        }
    }

    /// Returns the subtree's new id (`None`: it became empty and its pages
    /// were freed) and the number of entries removed.
    fn bulk_rec(&mut self, id: u64, sel: Sel<'_>, depth: usize) -> Result<(Option<u64>, usize)> {
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupted(id, "tree too deep"));
        }
        let n = self.node(id)?;
        if n.is_leaf() {
            return self.bulk_leaf(id, sel);
        }
        let len = n.len();
        // (child index, child id, what to remove there, whole subtree?)
        let mut work: Vec<(usize, u64, Sel<'_>, bool)> = Vec::new();
        match sel {
            Sel::Keys(ks) => {
                let mut a = 0;
                while a < ks.len() {
                    let ci = tree::search(self, &n, &ks[a])?;
                    let b = if ci + 1 < len {
                        let upper = tree::load_key(self, n.key(ci + 1)?)?;
                        let upper = upper.as_ref();
                        (a + ks[a..].partition_point(|k| k.as_slice() < upper)).max(a + 1)
                    } else {
                        ks.len()
                    };
                    work.push((ci, n.child(ci)?, Sel::Keys(&ks[a..b]), false));
                    a = b;
                }
            }
            Sel::Range(s, e) => {
                let first = tree::search(self, &n, s)?;
                let mut last = tree::search(self, &n, e)?.max(first);
                if last > first && tree::cmp_key(self, n.key(last)?, e)? == Ordering::Equal {
                    // Child `last` only holds keys >= e.
                    last -= 1;
                }
                for ci in first..=last {
                    let whole = ci > first && ci < last;
                    work.push((ci, n.child(ci)?, sel, whole));
                }
            }
        }
        let mut removed = 0;
        let mut changes: Vec<(usize, Option<u64>)> = Vec::new();
        for (ci, child, sub, whole) in work {
            let (nc, r) = if whole {
                (None, self.free_subtree(child, depth + 1)?)
            } else {
                self.bulk_rec(child, sub, depth + 1)?
            };
            removed += r;
            if nc != Some(child) {
                changes.push((ci, nc));
            }
        }
        if changes.is_empty() {
            return Ok((Some(id), removed));
        }
        let id = self.cow(id)?;
        self.materialize(id)?;
        let Some(Node::Branch(entries)) = self.dirty.get_mut(&id) else {
            return Err(vanished(id));
        };
        // `changes` is in ascending child order; apply from the back so
        // removals do not shift the indices still to apply.
        let mut dropped: Vec<Key> = Vec::new();
        for &(ci, nc) in changes.iter().rev() {
            match nc {
                Some(c) => entries[ci].1 = c,
                None => dropped.push(entries.remove(ci).0),
            }
        }
        let empty = entries.is_empty();
        if let Some(first) = entries.first_mut() {
            dropped.push(std::mem::take(&mut first.0));
        }
        for k in &dropped {
            self.free_key(k)?;
        }
        if empty {
            self.free_page(id);
            return Ok((None, removed));
        }
        self.merge_children(id)?;
        Ok((Some(id), removed))
    }

    fn bulk_leaf(&mut self, id: u64, sel: Sel<'_>) -> Result<(Option<u64>, usize)> {
        let n = self.node(id)?;
        let idx: Vec<usize> = match sel {
            Sel::Keys(ks) => {
                let mut v = Vec::with_capacity(ks.len());
                for k in ks {
                    let i = tree::search(self, &n, k)?;
                    if i < n.len() && tree::cmp_key(self, n.key(i)?, k)? == Ordering::Equal {
                        v.push(i);
                    }
                }
                v
            }
            Sel::Range(s, e) => (tree::search(self, &n, s)?..tree::search(self, &n, e)?).collect(),
        };
        if idx.is_empty() {
            return Ok((Some(id), 0));
        }
        let removed = idx.len();
        if removed >= n.len() {
            let owned = leaf_chains(&n)?;
            self.free_chains(&owned)?;
            self.free_page(id);
            return Ok((None, removed));
        }
        let id = self.cow(id)?;
        let Some(Node::Leaf(entries)) = self.dirty.get_mut(&id) else {
            return Err(vanished(id));
        };
        let old = std::mem::take(entries);
        // The kept entries in one allocation (pushing into the empty vector
        // `take` leaves regrew it several times per leaf).
        entries.reserve_exact(old.len() - removed);
        let mut dead = Vec::with_capacity(removed);
        let mut next = idx.iter().peekable();
        for (i, e) in old.into_iter().enumerate() {
            if next.peek() == Some(&&i) {
                next.next();
                dead.push(e);
            } else {
                entries.push(e);
            }
        }
        for (k, v) in &dead {
            self.free_key(k)?;
            self.free_val(v)?;
        }
        Ok((Some(id), removed))
    }

    /// Frees a whole subtree (pages and overflow chains); returns the number
    /// of leaf entries it held.
    fn free_subtree(&mut self, id: u64, depth: usize) -> Result<usize> {
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupted(id, "tree too deep"));
        }
        let n = self.node(id)?;
        let mut count = 0;
        if n.is_leaf() {
            let owned = leaf_chains(&n)?;
            count = n.len();
            self.free_chains(&owned)?;
        } else {
            let children: Vec<u64> = (0..n.len()).map(|i| n.child(i)).collect::<Result<_>>()?;
            let keys: Vec<(u64, usize)> = (0..n.len())
                .filter_map(|i| n.key_chain(i).transpose())
                .collect::<Result<_>>()?;
            self.free_chains(&Owned {
                keys,
                vals: Vec::new(),
            })?;
            for c in children {
                count += self.free_subtree(c, depth + 1)?;
            }
        }
        self.free_page(id);
        Ok(count)
    }

    /// Merges adjacent children of dirty branch `parent` while at least one
    /// of the two is dirty (it is written anyway, so the merge costs no extra
    /// page write) and both fit [`MERGE_FILL`].
    pub(crate) fn merge_children(&mut self, parent: u64) -> Result<()> {
        self.materialize(parent)?;
        let mut i = 0;
        loop {
            let Some(Node::Branch(entries)) = self.dirty.get(&parent) else {
                return Err(vanished(parent));
            };
            if i + 1 >= entries.len() {
                return Ok(());
            }
            let (a, b) = (entries[i].1, entries[i + 1].1);
            let sep_len = node::key_page_len(entries[i + 1].0.bytes.len());
            if !self.dirty.contains_key(&a) && !self.dirty.contains_key(&b) {
                i += 1;
                continue;
            }
            let merged = if self.node(a)?.is_leaf() {
                // The merged leaf's prefix may be shorter than either's.
                leaf_fill::merged_leaf_size(&self.node(a)?, &self.node(b)?)?
            } else {
                self.node_bytes(a)? + self.node_bytes(b)? + sep_len
            };
            if merged <= MERGE_FILL {
                self.merge_pair(parent, i)?;
            } else {
                i += 1;
            }
        }
    }

    /// Merges child `i + 1` of dirty branch `parent` into child `i`. The
    /// caller checked that the result fits a page.
    fn merge_pair(&mut self, parent: u64, i: usize) -> Result<()> {
        let Some(Node::Branch(entries)) = self.dirty.get(&parent) else {
            return Err(vanished(parent));
        };
        let (lid, rid, sep) = (entries[i].1, entries[i + 1].1, entries[i + 1].0.clone());
        let lid = self.cow(lid)?;
        self.materialize(lid)?;
        self.materialize(rid)?;
        let right = if let Some(n) = self.dirty.remove(&rid) {
            self.w.free.free_own(rid);
            n
        } else {
            let n = match self.node(rid)? {
                NodeRef::Page(p) => p.to_node(self)?,
                NodeRef::Owned(n) => n.clone(),
            };
            self.w.free.free(rid, self.txid);
            n
        };
        let leaves = match (self.dirty.get_mut(&lid), right) {
            (Some(Node::Leaf(le)), Node::Leaf(re)) => {
                le.extend(re);
                true
            }
            (Some(Node::Branch(le)), Node::Branch(mut re)) => {
                // The separator (and its chain) moves down into the merged
                // node; right's entry 0 key is empty.
                if let Some(first) = re.first_mut() {
                    first.0 = sep;
                }
                le.extend(re);
                false
            }
            _ => return Err(StorageError::corrupted(lid, "siblings of different kinds")),
        };
        let removed = match self.dirty.get_mut(&parent) {
            Some(Node::Branch(entries)) => {
                entries[i].1 = lid;
                Some(entries.remove(i + 1).0)
            }
            _ => None,
        };
        if leaves && let Some(k) = removed {
            // Leaves merged: the separator between them is gone.
            self.free_key(&k)?;
        }
        Ok(())
    }
}

/// Key chains `(first page, key length)` and values a node's entries own.
struct Owned {
    keys: Vec<(u64, usize)>,
    vals: Vec<Val>,
}

fn leaf_chains(n: &NodeRef<'_>) -> Result<Owned> {
    let mut o = Owned {
        keys: Vec::new(),
        vals: Vec::new(),
    };
    for i in 0..n.len() {
        if let Some(c) = n.key_chain(i)? {
            o.keys.push(c);
        }
        let v = n.val(i)?;
        if matches!(v, crate::node::ValRef::Overflow { .. }) {
            o.vals.push(v.to_owned_val());
        }
    }
    Ok(o)
}

impl TreeTxn<'_> {
    fn free_chains(&mut self, o: &Owned) -> Result<()> {
        for &(chain, len) in &o.keys {
            self.free_chain(chain, len)?;
        }
        for v in &o.vals {
            self.free_val(v)?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "txn_bulk_tests.rs"]
mod tests;
