//! Range tombstones: a delete-range of many keys stored as one record.
//!
//! A standalone delete-range (not inside a txn) that deletes at least
//! `StoreOptions::range_delete_min_keys` keys writes one `d` entry instead
//! of a tombstone version (and a revision entry) per key:
//!
//! ```text
//!  'd' main(8 B BE) sub(8 B BE = 0)  ->  [start len u32 LE][start][end]
//! ```
//!
//! `start`/`end` are the tree bounds of the deleted user keys
//! (`read::key_bounds`: `'k' enc(key)`, `'k' enc(range_end)` or `'l'` for
//! "to the end"). Meaning: every key in `[start, end)` that was live just
//! before revision `main` got a tombstone at `main`, exactly as the per-key
//! path would have written it. Invariant: the delete is the only op of
//! revision `main` (so no `k` entry of a covered key has main revision
//! `main`), and the i-th deleted key in key order has sub-revision i.
//!
//! Readers consult the tombstones of their state (`Tombs::load`, free when
//! `Meta::range_tombs` is 0): a version with main `m` of a covered key is
//! superseded when a tombstone with `m < main <= read revision` covers it
//! (`Tombs::deleted_in`). Whole-table scans that must reproduce the per-key
//! layout byte for byte (`hash_kv`, snapshot export) use [`scan_logical`],
//! which inserts a synthesized tombstone version `(main, rank)` for every
//! key the tombstone deleted. Watch catch-up expands a tombstone into one
//! delete event per deleted key (`read::events_since`). Compaction past a
//! tombstone sweeps the key table (`compact.rs`), dropping every version it
//! supersedes, and then removes the `d` entry.
//!
//! Why: the per-key path copies every leaf of the range (220,000 keys of
//! 256 B / 1 KiB: ~90,000 pages, 23 s on a member); a range tombstone is
//! one entry, so a prefix delete costs the scan that collects the deleted
//! keys for their events.

use std::cmp::Ordering;

use super::keys;
use crate::error::{Result, StorageError};
use crate::node::ValRef;
use crate::splitkey::SplitKey;
use crate::tree::{self, TreeRead};
use crate::txn::TreeTxn;

/// The stored record of a tombstone (flags = tombstone, version 0), which a
/// synthesized tombstone version carries.
pub(crate) const TOMB_RECORD: &[u8] = &[1, 0];

/// One range tombstone (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RangeTomb {
    pub(crate) main: i64,
    /// Tree bounds `[start, end)` of the deleted keys' `k` prefixes.
    pub(crate) start: Vec<u8>,
    pub(crate) end: Vec<u8>,
}

impl RangeTomb {
    /// True when the key whose `k` prefix (with its end token) is `prefix`
    /// lies in the range. The encoding is prefix-free and order-preserving,
    /// so comparing prefixes with the bounds is comparing user keys.
    pub(crate) fn covers(&self, prefix: &[u8]) -> bool {
        self.covers_key(SplitKey::whole(prefix))
    }

    /// [`Self::covers`] for a key read from a leaf (prefix and suffix).
    pub(crate) fn covers_key(&self, prefix: SplitKey<'_>) -> bool {
        prefix.cmp_bytes(&self.start) != Ordering::Less
            && prefix.cmp_bytes(&self.end) == Ordering::Less
    }

    fn encode_value(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(4 + self.start.len() + self.end.len());
        v.extend_from_slice(&(self.start.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.start);
        v.extend_from_slice(&self.end);
        v
    }

    fn decode(k: &[u8], v: &[u8]) -> Result<RangeTomb> {
        let bad = |what: &str| StorageError::corrupted(0, format!("range tombstone: {what}"));
        if k.len() != 17 || k[0] != keys::T_RANGE_DEL {
            return Err(bad("key length"));
        }
        let (main, sub) = keys::parse_rev(&k[1..])?;
        if sub != 0 || main < 1 {
            return Err(bad("revision"));
        }
        let n = v
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| bad("short value"))?;
        let rest = &v[4..];
        if n > rest.len() {
            return Err(bad("start bound length"));
        }
        let (start, end) = rest.split_at(n);
        if start.first() != Some(&keys::T_KEY) || end.is_empty() || end <= start {
            return Err(bad("bounds"));
        }
        Ok(RangeTomb {
            main,
            start: start.to_vec(),
            end: end.to_vec(),
        })
    }
}

/// The range tombstones of one state, ascending by revision.
#[derive(Debug, Default)]
pub(crate) struct Tombs(pub(crate) Vec<RangeTomb>);

impl Tombs {
    /// Reads the `d` table (nothing when the state counts no tombstone).
    pub(crate) fn load<T: TreeRead + ?Sized>(t: &T) -> Result<Tombs> {
        let expected = t.range_tombs();
        if expected == 0 {
            return Ok(Tombs::default());
        }
        let mut out = Vec::new();
        tree::scan(
            t,
            &[keys::T_RANGE_DEL],
            Some(&[keys::T_RANGE_DEL + 1]),
            false,
            |k, v| {
                let v = tree::load_value(t, v)?;
                out.push(RangeTomb::decode(k, &v)?);
                Ok(out.len() as u64 <= expected)
            },
        )?;
        if out.len() as u64 != expected {
            return Err(StorageError::corrupted(
                0,
                format!(
                    "{} range tombstones where the meta page counts {expected}",
                    out.len()
                ),
            ));
        }
        Ok(Tombs(out))
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Revision of the newest tombstone covering `prefix` with main
    /// revision in `(after, upto]`: a version of that key with main
    /// revision `after` is deleted by it for reads at `upto`.
    #[inline]
    pub(crate) fn deleted_in(&self, prefix: SplitKey<'_>, after: i64, upto: i64) -> Option<i64> {
        // Scans call this per key: no tombstones (the common state) is one
        // length test.
        if self.0.is_empty() {
            return None;
        }
        self.0
            .iter()
            .rev()
            .find(|t| t.main > after && t.main <= upto && t.covers_key(prefix))
            .map(|t| t.main)
    }
}

/// Writes the tombstone of a delete at revision `main` of the tree range
/// `[start, end)` and counts it in the transaction's state.
pub(crate) fn put(txn: &mut TreeTxn<'_>, main: i64, start: Vec<u8>, end: Vec<u8>) -> Result<()> {
    let t = RangeTomb { main, start, end };
    txn.put(&keys::range_del_entry(main), &t.encode_value())?;
    txn.range_tombs += 1;
    Ok(())
}

/// Removes every tombstone with main revision <= `upto` (compaction to
/// `upto` is complete, so no version they supersede is left).
pub(crate) fn remove_upto(txn: &mut TreeTxn<'_>, upto: i64) -> Result<()> {
    let n = Tombs::load(&*txn)?
        .0
        .iter()
        .filter(|t| t.main <= upto)
        .count();
    if n > 0 {
        txn.delete_range(
            &[keys::T_RANGE_DEL],
            &keys::range_del_entry(upto.saturating_add(1)),
        )?;
        txn.range_tombs -= n as u64;
    }
    Ok(())
}

/// True when a stored record is a tombstone (loading an overflow value).
pub(crate) fn val_is_tombstone<T: TreeRead + ?Sized>(t: &T, v: ValRef<'_>) -> Result<bool> {
    match v {
        ValRef::Inline(b) => keys::record_is_tombstone(b),
        ValRef::Overflow { .. } => keys::record_is_tombstone(&tree::load_value(t, v)?),
    }
}

/// Per-key state of [`scan_logical`]: which tombstones cover the current
/// key, which of them are behind, and whether the key is live.
struct Merge<'t> {
    tombs: &'t [RangeTomb],
    /// Next sub-revision per tombstone (keys it deleted so far).
    ranks: Vec<i64>,
    prefix: Vec<u8>,
    cover: Vec<usize>,
    next: usize,
    live: bool,
    buf: Vec<u8>,
}

impl Merge<'_> {
    /// Emits the synthesized tombstones of the current key with main
    /// revision below `before`; false when `f` asked to stop.
    fn emit_before<'a>(
        &mut self,
        before: i64,
        f: &mut impl FnMut(&[u8], ValRef<'a>) -> Result<bool>,
    ) -> Result<bool> {
        while let Some(&i) = self.cover.get(self.next) {
            let main = self.tombs[i].main;
            if main >= before {
                break;
            }
            self.next += 1;
            if !self.live {
                continue;
            }
            self.live = false;
            let sub = self.ranks[i];
            self.ranks[i] += 1;
            self.buf.clear();
            self.buf.extend_from_slice(&self.prefix);
            self.buf.extend_from_slice(&keys::rev_bytes(main, sub));
            if !f(&self.buf, ValRef::Inline(TOMB_RECORD))? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Like `tree::scan` forward over `k` entries, but with every version the
/// range tombstones stand for inserted where the per-key path would have
/// written it: the callback sees the same entries (keys and records) in the
/// same order as on a store that never used range tombstones. Sub-revisions
/// (ranks) are exact only for a scan from the start of the `k` table.
pub(crate) fn scan_logical<'a, T, F>(
    t: &'a T,
    tombs: &Tombs,
    start: &[u8],
    end: Option<&[u8]>,
    mut f: F,
) -> Result<()>
where
    T: TreeRead + ?Sized,
    F: FnMut(&[u8], ValRef<'a>) -> Result<bool>,
{
    if tombs.is_empty() {
        return tree::scan(t, start, end, false, f);
    }
    let mut m = Merge {
        tombs: &tombs.0,
        ranks: vec![0; tombs.0.len()],
        prefix: Vec::new(),
        cover: Vec::new(),
        next: 0,
        live: false,
        buf: Vec::new(),
    };
    let mut stopped = false;
    tree::scan(t, start, end, false, |k, v| {
        let (prefix, main, _) = keys::split_key_entry(k)?;
        if prefix != m.prefix.as_slice() {
            if !m.emit_before(i64::MAX, &mut f)? {
                stopped = true;
                return Ok(false);
            }
            m.prefix.clear();
            m.prefix.extend_from_slice(prefix);
            m.cover.clear();
            m.cover.extend(
                m.tombs
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.covers(prefix))
                    .map(|(i, _)| i),
            );
            m.next = 0;
            m.live = false;
        }
        if !m.emit_before(main, &mut f)? {
            stopped = true;
            return Ok(false);
        }
        if !m.cover.is_empty() {
            m.live = !val_is_tombstone(t, v)?;
        }
        if !f(k, v)? {
            stopped = true;
            return Ok(false);
        }
        Ok(true)
    })?;
    if !stopped {
        m.emit_before(i64::MAX, &mut f)?;
    }
    Ok(())
}

/// The keys a tombstone at `main` deleted within the user-key tree bounds
/// `[start, end)` of a watch: tree bounds of their intersection.
pub(crate) fn intersect(
    t: &RangeTomb,
    start: &[u8],
    end: Option<&[u8]>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let lo = if start > t.start.as_slice() {
        start
    } else {
        &t.start
    };
    let hi = match end {
        Some(e) if e < t.end.as_slice() => e,
        _ => &t.end,
    };
    (lo < hi).then(|| (lo.to_vec(), hi.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::keys::Record;

    #[test]
    fn tomb_record_is_the_encoded_tombstone() {
        let rec = Record {
            tombstone: true,
            create: 0,
            version: 0,
            lease: 0,
        };
        assert_eq!(keys::encode_record(&rec, 7, &[]), TOMB_RECORD);
        assert!(keys::record_is_tombstone(TOMB_RECORD).unwrap());
    }

    #[test]
    fn value_roundtrip_and_bad_bytes() {
        let t = RangeTomb {
            main: 9,
            start: keys::key_prefix(b"a"),
            end: vec![keys::T_KEY + 1],
        };
        let k = keys::range_del_entry(9);
        assert_eq!(RangeTomb::decode(&k, &t.encode_value()).unwrap(), t);
        for bad in [&b""[..], &[9, 0, 0, 0, b'k'][..], &[1, 0, 0, 0, b'k'][..]] {
            assert!(RangeTomb::decode(&k, bad).is_err());
        }
        assert!(t.covers(&keys::key_prefix(b"a")));
        assert!(t.covers(&keys::key_prefix(b"zz")));
        assert!(!t.covers(&keys::key_prefix(b"")));
    }
}
