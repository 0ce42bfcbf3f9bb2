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
    /// Measured time per proposer count, after the warm-up.
    pub duration_ms: u64,
    pub warmup_ms: u64,
    /// Measured time of the raw write + fdatasync loop.
    pub raw_duration_ms: u64,
    /// The raw loop and the proposer counts take turns in slices this long,
    /// so a change in background disk load hits all of them alike.
    pub slice_ms: u64,
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
            slice_ms: 250,
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

    /// A placeholder without buckets, for swapping a histogram out.
    fn empty() -> Self {
        Self {
            fine: Vec::new(),
            coarse: Vec::new(),
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

/// Runs the raw baseline and one WAL configuration per proposer count, on
/// a fresh executor thread, interleaved in slices of `slice_ms` so that all
/// of them see the same background load. Blocks until done.
pub fn run(opts: &WalBenchOptions) -> Result<WalBenchReport, WalError> {
    opts.wal.validate()?;
    if opts.proposers.is_empty() || opts.proposers.contains(&0) {
        return Err(WalError::InvalidOptions(
            "proposer counts must be positive".into(),
        ));
    }
    if opts.slice_ms == 0 {
        return Err(WalError::InvalidOptions("slice_ms must be positive".into()));
    }
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| WalError::io("create bench directory", &opts.dir, e))?;
    let o = opts.clone();
    run_on_new_executor("wal-bench", &opts.executor, move || async move {
        run_slices(&o).await
    })?
}

/// Latencies and counts of one configuration, summed over its slices.
struct Acc {
    hist: Histogram,
    ops: u64,
    fsyncs: u64,
    secs: f64,
}

impl Acc {
    fn new() -> Self {
        Self {
            hist: Histogram::new(),
            ops: 0,
            fsyncs: 0,
            secs: 0.0,
        }
    }
}

async fn run_slices(o: &WalBenchOptions) -> Result<WalBenchReport, WalError> {
    let raw = RawFile::create(o).await?;
    let mut wals = Vec::with_capacity(o.proposers.len());
    for &n in &o.proposers {
        let dir = o.dir.join(format!("wal-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open(&dir, o.wal.clone()).await?;
        wals.push((dir, Rc::new(GroupCommitter::start(wal, 1, o.group.clone()))));
    }
    // Warm-up: one untimed slice of each.
    let warm = Duration::from_millis(o.warmup_ms);
    raw.slice(warm, &mut Acc::new()).await?;
    for (k, &n) in o.proposers.iter().enumerate() {
        proposer_slice(&wals[k].1, n, o.entry_bytes, warm, &mut Acc::new()).await?;
    }

    let mut raw_acc = Acc::new();
    let mut accs: Vec<Acc> = o.proposers.iter().map(|_| Acc::new()).collect();
    let slice = Duration::from_millis(o.slice_ms);
    let rounds = o.duration_ms.div_ceil(o.slice_ms).max(1);
    let raw_rounds = o.raw_duration_ms.div_ceil(o.slice_ms).max(1);
    for round in 0..rounds.max(raw_rounds) {
        if round < raw_rounds {
            raw.slice(slice, &mut raw_acc).await?;
        }
        if round < rounds {
            for (k, &n) in o.proposers.iter().enumerate() {
                proposer_slice(&wals[k].1, n, o.entry_bytes, slice, &mut accs[k]).await?;
            }
        }
    }
    raw.remove().await;
    for (dir, gc) in wals {
        let gc = Rc::try_unwrap(gc)
            .map_err(|_| WalError::Executor("a proposer still holds the committer".into()))?;
        gc.close().await.close().await?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    let raw = RawFsyncResult {
        ops: raw_acc.ops,
        ops_per_sec: raw_acc.ops as f64 / raw_acc.secs,
        latency_us_p50: raw_acc.hist.percentile_us(50.0),
        latency_us_p99: raw_acc.hist.percentile_us(99.0),
    };
    let runs = o
        .proposers
        .iter()
        .zip(accs)
        .map(|(&proposers, a)| ProposerRun {
            proposers,
            entries: a.ops,
            entries_per_sec: a.ops as f64 / a.secs,
            fsyncs: a.fsyncs,
            fsyncs_per_sec: a.fsyncs as f64 / a.secs,
            entries_per_fsync: a.ops as f64 / a.fsyncs.max(1) as f64,
            latency_us_p50: a.hist.percentile_us(50.0),
            latency_us_p99: a.hist.percentile_us(99.0),
        })
        .collect();
    Ok(WalBenchReport {
        entry_bytes: o.entry_bytes,
        raw,
        runs,
    })
}

/// The raw baseline: 4 KiB O_DIRECT write + fdatasync, cycling over a
/// zero-filled 1 MiB region (the same preparation as a WAL segment, so both
/// overwrite written blocks).
struct RawFile {
    file: glommio::io::DmaFile,
    path: PathBuf,
    pos: std::cell::Cell<u64>,
}

const RAW_REGION_BYTES: u64 = 1 << 20;

impl RawFile {
    async fn create(o: &WalBenchOptions) -> Result<Self, WalError> {
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
        let mut z = file.alloc_dma_buffer(RAW_REGION_BYTES as usize);
        z.as_bytes_mut().fill(0);
        write_all(&file, z, 0, &path, "zero-fill raw bench file").await?;
        file.fdatasync()
            .await
            .map_err(|e| WalError::io("fdatasync", &path, e))?;
        Ok(Self {
            file,
            path,
            pos: std::cell::Cell::new(0),
        })
    }

    async fn slice(&self, dur: Duration, acc: &mut Acc) -> Result<(), WalError> {
        let start = Instant::now();
        while start.elapsed() < dur {
            let t = Instant::now();
            let mut buf = self.file.alloc_dma_buffer(4096);
            buf.as_bytes_mut().fill((acc.ops % 251) as u8);
            let pos = self.pos.get();
            write_all(&self.file, buf, pos, &self.path, "raw write").await?;
            self.file
                .fdatasync()
                .await
                .map_err(|e| WalError::io("fdatasync", &self.path, e))?;
            acc.hist.record(t.elapsed());
            acc.ops += 1;
            acc.fsyncs += 1;
            self.pos.set((pos + 4096) % RAW_REGION_BYTES);
        }
        acc.secs += start.elapsed().as_secs_f64();
        Ok(())
    }

    async fn remove(self) {
        // Benchmark scratch file: failures to clean up change no result.
        let _ = self.file.close().await;
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `proposers` tasks submit entries back to back for `dur`; every
/// submit-to-durable latency is recorded.
async fn proposer_slice(
    gc: &Rc<GroupCommitter>,
    proposers: usize,
    entry_bytes: usize,
    dur: Duration,
    acc: &mut Acc,
) -> Result<(), WalError> {
    let hist = Rc::new(RefCell::new(std::mem::replace(
        &mut acc.hist,
        Histogram::empty(),
    )));
    let fsyncs_before = gc.stats().wal.fsyncs;
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::with_capacity(proposers);
    for _ in 0..proposers {
        let (gc, hist) = (gc.clone(), hist.clone());
        tasks.push(glommio::spawn_local(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                gc.submit(EntryKind::Normal, vec![0x5a; entry_bytes])
                    .await?;
                hist.borrow_mut().record(t.elapsed());
                n += 1;
            }
            Ok::<u64, WalError>(n)
        }));
    }
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(n) => acc.ops += n,
            Err(e) => first_err = first_err.or(Some(e)),
        }
    }
    acc.secs += start.elapsed().as_secs_f64();
    acc.fsyncs += gc.stats().wal.fsyncs - fsyncs_before;
    acc.hist = Rc::try_unwrap(hist)
        .map_err(|_| WalError::Executor("a proposer still holds the histogram".into()))?
        .into_inner();
    first_err.map_or(Ok(()), Err)
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
            slice_ms: 25,
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
