//! Physical MVCC compaction: one bounded step.
//!
//! A step takes the next revision entries after `compact_done` (whole main
//! revisions, about `budget` entries), collects their user keys, and visits
//! the keys in key order: one seek per key, walking its versions up to the
//! step's end. Deletions in key order land in the same, already dirty,
//! leaves; they are applied with one bulk delete (`txn_bulk.rs`).
//!
//! Revision entries: events at or below the compacted revision C are never
//! served except those at exactly C (`events_since(C)` is allowed), so a
//! step deletes every `r` entry below `min(end, C - 1) + 1` with one range
//! delete at the left edge of the `r` table, and at C only the entries of
//! removed versions. Invariant after a step ending at `end`: every `r`
//! entry with main <= `end` has main == C' for some target C' that a pass
//! ended at, and points at a surviving version (such entries are removed by
//! the next pass's range delete).

use super::keys;
use super::read::Found;
use crate::error::{Result, StorageError};
use crate::tree;
use crate::txn::TreeTxn;

/// Runs one step of the pass towards `target` from `done`; returns the new
/// `compact_done` (at most `target`).
pub(crate) fn step(txn: &mut TreeTxn<'_>, done: i64, target: i64, budget: usize) -> Result<i64> {
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
        user_keys.push(tree::load_value(&*txn, v)?.into_owned());
        Ok(true)
    })?;
    user_keys.sort_unstable();
    user_keys.dedup();

    // Per key, in key order: the versions <= end a compaction at `target`
    // removes. Keys are distinct and the encoding preserves order, so
    // `dead_k` comes out strictly ascending.
    let mut dead_k: Vec<Vec<u8>> = Vec::new();
    let mut dead_r_at_target: Vec<Vec<u8>> = Vec::new();
    let mut versions: Vec<(Vec<u8>, i64, i64)> = Vec::new();
    for uk in &user_keys {
        let prefix = keys::key_prefix(uk);
        let mut upper = prefix.clone();
        upper.extend_from_slice(&keys::rev_bytes(target.saturating_add(1), 0));
        versions.clear();
        let mut newer_within = false;
        let mut newest: Option<Found<'_>> = None;
        tree::scan(&*txn, &prefix, Some(&upper), false, |k, v| {
            let (p, main, sub) = keys::split_key_entry(k)?;
            if main > end {
                // A newer version <= target exists: every version <= end goes.
                newer_within = true;
                return Ok(false);
            }
            versions.push((k.to_vec(), main, sub));
            newest = Some(Found {
                prefix: p,
                main,
                val: v,
            });
            Ok(true)
        })?;
        let Some(newest) = newest else { continue };
        let drop_newest = newer_within || newest.is_tombstone(&*txn)?;
        let keep = if drop_newest { 0 } else { 1 };
        for (entry, main, sub) in versions.drain(..).rev().skip(keep).rev() {
            if main == target {
                dead_r_at_target.push(keys::rev_entry(main, sub));
            }
            dead_k.push(entry);
        }
    }
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
