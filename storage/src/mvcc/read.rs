//! Read paths shared by [`super::ReadView`] and [`super::WriteBatch`]:
//! range at a revision, latest version lookup, compare, events, hash.

use std::borrow::Cow;

use super::keys::{self, Record};
use super::range_del::{self, Tombs};
use super::types::*;
use crate::error::{Result, StorageError};
use crate::node::ValRef;
use crate::splitkey::{PageKey, SplitKey};
use crate::tree::{self, TreeRead};

/// Tree bounds `[start, end)` of a user-key range with etcd semantics:
/// empty `range_end` = the single key, `[0]` = every key >= `key`.
pub fn key_bounds(key: &[u8], range_end: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
    if range_end.is_empty() {
        let p = keys::key_prefix(key);
        let mut end = p.clone();
        end.extend_from_slice(&[0xFF; 17]);
        (p, Some(end))
    } else if range_end == [0] {
        (keys::key_bound(key), Some(vec![keys::T_KEY + 1]))
    } else {
        (keys::key_bound(key), Some(keys::key_bound(range_end)))
    }
}

/// A user-key version found by a scan.
pub struct Found<'a> {
    /// `'k' enc(user_key)`: borrowed from the page (the leaf's prefix and
    /// the entry's suffix), owned for a long key read from its chain.
    pub prefix: PageKey<'a>,
    pub main: i64,
    pub val: ValRef<'a>,
}

impl<'a> Found<'a> {
    pub fn load<T: TreeRead + ?Sized>(&self, t: &'a T) -> Result<(Record, Cow<'a, [u8]>)> {
        let bytes = tree::load_value(t, self.val)?;
        match bytes {
            Cow::Borrowed(b) => {
                let (r, v) = keys::decode_record(b, self.main)?;
                Ok((r, Cow::Borrowed(v)))
            }
            Cow::Owned(b) => {
                let (r, v) = keys::decode_record(&b, self.main)?;
                Ok((r, Cow::Owned(v.to_vec())))
            }
        }
    }

    #[inline]
    pub fn is_tombstone<T: TreeRead + ?Sized>(&self, t: &'a T) -> Result<bool> {
        match self.val {
            ValRef::Inline(b) => keys::record_is_tombstone(b),
            ValRef::Overflow { .. } => Ok(self.load(t)?.0.tombstone),
        }
    }

    pub fn to_kv<T: TreeRead + ?Sized>(
        &self,
        t: &'a T,
        with_value: bool,
    ) -> Result<(Record, KeyValue)> {
        let (r, v) = self.load(t)?;
        let kv = KeyValue {
            key: keys::unescape_split(self.prefix.parts())?,
            create_revision: r.create,
            mod_revision: self.main,
            version: r.version,
            value: if with_value {
                v.into_owned()
            } else {
                Vec::new()
            },
            lease: r.lease,
        };
        Ok((r, kv))
    }
}

/// `keys::split_key_entry` keeping the prefix borrowed when the key is
/// (no copy of a key split by its leaf's prefix: only its last 18 bytes, the
/// end token and the revision, are checked and parsed).
fn split_entry(k: PageKey<'_>) -> Result<(PageKey<'_>, i64)> {
    let p = k.parts();
    let n = p.len();
    if n < 19 {
        return Err(StorageError::corrupted(0, "short key entry"));
    }
    let table = p.get(0).unwrap_or(0);
    let (main, _) = match p.suf.len().checked_sub(18) {
        // Usually the end token and the revision lie in the entry's suffix:
        // parsed in place (a copy to the stack and wider loads from it stall
        // on store forwarding).
        Some(at) => keys::entry_tail_rev(table, &p.suf[at..])?,
        None => {
            let mut tail = [0u8; 18];
            p.copy_to(n - 18, &mut tail);
            keys::entry_tail_rev(table, &tail)?
        }
    };
    Ok((k.truncated(n - 16), main))
}

/// Calls `f` with the newest version `<= rev` of every key in the bounds
/// whose newest version is not a tombstone, in key order.
pub fn for_each_live<'a, T, F>(
    t: &'a T,
    start: &[u8],
    end: Option<&[u8]>,
    rev: i64,
    mut f: F,
) -> Result<()>
where
    T: TreeRead + ?Sized,
    F: FnMut(&Found<'a>) -> Result<bool>,
{
    let tombs = Tombs::load(t)?;
    // Live: not a tombstone and not deleted by a range tombstone <= rev.
    let live = |b: &Found<'a>| -> Result<bool> {
        Ok(!b.is_tombstone(t)? && tombs.deleted_in(b.prefix.parts(), b.main, rev).is_none())
    };
    let mut best: Option<Found<'a>> = None;
    let mut stop = false;
    tree::scan_keys(t, start, end, false, |k, v| {
        let (prefix, main) = split_entry(k)?;
        if let Some(b) = &best
            && b.prefix != prefix
        {
            let b = best.take().expect("checked");
            if live(&b)? && !f(&b)? {
                stop = true;
                return Ok(false);
            }
        }
        if main <= rev {
            best = Some(Found {
                prefix,
                main,
                val: v,
            });
        }
        Ok(true)
    })?;
    if !stop
        && let Some(b) = best
        && live(&b)?
    {
        f(&b)?;
    }
    Ok(())
}

/// Newest version of `key` with main revision <= `rev` (tombstones included;
/// a version deleted by a range tombstone <= `rev` gives that tombstone).
pub fn latest<'a, T: TreeRead + ?Sized>(
    t: &'a T,
    key: &[u8],
    rev: i64,
) -> Result<Option<Found<'a>>> {
    let found = latest_stored(t, key, rev)?;
    let Some(f) = found else { return Ok(None) };
    let tombs = Tombs::load(t)?;
    Ok(Some(
        match tombs.deleted_in(f.prefix.parts(), f.main, rev) {
            Some(main) => Found {
                prefix: f.prefix,
                main,
                val: ValRef::Inline(range_del::TOMB_RECORD),
            },
            None => f,
        },
    ))
}

/// Newest stored version of `key` with main revision <= `rev`.
///
/// One root-to-leaf descent towards `end = prefix(key) ++ rev(rev + 1, 0)`:
/// in the leaf covering `end`, the entry just before the first key >= `end`
/// is the greatest tree key below `end`; it is a version of `key` exactly
/// when it starts with the prefix (every key in `[prefix, end)` does). Only
/// when that entry would sit in the previous leaf (`end` sorts before the
/// whole leaf) does it fall back to a reverse scan.
fn latest_stored<'a, T: TreeRead + ?Sized>(
    t: &'a T,
    key: &[u8],
    rev: i64,
) -> Result<Option<Found<'a>>> {
    let mut end = keys::key_prefix(key);
    let plen = end.len();
    end.extend_from_slice(&keys::rev_bytes(rev.saturating_add(1), 0));
    let mut id = t.root();
    if id == 0 {
        return Ok(None);
    }
    for _ in 0..tree::MAX_DEPTH {
        let n = t.node(id)?;
        let i = tree::search(t, &n, &end)?;
        if !n.is_leaf() {
            id = n.child(i)?;
            continue;
        }
        if i == 0 {
            return latest_by_scan(t, &end, plen);
        }
        // Inline keys are borrowed from the page; long ones read their chain.
        let k = tree::page_key(t, n.key(i - 1)?)?;
        if !k.parts().starts_with(&end[..plen]) {
            return Ok(None);
        }
        let (prefix, main) = split_entry(k)?;
        return Ok(Some(Found {
            prefix,
            main,
            val: n.val(i - 1)?,
        }));
    }
    Err(StorageError::corrupted(id, "tree too deep"))
}

/// [`latest`] by a reverse scan of `[end[..plen], end)`.
fn latest_by_scan<'a, T: TreeRead + ?Sized>(
    t: &'a T,
    end: &[u8],
    plen: usize,
) -> Result<Option<Found<'a>>> {
    let mut out = None;
    tree::scan_keys(t, &end[..plen], Some(end), true, |k, v| {
        let (prefix, main) = split_entry(k)?;
        out = Some(Found {
            prefix,
            main,
            val: v,
        });
        Ok(false)
    })?;
    Ok(out)
}

/// Calls `f` with the newest live version `<= rev` of every key of an etcd
/// key range (`range_end` as in [`key_bounds`]), in key order. A single key
/// (empty `range_end`) is one descent ([`latest`]) instead of a scan.
pub fn for_each_live_in<'a, T, F>(
    t: &'a T,
    key: &[u8],
    range_end: &[u8],
    rev: i64,
    mut f: F,
) -> Result<()>
where
    T: TreeRead + ?Sized,
    F: FnMut(&Found<'a>) -> Result<bool>,
{
    if range_end.is_empty() {
        if let Some(found) = latest(t, key, rev)?
            && !found.is_tombstone(t)?
        {
            f(&found)?;
        }
        return Ok(());
    }
    let (start, end) = key_bounds(key, range_end);
    for_each_live(t, &start, end.as_deref(), rev, f)
}

/// The live KeyValue of `key` at `rev`, if any.
pub fn get_kv<T: TreeRead + ?Sized>(t: &T, key: &[u8], rev: i64) -> Result<Option<KeyValue>> {
    match latest(t, key, rev)? {
        Some(f) if !f.is_tombstone(t)? => Ok(Some(f.to_kv(t, true)?.1)),
        _ => Ok(None),
    }
}

/// Checks revision bounds; `0` (or negative) means `current`.
pub fn resolve_rev(requested: i64, current: i64, compacted: i64) -> Result<i64> {
    let rev = if requested <= 0 { current } else { requested };
    if rev > current {
        return Err(StorageError::FutureRevision {
            requested: rev,
            current,
        });
    }
    if rev < compacted {
        return Err(StorageError::Compacted {
            requested: rev,
            compacted,
        });
    }
    Ok(rev)
}

/// etcd 3.4+ compare: every key in the range must satisfy it; a missing key
/// compares as zero, except a value compare, which fails.
pub fn compare<T: TreeRead + ?Sized>(t: &T, c: &Compare, rev: i64) -> Result<bool> {
    let mut any = false;
    let mut ok = true;
    let with_value = matches!(c.target, CompareTarget::Value(_));
    for_each_live_in(t, &c.key, &c.range_end, rev, |f| {
        any = true;
        let (_, kv) = f.to_kv(t, with_value)?;
        ok = compare_kv(c, &kv);
        Ok(ok)
    })?;
    if !any {
        if with_value {
            return Ok(false);
        }
        return Ok(compare_kv(c, &KeyValue::default()));
    }
    Ok(ok)
}

fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match &c.target {
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Create(v) => kv.create_revision.cmp(v),
        CompareTarget::Mod(v) => kv.mod_revision.cmp(v),
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Lease(v) => kv.lease.cmp(v),
    };
    match c.result {
        CompareResult::Equal => ord == Ordering::Equal,
        CompareResult::NotEqual => ord != Ordering::Equal,
        CompareResult::Greater => ord == Ordering::Greater,
        CompareResult::Less => ord == Ordering::Less,
    }
}

/// The version of the same key just before `(main, sub)`, if live.
pub fn prev_version<T: TreeRead + ?Sized>(
    t: &T,
    prefix: &[u8],
    main: i64,
    sub: i64,
) -> Result<Option<KeyValue>> {
    let mut end = prefix.to_vec();
    end.extend_from_slice(&keys::rev_bytes(main, sub));
    let tombs = Tombs::load(t)?;
    let mut out = None;
    tree::scan(t, prefix, Some(&end), true, |k, v| {
        let (p, m, _) = keys::split_key_entry(k)?;
        let f = Found {
            prefix: PageKey::from_slice(p),
            main: m,
            val: v,
        };
        if !f.is_tombstone(t)? && tombs.deleted_in(SplitKey::whole(p), m, main).is_none() {
            out = Some(f.to_kv(t, true)?.1);
        }
        Ok(false)
    })?;
    Ok(out)
}

/// What `events_since` found in revision order: a revision entry, or a key
/// a range tombstone deleted (with its last version).
enum Hit {
    Rev(i64, i64, Vec<u8>),
    Del(i64, KeyValue),
}

/// Events with main revision in `[start, upto]` for keys in the range, whole
/// revisions at a time, stopping after about `max_events`. Returns the events
/// and the next revision to read from. A range tombstone is the only op of
/// its revision and stands for one delete event per key it deleted.
pub fn events_since<T: TreeRead + ?Sized>(
    t: &T,
    start: i64,
    upto: i64,
    key: &[u8],
    range_end: &[u8],
    max_events: usize,
) -> Result<(Vec<Event>, i64)> {
    let (kstart, kend) = key_bounds(key, range_end);
    let from = keys::rev_entry(start.max(1), 0);
    let to = keys::rev_entry(upto.saturating_add(1), 0);
    let tombs = Tombs::load(t)?;
    let mut dels = tombs
        .0
        .iter()
        .filter(|d| d.main >= start && d.main <= upto)
        .peekable();
    let mut found: Vec<Hit> = Vec::new();
    let mut last_main: Option<i64> = None;
    let mut next = upto.saturating_add(1).max(start);
    // True when a hit at `main` would start a revision after the budget is spent.
    let full = |found: &Vec<Hit>, last_main: Option<i64>, main: i64| {
        found.len() >= max_events.max(1) && last_main.is_some_and(|l| l != main)
    };
    // Adds the keys of the watched range a tombstone deleted: those live
    // just before it, with their last version as prev_kv.
    let expand = |d: &range_del::RangeTomb, found: &mut Vec<Hit>| -> Result<bool> {
        let Some((lo, hi)) = range_del::intersect(d, &kstart, kend.as_deref()) else {
            return Ok(false);
        };
        let n = found.len();
        for_each_live(t, &lo, Some(&hi), d.main - 1, |f| {
            found.push(Hit::Del(d.main, f.to_kv(t, true)?.1));
            Ok(true)
        })?;
        Ok(found.len() > n)
    };
    let mut stopped = false;
    tree::scan(t, &from, Some(&to), false, |k, v| {
        let (main, sub) = keys::parse_rev(&k[1..])?;
        while let Some(d) = dels.next_if(|d| d.main < main) {
            if full(&found, last_main, d.main) {
                next = d.main;
                stopped = true;
                return Ok(false);
            }
            if expand(d, &mut found)? {
                last_main = Some(d.main);
            }
        }
        if full(&found, last_main, main) {
            next = main;
            stopped = true;
            return Ok(false);
        }
        // The value is enc(user key): `k` + it is the version's prefix.
        let enc = tree::load_value(t, v)?;
        let entry = keys::key_entry_from_enc(&enc, main, sub);
        let in_range = entry.as_slice() >= kstart.as_slice()
            && kend.as_deref().is_none_or(|e| entry.as_slice() < e);
        if in_range {
            last_main = Some(main);
            found.push(Hit::Rev(main, sub, enc.into_owned()));
        }
        Ok(true)
    })?;
    if !stopped {
        for d in dels {
            if full(&found, last_main, d.main) {
                next = d.main;
                break;
            }
            if expand(d, &mut found)? {
                last_main = Some(d.main);
            }
        }
    }
    let mut events = Vec::with_capacity(found.len());
    for hit in found {
        events.push(match hit {
            Hit::Rev(main, sub, enc) => rev_event(t, main, sub, &enc)?,
            Hit::Del(main, prev) => Event {
                kind: EventKind::Delete,
                kv: KeyValue {
                    key: prev.key.clone(),
                    mod_revision: main,
                    ..KeyValue::default()
                },
                prev_kv: Some(prev),
            },
        });
    }
    Ok((events, next))
}

/// The event of the version a revision entry points at.
fn rev_event<T: TreeRead + ?Sized>(t: &T, main: i64, sub: i64, enc: &[u8]) -> Result<Event> {
    let entry = keys::key_entry_from_enc(enc, main, sub);
    let Some(val) = tree::get(t, &entry)? else {
        return Err(StorageError::corrupted(
            0,
            "revision index points at a missing key entry",
        ));
    };
    let prefix = keys::prefix_from_enc(enc);
    let f = Found {
        prefix: PageKey::from_slice(&prefix),
        main,
        val,
    };
    let (rec, kv) = f.to_kv(t, true)?;
    let prev_kv = prev_version(t, &prefix, main, sub)?;
    let (kind, kv) = if rec.tombstone {
        (
            EventKind::Delete,
            KeyValue {
                key: kv.key,
                mod_revision: main,
                ..KeyValue::default()
            },
        )
    } else {
        (EventKind::Put, kv)
    };
    Ok(Event { kind, kv, prev_kv })
}

/// crc32c over every entry a compaction at `compacted` keeps, up to `rev`.
/// Independent of how far physical compaction has progressed.
pub fn hash_kv<T: TreeRead + ?Sized>(t: &T, rev: i64, compacted: i64) -> Result<u32> {
    let mut crc = 0u32;
    // Per key: versions in ascending order; the newest one <= compacted is
    // kept only if it is not a tombstone, older ones never. Range
    // tombstones take part as the per-key tombstones they stand for.
    let tombs = Tombs::load(t)?;
    let mut group: Vec<u8> = Vec::new();
    let mut pending_base: Option<(Vec<u8>, Vec<u8>)> = None;
    let flush = |crc: &mut u32, base: &mut Option<(Vec<u8>, Vec<u8>)>| {
        if let Some((k, v)) = base.take() {
            *crc = crate::checksum::crc32c_append(*crc, &k);
            *crc = crate::checksum::crc32c_append(*crc, &v);
        }
    };
    range_del::scan_logical(
        t,
        &tombs,
        &[keys::T_KEY],
        Some(&[keys::T_KEY + 1]),
        |k, v| {
            let (prefix, main, _) = keys::split_key_entry(k)?;
            if group.as_slice() != prefix {
                flush(&mut crc, &mut pending_base);
                group.clear();
                group.extend_from_slice(prefix);
            }
            if main > rev {
                return Ok(true);
            }
            // Hashed in the canonical key and record encodings
            // (independent of the file format).
            let loaded = tree::load_value(t, v)?;
            let value = keys::record_to_stream(&loaded, main)?;
            let stream_key = keys::key_entry_to_stream(k)?;
            if main <= compacted {
                pending_base = if keys::record_is_tombstone(&loaded)? {
                    None
                } else {
                    Some((stream_key, value))
                };
            } else {
                flush(&mut crc, &mut pending_base);
                crc = crate::checksum::crc32c_append(crc, &stream_key);
                crc = crate::checksum::crc32c_append(crc, &value);
            }
            Ok(true)
        },
    )?;
    flush(&mut crc, &mut pending_base);
    Ok(crc)
}
