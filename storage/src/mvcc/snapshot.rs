//! Consistent snapshot export and restore.
//!
//! Stream layout (little-endian):
//! ```text
//! header  "CKVSNAP\0" | version u8 = 1 | 7 reserved | revision i64 | compacted i64 | applied u64
//! entry   tag u8 (1 = key version, 2 = meta) | klen u32 | vlen u32 | tree key | tree value
//! trailer tag u8 = 0 | entries u64 | crc32c u32 of every byte before it
//! ```
//! Only versions a compaction at `compacted` keeps are written; revision
//! index entries are rebuilt on restore from the key versions at or above
//! `compacted` (the compacted state has none below it).

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::keys;
use super::store::{ReadView, Store, StoreOptions};
use super::types::SnapshotInfo;
use crate::backend::{Backend, FileBackend};
use crate::error::{Result, StorageError};
use crate::tree;

const MAGIC: &[u8; 8] = b"CKVSNAP\0";
const VERSION: u8 = 1;
const TAG_END: u8 = 0;
const TAG_KEY: u8 = 1;
const TAG_META: u8 = 2;
/// Largest entry accepted from a stream (bounds allocation on bad input).
const MAX_ENTRY_BYTES: u32 = 4 << 20;

struct CrcWriter<'a> {
    out: &'a mut dyn Write,
    crc: u32,
    bytes: u64,
}

impl CrcWriter<'_> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.crc = crate::checksum::crc32c_append(self.crc, b);
        self.bytes += b.len() as u64;
        self.out.write_all(b).map_err(|e| io("write snapshot", e))
    }
}

fn io(op: &'static str, source: std::io::Error) -> StorageError {
    StorageError::Io {
        op,
        path: "<snapshot stream>".into(),
        source,
    }
}

pub(crate) fn write_snapshot(view: &ReadView, out: &mut dyn Write) -> Result<SnapshotInfo> {
    let snap = view.snapshot();
    let (rev, compacted, applied) = (
        view.revision(),
        view.compacted_revision(),
        view.applied_index(),
    );
    let mut w = CrcWriter {
        out,
        crc: 0,
        bytes: 0,
    };
    let mut header = Vec::with_capacity(40);
    header.extend_from_slice(MAGIC);
    header.push(VERSION);
    header.extend_from_slice(&[0; 7]);
    header.extend_from_slice(&rev.to_le_bytes());
    header.extend_from_slice(&compacted.to_le_bytes());
    header.extend_from_slice(&applied.to_le_bytes());
    w.put(&header)?;
    let mut entries = 0u64;
    let mut emit = |w: &mut CrcWriter<'_>, tag: u8, k: &[u8], v: &[u8]| -> Result<()> {
        w.put(&[tag])?;
        w.put(&(k.len() as u32).to_le_bytes())?;
        w.put(&(v.len() as u32).to_le_bytes())?;
        w.put(k)?;
        w.put(v)?;
        entries += 1;
        Ok(())
    };
    // Key versions: per key, the newest version <= compacted unless it is a
    // tombstone, and every newer version.
    let mut group: Option<Vec<u8>> = None;
    let mut base: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut res = Ok(());
    // Range tombstones are exported as the per-key tombstones they stand
    // for: streams do not depend on how a delete was stored.
    let tombs = super::range_del::Tombs::load(snap)?;
    super::range_del::scan_logical(
        snap,
        &tombs,
        &[keys::T_KEY],
        Some(&[keys::T_KEY + 1]),
        |k, v| {
            let (prefix, main, _) = keys::split_key_entry(k)?;
            if group.as_deref() != Some(prefix) {
                if let Some((bk, bv)) = base.take() {
                    res = emit(&mut w, TAG_KEY, &bk, &bv);
                }
                group = Some(prefix.to_vec());
            }
            if res.is_err() {
                return Ok(false);
            }
            // Streams carry the canonical key and record encodings (see
            // `keys.rs`), independent of the file format.
            let loaded = tree::load_value(snap, v)?;
            let value = keys::record_to_stream(&loaded, main)?;
            let stream_key = keys::key_entry_to_stream(k)?;
            if main <= compacted {
                base = if keys::record_is_tombstone(&loaded)? {
                    None
                } else {
                    Some((stream_key, value))
                };
            } else {
                if let Some((bk, bv)) = base.take() {
                    emit(&mut w, TAG_KEY, &bk, &bv)?;
                }
                emit(&mut w, TAG_KEY, &stream_key, &value)?;
            }
            Ok(true)
        },
    )?;
    res?;
    if let Some((bk, bv)) = base.take() {
        emit(&mut w, TAG_KEY, &bk, &bv)?;
    }
    tree::scan(
        snap,
        &[keys::T_META],
        Some(&[keys::T_META + 1]),
        false,
        |k, v| {
            let value = tree::load_value(snap, v)?;
            emit(&mut w, TAG_META, k, &value)?;
            Ok(true)
        },
    )?;
    let crc_before_trailer = {
        w.put(&[TAG_END])?;
        w.put(&entries.to_le_bytes())?;
        w.crc
    };
    w.out
        .write_all(&crc_before_trailer.to_le_bytes())
        .map_err(|e| io("write snapshot", e))?;
    w.out.flush().map_err(|e| io("flush snapshot", e))?;
    Ok(SnapshotInfo {
        revision: rev,
        compacted_revision: compacted,
        applied_index: applied,
        entries,
        bytes: w.bytes + 4,
        checksum: crc_before_trailer,
    })
}

struct CrcReader<'a> {
    input: &'a mut dyn Read,
    crc: u32,
    /// Bytes taken so far (covered by `crc`).
    read: u64,
}

impl CrcReader<'_> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.input
            .read_exact(&mut b)
            .map_err(|e| io("read snapshot", e))?;
        self.crc = crate::checksum::crc32c_append(self.crc, &b);
        self.read += n as u64;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
}

fn invalid(what: impl Into<String>) -> StorageError {
    StorageError::InvalidSnapshot(what.into())
}

pub(crate) fn restore_snapshot(
    path: &Path,
    input: &mut dyn Read,
    opts: StoreOptions,
) -> Result<Store> {
    let backend = Arc::new(FileBackend::open(path)?);
    if !backend.is_empty()? {
        return Err(invalid(format!(
            "restore target {} is not empty",
            path.display()
        )));
    }
    restore_into(backend, input, opts)
}

/// The stream header's revisions and applied index.
struct Header {
    revision: i64,
    compacted: i64,
    applied: u64,
}

fn read_header(r: &mut CrcReader<'_>) -> Result<Header> {
    let header = r.take(40)?;
    if &header[..8] != MAGIC {
        return Err(invalid("bad magic"));
    }
    if header[8] != VERSION {
        return Err(invalid(format!("unknown snapshot version {}", header[8])));
    }
    let f = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&header[at..at + 8]);
        a
    };
    let h = Header {
        revision: i64::from_le_bytes(f(16)),
        compacted: i64::from_le_bytes(f(24)),
        applied: u64::from_le_bytes(f(32)),
    };
    if h.revision < 1 || h.compacted > h.revision {
        return Err(invalid("revisions out of range"));
    }
    Ok(h)
}

/// One validated stream entry.
enum Item {
    /// A key version: tree key, tree record, main and sub revision.
    Key {
        k: Vec<u8>,
        v: Vec<u8>,
        main: i64,
        sub: i64,
    },
    Meta {
        k: Vec<u8>,
        v: Vec<u8>,
    },
}

/// Reads the next entry (`None` at the end tag), checking it against the
/// header the same way for restore and inspection.
fn read_item(r: &mut CrcReader<'_>, h: &Header) -> Result<Option<Item>> {
    let tag = r.take(1)?[0];
    if tag == TAG_END {
        return Ok(None);
    }
    let klen = r.u32()?;
    let vlen = r.u32()?;
    if klen > MAX_ENTRY_BYTES || vlen > MAX_ENTRY_BYTES {
        return Err(invalid("entry too large"));
    }
    let k = r.take(klen as usize)?;
    let v = r.take(vlen as usize)?;
    match tag {
        TAG_KEY => {
            // Stream keys and records are canonical (see `keys.rs`).
            let (user_key, main, sub) =
                keys::split_stream_key_entry(&k).map_err(|_| invalid("bad key entry"))?;
            if main > h.revision || main < 1 {
                return Err(invalid("key version beyond snapshot revision"));
            }
            let (rec, value) = keys::decode_stream_record(&v).map_err(|_| invalid("bad record"))?;
            // The tree's form of the key and record (the stream's differ).
            let k = keys::key_entry(&user_key, main, sub);
            let v = keys::encode_record(&rec, main, value);
            Ok(Some(Item::Key { k, v, main, sub }))
        }
        TAG_META if k.first() == Some(&keys::T_META) => Ok(Some(Item::Meta { k, v })),
        _ => Err(invalid(format!("unknown entry tag {tag}"))),
    }
}

/// Reads the entry count and checksum after the end tag; returns the
/// checksum (crc32c of everything before it).
fn read_trailer(r: &mut CrcReader<'_>, entries: u64) -> Result<u32> {
    let count = r.u64()?;
    let crc = r.crc;
    let mut tail = [0u8; 4];
    r.input
        .read_exact(&mut tail)
        .map_err(|e| io("read snapshot", e))?;
    if u32::from_le_bytes(tail) != crc {
        return Err(invalid("checksum mismatch"));
    }
    if count != entries {
        return Err(invalid("entry count mismatch"));
    }
    Ok(crc)
}

/// Reads and verifies a whole stream without restoring it: what
/// `snapshot status` reports. `bytes` counts the stream up to its trailer
/// (anything the input holds after it is not read).
pub(crate) fn inspect_snapshot(input: &mut dyn Read) -> Result<SnapshotInfo> {
    let mut r = CrcReader {
        input,
        crc: 0,
        read: 0,
    };
    let h = read_header(&mut r)?;
    let mut entries = 0u64;
    while read_item(&mut r, &h)?.is_some() {
        entries += 1;
    }
    let checksum = read_trailer(&mut r, entries)?;
    Ok(SnapshotInfo {
        revision: h.revision,
        compacted_revision: h.compacted,
        applied_index: h.applied,
        entries,
        bytes: r.read + 4,
        checksum,
    })
}

pub(crate) fn restore_into(
    backend: Arc<dyn Backend>,
    input: &mut dyn Read,
    opts: StoreOptions,
) -> Result<Store> {
    let batch_entries = opts.restore_batch_entries.max(1);
    let store = Store::open_with_backend(backend, opts)?;
    let mut r = CrcReader {
        input,
        crc: 0,
        read: 0,
    };
    let h = read_header(&mut r)?;
    let db = &store.inner.db;
    let mut entries = 0u64;
    let mut txn = db.begin()?;
    let mut in_batch = 0usize;
    while let Some(item) = read_item(&mut r, &h)? {
        match item {
            Item::Key { k, v, main, sub } => {
                txn.put(&k, &v)?;
                // Revision entries exist only from the compacted revision
                // on (compaction removes older ones, see `mvcc/compact.rs`).
                if main >= h.compacted {
                    txn.put(&keys::rev_entry(main, sub), keys::enc_of_entry(&k))?;
                }
            }
            Item::Meta { k, v } => txn.put(&k, &v)?,
        }
        entries += 1;
        in_batch += 1;
        if in_batch >= batch_entries {
            db.commit(txn, |_| {}, false)?;
            txn = db.begin()?;
            in_batch = 0;
        }
    }
    read_trailer(&mut r, entries)?;
    let (rev, compacted, applied) = (h.revision, h.compacted, h.applied);
    db.commit(
        txn,
        |m| {
            m.current_revision = rev;
            m.compacted_revision = compacted;
            m.compact_done_revision = compacted;
            m.applied_index = applied;
        },
        true,
    )?;
    store
        .inner
        .durable_applied
        .store(applied, std::sync::atomic::Ordering::Release);
    Ok(store)
}
