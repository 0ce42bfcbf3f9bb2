//! A long history is checked in memory that grows linearly with it. The
//! search's memo once kept a bitset of every operation per step, so its
//! memory grew with the square of the history: an 8-minute chaos run
//! (180,000 operations) took 24 GB and was killed by the kernel. Alone in
//! its test binary, so the process's peak RSS is this test's.

mod common;

use std::collections::HashMap;

use common::*;

/// Operations in the generated history (puts and reads, overlapping).
const OPS: usize = 60_000;
/// Peak RSS allowed for checking it. Measured: 2,224 MB with the bitset
/// memo (each memo entry held a bitset of every operation and a copy of the
/// state set), 649 MB with fingerprints (what remains is linear: the
/// search stack's states and the store at every revision).
const MAX_PEAK_RSS_MB: u64 = 1024;

fn peak_rss_mb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb / 1024
}

#[test]
fn a_long_history_is_checked_in_linear_memory() {
    let mut ops = Vec::with_capacity(OPS);
    // key -> (create revision, version)
    let mut keys: HashMap<String, (i64, i64)> = HashMap::new();
    let mut rev = 1;
    for i in 0..OPS / 2 {
        rev += 1;
        let (k, v) = (format!("k{:02}", i % 16), format!("v{i}"));
        let (create, version) = keys
            .entry(k.clone())
            .and_modify(|(_, n)| *n += 1)
            .or_insert((rev, 1));
        let t = i as u64 * 10;
        // Each put overlaps the next two; its read overlaps the next put.
        ops.push(put(i as u32 % 4, (t, t + 25), &k, &v, rev));
        let read = kv(&k, &v, *create, rev, *version);
        ops.push(get(4 + i as u32 % 4, (t + 26, t + 30), &k, rev, vec![read]));
    }
    let before = peak_rss_mb();
    let report = run(ops);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.final_revision, rev);
    let peak = peak_rss_mb();
    assert!(
        peak <= MAX_PEAK_RSS_MB,
        "peak RSS {peak} MB (before the check: {before} MB) for {OPS} operations"
    );
}
