//! Small loader for footprint measurements: puts N keys into a fresh store
//! in durable commits of 1000 and prints the file size; inspect the result
//! with `corekv inspect --file PATH`.
//!
//! `cargo run --release -p corekv-storage --example load -- PATH [N] [KEY_BYTES] [VALUE_BYTES] [ORDER] [del]`
//! (defaults 1,000,000, 64, 256, `random`; ORDER `seq` puts keys in
//! ascending order; `del` then deletes every key with one delete-range
//! request in one commit, like `etcdctl del --prefix`, and times it, then
//! compacts at the current revision with `compact_step` until done and
//! prints the step count, total and longest step;
//! `CKV_RANGE_DELETE_MIN_KEYS=18446744073709551615` forces the per-key
//! delete path). Random keys are the storage bench's: 16 hex digits of a
//! hash of the index, padded with '.'. ORDER `k8s` puts Kubernetes-like keys
//! `/registry/pods/ns-NNN/pod-NNNNNNNN` (1000 namespaces, pod number from a
//! hash of the index, so random order), padded with '.' to KEY_BYTES when
//! shorter.

use corekv_storage::{DeleteRangeRequest, Store, StoreOptions};

mod common;
use common::{mix, put_indexed};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: load PATH [N] [KEY_BYTES] [VALUE_BYTES] [random|seq|k8s] [del]");
        std::process::exit(2);
    };
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, kb, vb) = (num(2, 1_000_000), num(3, 64) as usize, num(4, 256) as usize);
    let seq = args.get(5).is_some_and(|s| s == "seq");
    let k8s = args.get(5).is_some_and(|s| s == "k8s");
    let _ = std::fs::remove_file(path);
    // `CKV_RANGE_DELETE_MIN_KEYS` overrides the store option (a huge value
    // forces the per-key delete path, for A/B runs).
    let mut opts = StoreOptions::default();
    if let Some(n) = std::env::var("CKV_RANGE_DELETE_MIN_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        opts.range_delete_min_keys = n;
    }
    let store = Store::open(path.as_ref(), opts).expect("open");
    let t = std::time::Instant::now();
    let mut applied = 0;
    for chunk in 0..n.div_ceil(1000) {
        let mut b = store.write().expect("write");
        for i in chunk * 1000..((chunk + 1) * 1000).min(n) {
            let mut key = if seq {
                format!("{i:016}").into_bytes()
            } else if k8s {
                let h = mix(i);
                format!(
                    "/registry/pods/ns-{:03}/pod-{:08}",
                    h % 1000,
                    (h >> 10) % 100_000_000
                )
                .into_bytes()
            } else {
                format!("{:016x}", mix(i)).into_bytes()
            };
            if !k8s || key.len() < kb {
                key.resize(kb, b'.');
            }
            put_indexed(&mut b, key, i, 7, vb);
        }
        applied += 1;
        b.commit(applied, true).expect("commit");
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{n} keys ({kb} B keys, {vb} B values, {}) in {secs:.1} s ({:.0} puts/s); file {:.1} MB, in use {:.1} MB, payload {:.1} MB",
        if seq {
            "ascending"
        } else if k8s {
            "Kubernetes-like, random order"
        } else {
            "random order"
        },
        n as f64 / secs,
        store.db_size_bytes() as f64 / 1e6,
        store.db_size_in_use_bytes() as f64 / 1e6,
        (n * (kb + vb) as u64) as f64 / 1e6
    );
    if args.get(6).is_some_and(|s| s == "del") {
        let t = std::time::Instant::now();
        let mut b = store.write().expect("write");
        let r = b
            .delete_range(&DeleteRangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })
            .expect("delete");
        let t_apply = t.elapsed().as_secs_f64();
        let info = b.commit(applied + 1, false).expect("commit");
        let t_commit = t.elapsed().as_secs_f64();
        store.sync().expect("sync");
        println!(
            "delete of {} keys: apply {t_apply:.2} s, commit {:.2} s, sync {:.2} s ({} events); file {:.1} MB",
            r.deleted,
            t_commit - t_apply,
            t.elapsed().as_secs_f64() - t_commit,
            info.events.len(),
            store.db_size_bytes() as f64 / 1e6
        );
        drop(info);
        let t = std::time::Instant::now();
        let mut b = store.write().expect("write");
        let rev = b.revision();
        b.compact(rev).expect("compact");
        b.commit(applied + 2, false).expect("commit");
        let (mut steps, mut longest) = (0u32, 0f64);
        loop {
            let s = std::time::Instant::now();
            let more = store.compact_step().expect("compact step");
            steps += 1;
            longest = longest.max(s.elapsed().as_secs_f64());
            if !more {
                break;
            }
        }
        store.sync().expect("sync");
        println!(
            "compaction at {rev}: {steps} steps in {:.2} s (longest {:.1} ms); in use {:.1} MB",
            t.elapsed().as_secs_f64(),
            longest * 1e3,
            store.db_size_in_use_bytes() as f64 / 1e6
        );
    }
}
