//! B+ tree node encoding: owned nodes for the writer, zero-copy page views
//! for readers.
//!
//! Leaf page: header, `count` u16 slot offsets, entries
//! `[klen u16][kind u8: 0 inline, 1 overflow][vlen u32][key][value | first overflow page u64]`.
//! Branch page: header, slots, entries `[klen u16][child u64][key]`; the key
//! of entry 0 is empty (it covers everything below entry 1's key).

use crate::error::{Result, StorageError};
use crate::page::{self, HEADER, PAGE_SIZE, PageBuf, TYPE_BRANCH, TYPE_LEAF};

/// Largest tree key (MVCC keys are escaped user keys plus 17 bytes).
pub const MAX_TREE_KEY: usize = 1940;
/// A value is stored inline when `klen + vlen` is at most this.
pub const INLINE_LIMIT: usize = 1990;
const LEAF_FIXED: usize = 2 + 7;
const BRANCH_FIXED: usize = 2 + 10;
pub const NODE_CAP: usize = PAGE_SIZE - HEADER;

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
    Leaf(Vec<(Vec<u8>, Val)>),
    Branch(Vec<(Vec<u8>, u64)>),
}

pub fn leaf_entry_size(key: &[u8], val: &Val) -> usize {
    LEAF_FIXED
        + key.len()
        + match val {
            Val::Inline(v) => v.len(),
            Val::Overflow { .. } => 8,
        }
}

pub fn branch_entry_size(key: &[u8]) -> usize {
    BRANCH_FIXED + key.len()
}

impl Node {
    pub fn len(&self) -> usize {
        match self {
            Node::Leaf(e) => e.len(),
            Node::Branch(e) => e.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the entries need (excluding the page header).
    pub fn size(&self) -> usize {
        match self {
            Node::Leaf(e) => e.iter().map(|(k, v)| leaf_entry_size(k, v)).sum(),
            Node::Branch(e) => e.iter().map(|(k, _)| branch_entry_size(k)).sum(),
        }
    }

    pub fn encode(&self) -> PageBuf {
        let mut p = page::new_page();
        let n = self.len();
        let mut off = HEADER + 2 * n;
        match self {
            Node::Leaf(entries) => {
                page::write_header(&mut p[..], TYPE_LEAF, n as u16, 0);
                for (i, (k, v)) in entries.iter().enumerate() {
                    p[HEADER + 2 * i..HEADER + 2 * i + 2]
                        .copy_from_slice(&(off as u16).to_le_bytes());
                    p[off..off + 2].copy_from_slice(&(k.len() as u16).to_le_bytes());
                    let (kind, vlen) = match v {
                        Val::Inline(v) => (0u8, v.len() as u32),
                        Val::Overflow { len, .. } => (1u8, *len),
                    };
                    p[off + 2] = kind;
                    p[off + 3..off + 7].copy_from_slice(&vlen.to_le_bytes());
                    off += 7;
                    p[off..off + k.len()].copy_from_slice(k);
                    off += k.len();
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
                    p[HEADER + 2 * i..HEADER + 2 * i + 2]
                        .copy_from_slice(&(off as u16).to_le_bytes());
                    p[off..off + 2].copy_from_slice(&(k.len() as u16).to_le_bytes());
                    p[off + 2..off + 10].copy_from_slice(&child.to_le_bytes());
                    off += 10;
                    p[off..off + k.len()].copy_from_slice(k);
                    off += k.len();
                }
            }
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
        if count == 0 || HEADER + 2 * count > PAGE_SIZE {
            return Err(corrupt(id, "bad entry count"));
        }
        Ok(PageView {
            bytes,
            id,
            leaf,
            count,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    fn entry(&self, i: usize) -> Result<usize> {
        if i >= self.count {
            return Err(corrupt(self.id, "entry index out of range"));
        }
        let s = HEADER + 2 * i;
        let off = u16::from_le_bytes([self.bytes[s], self.bytes[s + 1]]) as usize;
        let fixed = if self.leaf { 7 } else { 10 };
        if off < HEADER + 2 * self.count || off + fixed > PAGE_SIZE {
            return Err(corrupt(self.id, "slot offset out of range"));
        }
        Ok(off)
    }

    fn get(&self, from: usize, len: usize) -> Result<&'a [u8]> {
        from.checked_add(len)
            .and_then(|end| self.bytes.get(from..end))
            .ok_or_else(|| corrupt(self.id, "entry overruns page"))
    }

    pub fn key(&self, i: usize) -> Result<&'a [u8]> {
        let off = self.entry(i)?;
        let klen = u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]]) as usize;
        let fixed = if self.leaf { 7 } else { 10 };
        self.get(off + fixed, klen)
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
        let off = self.entry(i)?;
        let klen = u16::from_le_bytes([self.bytes[off], self.bytes[off + 1]]) as usize;
        let kind = self.bytes[off + 2];
        let vlen = u32::from_le_bytes([
            self.bytes[off + 3],
            self.bytes[off + 4],
            self.bytes[off + 5],
            self.bytes[off + 6],
        ]);
        let at = off + 7 + klen;
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

    /// Bytes the entries use, as [`Node::size`] would report after
    /// decoding (merge decisions without decoding).
    pub fn used_bytes(&self) -> Result<usize> {
        let mut n = 0;
        for i in 0..self.count {
            let k = self.key(i)?;
            n += if self.leaf {
                LEAF_FIXED
                    + k.len()
                    + match self.val(i)? {
                        ValRef::Inline(v) => v.len(),
                        ValRef::Overflow { .. } => 8,
                    }
            } else {
                branch_entry_size(k)
            };
        }
        Ok(n)
    }

    pub fn to_node(self) -> Result<Node> {
        if self.leaf {
            let mut v = Vec::with_capacity(self.count);
            for i in 0..self.count {
                v.push((self.key(i)?.to_vec(), self.val(i)?.to_owned_val()));
            }
            Ok(Node::Leaf(v))
        } else {
            let mut v = Vec::with_capacity(self.count);
            for i in 0..self.count {
                v.push((self.key(i)?.to_vec(), self.child(i)?));
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
    pub fn key(&self, i: usize) -> Result<&'a [u8]> {
        match self {
            NodeRef::Page(p) => p.key(i),
            NodeRef::Owned(Node::Leaf(e)) => Ok(&e[i].0),
            NodeRef::Owned(Node::Branch(e)) => Ok(&e[i].0),
        }
    }
    pub fn child(&self, i: usize) -> Result<u64> {
        match self {
            NodeRef::Page(p) => p.child(i),
            NodeRef::Owned(Node::Branch(e)) => Ok(e[i].1),
            NodeRef::Owned(Node::Leaf(_)) => Err(corrupt(0, "child of a leaf")),
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
            NodeRef::Owned(Node::Branch(_)) => Err(corrupt(0, "value of a branch")),
        }
    }

    /// Branch: index of the child covering `key`. Leaf: first index with
    /// entry key >= `key` (may be `len()`).
    pub fn search(&self, key: &[u8]) -> Result<usize> {
        let (mut lo, mut hi) = (0usize, self.len());
        // first index with entry key > key (branch) / >= key (leaf)
        let leaf = self.is_leaf();
        while lo < hi {
            let mid = (lo + hi) / 2;
            let k = self.key(mid)?;
            let go_right = if leaf { k < key } else { k <= key };
            if go_right {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(if leaf { lo } else { lo.saturating_sub(1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_roundtrip() {
        let n = Node::Leaf(vec![
            (b"a".to_vec(), Val::Inline(b"1".to_vec())),
            (b"b".to_vec(), Val::Overflow { page: 9, len: 5000 }),
        ]);
        let p = n.encode();
        let v = PageView::new(&p[..], 3, true).unwrap();
        assert_eq!(v.key(1).unwrap(), b"b");
        assert!(matches!(
            v.val(1).unwrap(),
            ValRef::Overflow { page: 9, len: 5000 }
        ));
        assert_eq!(NodeRef::Page(v).search(b"b").unwrap(), 1);
        assert_eq!(NodeRef::Page(v).search(b"c").unwrap(), 2);
    }

    #[test]
    fn used_bytes_matches_size() {
        let leaf = Node::Leaf(vec![
            (b"a".to_vec(), Val::Inline(b"123".to_vec())),
            (b"bb".to_vec(), Val::Overflow { page: 9, len: 5000 }),
        ]);
        let branch = Node::Branch(vec![(vec![], 5), (b"m".to_vec(), 6)]);
        for n in [leaf, branch] {
            let p = n.encode();
            let v = PageView::new(&p[..], 3, true).unwrap();
            assert_eq!(v.used_bytes().unwrap(), n.size());
        }
    }

    #[test]
    fn garbage_pages_do_not_panic() {
        let mut p = Node::Branch(vec![(vec![], 5), (b"m".to_vec(), 6)]).encode();
        for i in 0..PAGE_SIZE {
            p[i] = p[i].wrapping_mul(31).wrapping_add(i as u8);
            if let Ok(v) = PageView::new(&p[..], 1, false) {
                for j in 0..v.len() {
                    let _ = v.key(j);
                    let _ = v.child(j);
                    let _ = v.val(j);
                }
            }
        }
    }
}
