//! Prometheus metrics, with etcd's names where etcd has one (operators alert
//! on them). Lock-free: counters and histogram buckets are atomics bumped from
//! any core; `/metrics` renders a consistent-enough text snapshot.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket upper bounds in seconds, etcd's for disk durations
/// (0.001 s doubling to 8.192 s).
const DISK_BUCKETS_S: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];
/// Finer buckets for in-memory work (apply, read index): 0.0001 s doubling.
const FAST_BUCKETS_S: [f64; 14] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192,
];

pub struct Histogram {
    bounds_s: &'static [f64; 14],
    buckets: [AtomicU64; 14],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new(bounds_s: &'static [f64; 14]) -> Histogram {
        Histogram {
            bounds_s,
            buckets: [const { AtomicU64::new(0) }; 14],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = self.bounds_s.iter().position(|b| s <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in self.bounds_s.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Request kinds counted per protocol; index into the request counters.
#[derive(Copy, Clone, Debug)]
pub enum ReqKind {
    Range,
    Put,
    DeleteRange,
    Txn,
    Compact,
    Maintenance,
    Cluster,
    Watch,
    Lease,
    Other,
}
const REQ_KINDS: [&str; 10] = [
    "Range",
    "Put",
    "DeleteRange",
    "Txn",
    "Compact",
    "Maintenance",
    "Cluster",
    "Watch",
    "Lease",
    "Other",
];

pub struct Metrics {
    pub has_leader: AtomicI64,
    pub is_leader: AtomicI64,
    pub leader_changes: AtomicU64,
    pub proposals_committed: AtomicU64,
    pub proposals_applied: AtomicU64,
    pub proposals_pending: AtomicI64,
    pub proposals_failed: AtomicU64,
    pub db_total_size_bytes: AtomicU64,
    pub db_in_use_bytes: AtomicU64,
    pub keys_total: AtomicI64,
    /// 1 while a compaction's physical pass is running.
    pub compaction_pending: AtomicI64,
    pub watchers: AtomicI64,
    pub wal_fsync: Histogram,
    pub backend_commit: Histogram,
    pub apply: Histogram,
    pub read_index: Histogram,
    /// Durable store checkpoints (`--store-sync-entries`), the Raft core waiting.
    pub store_sync: Histogram,
    native_ok: [AtomicU64; 10],
    native_err: [AtomicU64; 10],
}

pub static METRICS: Metrics = Metrics {
    has_leader: AtomicI64::new(0),
    is_leader: AtomicI64::new(0),
    leader_changes: AtomicU64::new(0),
    proposals_committed: AtomicU64::new(0),
    proposals_applied: AtomicU64::new(0),
    proposals_pending: AtomicI64::new(0),
    proposals_failed: AtomicU64::new(0),
    db_total_size_bytes: AtomicU64::new(0),
    db_in_use_bytes: AtomicU64::new(0),
    keys_total: AtomicI64::new(0),
    compaction_pending: AtomicI64::new(0),
    watchers: AtomicI64::new(0),
    wal_fsync: Histogram::new(&DISK_BUCKETS_S),
    backend_commit: Histogram::new(&DISK_BUCKETS_S),
    apply: Histogram::new(&FAST_BUCKETS_S),
    read_index: Histogram::new(&FAST_BUCKETS_S),
    store_sync: Histogram::new(&DISK_BUCKETS_S),
    native_ok: [const { AtomicU64::new(0) }; 10],
    native_err: [const { AtomicU64::new(0) }; 10],
};

impl Metrics {
    /// Sets the backend size gauges (`etcd_mvcc_db_total_size_in_bytes`,
    /// `..._in_use_...`) from the store.
    pub fn publish_db_size(&self, store: &corekv_storage::Store) {
        self.db_total_size_bytes
            .store(store.db_size_bytes(), Relaxed);
        self.db_in_use_bytes
            .store(store.db_size_in_use_bytes(), Relaxed);
    }

    pub fn native_request(&self, kind: ReqKind, ok: bool) {
        let counters = if ok {
            &self.native_ok
        } else {
            &self.native_err
        };
        counters[kind as usize].fetch_add(1, Relaxed);
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not.",
            self.has_leader.load(Relaxed),
        );
        gauge(
            &mut out,
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            self.is_leader.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_server_leader_changes_seen_total",
            "The number of leader changes seen.",
            self.leader_changes.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed.",
            self.proposals_committed.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_server_proposals_applied_total",
            "The total number of consensus proposals applied.",
            self.proposals_applied.load(Relaxed),
        );
        gauge(
            &mut out,
            "etcd_server_proposals_pending",
            "The current number of pending proposals to commit.",
            self.proposals_pending.load(Relaxed),
        );
        counter(
            &mut out,
            "etcd_server_proposals_failed_total",
            "The total number of failed proposals seen.",
            self.proposals_failed.load(Relaxed),
        );
        gauge(
            &mut out,
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            i64::try_from(self.db_total_size_bytes.load(Relaxed)).unwrap_or(i64::MAX),
        );
        gauge(
            &mut out,
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes.",
            i64::try_from(self.db_in_use_bytes.load(Relaxed)).unwrap_or(i64::MAX),
        );
        gauge(
            &mut out,
            "corekv_mvcc_compaction_pending",
            "1 while a compaction's physical pass runs (old revisions being removed).",
            self.compaction_pending.load(Relaxed),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_keys_total",
            "Total number of keys.",
            self.keys_total.load(Relaxed),
        );
        gauge(
            &mut out,
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            self.watchers.load(Relaxed),
        );
        self.wal_fsync.render(
            &mut out,
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL.",
        );
        self.backend_commit.render(
            &mut out,
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
        );
        self.apply.render(
            &mut out,
            "corekv_apply_duration_seconds",
            "The latency distributions of applying one batch of committed entries.",
        );
        self.read_index.render(
            &mut out,
            "corekv_read_index_duration_seconds",
            "The latency distributions of linearizable read-index rounds.",
        );
        self.store_sync.render(
            &mut out,
            "corekv_store_sync_duration_seconds",
            "The latency distributions of durable store checkpoints (the Raft core waits).",
        );
        let _ = writeln!(
            out,
            "# HELP corekv_native_requests_total Native-protocol requests by type and status.\n# TYPE corekv_native_requests_total counter"
        );
        for (i, kind) in REQ_KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "corekv_native_requests_total{{type=\"{kind}\",status=\"ok\"}} {}",
                self.native_ok[i].load(Relaxed)
            );
            let _ = writeln!(
                out,
                "corekv_native_requests_total{{type=\"{kind}\",status=\"error\"}} {}",
                self.native_err[i].load(Relaxed)
            );
        }
        crate::stages::WRITE_STAGES.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&DISK_BUCKETS_S);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"));
        assert!(out.contains("x_bucket{le=\"0.004\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"8.192\"} 2\n"));
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"));
        assert!(out.contains("x_count 3\n"));
    }

    #[test]
    fn render_has_etcd_names() {
        let text = METRICS.render();
        for name in [
            "etcd_server_has_leader",
            "etcd_server_proposals_committed_total",
            "etcd_disk_wal_fsync_duration_seconds_bucket",
            "etcd_mvcc_db_total_size_in_bytes",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
