//! The latency budget of a client write, stage by stage, as histograms in
//! `/metrics` (`corekv_write_stage_duration_seconds{stage=...}`).
//!
//! A write's life, with who measures each stage:
//!
//! | stage | from -> to | measured on |
//! |---|---|---|
//! | `to_core` | received by a shard's request layer -> taken by the Raft core (the core's channel) | the core |
//! | `batch_wait` | taken by the core -> the WAL write holding its entry starts | the core |
//! | `wal_write` | that WAL write starts -> its fdatasync is done | the core |
//! | `commit` | fsync done -> the entry is known committed (quorum) | the core |
//! | `apply` | committed -> applied (store commit done, answer sent) | the core |
//! | `total` | received by a shard's request layer -> the answer is back on the shard | the shard |
//!
//! `total` minus the sum of the others is the hand-over of the answer from
//! the core to the shard (the task wake-up across executors). Not counted:
//! a front-end's own wait for a per-connection in-flight permit before it
//! calls the request layer, and queueing the answer on the connection. Writes
//! answered by a member that forwarded them to the leader count the
//! forwarding in `batch_wait` (their entry reaches this member's WAL with
//! the leader's append).
//!
//! Buckets are powers of two from 1 us to 8.4 s, fine enough for
//! `corekv-bench put --stages` to estimate percentiles.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Stage {
    ToCore,
    BatchWait,
    WalWrite,
    Commit,
    Apply,
    Total,
}

pub const STAGES: [Stage; 6] = [
    Stage::ToCore,
    Stage::BatchWait,
    Stage::WalWrite,
    Stage::Commit,
    Stage::Apply,
    Stage::Total,
];

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::ToCore => "to_core",
            Stage::BatchWait => "batch_wait",
            Stage::WalWrite => "wal_write",
            Stage::Commit => "commit",
            Stage::Apply => "apply",
            Stage::Total => "total",
        }
    }
}

/// Bucket `i` counts durations <= 2^i us.
const BUCKETS: usize = 24;
pub const METRIC: &str = "corekv_write_stage_duration_seconds";

struct Hist {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

pub struct StageHistograms {
    stages: [Hist; STAGES.len()],
}

pub static WRITE_STAGES: StageHistograms = StageHistograms::new();

fn bucket_of(d: Duration) -> Option<usize> {
    let us = d.as_micros();
    // Smallest i with us <= 2^i.
    let i = if us <= 1 {
        0
    } else {
        (128 - (us - 1).leading_zeros()) as usize
    };
    (i < BUCKETS).then_some(i)
}

impl StageHistograms {
    const fn new() -> StageHistograms {
        StageHistograms {
            stages: [const {
                Hist {
                    buckets: [const { AtomicU64::new(0) }; BUCKETS],
                    count: AtomicU64::new(0),
                    sum_ns: AtomicU64::new(0),
                }
            }; STAGES.len()],
        }
    }

    pub fn observe(&self, stage: Stage, d: Duration) {
        let h = &self.stages[stage as usize];
        if let Some(i) = bucket_of(d) {
            h.buckets[i].fetch_add(1, Relaxed);
        }
        h.count.fetch_add(1, Relaxed);
        h.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {METRIC} Latency of each stage of a client write (see docs/architecture.md).\n# TYPE {METRIC} histogram"
        );
        for stage in STAGES {
            let h = &self.stages[stage as usize];
            let name = stage.name();
            let mut cumulative = 0;
            for (i, b) in h.buckets.iter().enumerate() {
                cumulative += b.load(Relaxed);
                let le = (1u64 << i) as f64 / 1e6;
                let _ = writeln!(
                    out,
                    "{METRIC}_bucket{{stage=\"{name}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let count = h.count.load(Relaxed);
            let _ = writeln!(
                out,
                "{METRIC}_bucket{{stage=\"{name}\",le=\"+Inf\"}} {count}"
            );
            let sum = h.sum_ns.load(Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "{METRIC}_sum{{stage=\"{name}\"}} {sum}");
            let _ = writeln!(out, "{METRIC}_count{{stage=\"{name}\"}} {count}");
        }
    }
}

/// A write's answer is back on the shard that received it at `received`.
pub fn observe_total(received: Instant) {
    WRITE_STAGES.observe(Stage::Total, received.elapsed());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(Duration::from_nanos(10)), Some(0));
        assert_eq!(bucket_of(Duration::from_micros(1)), Some(0));
        assert_eq!(bucket_of(Duration::from_micros(2)), Some(1));
        assert_eq!(bucket_of(Duration::from_micros(3)), Some(2));
        assert_eq!(bucket_of(Duration::from_micros(1024)), Some(10));
        assert_eq!(bucket_of(Duration::from_micros(1025)), Some(11));
        assert_eq!(bucket_of(Duration::from_secs(100)), None);
    }

    #[test]
    fn render_has_every_stage() {
        let h = StageHistograms::new();
        h.observe(Stage::WalWrite, Duration::from_micros(300));
        let mut out = String::new();
        h.render(&mut out);
        for s in STAGES {
            assert!(out.contains(&format!("{METRIC}_count{{stage=\"{}\"}}", s.name())));
        }
        assert!(out.contains(&format!(
            "{METRIC}_bucket{{stage=\"wal_write\",le=\"0.000512\"}} 1"
        )));
        assert!(out.contains(&format!(
            "{METRIC}_bucket{{stage=\"wal_write\",le=\"0.000256\"}} 0"
        )));
    }
}
