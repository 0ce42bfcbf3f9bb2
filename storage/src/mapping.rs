//! The only module with `unsafe` besides `checksum.rs`: a read-only shared
//! memory mapping of the data file, handed out one page-range slice at a
//! time, the one file-system call std does not offer (`fallocate`), and a
//! CPU prefetch hint for mapped pages ([`prefetch`]).
//!
//! A mapping *reserves* more address space than the file holds
//! (`capacity`), so the file can grow without a new mapping (a new mapping
//! would start with no page-table entries and no verified pages). Only the
//! prefix `[0, valid)` can be sliced, and `valid` never exceeds the file
//! length: touching a mapped page beyond the end of the file raises SIGBUS.
//!
//! Soundness rests on these invariants, upheld by the pager (`db.rs`, argued
//! in `docs/storage-format.md`, "Readers and the memory mapping"):
//! 1. `valid <= file length` at all times: the writer raises `valid` only
//!    after the file has grown ([`FileMap::set_valid`] after `set_len` /
//!    `fallocate`) and lowers it on every live mapping before it shrinks the
//!    file. [`FileMap::slice`] refuses every range beyond `valid`, whatever
//!    page id the caller computed (bad ids from disk give `None`).
//! 2. A slice is only created for pages reachable from a registered snapshot
//!    (or the writer's own committed view), and such pages are neither
//!    written nor cut off by truncation while that snapshot is registered
//!    (copy-on-write + reader registry; truncation only removes pages no
//!    snapshot can reach).
//! 3. The slice's lifetime is bound to a borrow of the mapping, which the
//!    snapshot keeps alive through an `Arc`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};

/// A read-only mapping reserving `capacity` bytes of a file, of which the
/// first `valid` are backed by the file.
pub(crate) struct FileMap {
    raw: Option<MmapRaw>,
    capacity: usize,
    valid: AtomicUsize,
}

impl FileMap {
    /// Maps `capacity` bytes of address space over the file, `len` of them
    /// readable (0 capacity gives an empty map). The file must be at least
    /// `len` bytes long; `capacity` may exceed the file.
    pub(crate) fn new(
        file: &File,
        len: usize,
        capacity: usize,
        advice: memmap2::Advice,
    ) -> std::io::Result<FileMap> {
        let capacity = capacity.max(len);
        if capacity == 0 {
            return Ok(FileMap {
                raw: None,
                capacity: 0,
                valid: AtomicUsize::new(0),
            });
        }
        let raw = MmapOptions::new().len(capacity).map_raw_read_only(file)?;
        raw.advise(advice)?;
        Ok(FileMap {
            raw: Some(raw),
            capacity,
            valid: AtomicUsize::new(len),
        })
    }

    /// Readable length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.valid.load(Ordering::Acquire)
    }

    /// Reserved length in bytes.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the readable length. The caller guarantees the file is at least
    /// `len` bytes long until the next call (invariant 1). Returns false (and
    /// changes nothing) when `len` exceeds the reservation.
    pub(crate) fn set_valid(&self, len: usize) -> bool {
        if len > self.capacity {
            return false;
        }
        self.valid.store(len, Ordering::Release);
        true
    }

    /// Bytes `[offset, offset + len)`, or `None` if out of the readable range.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len)?;
        if end > self.valid.load(Ordering::Acquire) {
            return None;
        }
        let raw = self.raw.as_ref()?;
        // SAFETY: the range lies inside the readable prefix (checked above),
        // which lies inside the mapping (`valid <= capacity`) and inside the
        // file (invariant 1), so touching it cannot fault; the mapping is
        // alive for the borrow of `self`, and by invariant 2 the file range
        // is neither written nor truncated while the slice exists.
        Some(unsafe { std::slice::from_raw_parts(raw.as_ptr().add(offset), len) })
    }
}

impl FileMap {
    /// Drops this mapping's page-table entries (`MADV_DONTNEED` over the
    /// whole reservation): the pages leave the process's resident set
    /// (`RssFile`) and stay in the page cache; the next touch maps them
    /// again (a minor fault). Slices handed out before stay valid and keep
    /// their bytes. Errors are ignored: it only affects memory accounting.
    pub(crate) fn drop_resident(&self) {
        let Some(raw) = self.raw.as_ref() else {
            return;
        };
        // SAFETY: the mapping is a read-only `MAP_SHARED` mapping of a file.
        // For such a mapping MADV_DONTNEED only removes page-table entries:
        // a later access faults in the file's page-cache page again, with
        // the same bytes (nothing private can be lost), so every live slice
        // (invariants 2 and 3) still reads what it read before.
        let _ = unsafe { raw.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
    }
}

/// Allocates disk blocks for `[offset, offset + len)`, extending the file if
/// needed (`fallocate` mode 0). Growing the file this way instead of with a
/// sparse `set_len` saves a block allocation in every first write of a page.
/// Returns `Ok(false)` when the file system does not support it.
pub(crate) fn allocate(file: &File, offset: u64, len: u64) -> std::io::Result<bool> {
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return Err(std::io::Error::other("file range exceeds off_t"));
    };
    if n == 0 {
        return Ok(true);
    }
    // SAFETY: fallocate takes an open fd (borrowed from `file`, alive for the
    // call) and plain integers; it touches no memory of this process.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, off, n) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(err),
    }
}

/// Cache line size assumed by [`prefetch`].
const PREFETCH_LINE: usize = 64;
/// Lines [`prefetch`] asks for: the first 1 KiB of a page (header, slots
/// and the first entries). Measured with `examples/range_loop.rs` (ranges
/// per CPU second): 2 lines +9%, 8 +17%, 16 +20%, 32 +17%, the whole page
/// +3% (64 prefetches in a row stall on the CPU's line fill buffers).
const PREFETCH_LINES: usize = 16;

/// Asks the CPU to load the start of `bytes` (a mapped page) into its caches. A hint:
/// it neither faults nor blocks, and a page not yet in the process's page
/// tables is skipped by the CPU.
pub(crate) fn prefetch(bytes: &[u8]) {
    prefetch_lines(bytes, PREFETCH_LINES);
}

/// [`prefetch`] of the first `lines` cache lines of `bytes` (a scan's next
/// entries in the current leaf).
#[inline]
pub(crate) fn prefetch_lines(bytes: &[u8], lines: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(PREFETCH_LINE).take(lines) {
        // SAFETY: `prefetch` reads no memory architecturally (it cannot
        // fault, even on an unmapped address), and SSE, which it needs, is
        // part of the x86_64 baseline.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (bytes, lines);
}
