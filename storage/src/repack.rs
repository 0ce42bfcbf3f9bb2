//! Repacking: rewrites runs of under-filled sibling nodes into as few nodes
//! as fit, level by level from the parents of the leaves up to the root, in
//! bounded write transactions (writers run between passes, readers never
//! wait). Called by defragmentation before relocation, so the file it cuts
//! holds full pages instead of the half-empty ones deletions leave behind.
//!
//! A run is a maximal sequence of adjacent children of one parent, each
//! filled below [`UNDER_FILLED`]; it is rewritten when packing saves at least
//! one node. The run's entries are concatenated into one (oversized) dirty
//! node and cut by the transaction's own `split` in append mode (pieces
//! filled to 15/16), so the parent's new separators come from the same code
//! path as every other split. Entries move as they are: value and key chains
//! stay owned by their entries. Branch runs pull the parent's separators
//! (and their key chains) down into the concatenation, as a merge does; a
//! leaf run's old separators are dropped and their key chains freed.

use crate::db::Db;
use crate::error::{Result, StorageError};
use crate::node::{self, Key, KeyRef, NODE_CAP, Node, NodeRef};
use crate::tree::{self, MAX_DEPTH, TreeRead};
use crate::txn::{Pieces, TreeTxn};

/// Nodes filled at least this much are left alone.
pub(crate) const UNDER_FILLED: usize = NODE_CAP * 7 / 8;
/// Bytes a packed node is filled to (what `split` in append mode aims for).
const PACK_TARGET: usize = NODE_CAP * 15 / 16;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepackReport {
    /// Write transactions (durable commits).
    pub passes: u32,
    /// Nodes rewritten (read and replaced by packed ones).
    pub nodes_rewritten: u64,
    /// Nodes fewer after packing.
    pub nodes_saved: u64,
}

struct Pass {
    /// Height (leaves are 0) of the parents whose children are packed.
    h: usize,
    /// Page budget left in this transaction.
    left: usize,
    /// Where the next pass resumes (`None`: the level is done).
    next: Option<Vec<u8>>,
    report: RepackReport,
}

/// Repacks the whole tree of `db`, about `batch_pages` rewritten pages per
/// durable write transaction. Callers serialise runs (defrag lock).
pub(crate) fn repack(db: &Db, batch_pages: usize) -> Result<RepackReport> {
    let mut report = RepackReport::default();
    let mut h = 1;
    let mut cursor: Vec<u8> = Vec::new();
    loop {
        let mut txn = db.begin()?;
        let height = tree_height(&txn)?;
        if txn.root == 0 || h > height {
            return Ok(report);
        }
        let mut pass = Pass {
            h,
            left: batch_pages.max(1),
            next: None,
            report: RepackReport::default(),
        };
        let root = txn.root;
        let pieces = walk(&mut txn, root, height, &cursor, &mut pass, 0)?;
        txn.root = txn.new_root(pieces)?;
        txn.collapse_root()?;
        db.commit(txn, |_| {}, true)?;
        report.passes += 1;
        report.nodes_rewritten += pass.report.nodes_rewritten;
        report.nodes_saved += pass.report.nodes_saved;
        match pass.next {
            Some(k) => cursor = k,
            None => {
                h += 1;
                cursor.clear();
            }
        }
    }
}

/// Height of the tree (a lone leaf root is 0), from its leftmost path.
fn tree_height(txn: &TreeTxn<'_>) -> Result<usize> {
    let mut id = txn.root;
    if id == 0 {
        return Ok(0);
    }
    for h in 0..MAX_DEPTH {
        let n = txn.node(id)?;
        if n.is_leaf() {
            return Ok(h);
        }
        id = n.child(0)?;
    }
    Err(StorageError::corrupted(id, "tree too deep"))
}

/// Visits the parents at height `pass.h` in key order from the one covering
/// `cursor`, packing their children until the budget is spent. Returns the
/// pieces replacing node `id` (itself when unchanged).
fn walk(
    txn: &mut TreeTxn<'_>,
    id: u64,
    height: usize,
    cursor: &[u8],
    pass: &mut Pass,
    depth: usize,
) -> Result<Pieces> {
    if depth > MAX_DEPTH {
        return Err(StorageError::corrupted(id, "tree too deep"));
    }
    if height == pass.h {
        return pack_children(txn, id, pass);
    }
    let n = txn.node(id)?;
    if n.is_leaf() {
        return Err(StorageError::corrupted(id, "leaves at different depths"));
    }
    let first = tree::search(txn, &n, cursor)?;
    let entries: Vec<(Vec<u8>, u64)> = (first..n.len())
        .map(|i| Ok((tree::load_key(txn, n.key(i)?)?.into_owned(), n.child(i)?)))
        .collect::<Result<_>>()?;
    let mut changes: Vec<(usize, Pieces)> = Vec::new();
    for (j, (key, child)) in entries.into_iter().enumerate() {
        if pass.left == 0 {
            // Resume at this child's lower bound (j > 0: a real separator),
            // unless a deeper level already stopped earlier in key order.
            if pass.next.is_none() {
                pass.next = Some(key);
            }
            break;
        }
        let sub_cursor: &[u8] = if j == 0 { cursor } else { b"" };
        let pieces = walk(txn, child, height - 1, sub_cursor, pass, depth + 1)?;
        if pieces.len() != 1 || pieces[0].1 != child {
            changes.push((first + j, pieces));
        }
    }
    if changes.is_empty() {
        return Ok(vec![(Key::default(), id)]);
    }
    let id = txn.cow(id)?;
    txn.materialize(id)?;
    let Some(Node::Branch(entries)) = txn.dirty.get_mut(&id) else {
        return Err(StorageError::corrupted(id, "dirty node vanished"));
    };
    for (i, pieces) in changes.into_iter().rev() {
        replace_child(entries, i, pieces);
    }
    txn.split(id, false)
}

/// Replaces child `i` of a branch by `pieces` (the first piece keeps the
/// child's separator).
/// Piece 0 never carries a separator (or a chain), see `TreeTxn::split`.
fn replace_child(entries: &mut Vec<(Key, u64)>, i: usize, pieces: Pieces) {
    let mut it = pieces.into_iter();
    if let Some((_, first)) = it.next() {
        entries[i].1 = first;
    }
    let rest: Vec<(Key, u64)> = it.collect();
    entries.splice(i + 1..i + 1, rest);
}

/// Packs the under-filled runs among the children of `parent`.
fn pack_children(txn: &mut TreeTxn<'_>, parent: u64, pass: &mut Pass) -> Result<Pieces> {
    let n = txn.node(parent)?;
    if n.is_leaf() {
        return Err(StorageError::corrupted(
            parent,
            "leaves at different depths",
        ));
    }
    // (bytes the separator takes on a page, child)
    let entries: Vec<(usize, u64)> = (0..n.len())
        .map(|i| {
            let len = match n.key(i)? {
                KeyRef::Full(b) => b.len(),
                KeyRef::Stub { len, .. } => len,
            };
            Ok((node::key_page_len(len), n.child(i)?))
        })
        .collect::<Result<_>>()?;
    let leaves = match entries.first() {
        Some((_, c)) => txn.node(*c)?.is_leaf(),
        None => return Ok(vec![(Key::default(), parent)]),
    };
    let mut sizes = Vec::with_capacity(entries.len());
    for (_, c) in &entries {
        sizes.push(txn.node_bytes(*c)?);
    }
    // Runs [i, j) of under-filled children that pack into fewer nodes.
    let mut runs = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        if sizes[i] >= UNDER_FILLED {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut total = 0;
        while j < entries.len() && sizes[j] < UNDER_FILLED {
            total += sizes[j] + if leaves || j == i { 0 } else { entries[j].0 };
            j += 1;
        }
        if j - i >= 2 && total.div_ceil(PACK_TARGET) < j - i {
            runs.push((i, j));
        }
        i = j;
    }
    pass.left = pass.left.saturating_sub(1);
    if runs.is_empty() {
        return Ok(vec![(Key::default(), parent)]);
    }
    let parent = txn.cow(parent)?;
    txn.materialize(parent)?;
    let Some(Node::Branch(pe)) = txn.dirty.get(&parent) else {
        return Err(StorageError::corrupted(parent, "dirty node vanished"));
    };
    // The parent's own keys (with their chains), to move down or drop.
    let seps: Vec<Key> = pe.iter().map(|(k, _)| k.clone()).collect();
    for &(i, j) in runs.iter().rev() {
        let first = txn.cow(entries[i].1)?;
        txn.materialize(first)?;
        for (sep, (_, c)) in seps[i + 1..j].iter().zip(&entries[i + 1..j]) {
            let node = take_node(txn, *c)?;
            match (txn.dirty.get_mut(&first), node) {
                (Some(Node::Leaf(le)), Node::Leaf(re)) => le.extend(re),
                (Some(Node::Branch(le)), Node::Branch(mut re)) => {
                    if let Some(e) = re.first_mut() {
                        e.0 = sep.clone();
                    }
                    le.extend(re);
                }
                _ => {
                    return Err(StorageError::corrupted(
                        first,
                        "siblings of different kinds",
                    ));
                }
            }
        }
        let pieces = txn.split(first, true)?;
        pass.left = pass.left.saturating_sub(pieces.len());
        pass.report.nodes_rewritten += (j - i) as u64;
        // Saturating: packed leaves can lose prefix savings (each piece's
        // key prefix is that of its own first and last key), so a run may
        // rarely come back as many pieces as it had.
        pass.report.nodes_saved += (j - i).saturating_sub(pieces.len()) as u64;
        let Some(Node::Branch(pe)) = txn.dirty.get_mut(&parent) else {
            return Err(StorageError::corrupted(parent, "dirty node vanished"));
        };
        pe.drain(i + 1..j);
        replace_child(pe, i, pieces);
        if leaves {
            // Leaves concatenated: their old separators are gone (branch
            // runs moved them down with their chains).
            for k in &seps[i + 1..j] {
                txn.free_key(k)?;
            }
        }
    }
    txn.split(parent, false)
}

/// Removes a node from the tree's pages (freeing its page) and returns it.
fn take_node(txn: &mut TreeTxn<'_>, id: u64) -> Result<Node> {
    txn.materialize(id)?;
    if let Some(n) = txn.dirty.remove(&id) {
        txn.w.free.free_own(id);
        return Ok(n);
    }
    let n = match txn.node(id)? {
        NodeRef::Page(p) => p.to_node(txn)?,
        NodeRef::Owned(n) => n.clone(),
    };
    if n.size() > NODE_CAP {
        return Err(StorageError::corrupted(id, "node entries overlap"));
    }
    let txid = txn.txid;
    txn.w.free.free(id, txid);
    Ok(n)
}

#[cfg(test)]
#[path = "repack_tests.rs"]
mod tests;
