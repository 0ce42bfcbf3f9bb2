//! Read side of the B+ tree: lookups and bounded scans in both directions,
//! shared by reader snapshots and the writer's own transaction.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::error::{Result, StorageError};
use crate::node::{ENTRY_PREFETCH_AHEAD, KeyRef, MAX_TREE_KEY, NodeRef, PageView, ValRef};
use crate::page::{self, OVERFLOW_CAP, PAGE_SIZE, TYPE_OVERFLOW};
use crate::splitkey::PageKey;

/// Maximum tree depth; a deeper path means a cycle or corruption.
pub const MAX_DEPTH: usize = 32;
/// Largest tree value (an MVCC record holding a maximal value); larger
/// lengths read from disk are corruption.
pub const MAX_STORED_VALUE: usize = crate::MAX_VALUE_BYTES + 64;
/// Largest overflow chain payload (a value or a long key).
pub const MAX_CHAIN_BYTES: usize = if MAX_STORED_VALUE > MAX_TREE_KEY {
    MAX_STORED_VALUE
} else {
    MAX_TREE_KEY
};

pub trait TreeRead {
    fn root(&self) -> u64;
    fn node(&self, id: u64) -> Result<NodeRef<'_>>;
    /// Whole page bytes (overflow pages).
    fn page_bytes(&self, id: u64) -> Result<Cow<'_, [u8]>>;
    /// Range tombstones in this state (`Meta::range_tombs`; MVCC readers
    /// skip the `d` table when 0).
    fn range_tombs(&self) -> u64;
    /// A hint that page `id` is read next (a scan's next leaf): start
    /// loading it into the CPU cache. Never fails; does nothing by default.
    fn prefetch(&self, _id: u64) {}
}

/// Reads the `len` payload bytes of the overflow chain starting at `first`
/// (`max`: largest valid length).
fn read_chain<T: TreeRead + ?Sized>(t: &T, first: u64, len: usize, max: usize) -> Result<Vec<u8>> {
    if len > max {
        return Err(StorageError::corrupted(
            first,
            "overflow value length too large",
        ));
    }
    let mut out = Vec::with_capacity(len);
    let mut id = first;
    let max_pages = len.div_ceil(OVERFLOW_CAP).max(1);
    for _ in 0..max_pages {
        if id == 0 || out.len() >= len {
            break;
        }
        let bytes = t.page_bytes(id)?;
        let (used, next) = page::check(&bytes, id, TYPE_OVERFLOW)?;
        let used = used as usize;
        if used > OVERFLOW_CAP || out.len() + used > len {
            return Err(StorageError::corrupted(id, "overflow length mismatch"));
        }
        out.extend_from_slice(&bytes[page::HEADER..page::HEADER + used]);
        id = next;
    }
    if out.len() != len {
        return Err(StorageError::corrupted(first, "overflow chain too short"));
    }
    Ok(out)
}

/// Reads a value, following its overflow chain if needed.
pub fn load_value<'a, T: TreeRead + ?Sized>(t: &'a T, v: ValRef<'a>) -> Result<Cow<'a, [u8]>> {
    match v {
        ValRef::Inline(b) => Ok(Cow::Borrowed(b)),
        ValRef::Overflow { page, len } => Ok(Cow::Owned(read_chain(
            t,
            page,
            len as usize,
            MAX_STORED_VALUE,
        )?)),
    }
}

/// The whole key as one slice: borrowed for inline keys stored whole
/// (branches, leaves without a prefix), copied for inline keys of a leaf
/// with a prefix (writer and checker paths; readers use [`page_key`]),
/// read from the chain for stubs (checked against the stub's prefix).
pub fn load_key<'a, T: TreeRead + ?Sized>(t: &'a T, k: KeyRef<'a>) -> Result<Cow<'a, [u8]>> {
    match k {
        KeyRef::Full(b) => Ok(match b.contiguous() {
            Some(b) => Cow::Borrowed(b),
            None => Cow::Owned(b.to_vec()),
        }),
        KeyRef::Stub { prefix, len, chain } => {
            let key = read_chain(t, chain, len, MAX_TREE_KEY)?;
            if !key.starts_with(prefix) {
                return Err(StorageError::corrupted(
                    chain,
                    "long key chain does not match its stub",
                ));
            }
            Ok(Cow::Owned(key))
        }
    }
}

/// The whole key without copying inline keys (the readers' form).
#[inline]
pub fn page_key<'a, T: TreeRead + ?Sized>(t: &'a T, k: KeyRef<'a>) -> Result<PageKey<'a>> {
    match k {
        KeyRef::Full(b) => Ok(PageKey::Borrowed(b)),
        stub => Ok(PageKey::Owned(load_key(t, stub)?.into_owned())),
    }
}

/// Compares an entry key with `key`; a stub's chain is read only when its
/// prefix ties with `key`.
pub fn cmp_key<T: TreeRead + ?Sized>(t: &T, k: KeyRef<'_>, key: &[u8]) -> Result<Ordering> {
    match k {
        KeyRef::Full(b) => Ok(b.cmp_bytes(key)),
        KeyRef::Stub { prefix, .. } => {
            let n = prefix.len().min(key.len());
            match prefix.cmp(&key[..n]) {
                Ordering::Equal if key.len() <= prefix.len() => {
                    // `key` is a prefix of the stub's prefix; the entry key is longer.
                    Ok(Ordering::Greater)
                }
                Ordering::Equal => Ok(load_key(t, k)?.as_ref().cmp(key)),
                o => Ok(o),
            }
        }
    }
}

/// Branch: index of the child covering `key`. Leaf: first index with
/// entry key >= `key` (may be `len()`).
///
/// A page is searched by its slot heads first ([`PageView::head_bounds`]:
/// a tight binary search inside the slot array that reads no entry), and
/// only the entries whose head ties with the searched key's are compared
/// whole. A leaf page with a key prefix P: a `key` not starting with P
/// sorts before (index 0) or after (index `len`) every entry, decided by
/// one comparison; otherwise heads and suffixes are compared with the part
/// of `key` after P. The writer's owned nodes have no heads: plain binary
/// search by key.
pub fn search<T: TreeRead + ?Sized>(t: &T, n: &NodeRef<'_>, key: &[u8]) -> Result<usize> {
    match n {
        NodeRef::Page(p) => search_page(t, p, key),
        NodeRef::Owned(_) => search_by_keys(t, n, key, 0, n.len(), n.is_leaf()),
    }
}

/// [`search`] in a page: heads, then whole keys among the tied entries.
#[inline]
fn search_page<T: TreeRead + ?Sized>(t: &T, p: &PageView<'_>, key: &[u8]) -> Result<usize> {
    let pre = p.prefix();
    let rest = if pre.is_empty() {
        key
    } else {
        // Only leaves have a prefix.
        let m = pre.len().min(key.len());
        match key[..m].cmp(&pre[..m]) {
            Ordering::Less => return Ok(0),
            Ordering::Greater => return Ok(p.len()),
            Ordering::Equal if key.len() < pre.len() => return Ok(0),
            Ordering::Equal => &key[pre.len()..],
        }
    };
    // Entries below `lo` have smaller heads, so smaller keys; entries from
    // `hi` on have larger heads, so larger keys: the answer is in [lo, hi].
    let (mut lo, mut hi) = p.head_bounds(crate::node::key_head(rest));
    while lo < hi {
        let mid = (lo + hi) / 2;
        let ord = match p.key(mid)? {
            // Every inline key of the page starts with its prefix, as
            // `key` does here: compare the suffixes.
            KeyRef::Full(k) => k.suf.cmp(rest),
            stub => cmp_key(t, stub, key)?,
        };
        if go_right(ord, p.leaf) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(if p.leaf { lo } else { lo.saturating_sub(1) })
}

/// Binary search of `[lo, hi)` of `n` by whole keys.
fn search_by_keys<T: TreeRead + ?Sized>(
    t: &T,
    n: &NodeRef<'_>,
    key: &[u8],
    mut lo: usize,
    mut hi: usize,
    leaf: bool,
) -> Result<usize> {
    while lo < hi {
        let mid = (lo + hi) / 2;
        let ord = match n.key(mid)? {
            KeyRef::Full(k) => k.cmp_bytes(key),
            stub => cmp_key(t, stub, key)?,
        };
        if go_right(ord, leaf) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(if leaf { lo } else { lo.saturating_sub(1) })
}

/// Binary-search step: the searched position is right of an entry that
/// compares `ord` with the key (first entry key > key in a branch, >= key
/// in a leaf).
#[inline]
fn go_right(ord: Ordering, leaf: bool) -> bool {
    if leaf {
        ord == Ordering::Less
    } else {
        ord != Ordering::Greater
    }
}

/// Ids of an overflow chain's pages (a value's or a long key's).
pub fn overflow_pages<T: TreeRead + ?Sized>(t: &T, first: u64, len: u32) -> Result<Vec<u64>> {
    if len as usize > MAX_CHAIN_BYTES {
        return Err(StorageError::corrupted(
            first,
            "overflow value length too large",
        ));
    }
    let n = (len as usize).div_ceil(OVERFLOW_CAP).max(1);
    let mut ids = Vec::with_capacity(n);
    let mut id = first;
    for _ in 0..n {
        if id == 0 {
            break;
        }
        ids.push(id);
        let bytes = t.page_bytes(id)?;
        let (_, next) = page::check(&bytes, id, TYPE_OVERFLOW)?;
        id = next;
    }
    Ok(ids)
}

/// Exact-match lookup.
pub fn get<'a, T: TreeRead + ?Sized>(t: &'a T, key: &[u8]) -> Result<Option<ValRef<'a>>> {
    let mut id = t.root();
    if id == 0 {
        return Ok(None);
    }
    for _ in 0..MAX_DEPTH {
        let n = t.node(id)?;
        let i = search(t, &n, key)?;
        if n.is_leaf() {
            if i < n.len() && cmp_key(t, n.key(i)?, key)? == Ordering::Equal {
                return Ok(Some(n.val(i)?));
            }
            return Ok(None);
        }
        id = n.child(i)?;
    }
    Err(StorageError::corrupted(id, "tree too deep"))
}

/// Visits entries with `start <= key < end` (`end = None`: unbounded) in
/// ascending order, or descending when `reverse`; stops when `f` returns false.
/// The key passed to `f` lives only for the call (see [`scan_keys`]): a key
/// split by its leaf's prefix is copied into one buffer reused for the scan.
pub fn scan<'a, T, F>(
    t: &'a T,
    start: &[u8],
    end: Option<&[u8]>,
    reverse: bool,
    mut f: F,
) -> Result<()>
where
    T: TreeRead + ?Sized,
    F: FnMut(&[u8], ValRef<'a>) -> Result<bool>,
{
    let mut scratch = Vec::new();
    scan_keys(t, start, end, reverse, |k, v| {
        f(k.parts().bytes_in(&mut scratch), v)
    })
}

/// Like [`scan`], passing each whole key as a [`PageKey`]: borrowed from the
/// page for inline keys (zero-copy: the leaf's prefix and the entry's
/// suffix), owned for long keys read from their chain.
pub fn scan_keys<'a, T, F>(
    t: &'a T,
    start: &[u8],
    end: Option<&[u8]>,
    reverse: bool,
    mut f: F,
) -> Result<()>
where
    T: TreeRead + ?Sized,
    F: FnMut(PageKey<'a>, ValRef<'a>) -> Result<bool>,
{
    let root = t.root();
    if root == 0 {
        return Ok(());
    }
    let mut stack: Vec<(NodeRef<'a>, usize)> = Vec::with_capacity(8);
    // Position: forward at first key >= start; reverse at last key < end.
    let mut id = root;
    loop {
        if stack.len() >= MAX_DEPTH {
            return Err(StorageError::corrupted(id, "tree too deep"));
        }
        let n = t.node(id)?;
        let i = if reverse {
            match end {
                Some(e) => search(t, &n, e)?,
                None => n.len(),
            }
        } else {
            search(t, &n, start)?
        };
        if n.is_leaf() {
            stack.push((n, i));
            prefetch_next_leaf(t, &stack, reverse);
            break;
        }
        let i = if reverse && end.is_none() {
            n.len() - 1
        } else {
            i
        };
        stack.push((n, i));
        id = n.child(i)?;
    }
    let mut last: Option<PageKey<'a>> = None;
    // Forward scans: see the per-entry checks below.
    let mut leaf_below_end: Option<bool> = None;
    let mut past_start = false;
    loop {
        let Some(&mut (leaf, ref mut idx)) = stack.last_mut() else {
            return Ok(());
        };
        if reverse {
            if *idx == 0 {
                if !step_leaf(t, &mut stack, true)? {
                    return Ok(());
                }
                continue;
            }
            *idx -= 1;
            let i = *idx;
            let k = page_key(t, leaf.key(i)?)?;
            let kp = k.parts();
            // Keys must strictly decrease: a repeated or misordered subtree
            // (corruption) is reported instead of being walked forever.
            if last
                .as_ref()
                .is_some_and(|l| kp.cmp_key(&l.parts()) != Ordering::Less)
            {
                return Err(StorageError::corrupted(leaf_id(&leaf), "keys out of order"));
            }
            if kp.cmp_bytes(start) == Ordering::Less {
                return Ok(());
            }
            let past_end = end.is_some_and(|e| kp.cmp_bytes(e) != Ordering::Less);
            last = Some(k.clone());
            if past_end {
                continue;
            }
            if !f(k, leaf.val(i)?)? {
                return Ok(());
            }
        } else {
            if *idx >= leaf.len() {
                if !step_leaf(t, &mut stack, false)? {
                    return Ok(());
                }
                leaf_below_end = None;
                continue;
            }
            let i = *idx;
            *idx += 1;
            // Whether the whole leaf sorts below `end`, decided once per
            // leaf by its last key: then no entry of it needs the end check.
            let below_end = match (leaf_below_end, end) {
                (Some(b), _) => b,
                (None, None) => true,
                (None, Some(e)) => {
                    let b = cmp_key(t, leaf.key(leaf.len() - 1)?, e)? == Ordering::Less;
                    leaf_below_end = Some(b);
                    b
                }
            };
            leaf.prefetch_entry(i + ENTRY_PREFETCH_AHEAD);
            let (k, v) = leaf.kv(i)?;
            let k = page_key(t, k)?;
            let kp = k.parts();
            if last
                .as_ref()
                .is_some_and(|l| kp.cmp_key(&l.parts()) != Ordering::Greater)
            {
                return Err(StorageError::corrupted(leaf_id(&leaf), "keys out of order"));
            }
            if !below_end && end.is_some_and(|e| kp.cmp_bytes(e) != Ordering::Less) {
                return Ok(());
            }
            // Keys strictly increase (checked above), so once one is at or
            // past `start` every later one is.
            let before_start = !past_start && kp.cmp_bytes(start) == Ordering::Less;
            past_start = !before_start;
            last = Some(k.clone());
            if before_start {
                continue;
            }
            if !f(k, v)? {
                return Ok(());
            }
        }
    }
}

fn leaf_id(n: &NodeRef<'_>) -> u64 {
    match n {
        NodeRef::Page(p) => p.id,
        NodeRef::Owned(_) => 0,
    }
}

/// Moves the stack to the next (or previous) leaf. Forward leaves the leaf
/// index at 0, reverse at `len` (entries are consumed by pre-decrement).
fn step_leaf<'a, T: TreeRead + ?Sized>(
    t: &'a T,
    stack: &mut Vec<(NodeRef<'a>, usize)>,
    reverse: bool,
) -> Result<bool> {
    stack.pop();
    loop {
        let Some((n, i)) = stack.last_mut() else {
            return Ok(false);
        };
        let can = if reverse { *i > 0 } else { *i + 1 < n.len() };
        if can {
            if reverse {
                *i -= 1;
            } else {
                *i += 1;
            }
            break;
        }
        stack.pop();
    }
    while let Some(&(n, i)) = stack.last() {
        if n.is_leaf() {
            break;
        }
        if stack.len() >= MAX_DEPTH {
            return Err(StorageError::corrupted(0, "tree too deep"));
        }
        let c = t.node(n.child(i)?)?;
        let ci = if reverse {
            if c.is_leaf() { c.len() } else { c.len() - 1 }
        } else {
            0
        };
        stack.push((c, ci));
    }
    prefetch_next_leaf(t, stack, reverse);
    Ok(true)
}

/// Hints the leaf after the one on top of `stack` (in scan direction) when
/// it has the same parent: its first touch is the costliest read of a scan
/// (a cache and TLB miss), and the current leaf's entries hide the load.
fn prefetch_next_leaf<T: TreeRead + ?Sized>(t: &T, stack: &[(NodeRef<'_>, usize)], reverse: bool) {
    let Some((parent, i)) = stack.len().checked_sub(2).map(|p| stack[p]) else {
        return;
    };
    let next = if reverse {
        i.checked_sub(1)
    } else {
        Some(i + 1).filter(|j| *j < parent.len())
    };
    if let Some(id) = next.and_then(|j| parent.child(j).ok()) {
        t.prefetch(id);
    }
}

/// Byte offset of a page.
pub fn page_offset(id: u64) -> Option<usize> {
    usize::try_from(id).ok()?.checked_mul(PAGE_SIZE)
}
