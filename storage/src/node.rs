//! B+ tree node encoding: owned nodes for the writer, zero-copy page views
//! for readers.
//!
//! Leaf page (format 5): header (byte 5: prefix length P), `count` slots,
//! the P prefix bytes, entries
//! `[klen u16][kind u8: 0 inline, 1 overflow][vlen u32][key suffix | stub][value | first overflow page u64]`.
//! The prefix is the common prefix of the leaf's first and last keys (so of
//! all its keys, as they are sorted), at most [`MAX_LEAF_PREFIX`] bytes, and
//! 0 when the leaf has no inline key; an inline entry stores only the bytes
//! after it (`klen` = suffix length), a long key's stub is unchanged (its
//! 256-byte prefix covers the page prefix).
//! Branch page: header (byte 5 zero), slots, entries `[klen u16][child u64][key | stub]`;
//! the key of entry 0 is empty (it covers everything below entry 1's key).
//!
//! Slot ([`SLOT`] bytes): `[entry offset u16][head u64 BE]`, where the head is
//! the first 8 bytes of the key after the page prefix, zero-padded. Binary search compares heads inside
//! the contiguous slot array and reads an entry's key only when the heads tie
//! (different heads order keys exactly as the keys do), so a probe costs one
//! cache line of the slot array instead of a miss on a random entry.
//!
//! A key of at most [`KEY_INLINE_MAX`] bytes is stored inline (`klen` is its
//! length). A longer key has `klen = KEY_STUB` and a fixed-size stub
//! `[first KEY_PREFIX_BYTES bytes][total length u32][first chain page u64]`;
//! the chain (overflow pages, like value chains) holds the whole key. Readers
//! compare against the prefix and load the chain only when the prefix ties.

use crate::error::{Result, StorageError};
use crate::page::{self, HEADER, PAGE_SIZE, PageBuf, TYPE_BRANCH, TYPE_LEAF};
pub use crate::splitkey::{MAX_LEAF_PREFIX, SplitKey};
use crate::tree::{self, TreeRead};

/// Longest key stored inline in a page; longer keys get a stub and a chain.
/// Large enough that real Kubernetes keys (well under 1 KiB) stay inline.
pub const KEY_INLINE_MAX: usize = 1024;
/// Bytes of a long key kept inline in its stub (comparison fast path).
pub const KEY_PREFIX_BYTES: usize = 256;
/// `klen` value marking a stub entry.
pub const KEY_STUB: u16 = u16::MAX;
/// On-page size of a stub: prefix, total length u32, chain page u64.
pub const STUB_BYTES: usize = KEY_PREFIX_BYTES + 4 + 8;
/// Largest tree key: an MVCC key entry of a maximal user key whose bytes are
/// all 0x00 (escaped to two bytes each) plus table byte, terminator and
/// revision. Longer lengths read from disk are corruption.
pub const MAX_TREE_KEY: usize = 2 * crate::MAX_KEY_BYTES + 64;
/// A value is stored inline when on-page key bytes + `vlen` is at most this.
pub const INLINE_LIMIT: usize = 1990;
/// Bytes of one slot: entry offset u16 + key head u64.
pub const SLOT: usize = 10;
pub(crate) const LEAF_FIXED: usize = SLOT + 7;
pub(crate) const BRANCH_FIXED: usize = SLOT + 10;
pub const NODE_CAP: usize = PAGE_SIZE - HEADER;
/// Cache lines [`PageView::prefetch_entry`] asks for: an entry's header,
/// a key of up to ~100 bytes and the record header after it.
pub const ENTRY_PREFETCH_LINES: usize = 2;
/// How many entries ahead of the one it reads a scan prefetches (the
/// first touch of each entry's lines is a cache miss otherwise; see
/// docs/storage-format.md, "Range scans").
pub const ENTRY_PREFETCH_AHEAD: usize = 3;
/// Tied slot heads [`PageView::head_bounds`] steps over one by one before
/// it binary-searches the end of the run.
const TIE_STEPS: usize = 4;

const _: () = assert!(KEY_INLINE_MAX < KEY_STUB as usize && KEY_PREFIX_BYTES <= KEY_INLINE_MAX);
// Every inline leaf entry (<= LEAF_FIXED + INLINE_LIMIT + 8) and branch entry
// fits twice in a page, so byte-based splits always produce fitting pieces.
const _: () = assert!(2 * (LEAF_FIXED + INLINE_LIMIT + 8) <= NODE_CAP);
const _: () = assert!(2 * (BRANCH_FIXED + KEY_INLINE_MAX) <= NODE_CAP);
const _: () = assert!(MAX_TREE_KEY <= u32::MAX as usize);
// The prefix length fits the header byte, and a stub's prefix covers it.
const _: () = assert!(MAX_LEAF_PREFIX <= u8::MAX as usize && MAX_LEAF_PREFIX < KEY_PREFIX_BYTES);

/// The first 8 bytes of `key`, zero-padded, as a big-endian number: for
/// two keys with different heads, head order is key order.
#[inline]
pub fn key_head(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Writes slot `i`: the entry offset and the key head.
fn write_slot(p: &mut [u8], i: usize, off: usize, key: &[u8]) {
    let s = HEADER + SLOT * i;
    p[s..s + 2].copy_from_slice(&(off as u16).to_le_bytes());
    p[s + 2..s + 10].copy_from_slice(&key_head(key).to_be_bytes());
}

/// On-page bytes of a key of `len` bytes (inline bytes or a stub).
pub fn key_page_len(len: usize) -> usize {
    if len > KEY_INLINE_MAX {
        STUB_BYTES
    } else {
        len
    }
}

/// Keys up to this many bytes are held without a heap allocation.
const SMALL_KEY: usize = 30;

/// Key bytes held by the writer. The writer decodes a whole page on every
/// copy-on-write, so short keys (truncated separators, revision-table keys)
/// avoid one allocation each.
#[derive(Clone)]
pub enum KeyBuf {
    Small(u8, [u8; SMALL_KEY]),
    Heap(Vec<u8>),
}

impl KeyBuf {
    pub fn from_slice(b: &[u8]) -> KeyBuf {
        if b.len() <= SMALL_KEY {
            let mut a = [0u8; SMALL_KEY];
            a[..b.len()].copy_from_slice(b);
            KeyBuf::Small(b.len() as u8, a)
        } else {
            KeyBuf::Heap(b.to_vec())
        }
    }

    pub fn from_vec(v: Vec<u8>) -> KeyBuf {
        if v.len() <= SMALL_KEY {
            KeyBuf::from_slice(&v)
        } else {
            KeyBuf::Heap(v)
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            KeyBuf::Small(n, a) => &a[..*n as usize],
            KeyBuf::Heap(v) => v,
        }
    }

    /// From a key read off a page (one allocation at most, as `from_slice`).
    pub fn from_split(k: SplitKey<'_>) -> KeyBuf {
        match k.contiguous() {
            Some(b) => KeyBuf::from_slice(b),
            None if k.len() <= SMALL_KEY => {
                let mut a = [0u8; SMALL_KEY];
                k.copy_to(0, &mut a[..k.len()]);
                KeyBuf::Small(k.len() as u8, a)
            }
            None => KeyBuf::Heap(k.to_vec()),
        }
    }
}

impl Default for KeyBuf {
    fn default() -> KeyBuf {
        KeyBuf::Small(0, [0; SMALL_KEY])
    }
}

impl std::ops::Deref for KeyBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for KeyBuf {
    fn eq(&self, other: &KeyBuf) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for KeyBuf {}

impl std::fmt::Debug for KeyBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

/// A key held by the writer: the full bytes, plus the first page of its
/// chain when it is longer than [`KEY_INLINE_MAX`] (0 otherwise).
/// Invariant for stored entries: `chain != 0` iff `bytes.len() > KEY_INLINE_MAX`.
/// The entry holding a `Key` owns its chain (see `txn.rs`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Key {
    pub bytes: KeyBuf,
    pub chain: u64,
}

#[cfg(test)]
impl Key {
    /// A key that needs no chain (at most `KEY_INLINE_MAX` bytes).
    pub fn inline(bytes: Vec<u8>) -> Key {
        debug_assert!(bytes.len() <= KEY_INLINE_MAX);
        Key {
            bytes: KeyBuf::from_vec(bytes),
            chain: 0,
        }
    }

    pub fn with_chain(bytes: Vec<u8>, chain: u64) -> Key {
        Key {
            bytes: KeyBuf::from_vec(bytes),
            chain,
        }
    }
}

/// A key as found on a page: the whole key (a leaf's prefix and the
/// entry's suffix), or a long key's stub.
#[derive(Clone, Copy, Debug)]
pub enum KeyRef<'a> {
    Full(SplitKey<'a>),
    Stub {
        /// The first `KEY_PREFIX_BYTES` bytes.
        prefix: &'a [u8],
        /// Total key length (> `KEY_INLINE_MAX`).
        len: usize,
        chain: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val {
    Inline(Vec<u8>),
    Overflow { page: u64, len: u32 },
}

#[derive(Clone, Copy, Debug)]
pub enum ValRef<'a> {
    Inline(&'a [u8]),
    Overflow { page: u64, len: u32 },
}

impl ValRef<'_> {
    pub fn to_owned_val(self) -> Val {
        match self {
            ValRef::Inline(v) => Val::Inline(v.to_vec()),
            ValRef::Overflow { page, len } => Val::Overflow { page, len },
        }
    }
}

#[derive(Clone, Debug)]
pub enum Node {
    Leaf(Vec<(Key, Val)>),
    Branch(Vec<(Key, u64)>),
    /// A branch copied byte for byte from its validated page by
    /// copy-on-write, without decoding: the common change to a branch is one
    /// child pointer, patched in place ([`raw_set_child`]). It is decoded
    /// into `Branch` (`TreeTxn::materialize`) before any other change, so
    /// wide branches (truncated separators) stay cheap to copy.
    /// `size`: as [`Node::size`] of the decoded node.
    RawBranch {
        page: PageBuf,
        size: usize,
    },
}

/// Points entry `i` of a raw branch page at `child` (slot validated when the
/// page was copied).
pub fn raw_set_child(page: &mut PageBuf, i: usize, child: u64) {
    let count = u16::from_le_bytes([page[6], page[7]]) as usize;
    assert!(
        i < count,
        "raw branch entry {i} of {count}: invariant broken"
    );
    let s = HEADER + SLOT * i;
    let off = u16::from_le_bytes([page[s], page[s + 1]]) as usize;
    page[off + 2..off + 10].copy_from_slice(&child.to_le_bytes());
}

/// Bytes of a leaf entry without a page prefix (the key stored whole).
pub fn leaf_entry_size(key: &Key, val: &Val) -> usize {
    LEAF_FIXED
        + key_page_len(key.bytes.len())
        + match val {
            Val::Inline(v) => v.len(),
            Val::Overflow { .. } => 8,
        }
}

pub fn branch_entry_size(key: &Key) -> usize {
    BRANCH_FIXED + key_page_len(key.bytes.len())
}

/// Writes `[klen u16]` at `p[at..]` and the key bytes after the page's
/// `plen` prefix bytes, or the stub of the whole key, at `p[kat..]`;
/// returns the on-page key size.
fn encode_key(p: &mut [u8], at: usize, kat: usize, k: &Key, plen: usize) -> usize {
    let len = k.bytes.len();
    if len > KEY_INLINE_MAX {
        assert!(k.chain != 0, "long key without chain: invariant broken");
        p[at..at + 2].copy_from_slice(&KEY_STUB.to_le_bytes());
        p[kat..kat + KEY_PREFIX_BYTES].copy_from_slice(&k.bytes[..KEY_PREFIX_BYTES]);
        let mut o = kat + KEY_PREFIX_BYTES;
        p[o..o + 4].copy_from_slice(&(len as u32).to_le_bytes());
        o += 4;
        p[o..o + 8].copy_from_slice(&k.chain.to_le_bytes());
        STUB_BYTES
    } else {
        let suffix = &k.bytes[plen..];
        p[at..at + 2].copy_from_slice(&(suffix.len() as u16).to_le_bytes());
        p[kat..kat + suffix.len()].copy_from_slice(suffix);
        suffix.len()
    }
}

impl Node {
    pub fn len(&self) -> usize {
        match self {
            Node::Leaf(e) => e.len(),
            Node::Branch(e) => e.len(),
            Node::RawBranch { page, .. } => u16::from_le_bytes([page[6], page[7]]) as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries need (excluding the page header).
    pub fn size(&self) -> usize {
        match self {
            Node::Leaf(e) => crate::leaf_fill::leaf_size(e),
            Node::Branch(e) => e.iter().map(|(k, _)| branch_entry_size(k)).sum(),
            Node::RawBranch { size, .. } => *size,
        }
    }

    pub fn encode(&self) -> PageBuf {
        if let Node::RawBranch { page, .. } = self {
            let mut p = page.clone();
            page::seal(&mut p[..]);
            return p;
        }
        let mut p = page::new_page();
        let n = self.len();
        let mut off = HEADER + SLOT * n;
        match self {
            Node::Leaf(entries) => {
                page::write_header(&mut p[..], TYPE_LEAF, n as u16, 0);
                let inline = entries
                    .iter()
                    .filter(|(k, _)| k.bytes.len() <= KEY_INLINE_MAX)
                    .count();
                let plen = crate::leaf_fill::leaf_prefix_len(entries, inline);
                p[5] = plen as u8;
                if let Some((first, _)) = entries.first() {
                    p[off..off + plen].copy_from_slice(&first.bytes[..plen]);
                }
                off += plen;
                for (i, (k, v)) in entries.iter().enumerate() {
                    write_slot(&mut p[..], i, off, &k.bytes[plen..]);
                    let (kind, vlen) = match v {
                        Val::Inline(v) => (0u8, v.len() as u32),
                        Val::Overflow { len, .. } => (1u8, *len),
                    };
                    p[off + 2] = kind;
                    p[off + 3..off + 7].copy_from_slice(&vlen.to_le_bytes());
                    off += 7 + encode_key(&mut p[..], off, off + 7, k, plen);
                    match v {
                        Val::Inline(v) => {
                            p[off..off + v.len()].copy_from_slice(v);
                            off += v.len();
                        }
                        Val::Overflow { page, .. } => {
                            p[off..off + 8].copy_from_slice(&page.to_le_bytes());
                            off += 8;
                        }
                    }
                }
            }
            Node::Branch(entries) => {
                page::write_header(&mut p[..], TYPE_BRANCH, n as u16, 0);
                for (i, (k, child)) in entries.iter().enumerate() {
                    write_slot(&mut p[..], i, off, &k.bytes);
                    p[off + 2..off + 10].copy_from_slice(&child.to_le_bytes());
                    off += 10 + encode_key(&mut p[..], off, off + 10, k, 0);
                }
            }
            Node::RawBranch { .. } => unreachable!("returned above"),
        }
        assert!(
            off <= PAGE_SIZE,
            "node overflowed its page: invariant size() <= NODE_CAP broken"
        );
        page::seal(&mut p[..]);
        p
    }
}

/// A validated, zero-copy view of a leaf or branch page.
#[derive(Clone, Copy)]
pub struct PageView<'a> {
    bytes: &'a [u8],
    pub id: u64,
    pub leaf: bool,
    count: usize,
    /// Leaf prefix: the common first bytes of every key (empty in branches).
    prefix: &'a [u8],
}

fn corrupt(id: u64, what: &str) -> StorageError {
    StorageError::corrupted(id, what.to_string())
}

impl<'a> PageView<'a> {
    pub fn new(bytes: &'a [u8], id: u64, verify_checksum: bool) -> Result<PageView<'a>> {
        if bytes.len() != PAGE_SIZE {
            return Err(corrupt(id, "short page"));
        }
        let ty = bytes[4];
        let leaf = match ty {
            TYPE_LEAF => true,
            TYPE_BRANCH => false,
            _ => return Err(corrupt(id, "not a tree page")),
        };
        let (count, _) = if verify_checksum {
            page::check(bytes, id, ty)?
        } else {
            page::check_unsummed(bytes, id, ty)?
        };
        let count = count as usize;
        if count == 0 || HEADER + SLOT * count > PAGE_SIZE {
            return Err(corrupt(id, "bad entry count"));
        }
        let plen = bytes[5] as usize;
        if !leaf && plen != 0 {
            return Err(corrupt(id, "branch with a key prefix"));
        }
        let at = HEADER + SLOT * count;
        let prefix = bytes
            .get(at..at + plen)
            .ok_or_else(|| corrupt(id, "key prefix overruns page"))?;
        Ok(PageView {
            bytes,
            id,
            leaf,
            count,
            prefix,
        })
    }

    /// The leaf's key prefix (empty for branches).
    #[inline]
    pub fn prefix(&self) -> &'a [u8] {
        self.prefix
    }

    /// Longest inline suffix: inline keys stay within `KEY_INLINE_MAX` whole.
    #[inline]
    fn suffix_max(&self) -> usize {
        KEY_INLINE_MAX - self.prefix.len()
    }

    pub fn len(&self) -> usize {
        self.count
    }

    fn fixed(&self) -> usize {
        if self.leaf { 7 } else { 10 }
    }

    #[inline]
    fn entry(&self, i: usize) -> Result<usize> {
        if i >= self.count {
            return Err(corrupt(self.id, "entry index out of range"));
        }
        let s = HEADER + SLOT * i;
        let off = u16::from_le_bytes([self.bytes[s], self.bytes[s + 1]]) as usize;
        if off < HEADER + SLOT * self.count + self.prefix.len() || off + self.fixed() > PAGE_SIZE {
            return Err(corrupt(self.id, "slot offset out of range"));
        }
        Ok(off)
    }

    #[inline]
    fn get(&self, from: usize, len: usize) -> Result<&'a [u8]> {
        from.checked_add(len)
            .and_then(|end| self.bytes.get(from..end))
            .ok_or_else(|| corrupt(self.id, "entry overruns page"))
    }

    /// Entry `i`: its offset, its key, and where the bytes after the key start.
    fn parse(&self, i: usize) -> Result<(usize, KeyRef<'a>, usize)> {
        let off = self.entry(i)?;
        let at = off + self.fixed();
        let klen = u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]]);
        if klen != KEY_STUB {
            if klen as usize > self.suffix_max() {
                return Err(corrupt(self.id, "inline key too long"));
            }
            let k = self.get(at, klen as usize)?;
            let key = SplitKey {
                pre: self.prefix,
                suf: k,
            };
            return Ok((off, KeyRef::Full(key), at + k.len()));
        }
        let stub = self.get(at, STUB_BYTES)?;
        let len = u32::from_le_bytes([
            stub[KEY_PREFIX_BYTES],
            stub[KEY_PREFIX_BYTES + 1],
            stub[KEY_PREFIX_BYTES + 2],
            stub[KEY_PREFIX_BYTES + 3],
        ]) as usize;
        let chain = page::le_u64(stub, KEY_PREFIX_BYTES + 4);
        if len <= KEY_INLINE_MAX || len > MAX_TREE_KEY || chain == 0 {
            return Err(corrupt(self.id, "bad long-key stub"));
        }
        let k = KeyRef::Stub {
            prefix: &stub[..KEY_PREFIX_BYTES],
            len,
            chain,
        };
        Ok((off, k, at + STUB_BYTES))
    }

    /// The key of entry `i` (the readers' binary-search hot path: inline
    /// keys take the short branch).
    #[inline]
    pub fn key(&self, i: usize) -> Result<KeyRef<'a>> {
        let off = self.entry(i)?;
        let klen = u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]]) as usize;
        if klen <= self.suffix_max() {
            return Ok(KeyRef::Full(SplitKey {
                pre: self.prefix,
                suf: self.get(off + self.fixed(), klen)?,
            }));
        }
        Ok(self.parse(i)?.1)
    }

    /// `(lo, hi)`: the slots whose head is below `head` are `[0, lo)`, those
    /// whose head equals it `[lo, hi)`. Heads never decrease in key order
    /// (see the module docs), so entries before `lo` have smaller keys and
    /// entries from `hi` on larger keys than any key with this head. Reads
    /// only the slot array (validated by [`PageView::new`]); a page whose
    /// heads are out of order (corruption the checker reports) gives some
    /// bounds, never a panic.
    #[inline]
    pub fn head_bounds(&self, head: u64) -> (usize, usize) {
        let slots = &self.bytes[HEADER..HEADER + SLOT * self.count];
        let at = |i: usize| -> u64 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&slots[SLOT * i + 2..SLOT * i + SLOT]);
            u64::from_be_bytes(b)
        };
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if at(mid) < head {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // Usually no entry or one ties (distinct heads): step over the
        // first ties one by one, binary-search only a longer run.
        let mut end = lo;
        while end < self.count && end < lo + TIE_STEPS {
            if at(end) != head {
                return (lo, end);
            }
            end += 1;
        }
        let mut hi = self.count;
        while end < hi {
            let mid = (end + hi) / 2;
            if at(mid) == head {
                end = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo, end)
    }

    /// The head stored in slot `i` (see the module docs); `None` when `i`
    /// is out of range.
    #[inline]
    pub fn head(&self, i: usize) -> Option<u64> {
        if i >= self.count {
            return None;
        }
        let s = HEADER + SLOT * i + 2;
        let b: [u8; 8] = self.bytes.get(s..s + 8)?.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }

    pub fn child(&self, i: usize) -> Result<u64> {
        if self.leaf {
            return Err(corrupt(self.id, "child of a leaf"));
        }
        let off = self.entry(i)?;
        Ok(page::le_u64(self.bytes, off + 2))
    }

    pub fn val(&self, i: usize) -> Result<ValRef<'a>> {
        if !self.leaf {
            return Err(corrupt(self.id, "value of a branch"));
        }
        let (off, _, at) = self.parse(i)?;
        self.val_at(off, at)
    }

    /// Hints that entry `i` is read soon: asks the CPU for the first
    /// [`ENTRY_PREFETCH_LINES`] cache lines at its offset (the entry header,
    /// the key and, after a short key, the record header). Nothing for an
    /// index out of range.
    #[inline]
    pub fn prefetch_entry(&self, i: usize) {
        if i >= self.count {
            return;
        }
        let s = HEADER + SLOT * i;
        let off = u16::from_le_bytes([self.bytes[s], self.bytes[s + 1]]) as usize;
        if let Some(b) = self.bytes.get(off..) {
            crate::mapping::prefetch_lines(b, ENTRY_PREFETCH_LINES);
        }
    }

    /// Key and value of leaf entry `i` from one parse of the entry (a
    /// scan's per-entry read).
    #[inline]
    pub fn kv(&self, i: usize) -> Result<(KeyRef<'a>, ValRef<'a>)> {
        if !self.leaf {
            return Err(corrupt(self.id, "value of a branch"));
        }
        let (off, k, at) = self.parse(i)?;
        Ok((k, self.val_at(off, at)?))
    }

    /// The value of the leaf entry at `off` whose key ends at `at`.
    fn val_at(&self, off: usize, at: usize) -> Result<ValRef<'a>> {
        let kind = self.bytes[off + 2];
        let vlen = u32::from_le_bytes([
            self.bytes[off + 3],
            self.bytes[off + 4],
            self.bytes[off + 5],
            self.bytes[off + 6],
        ]);
        match kind {
            0 => Ok(ValRef::Inline(self.get(at, vlen as usize)?)),
            1 => {
                let b = self.get(at, 8)?;
                Ok(ValRef::Overflow {
                    page: page::le_u64(b, 0),
                    len: vlen,
                })
            }
            _ => Err(corrupt(self.id, "bad value kind")),
        }
    }

    /// A branch page copied without decoding, for the writer
    /// (validates every entry's extent first).
    pub fn to_raw_branch(self) -> Result<Node> {
        if self.leaf {
            return Err(corrupt(self.id, "raw copy of a leaf"));
        }
        let size = self.size()?;
        let mut page = page::new_page();
        page.copy_from_slice(self.bytes);
        Ok(Node::RawBranch { page, size })
    }

    /// Bytes the entries need, as [`Node::size`] of the decoded node, without
    /// loading long keys.
    pub fn size(&self) -> Result<usize> {
        Ok(self.shape()?.0)
    }

    /// `(size, inline keys)`: [`PageView::size`] and how many keys are not
    /// stubs (what a merge needs to recompute the prefix saving).
    pub fn shape(&self) -> Result<(usize, usize)> {
        let mut total = self.prefix.len();
        let mut inline = 0;
        for i in 0..self.count {
            // One parse per entry (merges size both leaves with this).
            let (off, key, at) = self.parse(i)?;
            let (k, stub) = match key {
                KeyRef::Full(s) => (s.suf.len(), false),
                KeyRef::Stub { .. } => (STUB_BYTES, true),
            };
            inline += usize::from(!stub);
            total += if self.leaf {
                LEAF_FIXED
                    + k
                    + match self.val_at(off, at)? {
                        ValRef::Inline(v) => v.len(),
                        ValRef::Overflow { .. } => 8,
                    }
            } else {
                BRANCH_FIXED + k
            };
        }
        Ok((total, inline))
    }

    /// Decodes the page for the writer, loading the chains of long keys.
    pub fn to_node<T: TreeRead + ?Sized>(self, t: &T) -> Result<Node> {
        // One parse per entry: this is the writer's copy-on-write hot path.
        let key = |k: KeyRef<'a>| -> Result<Key> {
            Ok(match k {
                KeyRef::Full(b) => Key {
                    bytes: KeyBuf::from_split(b),
                    chain: 0,
                },
                KeyRef::Stub { chain, .. } => Key {
                    bytes: KeyBuf::from_vec(tree::load_key(t, k)?.into_owned()),
                    chain,
                },
            })
        };
        if self.leaf {
            let mut v = Vec::with_capacity(self.count);
            for i in 0..self.count {
                let (off, k, at) = self.parse(i)?;
                v.push((key(k)?, self.val_at(off, at)?.to_owned_val()));
            }
            Ok(Node::Leaf(v))
        } else {
            let mut v = Vec::with_capacity(self.count);
            for i in 0..self.count {
                let (off, k, _) = self.parse(i)?;
                v.push((key(k)?, page::le_u64(self.bytes, off + 2)));
            }
            Ok(Node::Branch(v))
        }
    }
}

/// Either a clean page or a dirty in-memory node, read uniformly.
#[derive(Clone, Copy)]
pub enum NodeRef<'a> {
    Page(PageView<'a>),
    Owned(&'a Node),
}

impl<'a> NodeRef<'a> {
    pub fn is_leaf(&self) -> bool {
        match self {
            NodeRef::Page(p) => p.leaf,
            NodeRef::Owned(n) => matches!(n, Node::Leaf(_)),
        }
    }
    pub fn len(&self) -> usize {
        match self {
            NodeRef::Page(p) => p.len(),
            NodeRef::Owned(n) => n.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The key of entry `i`: owned nodes always hold whole keys.
    pub fn key(&self, i: usize) -> Result<KeyRef<'a>> {
        match self {
            NodeRef::Page(p) => p.key(i),
            NodeRef::Owned(Node::Leaf(e)) => Ok(KeyRef::Full(SplitKey::whole(&e[i].0.bytes))),
            NodeRef::Owned(Node::Branch(e)) => Ok(KeyRef::Full(SplitKey::whole(&e[i].0.bytes))),
            NodeRef::Owned(Node::RawBranch { page, .. }) => {
                PageView::new(&page[..], 0, false)?.key(i)
            }
        }
    }
    /// The key chain of entry `i` as `(first page, key length)`, if it has one.
    pub fn key_chain(&self, i: usize) -> Result<Option<(u64, usize)>> {
        let k = match self {
            NodeRef::Page(p) => {
                return Ok(match p.key(i)? {
                    KeyRef::Full(_) => None,
                    KeyRef::Stub { len, chain, .. } => Some((chain, len)),
                });
            }
            NodeRef::Owned(Node::Leaf(e)) => &e[i].0,
            NodeRef::Owned(Node::Branch(e)) => &e[i].0,
            NodeRef::Owned(Node::RawBranch { page, .. }) => {
                return NodeRef::Page(PageView::new(&page[..], 0, false)?).key_chain(i);
            }
        };
        Ok((k.chain != 0).then_some((k.chain, k.bytes.len())))
    }
    pub fn child(&self, i: usize) -> Result<u64> {
        match self {
            NodeRef::Page(p) => p.child(i),
            NodeRef::Owned(Node::Branch(e)) => Ok(e[i].1),
            NodeRef::Owned(Node::RawBranch { page, .. }) => {
                PageView::new(&page[..], 0, false)?.child(i)
            }
            NodeRef::Owned(Node::Leaf(_)) => Err(corrupt(0, "child of a leaf")),
        }
    }
    /// [`PageView::prefetch_entry`]; nothing for owned nodes (in memory).
    #[inline]
    pub fn prefetch_entry(&self, i: usize) {
        if let NodeRef::Page(p) = self {
            p.prefetch_entry(i);
        }
    }
    /// Key and value of leaf entry `i` ([`PageView::kv`] for pages).
    #[inline]
    pub fn kv(&self, i: usize) -> Result<(KeyRef<'a>, ValRef<'a>)> {
        match self {
            NodeRef::Page(p) => p.kv(i),
            NodeRef::Owned(_) => Ok((self.key(i)?, self.val(i)?)),
        }
    }
    pub fn val(&self, i: usize) -> Result<ValRef<'a>> {
        match self {
            NodeRef::Page(p) => p.val(i),
            NodeRef::Owned(Node::Leaf(e)) => Ok(match &e[i].1 {
                Val::Inline(v) => ValRef::Inline(v),
                Val::Overflow { page, len } => ValRef::Overflow {
                    page: *page,
                    len: *len,
                },
            }),
            NodeRef::Owned(Node::Branch(_) | Node::RawBranch { .. }) => {
                Err(corrupt(0, "value of a branch"))
            }
        }
    }
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
