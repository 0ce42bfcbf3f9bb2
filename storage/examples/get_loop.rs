//! Point-get loop for profiling (`perf record`): opens a store written by
//! the `load` example (random keys) and runs random single-key gets, the
//! storage bench's row 4 (`range()` of one key, value copied out), with
//! nothing else in the process.
//!
//! `cargo run --release -p corekv-storage --example get_loop -- PATH N [GETS]`
//! (N: the key count the store was loaded with, with the default 64 B keys;
//! GETS default 1,000,000). Prints gets per second and per CPU second of a
//! first pass and of a second pass over the same keys (pages touched).

use std::time::Instant;

use corekv_storage::{RangeRequest, Store, StoreOptions};

mod common;
use common::{cpu_secs, mix, random_key, warm_up};

// Production and bench parity: every corekv binary runs on mimalloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: get_loop PATH N [GETS]");
        std::process::exit(2);
    };
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, gets) = (num(2, 1_000_000).max(1), num(3, 1_000_000));
    let store = Store::open(path.as_ref(), StoreOptions::default()).expect("open");
    let view = store.read().expect("read");
    println!("warm-up: {} keys", warm_up(&view));
    for pass in 1..=2 {
        let (t, cpu) = (Instant::now(), cpu_secs());
        let mut bytes = 0usize;
        for j in 0..gets {
            // The load example's random key for index `i`, as the bench's.
            let key = random_key(mix(j + 99) % n, 64);
            let r = view
                .range(&RangeRequest {
                    key,
                    ..Default::default()
                })
                .expect("get");
            assert_eq!(r.kvs.len(), 1, "every loaded key is found");
            bytes += r.kvs[0].value.len();
        }
        let secs = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - cpu;
        println!(
            "pass {pass}: {gets} gets in {secs:.2} s ({cpu:.2} CPU s): {:.0} gets/s, {:.0} per CPU second, {} value bytes per get",
            gets as f64 / secs,
            gets as f64 / cpu.max(0.01),
            bytes as u64 / gets.max(1)
        );
    }
}
