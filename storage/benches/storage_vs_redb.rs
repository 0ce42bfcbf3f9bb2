//! corekv-storage vs redb on the same workload, each engine in its own child
//! process (so RSS is per engine). Prints a side-by-side table.
//!
//! Run: `cargo bench -p corekv-storage --bench storage_vs_redb`
//! Knobs (env): `CKV_BENCH_N` keys (default 1,000,000), `CKV_BENCH_DIR`
//! data directory (default /var/tmp), `CKV_BENCH_SWEEP_RATIO` (corekv's
//! `compaction_sweep_ratio`; 0 forces revision-mode compaction),
//! `CKV_BENCH_RANGES` ranges per range row (default 1,000).
//!
//! Workload: N keys of 64 B with 256 B values in commits of 1000 (durable),
//! single-put commits (non-durable and durable), random point gets, ranges of
//! about 1000 keys (row 5: every key and value copied into owned buffers,
//! corekv `range()` and redb's iterator with `to_vec()`; row 5c: borrowed,
//! corekv `range_visit` and redb's iterator reading the `AccessGuard`s in
//! place, both summing key and value lengths; rows 4a, 5a and 5e give the
//! get and range rates per CPU second of the child, steadier than the wall
//! clock on a loaded host), overwrite of all keys then compaction of the N old
//! revisions (corekv only: redb keeps no history) interleaved with single-put
//! commits (step and commit latency percentiles), file size after
//! defragmentation/compaction, open time, peak and post-restart RSS.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use corekv_storage::{PutRequest, RangeRequest, Store, StoreOptions};
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

#[path = "../examples/common/mod.rs"]
mod common;
use common::{cpu_secs, mix, random_key};

// Production parity: every corekv binary runs on mimalloc; both engines'
// children get it here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const BATCH: usize = 1000;
const VALUE_BYTES: usize = 256;
const RANGE_OWNED: &str = "5 range ~1000 keys, owned (ranges/s)";
const RANGE_OWNED_CPU: &str = "5a range ~1000 keys, owned (ranges/CPU s)";
const RANGE_BORROWED: &str = "5c range ~1000 keys, borrowed (ranges/s)";
const RANGE_BORROWED_CPU: &str = "5e range ~1000 keys, borrowed (ranges/CPU s)";

/// 64-byte key: 16 hex digits of a hash of `i` (uniform order), padded.
fn key(i: u64) -> Vec<u8> {
    random_key(i, 64)
}

/// Ranges per range row (`CKV_BENCH_RANGES`).
fn range_count() -> u64 {
    std::env::var("CKV_BENCH_RANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Start and end of range `j` of about 1000 of the `n` keys.
fn range_bounds(n: u64, j: u64) -> (Vec<u8>, Vec<u8>) {
    let span = u64::MAX / n * 1000;
    let start = mix(j + 5) % (u64::MAX - span);
    (hex_bound(start), hex_bound(start + span))
}

fn hex_bound(x: u64) -> Vec<u8> {
    format!("{x:016x}").into_bytes()
}

fn value(i: u64, round: u8) -> Vec<u8> {
    let mut v = vec![round; VALUE_BYTES];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Wall clock and CPU time at the start of a phase.
struct Timer(Instant, f64);

impl Timer {
    fn start() -> Timer {
        Timer(Instant::now(), cpu_secs())
    }
}

struct Out(BTreeMap<&'static str, String>);

impl Out {
    fn rate(&mut self, name: &'static str, ops: u64, t: Instant) {
        let s = t.elapsed().as_secs_f64();
        self.0.insert(name, format!("{:.0}", ops as f64 / s));
    }
    /// Rate per wall second under `name` and per CPU second under `cpu_name`.
    fn rates(&mut self, name: &'static str, cpu_name: &'static str, ops: u64, t: Timer) {
        let cpu = (cpu_secs() - t.1).max(0.01);
        self.rate(name, ops, t.0);
        self.0.insert(cpu_name, format!("{:.0}", ops as f64 / cpu));
    }
    fn set(&mut self, name: &'static str, v: impl ToString) {
        self.0.insert(name, v.to_string());
    }
    fn print(&self) {
        for (k, v) in &self.0 {
            println!("{k}\t{v}");
        }
    }
}

/// `p`-th percentile (100 = max) of the samples.
fn pct(v: &mut [Duration], p: usize) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    v[((v.len() - 1) * p / 100).min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Puts key `i` (value of `round`) in a commit of its own.
fn put_one(store: &Store, i: u64, round: u8, durable: bool, applied: &mut u64) {
    let mut b = store.write().unwrap();
    b.put(&PutRequest {
        key: key(i),
        value: value(i, round),
        ..Default::default()
    })
    .unwrap();
    *applied += 1;
    b.commit(*applied, durable).unwrap();
}

/// Puts keys `0..n` (values of `round`) in commits of `BATCH`.
fn put_all(store: &Store, n: u64, round: u8, durable: bool, applied: &mut u64) {
    for chunk in 0..n.div_ceil(BATCH as u64) {
        let mut b = store.write().unwrap();
        for i in chunk * BATCH as u64..((chunk + 1) * BATCH as u64).min(n) {
            b.put(&PutRequest {
                key: key(i),
                value: value(i, round),
                ..Default::default()
            })
            .unwrap();
        }
        *applied += 1;
        b.commit(*applied, durable).unwrap();
    }
}

fn run_corekv(n: u64, dir: &Path) -> Out {
    let mut out = Out(BTreeMap::new());
    let path = dir.join("corekv.db");
    let defaults = StoreOptions::default();
    let opts = StoreOptions {
        quota_bytes: 64 << 30,
        initial_mmap_bytes: 64 << 20,
        compaction_sweep_ratio: std::env::var("CKV_BENCH_SWEEP_RATIO")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(defaults.compaction_sweep_ratio),
        ..defaults
    };
    let store = Store::open(&path, opts.clone()).unwrap();
    let mut applied = 0u64;
    let t = Instant::now();
    put_all(&store, n, 0, true, &mut applied);
    out.rate("1 put, batch 1000, durable (ops/s)", n, t);
    let singles = (n / 10).clamp(1000, 100_000);
    let t = Instant::now();
    for j in 0..singles {
        put_one(&store, mix(j) % n, 1, false, &mut applied);
    }
    store.sync().unwrap();
    out.rate("2 put, batch 1, no sync (ops/s)", singles, t);
    let t = Instant::now();
    for j in 0..1000 {
        put_one(&store, mix(j + 7) % n, 2, true, &mut applied);
    }
    out.rate("3 put, batch 1, durable (ops/s)", 1000, t);
    let gets = n.min(1_000_000);
    let view = store.read().unwrap();
    let t = Timer::start();
    for j in 0..gets {
        let r = view
            .range(&RangeRequest {
                key: key(mix(j + 99) % n),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(r.kvs.len(), 1);
    }
    out.rates("4 random get (ops/s)", "4a random get (ops/CPU s)", gets, t);
    let ranges = range_count();
    let request = |j: u64| {
        let (key, range_end) = range_bounds(n, j);
        RangeRequest {
            key,
            range_end,
            limit: 1000,
            ..Default::default()
        }
    };
    let t = Timer::start();
    let mut seen = 0usize;
    for j in 0..ranges {
        seen += view.range(&request(j)).unwrap().kvs.len();
    }
    out.rates(RANGE_OWNED, RANGE_OWNED_CPU, ranges, t);
    out.set("5b keys per range (avg)", seen as u64 / ranges);
    let t = Timer::start();
    let mut bytes = 0usize;
    for j in 0..ranges {
        view.range_visit(&request(j), |kv| bytes += kv.key.len() + kv.value.len())
            .unwrap();
    }
    out.rates(RANGE_BORROWED, RANGE_BORROWED_CPU, ranges, t);
    out.set("5d bytes per borrowed range (avg)", bytes as u64 / ranges);
    drop(view);
    // Overwrite every key once, then compact the N superseded revisions.
    put_all(&store, n, 3, false, &mut applied);
    store.sync().unwrap();
    out.set("6 file MB before compaction", file_size(&path) >> 20);
    let t = Instant::now();
    let mut b = store.write().unwrap();
    let rev = b.revision();
    b.compact(rev).unwrap();
    b.commit(applied, false).unwrap();
    // Interleave one single-put commit (which also runs its small commit-time
    // step) with one `compact_step`, as a server does under load.
    let mut steps = Vec::new();
    let mut puts = Vec::new();
    let mut j = 0u64;
    loop {
        let i = mix(j + 11) % n;
        j += 1;
        let tp = Instant::now();
        let mut b = store.write().unwrap();
        b.put(&PutRequest {
            key: key(i),
            value: value(i, 4),
            ..Default::default()
        })
        .unwrap();
        applied += 1;
        b.commit(applied, false).unwrap();
        puts.push(tp.elapsed());
        let ts = Instant::now();
        let more = store.compact_step().unwrap();
        steps.push(ts.elapsed());
        if !more {
            break;
        }
    }
    store.sync().unwrap();
    out.set(
        "7 compaction of N old revisions (s)",
        format!("{:.2}", t.elapsed().as_secs_f64()),
    );
    out.set("7a compact_step count", steps.len());
    out.set("7b compact_step p99 (ms)", ms(pct(&mut steps, 99)));
    out.set("7c compact_step max (ms)", ms(pct(&mut steps, 100)));
    out.set(
        "7d 1-put commit during compaction p99 (ms)",
        ms(pct(&mut puts, 99)),
    );
    out.set(
        "7e 1-put commit during compaction max (ms)",
        ms(pct(&mut puts, 100)),
    );
    let t = Instant::now();
    let rep = store.defragment_report().unwrap();
    out.set(
        "8 defrag / compact time (s)",
        format!("{:.2}", t.elapsed().as_secs_f64()),
    );
    out.set("8b file MB after defrag / compact", file_size(&path) >> 20);
    out.set("8c defrag truncated", rep.truncated);
    out.set("9 peak RSS MB (whole run)", rss_kib("VmHWM:") >> 10);
    drop(store);
    let t = Instant::now();
    let store = Store::open(&path, opts).unwrap();
    let r = store
        .read()
        .unwrap()
        .range(&RangeRequest {
            key: key(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.kvs.len(), 1);
    out.set(
        "10 open + first get (ms)",
        format!("{:.2}", t.elapsed().as_secs_f64() * 1000.0),
    );
    out
}

fn run_redb(n: u64, dir: &Path) -> Out {
    let mut out = Out(BTreeMap::new());
    let path = dir.join("redb.db");
    let mut db = Database::create(&path).unwrap();
    let t = Instant::now();
    for chunk in 0..n.div_ceil(BATCH as u64) {
        let w = db.begin_write().unwrap();
        {
            let mut tbl = w.open_table(TABLE).unwrap();
            for i in chunk * BATCH as u64..((chunk + 1) * BATCH as u64).min(n) {
                tbl.insert(key(i).as_slice(), value(i, 0).as_slice())
                    .unwrap();
            }
        }
        w.commit().unwrap();
    }
    out.rate("1 put, batch 1000, durable (ops/s)", n, t);
    let singles = (n / 10).clamp(1000, 100_000);
    let t = Instant::now();
    for j in 0..singles {
        let i = mix(j) % n;
        let mut w = db.begin_write().unwrap();
        w.set_durability(Durability::None).unwrap();
        {
            let mut tbl = w.open_table(TABLE).unwrap();
            tbl.insert(key(i).as_slice(), value(i, 1).as_slice())
                .unwrap();
        }
        w.commit().unwrap();
    }
    let w = db.begin_write().unwrap();
    w.commit().unwrap();
    out.rate("2 put, batch 1, no sync (ops/s)", singles, t);
    let t = Instant::now();
    for j in 0..1000 {
        let i = mix(j + 7) % n;
        let w = db.begin_write().unwrap();
        {
            let mut tbl = w.open_table(TABLE).unwrap();
            tbl.insert(key(i).as_slice(), value(i, 2).as_slice())
                .unwrap();
        }
        w.commit().unwrap();
    }
    out.rate("3 put, batch 1, durable (ops/s)", 1000, t);
    let gets = n.min(1_000_000);
    {
        let r = db.begin_read().unwrap();
        let tbl = r.open_table(TABLE).unwrap();
        let t = Timer::start();
        for j in 0..gets {
            let v = tbl.get(key(mix(j + 99) % n).as_slice()).unwrap().unwrap();
            let copy = v.value().to_vec();
            assert_eq!(copy.len(), VALUE_BYTES);
        }
        out.rates("4 random get (ops/s)", "4a random get (ops/CPU s)", gets, t);
        let ranges = range_count();
        let t = Timer::start();
        let mut seen = 0usize;
        for j in 0..ranges {
            let (a, b) = range_bounds(n, j);
            let mut rows = Vec::new();
            for e in tbl.range(a.as_slice()..b.as_slice()).unwrap() {
                let (k, v) = e.unwrap();
                rows.push((k.value().to_vec(), v.value().to_vec()));
                if rows.len() == 1000 {
                    break;
                }
            }
            seen += rows.len();
        }
        out.rates(RANGE_OWNED, RANGE_OWNED_CPU, ranges, t);
        out.set("5b keys per range (avg)", seen as u64 / ranges);
        let t = Timer::start();
        let mut bytes = 0usize;
        for j in 0..ranges {
            let (a, b) = range_bounds(n, j);
            for e in tbl.range(a.as_slice()..b.as_slice()).unwrap().take(1000) {
                let (k, v) = e.unwrap();
                bytes += k.value().len() + v.value().len();
            }
        }
        out.rates(RANGE_BORROWED, RANGE_BORROWED_CPU, ranges, t);
        out.set("5d bytes per borrowed range (avg)", bytes as u64 / ranges);
    }
    for chunk in 0..n.div_ceil(BATCH as u64) {
        let mut w = db.begin_write().unwrap();
        w.set_durability(Durability::None).unwrap();
        {
            let mut tbl = w.open_table(TABLE).unwrap();
            for i in chunk * BATCH as u64..((chunk + 1) * BATCH as u64).min(n) {
                tbl.insert(key(i).as_slice(), value(i, 3).as_slice())
                    .unwrap();
            }
        }
        w.commit().unwrap();
    }
    let w = db.begin_write().unwrap();
    w.commit().unwrap();
    out.set("6 file MB before compaction", file_size(&path) >> 20);
    out.set("7 compaction of N old revisions (s)", "n/a (no MVCC)");
    let t = Instant::now();
    while db.compact().unwrap() {}
    out.set(
        "8 defrag / compact time (s)",
        format!("{:.2}", t.elapsed().as_secs_f64()),
    );
    out.set("8b file MB after defrag / compact", file_size(&path) >> 20);
    out.set("9 peak RSS MB (whole run)", rss_kib("VmHWM:") >> 10);
    drop(db);
    let t = Instant::now();
    let db = Database::open(&path).unwrap();
    {
        let r = db.begin_read().unwrap();
        let tbl = r.open_table(TABLE).unwrap();
        assert!(tbl.get(key(1).as_slice()).unwrap().is_some());
    }
    out.set(
        "10 open + first get (ms)",
        format!("{:.2}", t.elapsed().as_secs_f64() * 1000.0),
    );
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u64 = std::env::var("CKV_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if let Some(pos) = args.iter().position(|a| a == "--child") {
        let engine = &args[pos + 1];
        let dir = PathBuf::from(&args[pos + 2]);
        let out = if engine == "corekv" {
            run_corekv(n, &dir)
        } else {
            run_redb(n, &dir)
        };
        out.print();
        return;
    }
    let base = std::env::var("CKV_BENCH_DIR").unwrap_or_else(|_| "/var/tmp".into());
    let tmp = tempfile::Builder::new()
        .prefix("corekv-bench")
        .tempdir_in(base)
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut cols: Vec<BTreeMap<String, String>> = Vec::new();
    for engine in ["corekv", "redb"] {
        let dir = tmp.path().join(engine);
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new(&exe)
            .arg("--child")
            .arg(engine)
            .arg(&dir)
            .output()
            .unwrap();
        if !o.status.success() {
            eprintln!("{engine} failed: {}", String::from_utf8_lossy(&o.stderr));
        }
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        cols.push(
            text.lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!("storage benchmark, N = {n} keys (64 B keys, 256 B values)");
    println!("{:<40} {:>16} {:>16}", "metric", "corekv-storage", "redb 4");
    let mut names: Vec<&String> = cols.iter().flat_map(|c| c.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let get = |c: &BTreeMap<String, String>| c.get(name).cloned().unwrap_or_else(|| "-".into());
        println!("{:<40} {:>16} {:>16}", name, get(&cols[0]), get(&cols[1]));
    }
}
