//! Leaf sizes with key prefixes (format 5): how many bytes a run of leaf
//! entries takes on a page, and where splits cut.
//!
//! A leaf page stores the common prefix of its first and last keys once and
//! each inline key without it (`node.rs`), so a leaf's size depends on which
//! entries it holds together: splitting a leaf can only shrink each piece's
//! prefix saving, and merging two leaves can make the result larger than the
//! sum of the two. Every split, redistribution and merge therefore sizes the
//! pieces it builds with [`LeafRun`] / [`leaf_size`] / [`merged_leaf_size`],
//! never by adding up entry sizes. Invariant used by the bounds in
//! `node.rs`: a leaf's size is at most the sum of its entries' whole sizes
//! ([`leaf_entry_size`]), because the prefix is stored once and saved by every
//! inline key (and is empty when no key is inline); so any two entries still
//! fit one page.

use crate::error::{Result, StorageError};
use crate::node::{
    KEY_INLINE_MAX, Key, KeyRef, MAX_LEAF_PREFIX, NODE_CAP, Node, NodeRef, SplitKey, Val,
    leaf_entry_size,
};
use crate::splitkey::common_prefix;

/// Running size of a run of leaf entries in key order as one page would
/// hold them ([`Node::size`] of a leaf with exactly these entries): the
/// prefix bytes plus every entry with its inline key's prefix left out.
/// Splits and merges cut and check leaves with it, so a page holds as many
/// entries as fit after the saving.
#[derive(Clone, Copy, Debug, Default)]
pub struct LeafRun<'k> {
    first: &'k [u8],
    plen: usize,
    full: usize,
    inline: usize,
    n: usize,
}

impl<'k> LeafRun<'k> {
    fn with(&self, k: &'k [u8], full: usize) -> LeafRun<'k> {
        let (first, plen) = if self.n == 0 {
            (k, k.len().min(MAX_LEAF_PREFIX))
        } else {
            // Sorted keys: the common prefix of first and last only shrinks.
            let cap = self.plen;
            (
                self.first,
                common_prefix(SplitKey::whole(self.first), SplitKey::whole(k), cap),
            )
        };
        LeafRun {
            first,
            plen,
            full: self.full + full,
            inline: self.inline + usize::from(k.len() <= KEY_INLINE_MAX),
            n: self.n + 1,
        }
    }

    /// Size after appending entry `(k, v)` (keys ascending).
    pub fn size_with(&self, k: &'k Key, v: &Val) -> usize {
        self.with(&k.bytes, leaf_entry_size(k, v)).size()
    }

    pub fn push(&mut self, k: &'k Key, v: &Val) {
        *self = self.with(&k.bytes, leaf_entry_size(k, v));
    }

    /// The prefix length the page stores.
    pub fn prefix_len(&self) -> usize {
        if self.inline == 0 { 0 } else { self.plen }
    }

    pub fn size(&self) -> usize {
        let p = self.prefix_len();
        p + self.full - p * self.inline
    }
}

/// [`Node::size`] of a leaf holding `entries`.
pub fn leaf_size(entries: &[(Key, Val)]) -> usize {
    owned_leaf_shape(entries).0
}

/// `(size, inline keys, prefix length)` of a leaf holding `entries`, in
/// one pass over them (merges and copy-on-write size every leaf they touch).
fn owned_leaf_shape(entries: &[(Key, Val)]) -> (usize, usize, usize) {
    let (full, inline) = entries.iter().fold((0, 0), |(f, i), (k, v)| {
        (
            f + leaf_entry_size(k, v),
            i + usize::from(k.bytes.len() <= KEY_INLINE_MAX),
        )
    });
    let p = leaf_prefix_len(entries, inline);
    (p + full - p * inline, inline, p)
}

/// The page prefix of a leaf (`inline`: how many of its keys are inline).
pub(crate) fn leaf_prefix_len(entries: &[(Key, Val)], inline: usize) -> usize {
    match (entries.first(), entries.last()) {
        (Some((a, _)), Some((b, _))) if inline > 0 => common_prefix(
            SplitKey::whole(&a.bytes),
            SplitKey::whole(&b.bytes),
            MAX_LEAF_PREFIX,
        ),
        _ => 0,
    }
}

/// The first bytes of a key that decide a leaf prefix: the whole inline
/// key, or a long key's stub prefix (256 bytes, more than `MAX_LEAF_PREFIX`).
fn head(k: KeyRef<'_>) -> SplitKey<'_> {
    match k {
        KeyRef::Full(s) => s,
        KeyRef::Stub { prefix, .. } => SplitKey::whole(prefix),
    }
}

/// A leaf's `(size, inline keys, prefix length)` (see [`LeafRun`]).
pub fn leaf_shape(n: &NodeRef<'_>) -> Result<(usize, usize, usize)> {
    match n {
        NodeRef::Page(p) if p.leaf => {
            let (size, inline) = p.shape()?;
            Ok((size, inline, p.prefix().len()))
        }
        NodeRef::Owned(Node::Leaf(e)) => Ok(owned_leaf_shape(e)),
        _ => Err(StorageError::corrupted(0, "leaf shape of a branch")),
    }
}

/// Bytes of the leaf holding the entries of leaf `a` followed by those of
/// leaf `b` (keys of `a` below keys of `b`): the merged leaf's prefix is the
/// common prefix of `a`'s first and `b`'s last key, at most both leaves'
/// own, so the merged size can exceed the sum of the two sizes.
pub fn merged_leaf_size(a: &NodeRef<'_>, b: &NodeRef<'_>) -> Result<usize> {
    let (sa, ia, pa) = leaf_shape(a)?;
    let (sb, ib, pb) = leaf_shape(b)?;
    // Sizes without any prefix: size = p + full - p * inline.
    let full = sa - pa + pa * ia + sb - pb + pb * ib;
    let inline = ia + ib;
    if a.is_empty() {
        return Ok(sb);
    }
    if b.is_empty() {
        return Ok(sa);
    }
    if inline == 0 {
        return Ok(full);
    }

    let first = a.key(0)?;
    let last = b.key(b.len() - 1)?;
    let p = common_prefix(head(first), head(last), MAX_LEAF_PREFIX);
    Ok(p + full - p * inline)
}

/// Cuts leaf entries (key order) into consecutive pieces of about `target`
/// page bytes each, none over `NODE_CAP`.
pub fn cut_leaf(mut entries: Vec<(Key, Val)>, target: usize) -> Vec<Vec<(Key, Val)>> {
    let mut cuts = Vec::new();
    let mut run = LeafRun::default();
    for (i, (k, v)) in entries.iter().enumerate() {
        if run.n > 0 && (run.size_with(k, v) > NODE_CAP || run.size() >= target) {
            cuts.push(i);
            run = LeafRun::default();
        }
        run.push(k, v);
    }
    let mut out = Vec::with_capacity(cuts.len() + 1);
    for &c in cuts.iter().rev() {
        out.push(entries.split_off(c));
    }
    out.push(entries);
    out.reverse();
    out
}

/// Index splitting leaf entries (at least two, key order) into two
/// non-empty runs that each fit a page, with the larger run as small as
/// possible; `None` when no cut fits.
pub fn balanced_leaf_cut(entries: &[(Key, Val)]) -> Option<usize> {
    let n = entries.len();
    // Prefix sums of whole entry sizes and inline-key counts.
    let mut full = Vec::with_capacity(n + 1);
    let mut inline = Vec::with_capacity(n + 1);
    full.push(0usize);
    inline.push(0usize);
    for (k, v) in entries {
        full.push(full[full.len() - 1] + leaf_entry_size(k, v));
        inline.push(inline[inline.len() - 1] + usize::from(k.bytes.len() <= KEY_INLINE_MAX));
    }
    let size = |from: usize, to: usize| -> usize {
        let inl = inline[to] - inline[from];
        let f = full[to] - full[from];
        if inl == 0 {
            return f;
        }
        let p = common_prefix(
            SplitKey::whole(&entries[from].0.bytes),
            SplitKey::whole(&entries[to - 1].0.bytes),
            MAX_LEAF_PREFIX,
        );
        p + f - p * inl
    };
    let mut best: Option<(usize, usize)> = None;
    for at in 1..n {
        let (l, r) = (size(0, at), size(at, n));
        let worst = l.max(r);
        if l <= NODE_CAP && r <= NODE_CAP && best.is_none_or(|b| worst < b.0) {
            best = Some((worst, at));
        }
    }
    best.map(|b| b.1)
}
