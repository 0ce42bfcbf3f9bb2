//! Offline byte budget of a store file (`corekv inspect`, like `bbolt
//! stats`): where every page and every byte of the last durable commit goes.
//!
//! Reads the file read-only with `pread` (no mapping, no lock, no writes),
//! so it is safe on a copy or on a stopped member's file; on a running
//! member it sees the last durable commit (non-durable commits live only in
//! the writer's memory and the WAL). Every page below the high-water mark is
//! attributed to exactly one category; what is left over is reported as
//! `unaccounted` (0 in a consistent file).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::error::{Result, StorageError};
use crate::freelist;
use crate::mvcc::keys::{self, T_KEY, T_META, T_REV};
use crate::node::{KeyRef, LEAF_FIXED, NODE_CAP, PageView, SLOT, ValRef};
use crate::page::{self, FIRST_DATA_PAGE, Meta, OVERFLOW_CAP, PAGE_SIZE, TYPE_OVERFLOW};
use crate::tree::MAX_DEPTH;

/// Bytes and pages of one table (`k`, `r` or `m`: first byte of the tree key).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableBudget {
    /// Leaf pages whose first key belongs to this table (at most one leaf on
    /// each table boundary holds keys of two tables).
    pub leaf_pages: u64,
    pub entries: u64,
    /// Tree-key bytes on the page (an inline key counts its suffix after the
    /// leaf's prefix, a long key its stub).
    pub key_bytes: u64,
    /// Leaf key prefix bytes stored (once per leaf page, format 5).
    pub prefix_bytes: u64,
    /// Tree-key bytes those entries represent (whole inline keys, stubs):
    /// `key_bytes + prefix_bytes` short of this is what prefixes saved.
    pub key_bytes_represented: u64,
    /// User value bytes (for `k`: the record without its header; for `r`:
    /// the user key it points at), inline or in overflow pages.
    pub value_bytes: u64,
    /// User-key bytes (unescaped, without table byte, terminator and
    /// revision; `k` only): with `value_bytes`, the raw payload.
    pub user_key_bytes: u64,
    /// MVCC record header bytes (`k` only).
    pub record_header_bytes: u64,
    /// Slot array bytes (offset + key head per entry).
    pub slot_bytes: u64,
    /// Per-entry header bytes (lengths and value kind).
    pub entry_header_bytes: u64,
    /// Bytes the table's leaf entries use on their pages (slots, entry
    /// headers, keys or stubs, inline values or chain pointers).
    pub used_bytes: u64,
    /// Overflow pages holding values of this table.
    pub value_overflow_pages: u64,
    /// Overflow pages holding long keys (key chains) of this table.
    pub key_chain_pages: u64,
}

impl TableBudget {
    /// Used bytes over the usable bytes of the table's leaf pages.
    pub fn fill(&self) -> f64 {
        if self.leaf_pages == 0 {
            return 0.0;
        }
        self.used_bytes as f64 / (self.leaf_pages * NODE_CAP as u64) as f64
    }
}

/// Pages and fill of one tree level (0 = root).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LevelBudget {
    pub pages: u64,
    pub entries: u64,
    /// Bytes the entries use (slots, entry headers, keys, inline values).
    pub used_bytes: u64,
}

impl LevelBudget {
    /// Used bytes over the pages' usable bytes (page minus page header).
    pub fn fill(&self) -> f64 {
        if self.pages == 0 {
            return 0.0;
        }
        self.used_bytes as f64 / (self.pages * NODE_CAP as u64) as f64
    }
}

/// The byte budget of one store file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Budget {
    pub file_bytes: u64,
    pub format_version: u8,
    pub txid: u64,
    pub current_revision: i64,
    pub compacted_revision: i64,
    /// Range tombstones the meta page counts (the `d` table, format 4).
    pub range_tombstones: u64,
    /// High-water mark: pages `[0, page_count)` are in use or free.
    pub page_count: u64,
    pub meta_pages: u64,
    pub k: TableBudget,
    pub r: TableBudget,
    pub m: TableBudget,
    /// Keys with another first byte: the `d` table (range tombstones).
    pub other: TableBudget,
    /// Branch pages (all tables).
    pub branch_pages: u64,
    /// Branch-separator key chains.
    pub branch_key_chain_pages: u64,
    /// Per level, root first; the last level is the leaves.
    pub levels: Vec<LevelBudget>,
    /// Free pages reusable at once (the persisted reusable chain).
    pub free_reusable_pages: u64,
    /// Free pages that were pinned when the last durable commit was written
    /// (by a reader's snapshot or by the previous durable meta): reusable
    /// after the next open.
    pub free_pinned_pages: u64,
    /// Pages holding the two free-list chains themselves.
    pub freelist_chunk_pages: u64,
    /// Pages below the high-water mark not reached by any walk (0 unless
    /// the file is inconsistent).
    pub unaccounted_pages: u64,
    /// File bytes beyond the high-water mark (preallocated growth).
    pub tail_bytes: u64,
}

impl Budget {
    /// Raw payload: user keys and values of every version in the `k` table.
    pub fn payload_bytes(&self) -> u64 {
        self.k.user_key_bytes + self.k.value_bytes
    }

    /// Pages in use (high-water mark minus free pages).
    pub fn used_pages(&self) -> u64 {
        self.page_count - self.free_reusable_pages - self.free_pinned_pages - self.unaccounted_pages
    }

    pub fn to_text(&self) -> String {
        let mb = |p: u64| p as f64 * PAGE_SIZE as f64 / 1e6;
        let mut s = String::new();
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "file {:.1} MB, format {}, txid {}, revision {} (compacted {}), range tombstones {}",
            self.file_bytes as f64 / 1e6,
            self.format_version,
            self.txid,
            self.current_revision,
            self.compacted_revision,
            self.range_tombstones
        ));
        line(format!(
            "pages: high-water {} ({:.1} MB), in use {} ({:.1} MB), tail beyond high-water {:.1} MB",
            self.page_count,
            mb(self.page_count),
            self.used_pages(),
            mb(self.used_pages()),
            self.tail_bytes as f64 / 1e6
        ));
        line(format!(
            "{:<6} {:>10} {:>6} {:>10} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}",
            "table",
            "leaf pg",
            "fill",
            "entries",
            "key B",
            "value B",
            "rec hdr B",
            "slot B",
            "entry hdr",
            "ovfl pg",
            "keychain"
        ));
        for (name, t) in [
            ("k", &self.k),
            ("r", &self.r),
            ("m", &self.m),
            ("other", &self.other),
        ] {
            line(format!(
                "{:<6} {:>10} {:>5.1}% {:>10} {:>12} {:>12} {:>12} {:>10} {:>10} {:>10} {:>10}",
                name,
                t.leaf_pages,
                100.0 * t.fill(),
                t.entries,
                t.key_bytes,
                t.value_bytes,
                t.record_header_bytes,
                t.slot_bytes,
                t.entry_header_bytes,
                t.value_overflow_pages,
                t.key_chain_pages
            ));
        }
        for (name, t) in [("k", &self.k), ("r", &self.r), ("m", &self.m)] {
            if t.entries == 0 {
                continue;
            }
            line(format!(
                "{name} keys: key prefix bytes stored {} + suffix/stub bytes {} for {} key bytes represented \
                 (saved {:.1} MB, {:.1} B per entry)",
                t.prefix_bytes,
                t.key_bytes,
                t.key_bytes_represented,
                t.key_bytes_represented
                    .saturating_sub(t.key_bytes + t.prefix_bytes) as f64
                    / 1e6,
                t.key_bytes_represented
                    .saturating_sub(t.key_bytes + t.prefix_bytes) as f64
                    / t.entries as f64
            ));
        }
        line(format!(
            "branch pages {} ({:.1} MB), separator key chains {}",
            self.branch_pages,
            mb(self.branch_pages),
            self.branch_key_chain_pages
        ));
        for (i, l) in self.levels.iter().enumerate() {
            line(format!(
                "level {i}: {} pages, {} entries, fill {:.1}%",
                l.pages,
                l.entries,
                100.0 * l.fill()
            ));
        }
        line(format!(
            "meta pages {}; free: reusable {} ({:.1} MB), pinned at the last durable commit \
             (by readers or the previous durable meta; reusable after reopen) {} ({:.1} MB), \
             free-list chunk pages {}; unaccounted {}",
            self.meta_pages,
            self.free_reusable_pages,
            mb(self.free_reusable_pages),
            self.free_pinned_pages,
            mb(self.free_pinned_pages),
            self.freelist_chunk_pages,
            self.unaccounted_pages
        ));
        line(format!(
            "payload (user keys + values of every stored version) {:.1} MB; file / payload {:.2}x, in use / payload {:.2}x",
            self.payload_bytes() as f64 / 1e6,
            self.file_bytes as f64 / self.payload_bytes().max(1) as f64,
            (self.used_pages() * PAGE_SIZE as u64) as f64 / self.payload_bytes().max(1) as f64
        ));
        s
    }
}

/// Reads pages of the file with `pread`, checking ids against the high-water mark.
struct Reader<'p> {
    file: File,
    path: &'p Path,
    page_count: u64,
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Reader<'_> {
    fn page(&self, id: u64) -> Result<Vec<u8>> {
        if id < FIRST_DATA_PAGE || id >= self.page_count {
            return Err(StorageError::corrupted(id, "page id out of range"));
        }
        let mut buf = vec![0u8; PAGE_SIZE];
        self.file
            .read_exact_at(&mut buf, id * PAGE_SIZE as u64)
            .map_err(|e| io_err("inspect read", self.path, e))?;
        Ok(buf)
    }

    /// Pages of an overflow chain of `len` bytes starting at `first`, and the
    /// payload of its first page.
    fn chain(&self, first: u64, len: u64) -> Result<(u64, Vec<u8>)> {
        let pages = len.div_ceil(OVERFLOW_CAP as u64).max(1);
        let mut id = first;
        let mut head = Vec::new();
        for i in 0..pages {
            let p = self.page(id)?;
            let (count, next) = page::check(&p, id, TYPE_OVERFLOW)?;
            if i == 0 {
                head = p[page::HEADER..page::HEADER + (count as usize).min(OVERFLOW_CAP)].to_vec();
            }
            if (next == 0) != (i + 1 == pages) {
                return Err(StorageError::corrupted(id, "overflow chain length"));
            }
            id = next;
        }
        Ok((pages, head))
    }
}

/// Length of the user key inside a `k` tree key of format `version`
/// (version 2 used the stream's byte stuffing).
fn user_key_len(tree_key: &[u8], version: u8) -> u64 {
    let key = if version == 2 {
        keys::split_stream_key_entry(tree_key).map(|(k, _, _)| k)
    } else {
        keys::split_key_entry(tree_key).and_then(|(p, _, _)| keys::unescape_prefix(p))
    };
    key.map_or(0, |k| k.len() as u64)
}

/// Format versions the inspector reads: the current one and versions 2-4
/// (their leaves have no key prefix: header byte 5 is 0, which reads as an
/// empty prefix; version 2 records have the fixed 25-byte header), so a file
/// can be measured before an upgrade.
const READABLE_VERSIONS: &[u8] = &[2, 3, 4, page::FORMAT_VERSION];

/// Walks the file at `path` read-only and returns its byte budget.
pub fn inspect(path: &Path) -> Result<Budget> {
    let file = File::open(path).map_err(|e| io_err("inspect open", path, e))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| io_err("inspect stat", path, e))?
        .len();
    let mut best: Option<Meta> = None;
    let mut format_version = 0;
    for slot in 0..FIRST_DATA_PAGE {
        let mut buf = vec![0u8; PAGE_SIZE];
        if file
            .read_exact_at(&mut buf, slot * PAGE_SIZE as u64)
            .is_err()
        {
            continue;
        }
        match Meta::decode_versions(&buf, slot, READABLE_VERSIONS) {
            Ok(m) if best.is_none_or(|b| m.txid > b.txid) => {
                best = Some(m);
                format_version = buf[20];
            }
            Ok(_) => {}
            // A file of another format version gets that error, as on open.
            Err(e @ StorageError::UnsupportedFormat { .. }) => return Err(e),
            Err(_) => {}
        }
    }
    let meta = best.ok_or_else(|| StorageError::corrupted(0, "no valid meta page"))?;
    let r = Reader {
        file,
        path,
        page_count: meta.page_count,
    };
    let mut b = Budget {
        file_bytes,
        format_version,
        txid: meta.txid,
        current_revision: meta.current_revision,
        compacted_revision: meta.compacted_revision,
        range_tombstones: meta.range_tombs,
        page_count: meta.page_count,
        meta_pages: FIRST_DATA_PAGE,
        tail_bytes: file_bytes.saturating_sub(meta.page_count * PAGE_SIZE as u64),
        ..Budget::default()
    };
    let mut accounted = FIRST_DATA_PAGE;
    if meta.root != 0 {
        let mut stack = vec![(meta.root, 0usize)];
        while let Some((id, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(StorageError::corrupted(id, "tree too deep"));
            }
            let bytes = r.page(id)?;
            let p = PageView::new(&bytes, id, true)?;
            if b.levels.len() <= depth {
                b.levels.resize(depth + 1, LevelBudget::default());
            }
            let level = &mut b.levels[depth];
            level.pages += 1;
            level.entries += p.len() as u64;
            level.used_bytes += p.size()? as u64;
            accounted += 1;
            if !p.leaf {
                b.branch_pages += 1;
                for i in 0..p.len() {
                    if let KeyRef::Stub { len, .. } = p.key(i)? {
                        b.branch_key_chain_pages += (len as u64).div_ceil(OVERFLOW_CAP as u64);
                    }
                    stack.push((p.child(i)?, depth + 1));
                }
                continue;
            }
            for i in 0..p.len() {
                let key = p.key(i)?;
                let (first, on_page, chain_pages, key_bytes) = match key {
                    KeyRef::Full(k) => (k.get(0), k.suf.len(), 0, Some(k.to_vec())),
                    KeyRef::Stub { prefix, len, .. } => (
                        prefix.first().copied(),
                        crate::node::STUB_BYTES,
                        (len as u64).div_ceil(OVERFLOW_CAP as u64),
                        None,
                    ),
                };
                let t = match first {
                    Some(T_KEY) => &mut b.k,
                    Some(T_REV) => &mut b.r,
                    Some(T_META) => &mut b.m,
                    _ => &mut b.other,
                };
                if i == 0 {
                    t.leaf_pages += 1;
                    t.prefix_bytes += p.prefix().len() as u64;
                    t.used_bytes += p.prefix().len() as u64;
                }
                t.entries += 1;
                t.key_bytes += on_page as u64;
                t.key_bytes_represented += match &key_bytes {
                    Some(k) => k.len() as u64,
                    None => crate::node::STUB_BYTES as u64,
                };
                t.key_chain_pages += chain_pages;
                accounted += chain_pages;
                t.slot_bytes += SLOT as u64;
                t.entry_header_bytes += (LEAF_FIXED - SLOT) as u64;
                if first == Some(T_KEY) {
                    t.user_key_bytes += match key_bytes {
                        Some(ref k) => user_key_len(k, format_version),
                        // A long key: its chain length minus the table
                        // byte, terminator and revision (escapes ignored).
                        None => match key {
                            KeyRef::Stub { len, .. } => (len as u64).saturating_sub(19),
                            KeyRef::Full(_) => 0,
                        },
                    };
                }
                let (value_len, head) = match p.val(i)? {
                    ValRef::Inline(v) => {
                        t.used_bytes += (LEAF_FIXED + on_page + v.len()) as u64;
                        (v.len() as u64, v.to_vec())
                    }
                    ValRef::Overflow { page, len } => {
                        t.used_bytes += (LEAF_FIXED + on_page + 8) as u64;
                        let (pages, head) = r.chain(page, len as u64)?;
                        t.value_overflow_pages += pages;
                        accounted += pages;
                        (len as u64, head)
                    }
                };
                let header = if first == Some(T_KEY) {
                    let main = key_bytes
                        .as_deref()
                        .and_then(|k| keys::split_key_entry(k).ok())
                        .map_or(0, |(_, m, _)| m);
                    let decoded = if format_version == 2 {
                        // Version 2 stored the canonical 25-byte header.
                        keys::decode_stream_record(&head)
                    } else {
                        keys::decode_record(&head, main)
                    };
                    match decoded {
                        Ok((_, rest)) => (head.len() - rest.len()) as u64,
                        Err(_) => 0,
                    }
                } else {
                    0
                };
                t.record_header_bytes += header;
                t.value_bytes += value_len - header;
            }
        }
    }
    let read = |id: u64| -> Result<(Vec<u64>, Vec<u64>)> {
        let read_chunk = |c: u64| freelist::decode_chunk(&r.page(c)?, c, meta.page_count);
        freelist::FreeList::read_chain(id, &read_chunk, meta.page_count)
    };
    let (reusable, chunks) = read(meta.free_head)?;
    let (pinned, pchunks) = read(meta.pending_head)?;
    b.free_reusable_pages = reusable.len() as u64;
    b.free_pinned_pages = pinned.len() as u64;
    b.freelist_chunk_pages = (chunks.len() + pchunks.len()) as u64;
    accounted += b.free_reusable_pages + b.free_pinned_pages + b.freelist_chunk_pages;
    b.unaccounted_pages = meta.page_count.saturating_sub(accounted);
    Ok(b)
}

impl TableBudget {
    fn json(&self) -> String {
        format!(
            "{{\"leaf_pages\":{},\"fill\":{:.4},\"used_bytes\":{},\"entries\":{},\"key_bytes\":{},\"user_key_bytes\":{},\"value_bytes\":{},\
             \"record_header_bytes\":{},\"slot_bytes\":{},\"entry_header_bytes\":{},\
             \"value_overflow_pages\":{},\"key_chain_pages\":{},\"prefix_bytes\":{},\"key_bytes_represented\":{}}}",
            self.leaf_pages,
            self.fill(),
            self.used_bytes,
            self.entries,
            self.key_bytes,
            self.user_key_bytes,
            self.value_bytes,
            self.record_header_bytes,
            self.slot_bytes,
            self.entry_header_bytes,
            self.value_overflow_pages,
            self.key_chain_pages,
            self.prefix_bytes,
            self.key_bytes_represented
        )
    }
}

impl Budget {
    /// The budget as one JSON object (field names as in this struct; levels
    /// root first with their fill in [0, 1]).
    pub fn to_json(&self) -> String {
        let levels: Vec<String> = self
            .levels
            .iter()
            .map(|l| {
                format!(
                    "{{\"pages\":{},\"entries\":{},\"used_bytes\":{},\"fill\":{:.4}}}",
                    l.pages,
                    l.entries,
                    l.used_bytes,
                    l.fill()
                )
            })
            .collect();
        format!(
            "{{\"page_size\":{PAGE_SIZE},\"file_bytes\":{},\"format_version\":{},\"txid\":{},\
             \"current_revision\":{},\"compacted_revision\":{},\"range_tombstones\":{},\"page_count\":{},\"used_pages\":{},\
             \"meta_pages\":{},\"payload_bytes\":{},\"tables\":{{\"k\":{},\"r\":{},\"m\":{},\"other\":{}}},\
             \"branch_pages\":{},\"branch_key_chain_pages\":{},\"levels\":[{}],\
             \"free_reusable_pages\":{},\"free_pinned_pages\":{},\"freelist_chunk_pages\":{},\
             \"unaccounted_pages\":{},\"tail_bytes\":{}}}",
            self.file_bytes,
            self.format_version,
            self.txid,
            self.current_revision,
            self.compacted_revision,
            self.range_tombstones,
            self.page_count,
            self.used_pages(),
            self.meta_pages,
            self.payload_bytes(),
            self.k.json(),
            self.r.json(),
            self.m.json(),
            self.other.json(),
            self.branch_pages,
            self.branch_key_chain_pages,
            levels.join(","),
            self.free_reusable_pages,
            self.free_pinned_pages,
            self.freelist_chunk_pages,
            self.unaccounted_pages,
            self.tail_bytes
        )
    }
}
