//! Keys read from leaf pages without copying them (format 5).
//!
//! A leaf page stores the longest common prefix of its keys once and each
//! entry only its key's suffix (`node.rs`), so an inline key read from a page
//! is two borrowed slices: the page's prefix and the entry's suffix, both with
//! the page's lifetime. [`SplitKey`] is that pair, with the comparisons the
//! readers need; [`PageKey`] adds the owned form of a long key read from its
//! chain. Nothing here allocates except [`SplitKey::to_vec`] and
//! [`PageKey::Owned`] (long keys, as before format 5).

use std::cmp::Ordering;

/// Longest leaf prefix: one byte in the page header, and shorter than a long
/// key's stub prefix (`KEY_PREFIX_BYTES` = 256), so a stub alone tells
/// whether its key starts with the page's prefix.
pub const MAX_LEAF_PREFIX: usize = 255;

/// A key as `pre ++ suf`, both borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub struct SplitKey<'a> {
    pub pre: &'a [u8],
    pub suf: &'a [u8],
}

impl<'a> SplitKey<'a> {
    /// A contiguous key.
    pub fn whole(b: &'a [u8]) -> SplitKey<'a> {
        SplitKey { pre: &[], suf: b }
    }

    pub fn len(&self) -> usize {
        self.pre.len() + self.suf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key as one slice when one of its parts is empty.
    #[inline]
    pub fn contiguous(&self) -> Option<&'a [u8]> {
        if self.pre.is_empty() {
            Some(self.suf)
        } else if self.suf.is_empty() {
            Some(self.pre)
        } else {
            None
        }
    }

    /// Byte `i`, if any.
    #[inline]
    pub fn get(&self, i: usize) -> Option<u8> {
        match i.checked_sub(self.pre.len()) {
            None => Some(self.pre[i]),
            Some(j) => self.suf.get(j).copied(),
        }
    }

    /// The first `n` bytes and the rest (`n <= len()`).
    pub fn split_at(&self, n: usize) -> (SplitKey<'a>, SplitKey<'a>) {
        if n <= self.pre.len() {
            let (a, b) = self.pre.split_at(n);
            (
                SplitKey { pre: a, suf: &[] },
                SplitKey {
                    pre: b,
                    suf: self.suf,
                },
            )
        } else {
            let (a, b) = self.suf.split_at(n - self.pre.len());
            (
                SplitKey {
                    pre: self.pre,
                    suf: a,
                },
                SplitKey::whole(b),
            )
        }
    }

    /// Bytes `[from, to)` (`from <= to <= len()`).
    pub fn slice(&self, from: usize, to: usize) -> SplitKey<'a> {
        self.split_at(to).0.split_at(from).1
    }

    /// Index of the first zero byte at or after `from`.
    pub fn find_zero(&self, from: usize) -> Option<usize> {
        let p = self.pre.len();
        if let Some(i) = self
            .pre
            .get(from..)
            .and_then(|b| b.iter().position(|&x| x == 0))
        {
            return Some(from + i);
        }
        let s = from.saturating_sub(p);
        let i = self.suf.get(s..)?.iter().position(|&x| x == 0)?;
        Some(p + s + i)
    }

    /// Copies bytes `[from, from + out.len())` into `out` (in range).
    pub fn copy_to(&self, from: usize, out: &mut [u8]) {
        let part = self.slice(from, from + out.len());
        let (a, b) = out.split_at_mut(part.pre.len());
        a.copy_from_slice(part.pre);
        b.copy_from_slice(part.suf);
    }

    /// Key order.
    #[inline]
    pub fn cmp_key(&self, other: &SplitKey<'_>) -> Ordering {
        // Two keys of the same leaf share its prefix slice: compare suffixes.
        if std::ptr::eq(self.pre, other.pre) {
            return self.suf.cmp(other.suf);
        }
        self.cmp_key_parts(other)
    }

    /// [`SplitKey::cmp_key`] of keys split differently.
    fn cmp_key_parts(&self, other: &SplitKey<'_>) -> Ordering {
        let (mut a0, mut a1, mut b0, mut b1) = (self.pre, self.suf, other.pre, other.suf);
        loop {
            if a0.is_empty() {
                if a1.is_empty() {
                    return if b0.is_empty() && b1.is_empty() {
                        Ordering::Equal
                    } else {
                        Ordering::Less
                    };
                }
                (a0, a1) = (a1, &[]);
                continue;
            }
            if b0.is_empty() {
                if b1.is_empty() {
                    return Ordering::Greater;
                }
                (b0, b1) = (b1, &[]);
                continue;
            }
            let n = a0.len().min(b0.len());
            match a0[..n].cmp(&b0[..n]) {
                Ordering::Equal => (a0, b0) = (&a0[n..], &b0[n..]),
                o => return o,
            }
        }
    }

    /// Order against a contiguous key.
    #[inline]
    pub fn cmp_bytes(&self, key: &[u8]) -> Ordering {
        let p = self.pre.len();
        if p > key.len() {
            return match self.pre[..key.len()].cmp(key) {
                Ordering::Equal => Ordering::Greater,
                o => o,
            };
        }
        match self.pre.cmp(&key[..p]) {
            Ordering::Equal => self.suf.cmp(&key[p..]),
            o => o,
        }
    }

    pub fn eq_key(&self, other: &SplitKey<'_>) -> bool {
        self.len() == other.len() && self.cmp_key(other) == Ordering::Equal
    }

    pub fn starts_with(&self, p: &[u8]) -> bool {
        if p.len() <= self.pre.len() {
            self.pre.starts_with(p)
        } else {
            p.starts_with(self.pre) && self.suf.starts_with(&p[self.pre.len()..])
        }
    }

    /// Appends the key to `out`.
    #[inline]
    pub fn extend_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.pre);
        out.extend_from_slice(self.suf);
    }

    #[inline]
    pub fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.extend_into(&mut v);
        v
    }

    /// The key as one slice: borrowed when contiguous, else copied into
    /// `scratch` (reused by the caller: no allocation per key once it has
    /// grown to the longest key).
    #[inline]
    pub fn bytes_in<'s>(&self, scratch: &'s mut Vec<u8>) -> &'s [u8]
    where
        'a: 's,
    {
        match self.contiguous() {
            Some(b) => b,
            None => {
                scratch.clear();
                self.extend_into(scratch);
                scratch
            }
        }
    }
}

/// A whole key found by a reader: borrowed parts of a page (inline keys),
/// or owned bytes of a long key read from its chain.
#[derive(Clone, Debug)]
pub enum PageKey<'a> {
    Borrowed(SplitKey<'a>),
    Owned(Vec<u8>),
}

impl<'a> PageKey<'a> {
    pub fn from_slice(b: &'a [u8]) -> PageKey<'a> {
        PageKey::Borrowed(SplitKey::whole(b))
    }

    #[inline]
    pub fn parts(&self) -> SplitKey<'_> {
        match self {
            PageKey::Borrowed(s) => *s,
            PageKey::Owned(v) => SplitKey::whole(v),
        }
    }

    /// The first `n` bytes (`n <= len`).
    pub fn truncated(self, n: usize) -> PageKey<'a> {
        match self {
            PageKey::Borrowed(s) => PageKey::Borrowed(s.split_at(n).0),
            PageKey::Owned(mut v) => {
                v.truncate(n);
                PageKey::Owned(v)
            }
        }
    }
}

impl PartialEq for PageKey<'_> {
    #[inline]
    fn eq(&self, other: &PageKey<'_>) -> bool {
        match (self, other) {
            // Keys of the same leaf (a scan's common case): the suffixes.
            (PageKey::Borrowed(a), PageKey::Borrowed(b)) if std::ptr::eq(a.pre, b.pre) => {
                a.suf == b.suf
            }
            _ => self.parts().eq_key(&other.parts()),
        }
    }
}

/// Length of the common prefix of `a` and `b`, at most `cap`.
pub fn common_prefix(a: SplitKey<'_>, b: SplitKey<'_>, cap: usize) -> usize {
    let n = a.len().min(b.len()).min(cap);
    if let (Some(x), Some(y)) = (a.contiguous(), b.contiguous()) {
        return common_len(&x[..n], &y[..n]);
    }
    (0..n).take_while(|&i| a.get(i) == b.get(i)).count()
}

/// Length of the common prefix of two slices, compared 8 bytes at a time
/// (leaf sizing computes a prefix for every leaf the writer changes).
#[inline]
pub fn common_len(x: &[u8], y: &[u8]) -> usize {
    let n = x.len().min(y.len());
    let mut i = 0;
    while i + 8 <= n {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&x[i..i + 8]);
        b.copy_from_slice(&y[i..i + 8]);
        // Little-endian: the first differing byte is the lowest set byte.
        let d = u64::from_le_bytes(a) ^ u64::from_le_bytes(b);
        if d != 0 {
            return i + (d.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + x[i..n]
        .iter()
        .zip(&y[i..n])
        .take_while(|(p, q)| p == q)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keys_compare_like_their_bytes() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"ab".to_vec(),
            b"abc".to_vec(),
            b"abd".to_vec(),
            b"b".to_vec(),
            vec![0],
            vec![0, 0],
            vec![0xFF; 5],
        ];
        for a in &keys {
            for b in &keys {
                for i in 0..=a.len() {
                    let sa = SplitKey {
                        pre: &a[..i],
                        suf: &a[i..],
                    };
                    assert_eq!(sa.cmp_bytes(b), a.cmp(b), "{a:?} @{i} vs {b:?}");
                    assert_eq!(sa.starts_with(b), a.starts_with(b));
                    assert_eq!(sa.to_vec(), *a);
                    for j in 0..=b.len() {
                        let sb = SplitKey {
                            pre: &b[..j],
                            suf: &b[j..],
                        };
                        assert_eq!(sa.cmp_key(&sb), a.cmp(b));
                        assert_eq!(sa.eq_key(&sb), a == b);
                        let n = a.iter().zip(b).take_while(|(x, y)| x == y).count();
                        assert_eq!(common_prefix(sa, sb, 2), n.min(2));
                        assert_eq!(common_len(a, b), n);
                    }
                    for n in 0..=a.len() {
                        let (l, r) = sa.split_at(n);
                        assert_eq!((l.to_vec(), r.to_vec()), (a[..n].to_vec(), a[n..].to_vec()));
                    }
                }
            }
        }
    }

    #[test]
    fn common_len_finds_the_first_difference_at_any_position() {
        let a: Vec<u8> = (0..40u8).collect();
        assert_eq!(common_len(&a, &a), 40);
        assert_eq!(common_len(&a, &a[..17]), 17);
        for at in 0..40 {
            let mut b = a.clone();
            b[at] ^= 0x80;
            assert_eq!(common_len(&a, &b), at, "difference at {at}");
            assert_eq!(common_len(&b[..at + 1], &a), at);
        }
    }
}
