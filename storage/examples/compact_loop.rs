//! Compaction driver for profiling (`perf record`), the storage bench's
//! row 7 without the interleaved puts. Two steps on a store written by the
//! `load` example (random keys, 64 B keys, 256 B values):
//!
//! `cargo run --release -p corekv-storage --example compact_loop -- PATH N overwrite`
//! overwrites every key once (commits of 1000, not durable) and syncs, so
//! the file holds N superseded revisions; copy the file, then
//! `... -- COPY N compact` compacts at the current revision with
//! `compact_step` until done and prints the steps, wall and CPU seconds,
//! p99 and longest step. Profile the second step on a fresh copy each run.

use std::time::Instant;

use corekv_storage::{Store, StoreOptions};

mod common;
use common::{cpu_secs, put_indexed, random_key};

// Production and bench parity: every corekv binary runs on mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(mode)) = (args.get(1), args.get(3)) else {
        eprintln!("usage: compact_loop PATH N overwrite|compact");
        std::process::exit(2);
    };
    let n: u64 = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let opts = StoreOptions {
        quota_bytes: 64 << 30,
        ..StoreOptions::default()
    };
    let store = Store::open(path.as_ref(), opts).expect("open");
    // The store's applied index only has to grow; start above anything a
    // loader could have used.
    let mut applied = 1u64 << 40;
    if mode == "compact" {
        // Above the overwrite step's indexes.
        applied <<= 1;
    }
    match mode.as_str() {
        "overwrite" => {
            let t = Instant::now();
            for chunk in 0..n.div_ceil(1000) {
                let mut b = store.write().expect("write");
                for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
                    put_indexed(&mut b, random_key(i, 64), i, 3, 256);
                }
                applied += 1;
                b.commit(applied, false).expect("commit");
            }
            store.sync().expect("sync");
            println!(
                "overwrote {n} keys in {:.1} s; file {:.1} MB",
                t.elapsed().as_secs_f64(),
                store.db_size_bytes() as f64 / 1e6
            );
        }
        "compact" => {
            let (t, cpu) = (Instant::now(), cpu_secs());
            let mut b = store.write().expect("write");
            let rev = b.revision();
            b.compact(rev).expect("compact");
            b.commit(applied, false).expect("commit");
            let mut steps = Vec::new();
            loop {
                let s = Instant::now();
                let more = store.compact_step().expect("compact step");
                steps.push(s.elapsed().as_secs_f64());
                if !more {
                    break;
                }
            }
            store.sync().expect("sync");
            let (secs, cpu) = (t.elapsed().as_secs_f64(), cpu_secs() - cpu);
            steps.sort_by(f64::total_cmp);
            let p99 = steps[(steps.len() - 1) * 99 / 100];
            println!(
                "compaction at {rev}: {} steps in {secs:.2} s ({cpu:.2} CPU s), p99 step {:.2} ms, longest {:.2} ms; in use {:.1} MB",
                steps.len(),
                p99 * 1e3,
                steps[steps.len() - 1] * 1e3,
                store.db_size_in_use_bytes() as f64 / 1e6
            );
        }
        other => {
            eprintln!("unknown mode {other}: overwrite or compact");
            std::process::exit(2);
        }
    }
}
