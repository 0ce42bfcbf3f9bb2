//! glommio executor settings that work under a small `RLIMIT_MEMLOCK`.
//!
//! Measured on Linux 6.x (see `docs/wal-format.md`, "Executors and
//! RLIMIT_MEMLOCK"): each `LocalExecutor` registers its `io_memory` pool
//! with each of its three io_uring rings, and the kernel charges
//! `3 x io_memory` of pinned memory to the *user's* memlock budget, shared
//! by all processes of that user (unless the process has CAP_IPC_LOCK).
//! When the budget is exceeded glommio silently skips registration and
//! uses unregistered buffers, which still works. With glommio's default
//! 10 MiB, registration never fits in 8 MiB; the rings themselves are not
//! charged to memlock on 6.x kernels. glommio refuses to start only when
//! the limit itself is below 512 KiB.
//!
//! [`ExecutorSettings::default`] uses 256 KiB per executor (768 KiB
//! pinned), so 3 processes x 3 executors stay under 8 MiB with buffers
//! registered.

use std::future::Future;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use super::WalError;

/// Settings for one glommio executor that does WAL IO.
#[derive(Clone, Debug)]
pub struct ExecutorSettings {
    /// io_uring-registered buffer pool per executor; pinned 3 times (one per
    /// ring) against the user's memlock limit. Buffers above it come from
    /// the heap.
    pub io_memory_bytes: usize,
    /// Submission queue depth of each ring.
    pub ring_depth: usize,
    /// Busy-poll this long before sleeping; zero keeps cores free for other
    /// members on small hosts.
    pub spin_before_park_us: u64,
    /// How often a long-running task queue yields to others.
    pub preempt_timer_ms: u64,
}

impl Default for ExecutorSettings {
    fn default() -> Self {
        Self {
            io_memory_bytes: 256 << 10,
            ring_depth: 128,
            spin_before_park_us: 0,
            preempt_timer_ms: 100,
        }
    }
}

/// A builder with `settings` applied.
pub fn executor_builder(
    name: &str,
    placement: Placement,
    settings: &ExecutorSettings,
) -> LocalExecutorBuilder {
    let mut b = LocalExecutorBuilder::new(placement)
        .name(name)
        .io_memory(settings.io_memory_bytes)
        .ring_depth(settings.ring_depth)
        .preempt_timer(Duration::from_millis(settings.preempt_timer_ms));
    if settings.spin_before_park_us > 0 {
        b = b.spin_before_park(Duration::from_micros(settings.spin_before_park_us));
    }
    b
}

/// Runs `make()`'s future to completion on a fresh unpinned executor thread
/// (tests, benchmarks, tools).
pub fn run_on_new_executor<G, F, T>(
    name: &str,
    settings: &ExecutorSettings,
    make: G,
) -> Result<T, WalError>
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let handle = executor_builder(name, Placement::Unbound, settings)
        .spawn(make)
        .map_err(|e| WalError::Executor(e.to_string()))?;
    handle.join().map_err(|e| WalError::Executor(e.to_string()))
}

thread_local! {
    /// Devices whose io_poll probe this executor thread already primed.
    static PRIMED_DEVICES: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Makes glommio's io_poll probe see a real device read.
///
/// glommio 0.9 decides once per thread and device whether O_DIRECT IO goes
/// to its IOPOLL ring, by reading 512 bytes at offset 0 of the first
/// `DmaFile` opened there, unless sysfs already says. Our first open is
/// usually a brand-new empty segment: the read stops at end of file without
/// touching the device, the probe "succeeds", and every later O_DIRECT read
/// then fails with EOPNOTSUPP (os error 95) on devices without poll queues
/// (virtio-blk, most NVMe setups). Opening a small durable non-empty file
/// first makes the probe issue a real read and decide correctly.
pub async fn prime_io_poll_probe(dir: &Path) -> Result<(), WalError> {
    let dev = std::fs::metadata(dir)
        .map_err(|e| WalError::io("stat directory", dir, e))?
        .dev();
    if PRIMED_DEVICES.with(|d| d.borrow().contains(&dev)) {
        return Ok(());
    }
    let path = dir.join(".io-poll-probe");
    let mut f =
        std::fs::File::create(&path).map_err(|e| WalError::io("create probe file", &path, e))?;
    f.write_all(&[0xa5; 4096])
        .and_then(|()| f.sync_all())
        .map_err(|e| WalError::io("write probe file", &path, e))?;
    let dma = glommio::io::DmaFile::open(&path)
        .await
        .map_err(|e| WalError::io("open probe file", &path, e))?;
    dma.close()
        .await
        .map_err(|e| WalError::io("close probe file", &path, e))?;
    std::fs::remove_file(&path).map_err(|e| WalError::io("remove probe file", &path, e))?;
    PRIMED_DEVICES.with(|d| d.borrow_mut().push(dev));
    Ok(())
}
