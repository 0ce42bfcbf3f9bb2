//! All file access goes through [`Backend`]: the real file backend and an
//! in-memory test backend that can fail any IO and simulate a crash.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Result, StorageError};
use crate::mapping::{self, FileMap};

/// Read-only view of a prefix of the file, used by readers.
pub trait Mapped: Send + Sync {
    /// Bytes `[offset, offset + len)` or `None` if beyond the readable length.
    fn slice(&self, offset: usize, len: usize) -> Option<&[u8]>;
    /// Readable length in bytes.
    fn len(&self) -> usize;
    /// True when nothing is readable.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes the mapping could cover without being replaced (>= `len`).
    fn capacity(&self) -> usize {
        self.len()
    }
    /// Changes the readable length within the capacity; the caller
    /// guarantees the file is at least that long until the next change.
    /// Returns false (nothing changed) when the mapping cannot do it: `len`
    /// beyond the capacity, or a mapping that is a copy.
    fn set_readable_len(&self, len: usize) -> bool {
        let _ = len;
        false
    }
    /// Takes the mapped pages out of the process's resident set (they stay
    /// in the page cache; the next touch maps them again). Default: nothing.
    fn drop_resident(&self) {}
}

/// Positional file IO plus read mapping.
pub trait Backend: Send + Sync {
    fn len(&self) -> Result<u64>;
    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Sets the file length exactly (creation, truncation).
    fn set_len(&self, len: u64) -> Result<()>;
    /// Extends the file from `from` to `to` bytes (`from` = current length),
    /// allocating the blocks where the file system can, so first writes of
    /// the new pages do not allocate. Default: `set_len(to)`.
    fn grow(&self, from: u64, to: u64) -> Result<()> {
        let _ = from;
        self.set_len(to)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()>;
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()>;
    /// Makes every previous write durable.
    fn sync(&self) -> Result<()>;
    /// Maps the first `len` bytes (`len <= self.len()`), reserving room for
    /// `capacity` bytes (>= `len`) so that growth up to it needs no new
    /// mapping ([`Mapped::set_readable_len`]); a backend may map less.
    fn map(&self, len: u64, capacity: u64) -> Result<Arc<dyn Mapped>>;
    /// True when writes at offsets below a mapping's length become visible
    /// through that mapping (shared mmap); false when a mapping is a copy.
    fn coherent_map(&self) -> bool;
    /// Path for error messages.
    fn path(&self) -> &Path;
}

impl Mapped for FileMap {
    fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        FileMap::slice(self, offset, len)
    }
    fn len(&self) -> usize {
        FileMap::len(self)
    }
    fn capacity(&self) -> usize {
        FileMap::capacity(self)
    }
    fn set_readable_len(&self, len: usize) -> bool {
        FileMap::set_valid(self, len)
    }
    fn drop_resident(&self) {
        FileMap::drop_resident(self);
    }
}

/// The `madvise` advice given to the read mapping of the data file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MapAdvice {
    /// `MADV_RANDOM`: no read-ahead; a miss reads one page. The default:
    /// B+ tree reads touch one leaf per key (`docs/storage-format.md`,
    /// "Memory (RSS)", has the A/B against `Normal`).
    #[default]
    Random,
    /// `MADV_NORMAL`: the kernel's read-ahead around each miss.
    Normal,
}

impl MapAdvice {
    fn to_memmap(self) -> memmap2::Advice {
        match self {
            MapAdvice::Random => memmap2::Advice::Random,
            MapAdvice::Normal => memmap2::Advice::Normal,
        }
    }
}

/// The real backend: `pread`/`pwrite`/`fdatasync` on one file, shared mmap for reads.
pub struct FileBackend {
    file: File,
    path: PathBuf,
    advice: MapAdvice,
}

impl FileBackend {
    /// Opens `path` with the given advice for its read mappings.
    pub fn open_with_advice(path: &Path, advice: MapAdvice) -> Result<FileBackend> {
        let mut b = FileBackend::open(path)?;
        b.advice = advice;
        Ok(b)
    }

    pub fn open(path: &Path) -> Result<FileBackend> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| io_err("open", path, source))?;
        Ok(FileBackend {
            file,
            path: path.to_path_buf(),
            advice: MapAdvice::default(),
        })
    }
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> StorageError {
    StorageError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl Backend for FileBackend {
    fn len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| io_err("stat", &self.path, e))?
            .len())
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| io_err("set_len", &self.path, e))
    }
    fn grow(&self, from: u64, to: u64) -> Result<()> {
        if to <= from {
            return self.set_len(to);
        }
        match mapping::allocate(&self.file, from, to - from) {
            Ok(true) => Ok(()),
            // No fallocate here (e.g. some network file systems): sparse growth.
            Ok(false) => self.set_len(to),
            Err(e) => Err(io_err("fallocate", &self.path, e)),
        }
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| io_err("pread", &self.path, e))
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| io_err("pwrite", &self.path, e))
    }
    fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| io_err("fdatasync", &self.path, e))
    }
    fn map(&self, len: u64, capacity: u64) -> Result<Arc<dyn Mapped>> {
        let len = usize::try_from(len).map_err(|_| {
            io_err(
                "mmap",
                &self.path,
                std::io::Error::other("length exceeds address space"),
            )
        })?;
        // A reservation the address space cannot hold shrinks to the file.
        let capacity = usize::try_from(capacity).unwrap_or(len).max(len);
        Ok(Arc::new(
            FileMap::new(&self.file, len, capacity, self.advice.to_memmap())
                .map_err(|e| io_err("mmap", &self.path, e))?,
        ))
    }
    fn coherent_map(&self) -> bool {
        true
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

enum Unsynced {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

struct MemState {
    /// What a reader of the file sees now.
    current: Vec<u8>,
    /// What survives a crash: the state at the last successful sync.
    durable: Vec<u8>,
    /// Operations since the last sync, for partial crashes (bounded by the
    /// test's own workload; this backend is for tests only).
    log: Vec<Unsynced>,
}

/// In-memory test backend. `crash()` drops every write since the last
/// successful `sync`; `fail_after(n)` makes the n-th following IO call
/// (and all later ones) fail.
#[derive(Clone)]
pub struct MemBackend {
    state: Arc<Mutex<MemState>>,
    ops: Arc<AtomicU64>,
    fail_at: Arc<AtomicU64>,
    path: PathBuf,
}

impl Default for MemBackend {
    fn default() -> Self {
        MemBackend::new()
    }
}

struct MemMap(Vec<u8>);

impl Mapped for MemMap {
    fn slice(&self, offset: usize, len: usize) -> Option<&[u8]> {
        self.0.get(offset..offset.checked_add(len)?)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

impl MemBackend {
    pub fn new() -> MemBackend {
        MemBackend::from_bytes(Vec::new())
    }

    /// A backend whose file (current and durable) holds `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> MemBackend {
        MemBackend {
            state: Arc::new(Mutex::new(MemState {
                current: bytes.clone(),
                durable: bytes,
                log: Vec::new(),
            })),
            ops: Arc::new(AtomicU64::new(0)),
            fail_at: Arc::new(AtomicU64::new(u64::MAX)),
            path: PathBuf::from("<memory>"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Simulates power loss: the file reverts to its last synced content.
    pub fn crash(&self) {
        let mut s = self.lock();
        s.current = s.durable.clone();
        s.log.clear();
        self.fail_at.store(u64::MAX, Ordering::SeqCst);
    }

    /// Simulates power loss where an arbitrary subset of the unsynced writes
    /// reached the media, each possibly torn at a 512-byte boundary
    /// (deterministic in `seed`).
    pub fn crash_partial(&self, seed: u64) {
        let mut s = self.lock();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut file = s.durable.clone();
        for op in &s.log {
            match op {
                Unsynced::SetLen(len) => file.resize(*len as usize, 0),
                Unsynced::Write(off, data) => {
                    if next() % 2 == 0 {
                        continue;
                    }
                    let sectors = data.len().div_ceil(512);
                    let keep = if next() % 4 == 0 {
                        (next() as usize % (sectors + 1)) * 512
                    } else {
                        data.len()
                    };
                    let keep = keep.min(data.len());
                    let start = *off as usize;
                    if file.len() < start + keep {
                        file.resize(start + keep, 0);
                    }
                    file[start..start + keep].copy_from_slice(&data[..keep]);
                }
            }
        }
        s.current = file.clone();
        s.durable = file;
        s.log.clear();
        self.fail_at.store(u64::MAX, Ordering::SeqCst);
    }

    /// The IO call `n` calls from now (0 = the next one) and all later ones fail.
    pub fn fail_after(&self, n: u64) {
        let now = self.ops.load(Ordering::SeqCst);
        self.fail_at.store(now.saturating_add(n), Ordering::SeqCst);
    }

    /// Stops injecting failures.
    pub fn heal(&self) {
        self.fail_at.store(u64::MAX, Ordering::SeqCst);
    }

    /// Number of IO calls made so far (sync points included).
    pub fn op_count(&self) -> u64 {
        self.ops.load(Ordering::SeqCst)
    }

    /// Copy of the current file content.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        self.lock().current.clone()
    }

    fn tick(&self, op: &'static str) -> Result<()> {
        let n = self.ops.fetch_add(1, Ordering::SeqCst);
        if n >= self.fail_at.load(Ordering::SeqCst) {
            return Err(io_err(
                op,
                &self.path,
                std::io::Error::other("injected failure"),
            ));
        }
        Ok(())
    }
}

impl Backend for MemBackend {
    fn len(&self) -> Result<u64> {
        Ok(self.lock().current.len() as u64)
    }
    fn set_len(&self, len: u64) -> Result<()> {
        self.tick("set_len")?;
        let len = usize::try_from(len)
            .map_err(|_| io_err("set_len", &self.path, std::io::Error::other("too large")))?;
        let mut s = self.lock();
        s.current.resize(len, 0);
        s.log.push(Unsynced::SetLen(len as u64));
        Ok(())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.tick("pread")?;
        let s = self.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match start
            .checked_add(buf.len())
            .and_then(|end| s.current.get(start..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io_err(
                "pread",
                &self.path,
                std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
            )),
        }
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.tick("pwrite")?;
        let mut s = self.lock();
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(buf.len());
        if s.current.len() < end {
            s.current.resize(end, 0);
        }
        s.current[start..end].copy_from_slice(buf);
        s.log.push(Unsynced::Write(offset, buf.to_vec()));
        Ok(())
    }
    fn sync(&self) -> Result<()> {
        self.tick("fdatasync")?;
        let mut s = self.lock();
        s.durable = s.current.clone();
        s.log.clear();
        Ok(())
    }
    fn map(&self, len: u64, _capacity: u64) -> Result<Arc<dyn Mapped>> {
        // A copy cannot follow later writes: no reservation.
        let s = self.lock();
        let len = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(s.current.len());
        Ok(Arc::new(MemMap(s.current[..len].to_vec())))
    }
    fn coherent_map(&self) -> bool {
        false
    }
    fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_drops_unsynced_writes() {
        let b = MemBackend::new();
        b.write_at(0, b"abcd").unwrap();
        b.sync().unwrap();
        b.write_at(0, b"xyz").unwrap();
        b.crash();
        let mut buf = [0u8; 4];
        b.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
    }

    fn tempdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("corekv-backend")
            // Unit tests get no CARGO_TARGET_TMPDIR; a real disk, not tmpfs.
            .tempdir_in("/var/tmp")
            .unwrap()
    }

    #[test]
    fn file_grow_allocates_blocks() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempdir();
        let b = FileBackend::open(&dir.path().join("f")).unwrap();
        b.set_len(4096).unwrap();
        b.grow(4096, 1 << 20).unwrap();
        assert_eq!(b.len().unwrap(), 1 << 20);
        // Allocated, not sparse (ext4/xfs/tmpfs support fallocate).
        let blocks = std::fs::metadata(dir.path().join("f")).unwrap().blocks();
        assert!(blocks * 512 >= (1 << 20) - 4096, "{blocks} blocks");
        // The new range reads as zeros and is writable.
        let mut buf = [1u8; 16];
        b.read_at((1 << 20) - 16, &mut buf).unwrap();
        assert_eq!(buf, [0u8; 16]);
        b.write_at((1 << 20) - 16, &[7u8; 16]).unwrap();
        // Growing to a shorter length is an exact set_len.
        b.grow(1 << 20, 8192).unwrap();
        assert_eq!(b.len().unwrap(), 8192);
    }

    #[test]
    fn mem_grow_extends_and_crash_keeps_synced_length() {
        let b = MemBackend::new();
        b.set_len(4096).unwrap();
        b.sync().unwrap();
        b.grow(4096, 16384).unwrap();
        assert_eq!(b.len().unwrap(), 16384);
        b.crash();
        assert_eq!(b.len().unwrap(), 4096);
    }

    #[test]
    fn file_map_reservation_follows_readable_length() {
        let dir = tempdir();
        let b = FileBackend::open(&dir.path().join("f")).unwrap();
        b.set_len(8192).unwrap();
        b.write_at(4096, &[5u8; 4096]).unwrap();
        let m = b.map(8192, 1 << 20).unwrap();
        assert_eq!((m.len(), m.capacity()), (8192, 1 << 20));
        assert_eq!(m.slice(4096, 4096).unwrap()[0], 5);
        // Beyond the readable length: refused, not a fault.
        assert!(m.slice(8192, 4096).is_none());
        // The file grows; the same mapping shows the new bytes.
        b.grow(8192, 16384).unwrap();
        b.write_at(12288, &[9u8; 4096]).unwrap();
        assert!(m.set_readable_len(16384));
        assert_eq!(m.slice(12288, 4096).unwrap()[4095], 9);
        // Not beyond the reservation.
        assert!(!m.set_readable_len(2 << 20));
        assert_eq!(m.len(), 16384);
        // Shrink: lower first, then cut the file.
        assert!(m.set_readable_len(8192));
        b.set_len(8192).unwrap();
        assert!(m.slice(12288, 4096).is_none());
        assert_eq!(m.slice(4096, 4096).unwrap()[0], 5);
        // A copy (MemBackend) cannot follow.
        let mb = MemBackend::new();
        mb.set_len(8192).unwrap();
        let mm = mb.map(8192, 1 << 20).unwrap();
        assert_eq!(mm.capacity(), 8192);
        assert!(!mm.set_readable_len(4096));
    }

    #[test]
    fn injected_failure_latches() {
        let b = MemBackend::new();
        b.fail_after(1);
        b.write_at(0, b"a").unwrap();
        assert!(b.write_at(0, b"b").is_err());
        assert!(b.sync().is_err());
        b.heal();
        b.sync().unwrap();
    }
}
