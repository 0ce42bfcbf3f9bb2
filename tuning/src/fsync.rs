//! Measured write + fdatasync latency on the data directory's filesystem.
//!
//! This is the number that bounds corekv's one-client put latency: every
//! acknowledged write waits for one WAL write and one `fdatasync`. The loop
//! mirrors the WAL's access pattern: a preallocated file, written
//! sequentially with `O_DIRECT` in aligned blocks, `fdatasync` after each.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Result, TuneError};

/// Buffer and offset alignment used for `O_DIRECT`; covers 512-byte and
/// 4 KiB logical block devices.
pub const DIRECT_ALIGN_BYTES: usize = 4096;

/// Upper bound on samples per run, so a typo cannot keep the disk busy for hours.
pub const MAX_SAMPLES: u32 = 1_000_000;

/// Upper bound on one block, which is allocated in memory.
pub const MAX_BLOCK_BYTES: usize = 64 << 20;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsyncOptions {
    /// Number of write + fdatasync pairs timed.
    pub samples: u32,
    /// Bytes per write; a multiple of [`DIRECT_ALIGN_BYTES`].
    pub block_bytes: usize,
    /// Size of the preallocated file; writes wrap around inside it. Bounds
    /// the disk space the probe uses.
    pub max_file_bytes: u64,
}

impl FsyncOptions {
    /// The WAL-like default: 4 KiB blocks.
    pub fn small_writes(samples: u32) -> Self {
        FsyncOptions {
            samples,
            block_bytes: 4096,
            max_file_bytes: 64 << 20,
        }
    }

    /// Large blocks, to estimate sequential write bandwidth through the same path.
    pub fn large_writes(samples: u32) -> Self {
        FsyncOptions {
            samples,
            block_bytes: 1 << 20,
            max_file_bytes: 64 << 20,
        }
    }

    fn validate(&self) -> Result<()> {
        if self.samples == 0 || self.samples > MAX_SAMPLES {
            return Err(TuneError::InvalidArgument {
                name: "samples",
                detail: format!("{} is outside 1..={MAX_SAMPLES}", self.samples),
            });
        }
        if self.block_bytes == 0
            || self.block_bytes % DIRECT_ALIGN_BYTES != 0
            || self.block_bytes > MAX_BLOCK_BYTES
        {
            return Err(TuneError::InvalidArgument {
                name: "block_bytes",
                detail: format!(
                    "{} is not a multiple of {DIRECT_ALIGN_BYTES} up to {MAX_BLOCK_BYTES}",
                    self.block_bytes
                ),
            });
        }
        if self.max_file_bytes < self.block_bytes as u64 {
            return Err(TuneError::InvalidArgument {
                name: "max_file_bytes",
                detail: format!("{} is smaller than one block", self.max_file_bytes),
            });
        }
        Ok(())
    }
}

/// Result of one measurement run. Latencies are per write + fdatasync pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsyncReport {
    pub samples: u32,
    pub block_bytes: usize,
    /// False when the filesystem refused `O_DIRECT` (e.g. tmpfs) and the run
    /// fell back to buffered writes; corekv's WAL would not start there.
    pub o_direct: bool,
    /// False when `fallocate` is not supported and the file was extended
    /// with `set_len` instead (sparse, so writes also allocate).
    pub preallocated: bool,
    pub latency_us_min: u64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_max: u64,
    pub latency_us_mean: u64,
}

impl FsyncReport {
    /// Sequential bandwidth implied by the median sample, in bytes per second.
    pub fn bytes_per_sec_p50(&self) -> u64 {
        let us = self.latency_us_p50.max(1);
        (self.block_bytes as u64).saturating_mul(1_000_000) / us
    }
}

/// Removes the probe file however the measurement ends.
struct TempProbeFile {
    path: PathBuf,
}

impl Drop for TempProbeFile {
    fn drop(&mut self) {
        // Nothing useful to do if removal fails; the name says what it is.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Runs the loop in `dir` and removes its file afterwards.
pub fn measure(dir: &Path, opts: &FsyncOptions) -> Result<FsyncReport> {
    opts.validate()?;
    let path = dir.join(format!(".corekv-tune-fsync-{}.tmp", std::process::id()));
    let (file, o_direct) = open_probe_file(&path)?;
    let guard = TempProbeFile { path };

    let file_bytes = opts
        .max_file_bytes
        .min(u64::from(opts.samples).saturating_mul(opts.block_bytes as u64));
    let blocks_in_file = file_bytes / opts.block_bytes as u64;
    let file_bytes = blocks_in_file * opts.block_bytes as u64;
    let preallocated = preallocate(&file, file_bytes, &guard.path)?;

    // Over-allocate and slice at an aligned offset instead of using a custom
    // allocator: safe code, and O_DIRECT only needs the slice aligned.
    let mut raw = vec![0u8; opts.block_bytes + DIRECT_ALIGN_BYTES];
    let offset = raw.as_ptr().align_offset(DIRECT_ALIGN_BYTES);
    let block = &mut raw[offset..offset + opts.block_bytes];
    // Non-zero pattern: some devices and filesystems special-case zero pages.
    for (i, byte) in block.iter_mut().enumerate() {
        *byte = (i % 251) as u8 ^ 0x5a;
    }

    let mut latencies_ns = Vec::with_capacity(opts.samples as usize);
    for sample in 0..u64::from(opts.samples) {
        let pos = (sample % blocks_in_file) * opts.block_bytes as u64;
        let started = Instant::now();
        file.write_all_at(block, pos)
            .map_err(|e| TuneError::io("write (probe)", &guard.path, e))?;
        file.sync_data()
            .map_err(|e| TuneError::io("fdatasync (probe)", &guard.path, e))?;
        latencies_ns.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    drop(file);
    drop(guard);

    let summary = Summary::of(&mut latencies_ns);
    Ok(FsyncReport {
        samples: opts.samples,
        block_bytes: opts.block_bytes,
        o_direct,
        preallocated,
        latency_us_min: summary.min / 1000,
        latency_us_p50: summary.p50 / 1000,
        latency_us_p99: summary.p99 / 1000,
        latency_us_max: summary.max / 1000,
        latency_us_mean: summary.mean / 1000,
    })
}

/// Opens with `O_DIRECT`, falling back to buffered IO only when the
/// filesystem rejects the flag (`EINVAL`).
fn open_probe_file(path: &Path) -> Result<(File, bool)> {
    let open = |flags: i32| {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .custom_flags(flags)
            .open(path)
    };
    match open(libc::O_DIRECT) {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // create_new may have created the file before the flag was refused.
            let _ = std::fs::remove_file(path);
            open(0)
                .map(|f| (f, false))
                .map_err(|e| TuneError::io("create (probe, buffered)", path, e))
        }
        Err(e) => Err(TuneError::io("create (probe, O_DIRECT)", path, e)),
    }
}

/// Allocates the file's blocks up front as the WAL does with its segments.
fn preallocate(file: &File, len: u64, path: &Path) -> Result<bool> {
    let len_off = libc::off_t::try_from(len).map_err(|_| TuneError::InvalidArgument {
        name: "max_file_bytes",
        detail: format!("{len} does not fit off_t"),
    })?;
    // SAFETY: fallocate takes a valid open fd (borrowed from `file`, which
    // outlives the call) and plain integers; it touches no user memory.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len_off) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EOPNOTSUPP) {
        file.set_len(len)
            .map_err(|e| TuneError::io("set_len (probe)", path, e))?;
        return Ok(false);
    }
    Err(TuneError::io("fallocate (probe)", path, err))
}

/// Order statistics of a sample set (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    pub min: u64,
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: u64,
}

impl Summary {
    /// Nearest-rank percentiles. Sorts `samples` in place; empty input gives zeros.
    pub(crate) fn of(samples: &mut [u64]) -> Summary {
        if samples.is_empty() {
            return Summary {
                min: 0,
                p50: 0,
                p99: 0,
                max: 0,
                mean: 0,
            };
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |pct: usize| samples[(pct * n).div_ceil(100).clamp(1, n) - 1];
        let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
        Summary {
            min: samples[0],
            p50: rank(50),
            p99: rank(99),
            max: samples[n - 1],
            mean: u64::try_from(sum / n as u128).unwrap_or(u64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u64> = (1..=100).rev().collect();
        let s = Summary::of(&mut v);
        assert_eq!((s.min, s.p50, s.p99, s.max, s.mean), (1, 50, 99, 100, 50));
        let mut one = vec![7];
        let s = Summary::of(&mut one);
        assert_eq!((s.min, s.p50, s.p99, s.max), (7, 7, 7, 7));
        let mut three = vec![30, 10, 20];
        let s = Summary::of(&mut three);
        assert_eq!((s.p50, s.p99), (20, 30));
        assert_eq!(Summary::of(&mut []).p99, 0);
    }

    #[test]
    fn options_are_validated() {
        let dir = std::env::temp_dir();
        let bad = [
            FsyncOptions {
                samples: 0,
                ..FsyncOptions::small_writes(1)
            },
            FsyncOptions {
                samples: MAX_SAMPLES + 1,
                ..FsyncOptions::small_writes(1)
            },
            FsyncOptions {
                block_bytes: 1000,
                ..FsyncOptions::small_writes(1)
            },
            FsyncOptions {
                max_file_bytes: 100,
                ..FsyncOptions::small_writes(1)
            },
        ];
        for opts in bad {
            assert!(matches!(
                measure(&dir, &opts),
                Err(TuneError::InvalidArgument { .. })
            ));
        }
    }

    #[test]
    fn bandwidth_from_median() {
        let r = FsyncReport {
            samples: 1,
            block_bytes: 1 << 20,
            o_direct: true,
            preallocated: true,
            latency_us_min: 0,
            latency_us_p50: 1000,
            latency_us_p99: 0,
            latency_us_max: 0,
            latency_us_mean: 0,
        };
        assert_eq!(r.bytes_per_sec_p50(), 1_048_576_000);
    }
}
