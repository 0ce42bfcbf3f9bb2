//! The only module with `unsafe`: a read-only shared memory mapping of the
//! data file, handed out one page-range slice at a time.
//!
//! Soundness rests on three invariants upheld by the pager (argued in
//! `docs/storage-format.md`):
//! 1. A slice is only created for a byte range below the file length at the
//!    time the mapping was created, and the file is never truncated below the
//!    length of any live mapping (truncation waits until every older mapping
//!    has been dropped).
//! 2. A slice is only created for pages reachable from a registered snapshot
//!    (or the writer's own committed view), and such pages are never written
//!    while that snapshot is registered (copy-on-write + reader registry).
//! 3. The slice's lifetime is bound to a borrow of the mapping, which the
//!    snapshot keeps alive through an `Arc`.

use std::fs::File;

use memmap2::{MmapOptions, MmapRaw};

/// A read-only mapping of the first `len` bytes of a file.
pub(crate) struct FileMap {
    raw: Option<MmapRaw>,
    len: usize,
}

impl FileMap {
    /// Maps `len` bytes (0 gives an empty map). `len` must not exceed the file length.
    pub(crate) fn new(file: &File, len: usize) -> std::io::Result<FileMap> {
        if len == 0 {
            return Ok(FileMap { raw: None, len: 0 });
        }
        let raw = MmapOptions::new().len(len).map_raw_read_only(file)?;
        Ok(FileMap {
            raw: Some(raw),
            len,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Bytes `[offset, offset + len)`, or `None` if out of range.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.len {
            return None;
        }
        let raw = self.raw.as_ref()?;
        // SAFETY: the range lies inside the mapping (checked above), the
        // mapping is alive for the borrow of `self`, and by invariants 1-2 of
        // this module the file range is neither truncated nor written while
        // the slice exists.
        Some(unsafe { std::slice::from_raw_parts(raw.as_ptr().add(offset), len) })
    }
}
