//! Online defragmentation: relocate pages above a target into free pages
//! below it, a bounded number per write transaction (writers interleave
//! between steps, readers are never blocked), then cut the file.

use std::time::Duration;

use crate::db::Db;
use crate::error::{Result, StorageError};
use crate::node::{Node, ValRef};
use crate::page::FIRST_DATA_PAGE;
use crate::tree::{self, MAX_DEPTH, TreeRead};
use crate::txn::TreeTxn;

#[derive(Clone, Debug)]
pub struct DefragOptions {
    /// Pages relocated per write transaction.
    pub batch_pages: usize,
    /// Truncation attempts while old readers still pin relocated pages.
    pub truncate_attempts: u32,
    /// Pause between truncation attempts.
    pub retry_pause_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefragReport {
    pub pages_before: u64,
    pub pages_after: u64,
    pub relocated_pages: u64,
    pub passes: u32,
    /// Repacking (before relocation): nodes rewritten and nodes fewer after.
    pub repacked_nodes: u64,
    pub repack_saved_nodes: u64,
    /// False when long-lived readers kept relocated pages pinned; a later
    /// run finishes the cut.
    pub truncated: bool,
}

/// Defragments `db`. Callers serialise runs.
pub fn defragment(db: &Db, opts: &DefragOptions) -> Result<DefragReport> {
    let r = defragment_inner(db, opts);
    db.lock_writer().free.set_park_at(None);
    r
}

fn defragment_inner(db: &Db, opts: &DefragOptions) -> Result<DefragReport> {
    db.sync()?;
    let pages_at_start = db.lock_writer().meta.page_count;
    // Repack under-filled nodes first: relocation then moves fewer, full pages.
    let packed = crate::repack::repack(db, opts.batch_pages)?;
    db.sync()?;
    let (pages_now, target) = {
        let w = db.lock_writer();
        let pc = w.meta.page_count;
        let live = pc
            .saturating_sub(FIRST_DATA_PAGE)
            .saturating_sub(w.free.free_count());
        (pc, FIRST_DATA_PAGE + live + live / 32 + 64)
    };
    let mut report = DefragReport {
        pages_before: pages_at_start,
        pages_after: pages_now,
        passes: packed.passes,
        repacked_nodes: packed.nodes_rewritten,
        repack_saved_nodes: packed.nodes_saved,
        ..DefragReport::default()
    };
    if target >= report.pages_after {
        return Ok(report);
    }
    // Concurrent writers get pages below the target while any exist.
    db.lock_writer().free.set_park_at(Some(target));
    // Bounded: each pass moves up to batch_pages pages or proves nothing is left.
    let max_passes = (pages_now / opts.batch_pages.max(1) as u64 + 16) as u32 * 4;
    let mut relocation_passes = 0u32;
    let mut attempts = 0u32;
    loop {
        while relocation_passes < max_passes {
            relocation_passes += 1;
            report.passes += 1;
            crate::failpoint::hit("defrag-relocate");
            let (moved, complete) = relocation_pass(db, target, opts.batch_pages)?;
            report.relocated_pages += moved;
            if complete {
                break;
            }
        }
        // Release pages pinned by the relocation commits, then try the cut.
        // Concurrent writers may have put pages above the target meanwhile:
        // the cut goes just above the highest reachable page.
        db.sync()?;
        let mut txn = db.begin()?;
        let cut = target.max(max_reachable(&txn)? + 1);
        if cut >= txn.w.meta.page_count {
            return Ok(report);
        }
        let txid = txn.txid;
        let pool = txn.w.drain_reusable(txid)?;
        if txn.w.free.pinned_at_or_above(cut, txid) {
            drop(txn);
            attempts += 1;
            if attempts >= opts.truncate_attempts {
                return Ok(report);
            }
            std::thread::sleep(Duration::from_millis(opts.retry_pause_ms));
            continue;
        }
        txn.pool = pool;
        db.commit_truncate(txn, cut)?;
        report.pages_after = db.lock_writer().meta.page_count;
        report.truncated = true;
        return Ok(report);
    }
}

/// One write transaction of relocation. Returns (pages moved, whether no page
/// at or above `target` remained reachable when it started its walk).
fn relocation_pass(db: &Db, target: u64, budget: usize) -> Result<(u64, bool)> {
    let mut txn = db.begin()?;
    let txid = txn.txid;
    let mut pool = txn.w.drain_reusable(txid)?;
    let (mut low, high): (Vec<u64>, Vec<u64>) = pool.drain(..).partition(|p| *p < target);
    for p in high {
        txn.w.free.free_own(p);
    }
    low.sort_unstable_by(|a, b| b.cmp(a));
    txn.pool = low;
    let mut left = budget;
    let mut complete = true;
    if txn.root != 0 {
        let root = txn.root;
        txn.root = relocate(&mut txn, root, target, &mut left, &mut complete, 0)?;
    }
    let moved = (budget - left) as u64;
    // The new meta starts from the last committed one: MVCC fields carry over.
    db.commit(txn, |_| {}, true)?;
    Ok((moved, complete && moved == 0))
}

fn relocate(
    txn: &mut TreeTxn<'_>,
    id: u64,
    target: u64,
    left: &mut usize,
    complete: &mut bool,
    depth: usize,
) -> Result<u64> {
    if depth > MAX_DEPTH {
        return Err(StorageError::corrupted(id, "tree too deep"));
    }
    let (children, overflow, key_chains): (Vec<u64>, Vec<Chain<u32>>, Vec<Chain<usize>>) = {
        let n = txn.node(id)?;
        let mut kc = Vec::new();
        for i in 0..n.len() {
            if let Some((chain, len)) = n.key_chain(i)? {
                kc.push((i, chain, len));
            }
        }
        if n.is_leaf() {
            let mut ov = Vec::new();
            for i in 0..n.len() {
                if let ValRef::Overflow { page, len } = n.val(i)? {
                    ov.push((i, page, len));
                }
            }
            (Vec::new(), ov, kc)
        } else {
            (
                (0..n.len()).map(|i| n.child(i)).collect::<Result<_>>()?,
                Vec::new(),
                kc,
            )
        }
    };
    let mut child_updates = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        if *left == 0 || txn.pool.is_empty() {
            *complete = false;
            break;
        }
        let nc = relocate(txn, c, target, left, complete, depth + 1)?;
        if nc != c {
            child_updates.push((i, nc));
        }
    }
    let mut val_updates = Vec::new();
    for (i, page, len) in overflow {
        let chain = tree::overflow_pages(&*txn, page, len)?;
        if !chain.iter().any(|p| *p >= target) {
            continue;
        }
        if *left < chain.len() || txn.pool.len() < chain.len() {
            *complete = false;
            continue;
        }
        let value = tree::load_value(&*txn, ValRef::Overflow { page, len })?.into_owned();
        let new = txn.write_overflow(&value)?;
        for p in chain {
            txn.w.free.free(p, txn.txid);
        }
        *left -= value.len().div_ceil(crate::page::OVERFLOW_CAP).max(1);
        val_updates.push((i, new));
    }
    // Key chains (leaf keys and long branch separators) move like value
    // chains: the entry's key keeps its bytes and points at the new chain.
    let mut key_updates = Vec::new();
    for (i, chain_first, len) in key_chains {
        let chain = tree::overflow_pages(&*txn, chain_first, chain_len(chain_first, len)?)?;
        if !chain.iter().any(|p| *p >= target) {
            continue;
        }
        if *left < chain.len() || txn.pool.len() < chain.len() {
            *complete = false;
            continue;
        }
        let key = tree::load_key(&*txn, txn.node(id)?.key(i)?)?.into_owned();
        let new = txn.write_chain(&key)?;
        for p in &chain {
            txn.w.free.free(*p, txn.txid);
        }
        *left -= chain.len();
        key_updates.push((i, new));
    }
    let is_dirty = txn.dirty.contains_key(&id);
    let must_move = id >= target && !is_dirty;
    if must_move && (*left == 0 || txn.pool.is_empty()) {
        *complete = false;
    }
    let moving = must_move && *left > 0 && !txn.pool.is_empty();
    if !moving && child_updates.is_empty() && val_updates.is_empty() && key_updates.is_empty() {
        return Ok(id);
    }
    let new_id = txn.cow(id)?;
    if moving {
        *left -= 1;
    }
    txn.materialize(new_id)?;
    match txn.dirty.get_mut(&new_id) {
        Some(Node::Branch(entries)) => {
            for (i, c) in child_updates {
                entries[i].1 = c;
            }
            for (i, c) in key_updates {
                entries[i].0.chain = c;
            }
        }
        Some(Node::Leaf(entries)) => {
            for (i, v) in val_updates {
                entries[i].1 = v;
            }
            for (i, c) in key_updates {
                entries[i].0.chain = c;
            }
        }
        Some(Node::RawBranch { .. }) | None => {
            return Err(StorageError::corrupted(new_id, "dirty node vanished"));
        }
    }
    Ok(new_id)
}

/// Highest page id reachable from the transaction's tree (0 if empty).
fn max_reachable(txn: &TreeTxn<'_>) -> Result<u64> {
    let mut max = 0;
    let mut stack = vec![(txn.root, 0usize)];
    while let Some((id, depth)) = stack.pop() {
        if id == 0 {
            continue;
        }
        if depth > MAX_DEPTH {
            return Err(StorageError::corrupted(id, "tree too deep"));
        }
        max = max.max(id);
        let n = txn.node(id)?;
        for i in 0..n.len() {
            if let Some((first, len)) = n.key_chain(i)? {
                for p in tree::overflow_pages(txn, first, chain_len(first, len)?)? {
                    max = max.max(p);
                }
            }
            if n.is_leaf() {
                if let ValRef::Overflow { page, len } = n.val(i)? {
                    for p in tree::overflow_pages(txn, page, len)? {
                        max = max.max(p);
                    }
                }
            } else {
                stack.push((n.child(i)?, depth + 1));
            }
        }
    }
    Ok(max)
}

/// `(entry index, first chain page, length)` of a value or key chain.
type Chain<L> = (usize, u64, L);

fn chain_len(first: u64, len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| StorageError::corrupted(first, "chain length"))
}
