//! The WAL micro-benchmark (issue 4, item 5): appends of fixed-size entries
//! from 1, 16, 256 concurrent proposers through the [`GroupCommitter`],
//! next to a raw 4 KiB O_DIRECT write + fdatasync loop on the same file
//! system in the same run. `corekv-bench wal` and the `wal_bench` example
//! call [`run`] and print the [`WalBenchReport`].

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::io::OpenOptions;

use super::runtime::{ExecutorSettings, run_on_new_executor};
use super::segment::write_all;
use super::{GroupCommitter, GroupOptions, Wal, WalError, WalOptions};
use crate::types::EntryKind;

/// What to run.
#[derive(Clone, Debug)]
pub struct WalBenchOptions {
    /// Parent directory for the data (a fresh subdirectory per run, removed
    /// afterwards). Must be on the disk under test, not tmpfs.
    pub dir: PathBuf,
    pub entry_bytes: usize,
    /// One run per element: that many concurrent proposers.
    pub proposers: Vec<usize>,
    /// Measured time per run, after the warm-up.
    pub duration_ms: u64,
    pub warmup_ms: u64,
    /// Duration of the raw write + fdatasync loop.
    pub raw_duration_ms: u64,
    pub wal: WalOptions,
    pub group: GroupOptions,
    pub executor: ExecutorSettings,
}

impl Default for WalBenchOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/tmp/corekv-wal-bench"),
            entry_bytes: 256,
            proposers: vec![1, 16, 256],
            duration_ms: 3000,
            warmup_ms: 300,
            raw_duration_ms: 3000,
            wal: WalOptions::default(),
            group: GroupOptions::default(),
            executor: ExecutorSettings::default(),
        }
    }
}

/// The raw device baseline.
#[derive(Clone, Debug, PartialEq)]
pub struct RawFsyncResult {
    pub ops: u64,
    pub ops_per_sec: f64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
}

/// One proposer-count run.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposerRun {
    pub proposers: usize,
    pub entries: u64,
    pub entries_per_sec: f64,
    pub fsyncs: u64,
    pub fsyncs_per_sec: f64,
    pub entries_per_fsync: f64,
    /// Submit-to-durable latency.
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WalBenchReport {
    pub entry_bytes: usize,
    pub raw: RawFsyncResult,
    pub runs: Vec<ProposerRun>,
}

impl WalBenchReport {
    /// Single-proposer p50 latency over the raw fdatasync p50 (target <= 1.3).
    pub fn single_latency_ratio(&self) -> Option<f64> {
        let one = self.runs.iter().find(|r| r.proposers == 1)?;
        Some(one.latency_us_p50 as f64 / self.raw.latency_us_p50.max(1) as f64)
    }

    /// Throughput of the largest proposer count over one proposer's
    /// (target >= 50 for 256).
    pub fn scaling(&self) -> Option<f64> {
        let one = self.runs.iter().find(|r| r.proposers == 1)?;
        let max = self.runs.iter().max_by_key(|r| r.proposers)?;
        Some(max.entries_per_sec / one.entries_per_sec.max(f64::MIN_POSITIVE))
    }
}

impl fmt::Display for WalBenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "raw 4 KiB O_DIRECT write+fdatasync: {:.0} ops/s, p50 {} us, p99 {} us ({} ops)",
            self.raw.ops_per_sec, self.raw.latency_us_p50, self.raw.latency_us_p99, self.raw.ops
        )?;
        writeln!(
            f,
            "{:>9} {:>12} {:>10} {:>11} {:>9} {:>9} {:>10}",
            "proposers", "entries/s", "fsyncs/s", "ent/fsync", "p50 us", "p99 us", "entries"
        )?;
        for r in &self.runs {
            writeln!(
                f,
                "{:>9} {:>12.0} {:>10.0} {:>11.1} {:>9} {:>9} {:>10}",
                r.proposers,
                r.entries_per_sec,
                r.fsyncs_per_sec,
                r.entries_per_fsync,
                r.latency_us_p50,
                r.latency_us_p99,
                r.entries
            )?;
        }
        if let Some(x) = self.single_latency_ratio() {
            writeln!(f, "1-proposer p50 / raw p50 = {x:.2} (target <= 1.3)")?;
        }
        if let Some(x) = self.scaling() {
            writeln!(
                f,
                "max-proposer / 1-proposer throughput = {x:.1}x (target >= 50x at 256)"
            )?;
        }
        Ok(())
    }
}

/// Fixed-memory latency histogram: 1 us buckets below 64 ms, 1 ms buckets
/// up to 64 s, everything above in the last bucket.
struct Histogram {
    fine: Vec<u64>,
    coarse: Vec<u64>,
    count: u64,
}

const FINE_US: u64 = 1 << 16;
const COARSE_BUCKETS: u64 = 1 << 16;

impl Histogram {
    fn new() -> Self {
        Self {
            fine: vec![0; FINE_US as usize],
            coarse: vec![0; COARSE_BUCKETS as usize],
            count: 0,
        }
    }

    fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if us < FINE_US {
            self.fine[us as usize] += 1;
        } else {
            let ms = (us / 1000).min(COARSE_BUCKETS - 1);
            self.coarse[ms as usize] += 1;
        }
        self.count += 1;
    }

    fn percentile_us(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (us, &n) in self.fine.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return us as u64;
            }
        }
        for (ms, &n) in self.coarse.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return ms as u64 * 1000;
            }
        }
        u64::MAX
    }
}

/// Runs the raw baseline, then one WAL run per proposer count, on a fresh
/// executor thread. Blocks until done.
pub fn run(opts: &WalBenchOptions) -> Result<WalBenchReport, WalError> {
    opts.wal.validate()?;
    if opts.proposers.is_empty() || opts.proposers.contains(&0) {
        return Err(WalError::InvalidOptions(
            "proposer counts must be positive".into(),
        ));
    }
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| WalError::io("create bench directory", &opts.dir, e))?;
    let o = opts.clone();
    run_on_new_executor("wal-bench", &opts.executor, move || async move {
        let raw = raw_fsync_loop(&o).await?;
        let mut runs = Vec::new();
        for &n in &o.proposers {
            runs.push(proposer_run(&o, n).await?);
        }
        Ok(WalBenchReport {
            entry_bytes: o.entry_bytes,
            raw,
            runs,
        })
    })?
}

async fn raw_fsync_loop(o: &WalBenchOptions) -> Result<RawFsyncResult, WalError> {
    super::runtime::prime_io_poll_probe(&o.dir).await?;
    let path = o.dir.join(format!("raw-{}.bin", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .dma_open(&path)
        .await
        .map_err(|e| WalError::io("create raw bench file", &path, e))?;
    // Same preparation as a WAL segment: allocated and zero-filled, so the
    // loop measures overwrites of written blocks.
    const REGION_BYTES: u64 = 1 << 20;
    let mut z = file.alloc_dma_buffer(REGION_BYTES as usize);
    z.as_bytes_mut().fill(0);
    write_all(&file, z, 0, &path, "zero-fill raw bench file").await?;
    file.fdatasync()
        .await
        .map_err(|e| WalError::io("fdatasync", &path, e))?;

    let mut hist = Histogram::new();
    let mut ops = 0u64;
    let start = Instant::now();
    let deadline = start + Duration::from_millis(o.raw_duration_ms);
    let mut pos = 0u64;
    while Instant::now() < deadline {
        let t = Instant::now();
        let mut buf = file.alloc_dma_buffer(4096);
        buf.as_bytes_mut().fill((ops % 251) as u8);
        write_all(&file, buf, pos, &path, "raw write").await?;
        file.fdatasync()
            .await
            .map_err(|e| WalError::io("fdatasync", &path, e))?;
        hist.record(t.elapsed());
        ops += 1;
        pos = (pos + 4096) % REGION_BYTES;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = file.close().await;
    let _ = std::fs::remove_file(&path);
    Ok(RawFsyncResult {
        ops,
        ops_per_sec: ops as f64 / secs,
        latency_us_p50: hist.percentile_us(50.0),
        latency_us_p99: hist.percentile_us(99.0),
    })
}

async fn proposer_run(o: &WalBenchOptions, proposers: usize) -> Result<ProposerRun, WalError> {
    let dir = o
        .dir
        .join(format!("wal-{}-{proposers}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (wal, _) = Wal::open(&dir, o.wal.clone()).await?;
    let gc = Rc::new(GroupCommitter::start(wal, 1, o.group.clone()));
    let hist = Rc::new(RefCell::new(Histogram::new()));
    let begin = Instant::now();
    let measure_from = begin + Duration::from_millis(o.warmup_ms);
    let deadline = measure_from + Duration::from_millis(o.duration_ms);
    let mut tasks = Vec::with_capacity(proposers);
    for _ in 0..proposers {
        let (gc, hist, bytes) = (gc.clone(), hist.clone(), o.entry_bytes);
        tasks.push(glommio::spawn_local(async move {
            let mut n = 0u64;
            loop {
                let t = Instant::now();
                if t >= deadline {
                    return Ok::<u64, WalError>(n);
                }
                gc.submit(EntryKind::Normal, vec![0x5a; bytes]).await?;
                if t >= measure_from {
                    hist.borrow_mut().record(t.elapsed());
                    n += 1;
                }
            }
        }));
    }
    // Fsync count at the start of the measured window.
    glommio::timer::sleep(Duration::from_millis(o.warmup_ms)).await;
    let fsyncs_before = gc.stats().wal.fsyncs;
    let mut entries = 0;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(n) => entries += n,
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    let fsyncs = gc.stats().wal.fsyncs - fsyncs_before;
    let secs = o.duration_ms as f64 / 1000.0;
    let gc = Rc::try_unwrap(gc)
        .map_err(|_| WalError::Executor("proposer tasks still hold the committer".into()))?;
    let wal = gc.close().await;
    wal.close().await?;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(e) = first_err {
        return Err(e);
    }
    let hist = hist.borrow();
    Ok(ProposerRun {
        proposers,
        entries,
        entries_per_sec: entries as f64 / secs,
        fsyncs,
        fsyncs_per_sec: fsyncs as f64 / secs,
        entries_per_fsync: entries as f64 / fsyncs.max(1) as f64,
        latency_us_p50: hist.percentile_us(50.0),
        latency_us_p99: hist.percentile_us(99.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles() {
        let mut h = Histogram::new();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::from_millis(200));
        assert_eq!(h.percentile_us(50.0), 51);
        assert_eq!(h.percentile_us(100.0), 200_000);
    }

    #[test]
    fn tiny_run_produces_a_report() {
        let dir = tempfile::Builder::new()
            .prefix("wal-bench-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let opts = WalBenchOptions {
            dir: dir.path().into(),
            proposers: vec![1, 4],
            duration_ms: 100,
            warmup_ms: 10,
            raw_duration_ms: 50,
            wal: WalOptions {
                segment_bytes: 1 << 20,
                ..WalOptions::default()
            },
            ..WalBenchOptions::default()
        };
        let r = run(&opts).unwrap();
        assert!(r.raw.ops > 0);
        assert_eq!(r.runs.len(), 2);
        assert!(r.runs.iter().all(|x| x.entries > 0 && x.fsyncs > 0));
        assert!(r.to_string().contains("proposers"));
    }
}
