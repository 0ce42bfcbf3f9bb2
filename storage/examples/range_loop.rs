//! Range-scan loop for profiling (`perf record`): opens a store written by
//! the `load` example (random keys) and runs ranges of about 1000 keys, the
//! storage bench's row 5, with nothing else in the process.
//!
//! `cargo run --release -p corekv-storage --example range_loop -- PATH N [RANGES] [owned|visit]`
//! (N: the key count the store was loaded with; RANGES default 20,000;
//! `owned` calls `range()`, `visit` calls `range_visit` and sums key and
//! value lengths). Prints ranges per second and per CPU second of a first
//! pass and of a second pass over the same ranges (pages already touched).

use std::time::Instant;

use corekv_storage::{RangeRequest, Store, StoreOptions};

mod common;
use common::{cpu_secs, mix, warm_up};

// Production and bench parity: every corekv binary runs on mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: range_loop PATH N [RANGES] [owned|visit]");
        std::process::exit(2);
    };
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, ranges) = (num(2, 1_000_000).max(1000), num(3, 20_000));
    let visit = args.get(4).is_some_and(|s| s == "visit");
    let store = Store::open(path.as_ref(), StoreOptions::default()).expect("open");
    let view = store.read().expect("read");
    println!("warm-up: {} keys", warm_up(&view));
    let span = u64::MAX / n * 1000;
    for pass in 1..=2 {
        let (t, cpu) = (Instant::now(), cpu_secs());
        let (mut keys, mut bytes) = (0usize, 0usize);
        for j in 0..ranges {
            let start = mix(j + 5) % (u64::MAX - span);
            let req = RangeRequest {
                key: format!("{start:016x}").into_bytes(),
                range_end: format!("{:016x}", start + span).into_bytes(),
                limit: 1000,
                ..Default::default()
            };
            if visit {
                view.range_visit(&req, |kv| {
                    keys += 1;
                    bytes += kv.key.len() + kv.value.len();
                })
                .expect("range");
            } else {
                let r = view.range(&req).expect("range");
                keys += r.kvs.len();
                bytes += r
                    .kvs
                    .iter()
                    .map(|kv| kv.key.len() + kv.value.len())
                    .sum::<usize>();
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        println!(
            "pass {pass}: {ranges} ranges ({}) in {secs:.2} s ({cpu:.2} CPU s): {:.0} ranges/s, {:.0} per CPU second, {} keys and {} bytes per range",
            if visit { "range_visit" } else { "range" },
            ranges as f64 / secs,
            ranges as f64 / cpu.max(0.01),
            keys as u64 / ranges,
            bytes as u64 / ranges
        );
    }
}
