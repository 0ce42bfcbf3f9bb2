//! Physical MVCC compaction: bounded steps, in revision mode or sweep mode
//! (docs/storage-format.md, "MVCC encoding", has the full argument).
//!
//! Revision mode: a step takes the next revision entries after
//! `compact_done` (whole main revisions, about `budget` entries), collects
//! their user keys, and visits the keys in key order: one seek per key,
//! walking its versions up to the step's end. Deletions in key order land in
//! the same, already dirty, leaves; they are applied with one bulk delete
//! (`txn_bulk.rs`).
//!
//! Sweep mode (many revisions to compact): the `k` table is walked in key
//! order from an in-memory cursor, so each leaf with obsolete versions is
//! rewritten once per pass instead of about once per revision.
//!
//! Revision entries: events below the compacted revision C are never served
//! and those at exactly C only for surviving versions, so every `r` entry
//! below `min(end, C - 1) + 1` goes with a range delete at the left edge of
//! the `r` table, and at C only the entries of removed versions. Invariant
//! after every step: no `r` entry below `compact_done`; entries at
//! `compact_done` point at surviving versions.

use super::keys;
use super::range_del::{self, Tombs};
use super::read::Found;
use crate::error::{Result, StorageError};
use crate::node::ValRef;
use crate::page::FIRST_DATA_PAGE;
use crate::splitkey::{PageKey, SplitKey};
use crate::tree;
use crate::txn::TreeTxn;

/// Sweep mode scans this many `k` entries per unit of step budget (a sweep
/// step reads sequentially and rewrites each leaf with obsolete versions
/// once, so it affords more entries than a revision step).
pub(crate) const SWEEP_ENTRIES_PER_BUDGET: usize = 8;

/// A key-order sweep in progress (writer-only, in memory: after a restart
/// the pass resumes in either mode from `compact_done`, which a sweep only
/// advances when it is complete).
#[derive(Clone, Debug)]
pub(crate) struct Sweep {
    /// The target this sweep applies to every key (fixed for the sweep).
    pub(crate) target: i64,
    /// Next `k` entry to visit.
    pub(crate) cursor: Vec<u8>,
    /// Every key has been visited; the `r` table's left edge remains.
    pub(crate) keys_done: bool,
}

/// Runs one step of the pass towards `target` from `done`; returns the new
/// `compact_done` (at most `target`). `sweep_ratio`: start a key-order sweep
/// instead of a revision pass when `(target - done) * sweep_ratio` reaches
/// the number of pages in use (0 = never).
pub(crate) fn step(
    txn: &mut TreeTxn<'_>,
    done: i64,
    target: i64,
    budget: usize,
    sweep_ratio: u64,
    sweep: &mut Option<Sweep>,
) -> Result<i64> {
    // A range tombstone inside the pass supersedes versions of keys that
    // have no revision entry in it: only a key-order sweep visits them.
    let tombs = Tombs::load(&*txn)?;
    if sweep.is_none() && tombs.0.iter().any(|t| t.main > done && t.main <= target) {
        *sweep = Some(Sweep {
            target,
            cursor: vec![keys::T_KEY],
            keys_done: false,
        });
    }
    if sweep.is_none() && sweep_ratio > 0 {
        let in_use = txn
            .w
            .page_count
            .saturating_sub(FIRST_DATA_PAGE)
            .saturating_sub(txn.w.free.free_count());
        let revisions = (target - done).max(0) as u64;
        if revisions.saturating_mul(sweep_ratio) >= in_use {
            *sweep = Some(Sweep {
                target,
                cursor: vec![keys::T_KEY],
                keys_done: false,
            });
        }
    }
    match sweep {
        Some(s) => {
            if sweep_step(txn, &tombs, s, budget)? {
                let t = s.target;
                // Every version they supersede is gone.
                range_del::remove_upto(txn, t)?;
                *sweep = None;
                Ok(t)
            } else {
                Ok(done)
            }
        }
        None => revision_step(txn, done, target, budget),
    }
}

/// The last version <= target seen in the current key group.
struct Pending {
    entry: Vec<u8>,
    main: i64,
    sub: i64,
    tomb: bool,
}

/// Sweep mode: visits about `budget * SWEEP_ENTRIES_PER_BUDGET` `k` entries
/// in key order from the cursor, removing per key every version <= target
/// but the newest (and that one too if it is a tombstone), then removes as
/// many revision entries below the target from the left edge of the `r`
/// table. Returns true when the sweep is complete.
fn sweep_step(txn: &mut TreeTxn<'_>, tombs: &Tombs, s: &mut Sweep, budget: usize) -> Result<bool> {
    let limit = budget.max(1).saturating_mul(SWEEP_ENTRIES_PER_BUDGET);
    let target = s.target;
    if !s.keys_done {
        let mut cur: Vec<u8> = Vec::new();
        let mut pending: Option<Pending> = None;
        let mut dead: Vec<Pending> = Vec::new();
        let mut seen = 0usize;
        let mut next: Option<Vec<u8>> = None;
        tree::scan(&*txn, &s.cursor, Some(&[keys::T_KEY + 1]), false, |k, v| {
            let (prefix, main, sub) = keys::split_key_entry(k)?;
            let same = prefix == cur.as_slice();
            // Stop at a key boundary, or inside a key when no decision is
            // open (a key with very many versions is split across steps).
            if seen >= limit && (!same || pending.is_none()) {
                if !same && let Some(p) = pending.take().filter(|p| p.tomb) {
                    dead.push(p);
                }
                next = Some(k.to_vec());
                return Ok(false);
            }
            seen += 1;
            if !same {
                // The previous key's newest version <= target stays unless
                // it is a tombstone.
                if let Some(p) = pending.take().filter(|p| p.tomb) {
                    dead.push(p);
                }
                cur.clear();
                cur.extend_from_slice(prefix);
            }
            if main <= target {
                // A newer version <= target supersedes the pending one.
                if let Some(p) = pending.take() {
                    dead.push(p);
                }
                let found = Found {
                    prefix: PageKey::from_slice(prefix),
                    main,
                    val: v,
                };
                // A range tombstone in (main, target] deletes this version
                // at or before the target, like a newer tombstone version.
                pending = Some(Pending {
                    entry: k.to_vec(),
                    main,
                    sub,
                    tomb: found.is_tombstone(&*txn)?
                        || tombs
                            .deleted_in(SplitKey::whole(prefix), main, target)
                            .is_some(),
                });
            } else if let Some(p) = pending.take().filter(|p| p.tomb) {
                dead.push(p);
            }
            Ok(true)
        })?;
        match next {
            Some(n) => s.cursor = n,
            None => {
                if let Some(p) = pending.take().filter(|p| p.tomb) {
                    dead.push(p);
                }
                s.keys_done = true;
            }
        }
        let mut dead_r: Vec<Vec<u8>> = dead
            .iter()
            .filter(|p| p.main == target)
            .map(|p| keys::rev_entry(p.main, p.sub))
            .collect();
        let dead_k: Vec<Vec<u8>> = dead.into_iter().map(|p| p.entry).collect();
        txn.delete_sorted(&dead_k)?;
        dead_r.sort_unstable();
        txn.delete_sorted(&dead_r)?;
    }
    // Left edge of the `r` table: up to `limit` entries below the target.
    let below = keys::rev_entry(target, 0);
    let mut cap: Option<Vec<u8>> = None;
    let mut n = 0usize;
    tree::scan(&*txn, &[keys::T_REV], Some(&below), false, |k, _| {
        if n >= limit {
            cap = Some(k.to_vec());
            return Ok(false);
        }
        n += 1;
        Ok(true)
    })?;
    let r_done = cap.is_none();
    txn.delete_range(&[keys::T_REV], cap.as_deref().unwrap_or(&below))?;
    Ok(s.keys_done && r_done)
}

/// Revision mode: one step over the next revision entries after `done`.
fn revision_step(txn: &mut TreeTxn<'_>, done: i64, target: i64, budget: usize) -> Result<i64> {
    let budget = budget.max(1);
    let from = keys::rev_entry(done + 1, 0);
    let to = keys::rev_entry(target + 1, 0);
    let mut user_keys: Vec<Vec<u8>> = Vec::new();
    let mut end = target;
    let mut last_main = None;
    tree::scan(&*txn, &from, Some(&to), false, |k, v| {
        let rev = k
            .get(1..)
            .ok_or_else(|| StorageError::corrupted(0, "short revision entry"))?;
        let (main, _) = keys::parse_rev(rev)?;
        if user_keys.len() >= budget && last_main != Some(main) {
            end = main - 1;
            return Ok(false);
        }
        last_main = Some(main);
        // enc(user key): sorts and dedups like the keys (canonical, order-preserving).
        user_keys.push(tree::load_value(&*txn, v)?.into_owned());
        Ok(true)
    })?;
    user_keys.sort_unstable();
    user_keys.dedup();

    // Per key, in key order: the versions <= end a compaction at `target`
    // removes.
    let mut dead_k: Vec<Vec<u8>> = Vec::new();
    let mut dead_r_at_target: Vec<Vec<u8>> = Vec::new();
    let mut versions: Vec<(Vec<u8>, i64, i64)> = Vec::new();
    for uk in &user_keys {
        let prefix = keys::prefix_from_enc(uk);
        let mut upper = prefix.clone();
        upper.extend_from_slice(&keys::rev_bytes(target.saturating_add(1), 0));
        versions.clear();
        let mut newer_within = false;
        let mut newest: Option<(i64, ValRef<'_>)> = None;
        tree::scan(&*txn, &prefix, Some(&upper), false, |k, v| {
            let (_, main, sub) = keys::split_key_entry(k)?;
            if main > end {
                // A newer version <= target exists: every version <= end goes.
                newer_within = true;
                return Ok(false);
            }
            versions.push((k.to_vec(), main, sub));
            newest = Some((main, v));
            Ok(true)
        })?;
        let Some((main, val)) = newest else { continue };
        let newest = Found {
            prefix: PageKey::from_slice(&prefix),
            main,
            val,
        };
        let drop_newest = newer_within || newest.is_tombstone(&*txn)?;
        let keep = if drop_newest { 0 } else { 1 };
        for (entry, main, sub) in versions.drain(..).rev().skip(keep).rev() {
            if main == target {
                dead_r_at_target.push(keys::rev_entry(main, sub));
            }
            dead_k.push(entry);
        }
    }
    // Already in tree order when the key encoding preserves user-key order;
    // sorting keeps `delete_sorted`'s precondition independent of that.
    dead_k.sort_unstable();
    dead_k.dedup();
    txn.delete_sorted(&dead_k)?;
    // Every revision entry below min(end, target - 1) + 1 goes (left edge of
    // the `r` table: whole leaves are freed without being copied).
    let cut = end.min(target - 1);
    if cut >= 1 {
        txn.delete_range(&[keys::T_REV], &keys::rev_entry(cut + 1, 0))?;
    }
    dead_r_at_target.sort_unstable();
    txn.delete_sorted(&dead_r_at_target)?;
    Ok(end)
}
