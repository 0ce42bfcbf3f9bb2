//! Page geometry, page header, checksums and the meta page.
//!
//! Every page starts with a 16-byte header:
//! `[crc32c u32 over bytes 4..PAGE][type u8][reserved u8][count u16][link u64]`.

use crate::error::{Result, StorageError};

pub const PAGE_SIZE: usize = 4096;
pub const HEADER: usize = 16;
/// Page ids 0 and 1 are the two meta pages.
pub const FIRST_DATA_PAGE: u64 = 2;
/// On-disk format version byte, stored in the meta pages. Version 5: leaf
/// key prefixes (header byte 5 of a leaf page: the length of the common
/// prefix of its keys, stored once after the slots; entries hold suffixes).
/// Version 4: range
/// tombstones (the `d` table, counted by `Meta::range_tombs`). Version 3:
/// compact MVCC record headers (flags and varints; version 2 had a fixed
/// 25-byte header). Version 2: long keys as stubs with key chains (version 1
/// stored keys inline only). Other versions are refused with
/// `StorageError::UnsupportedFormat`.
pub const FORMAT_VERSION: u8 = 5;
pub const MAGIC: &[u8; 4] = b"CKVS";

pub const TYPE_LEAF: u8 = 1;
pub const TYPE_BRANCH: u8 = 2;
pub const TYPE_OVERFLOW: u8 = 3;
pub const TYPE_FREE_CHUNK: u8 = 4;
pub const TYPE_META: u8 = 5;

/// Page ids per free-list chunk page.
pub const FREE_CHUNK_CAP: usize = (PAGE_SIZE - HEADER) / 8;
/// Payload bytes per overflow page.
pub const OVERFLOW_CAP: usize = PAGE_SIZE - HEADER;

pub type PageBuf = Box<[u8; PAGE_SIZE]>;

pub fn new_page() -> PageBuf {
    Box::new([0u8; PAGE_SIZE])
}

pub fn write_header(page: &mut [u8], ty: u8, count: u16, link: u64) {
    page[4] = ty;
    page[5] = 0;
    page[6..8].copy_from_slice(&count.to_le_bytes());
    page[8..16].copy_from_slice(&link.to_le_bytes());
}

/// Fills in the checksum; call last.
pub fn seal(page: &mut [u8]) {
    let crc = crate::checksum::crc32c(&page[4..]);
    page[0..4].copy_from_slice(&crc.to_le_bytes());
}

/// Checks length, checksum and type; returns `(count, link)`.
pub fn check(page: &[u8], id: u64, ty: u8) -> Result<(u16, u64)> {
    if page.len() != PAGE_SIZE {
        return Err(StorageError::corrupted(id, "short page"));
    }
    let stored = u32::from_le_bytes([page[0], page[1], page[2], page[3]]);
    if crate::checksum::crc32c(&page[4..]) != stored {
        return Err(StorageError::corrupted(
            id,
            format!("page checksum mismatch (type {})", page[4]),
        ));
    }
    check_unsummed(page, id, ty)
}

/// Like [`check`] without the checksum (hot read path when disabled).
pub fn check_unsummed(page: &[u8], id: u64, ty: u8) -> Result<(u16, u64)> {
    if page.len() != PAGE_SIZE {
        return Err(StorageError::corrupted(id, "short page"));
    }
    if page[4] != ty {
        return Err(StorageError::corrupted(
            id,
            format!("page type {} where {} expected", page[4], ty),
        ));
    }
    Ok((u16::from_le_bytes([page[6], page[7]]), le_u64(page, 8)))
}

pub fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The committed state a meta page points at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub txid: u64,
    /// Tree root page, 0 when the tree is empty.
    pub root: u64,
    /// High-water mark: pages `[0, page_count)` are in use or free.
    pub page_count: u64,
    /// Head of the chain of reusable free pages (0 = none).
    pub free_head: u64,
    /// Head of the chain holding pages that were still pinned by readers
    /// at commit time (reusable after a restart).
    pub pending_head: u64,
    pub current_revision: i64,
    pub compacted_revision: i64,
    /// Physical compaction has processed every revision up to this one.
    pub compact_done_revision: i64,
    pub applied_index: u64,
    /// Number of page ids held in the reusable chain.
    pub free_chain_count: u64,
    /// Number of range tombstones (`d` table entries, `mvcc/range_del.rs`);
    /// readers skip the table when it is 0. Always 0 in version 2 and 3.
    pub range_tombs: u64,
}

impl Meta {
    pub fn encode(&self) -> PageBuf {
        let mut p = new_page();
        write_header(&mut p[..], TYPE_META, 0, 0);
        p[16..20].copy_from_slice(MAGIC);
        p[20] = FORMAT_VERSION;
        p[24..28].copy_from_slice(&(PAGE_SIZE as u32).to_le_bytes());
        let fields: [u64; 11] = [
            self.txid,
            self.root,
            self.page_count,
            self.free_head,
            self.pending_head,
            self.current_revision as u64,
            self.compacted_revision as u64,
            self.compact_done_revision as u64,
            self.applied_index,
            self.free_chain_count,
            self.range_tombs,
        ];
        for (i, f) in fields.iter().enumerate() {
            let at = 32 + i * 8;
            p[at..at + 8].copy_from_slice(&f.to_le_bytes());
        }
        seal(&mut p[..]);
        p
    }

    pub fn decode(page: &[u8], id: u64) -> Result<Meta> {
        Meta::decode_versions(page, id, &[FORMAT_VERSION])
    }

    /// Like [`Meta::decode`], accepting any of `versions` (the offline
    /// inspector also reads version 2 files, whose meta page is the same).
    pub fn decode_versions(page: &[u8], id: u64, versions: &[u8]) -> Result<Meta> {
        check(page, id, TYPE_META)?;
        if &page[16..20] != MAGIC {
            return Err(StorageError::corrupted(id, "bad magic"));
        }
        if !versions.contains(&page[20]) {
            return Err(StorageError::UnsupportedFormat {
                found: page[20],
                supported: FORMAT_VERSION,
            });
        }
        if u32::from_le_bytes([page[24], page[25], page[26], page[27]]) != PAGE_SIZE as u32 {
            return Err(StorageError::corrupted(id, "page size mismatch"));
        }
        let f = |i: usize| le_u64(page, 32 + i * 8);
        let m = Meta {
            txid: f(0),
            root: f(1),
            page_count: f(2),
            free_head: f(3),
            pending_head: f(4),
            current_revision: f(5) as i64,
            compacted_revision: f(6) as i64,
            compact_done_revision: f(7) as i64,
            applied_index: f(8),
            free_chain_count: f(9),
            // Zero in older versions (the field was unused page padding).
            range_tombs: f(10),
        };
        let in_range = |p: u64| p == 0 || (p >= FIRST_DATA_PAGE && p < m.page_count);
        if m.page_count < FIRST_DATA_PAGE
            || !in_range(m.root)
            || !in_range(m.free_head)
            || !in_range(m.pending_head)
            || m.current_revision < 1
            || m.compacted_revision > m.current_revision
        {
            return Err(StorageError::corrupted(id, "meta fields out of range"));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_roundtrip_and_corruption() {
        let m = Meta {
            txid: 7,
            root: 5,
            page_count: 9,
            free_head: 3,
            pending_head: 0,
            current_revision: 11,
            compacted_revision: 4,
            compact_done_revision: 2,
            applied_index: 99,
            free_chain_count: 0,
            range_tombs: 3,
        };
        let p = m.encode();
        assert_eq!(Meta::decode(&p[..], 0).unwrap(), m);
        let mut bad = p.clone();
        bad[40] ^= 1;
        assert!(matches!(
            Meta::decode(&bad[..], 0),
            Err(StorageError::Corrupted { .. })
        ));
    }

    #[test]
    fn older_format_versions_are_refused() {
        let m = Meta {
            txid: 1,
            page_count: 2,
            current_revision: 1,
            ..Meta::default()
        };
        for old in [1, 2, 3, 4] {
            let mut p = m.encode();
            p[20] = old;
            seal(&mut p[..]);
            match Meta::decode(&p[..], 0) {
                Err(StorageError::UnsupportedFormat {
                    found,
                    supported: FORMAT_VERSION,
                }) if found == old => {}
                other => panic!("version {old} accepted: {other:?}"),
            }
        }
    }
}
