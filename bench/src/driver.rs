//! Runs N workers against a shared schedule: a fixed total, a fixed duration,
//! or both (whichever ends first), optionally paced at a global rate.
//!
//! Coordinated omission: with a rate, operation `i` is *intended* to start at
//! `start + i / rate`. Its latency is measured from that intended time, not
//! from the moment a (possibly delayed) worker actually sent it, so a server
//! stall shows up as latency of every request that should have been sent
//! during the stall.

use crate::error::OpError;
use crate::progress::Progress;
use crate::recorder::Recorder;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When to stop and how fast to go.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub total: Option<u64>,
    pub duration: Option<Duration>,
    /// Operations per second over all workers; `None` = as fast as possible.
    pub rate: Option<f64>,
}

impl Schedule {
    /// Length of the progress bar, when it is known up front.
    pub fn expected_ops(&self) -> Option<u64> {
        match (self.total, self.duration, self.rate) {
            (Some(t), _, _) => Some(t),
            (None, Some(d), Some(r)) => Some((d.as_secs_f64() * r) as u64),
            _ => None,
        }
    }
}

/// One load-generating client. `run_one` performs operation number `op`,
/// intended to start at `intended`, and returns the index of the latency
/// series it belongs to.
pub trait Worker: Send + 'static {
    fn run_one(
        &mut self,
        op: u64,
        intended: Instant,
    ) -> impl Future<Output = Result<usize, OpError>> + Send;
}

pub struct Shared {
    schedule: Schedule,
    start: Instant,
    next_op: AtomicU64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

impl Shared {
    pub fn new(schedule: Schedule, start: Instant) -> Self {
        Shared {
            schedule,
            start,
            next_op: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Claims the next operation and waits until its intended start.
    /// Returns `(op, intended_start)`, or `None` when the run is over.
    async fn claim(&self) -> Option<(u64, Instant)> {
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        if self.schedule.total.is_some_and(|t| op >= t) {
            return None;
        }
        let deadline = self.schedule.duration.map(|d| self.start + d);
        let intended = match self.schedule.rate {
            Some(rate) => self.start + Duration::from_secs_f64(op as f64 / rate),
            None => Instant::now(),
        };
        if deadline.is_some_and(|d| intended >= d) {
            return None;
        }
        if intended > Instant::now() {
            tokio::time::sleep_until(intended.into()).await;
        }
        Some((op, intended))
    }
}

/// Result of one driven phase.
pub struct PhaseResult {
    pub recorder: Recorder,
    pub elapsed: Duration,
}

/// Runs every worker on its own task until the schedule is exhausted.
pub async fn drive<W: Worker>(
    workers: Vec<W>,
    series: &[&str],
    schedule: Schedule,
    label: &str,
) -> PhaseResult {
    let start = Instant::now();
    let shared = Arc::new(Shared::new(schedule, start));
    let progress = Progress::start(label, schedule.expected_ops(), shared.clone());
    let mut tasks = Vec::with_capacity(workers.len());
    for mut w in workers {
        let shared = shared.clone();
        let names: Vec<String> = series.iter().map(|s| s.to_string()).collect();
        tasks.push(tokio::spawn(async move {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut rec = Recorder::new(start, &names);
            while let Some((op, intended)) = shared.claim().await {
                let res = w.run_one(op, intended).await;
                let now = Instant::now();
                match res {
                    Ok(s) => {
                        rec.record(s, now.saturating_duration_since(intended), now);
                        shared.done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        rec.error(&e.kind);
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            rec
        }));
    }
    let mut recorder = Recorder::new(start, series);
    for t in tasks {
        match t.await {
            Ok(rec) => recorder.merge(&rec),
            // A worker panic is a bug in this tool: surface it.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let elapsed = start.elapsed();
    progress.finish();
    PhaseResult { recorder, elapsed }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleeper {
        fail_every: u64,
    }

    impl Worker for Sleeper {
        async fn run_one(&mut self, op: u64, _intended: Instant) -> Result<usize, OpError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if self.fail_every > 0 && op % self.fail_every == 0 {
                return Err(OpError::new("boom"));
            }
            Ok(0)
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn total_is_exact_across_workers() {
        let workers = (0..7).map(|_| Sleeper { fail_every: 10 }).collect();
        let sched = Schedule {
            total: Some(100),
            duration: None,
            rate: None,
        };
        let r = drive(workers, &["op"], sched, "test").await;
        assert_eq!(r.recorder.series()[0].hist.len(), 90);
        assert_eq!(r.recorder.errors().get("boom"), Some(&10));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn rate_paces_the_run() {
        let workers = (0..4).map(|_| Sleeper { fail_every: 0 }).collect();
        let sched = Schedule {
            total: Some(20),
            duration: None,
            rate: Some(200.0),
        };
        let r = drive(workers, &["op"], sched, "test").await;
        // 20 ops at 200/s: the last is intended at 95 ms.
        assert!(r.elapsed >= Duration::from_millis(95), "{:?}", r.elapsed);
        assert_eq!(r.recorder.series()[0].hist.len(), 20);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn duration_stops_the_run() {
        let workers = (0..2).map(|_| Sleeper { fail_every: 0 }).collect();
        // A total that 1 ms operations cannot reach in 50 ms: only the
        // duration can end this run.
        let sched = Schedule {
            total: Some(1_000_000),
            duration: Some(Duration::from_millis(50)),
            rate: None,
        };
        let r = drive(workers, &["op"], sched, "test").await;
        assert!(r.elapsed >= Duration::from_millis(50));
        assert!(r.recorder.series()[0].hist.len() < 1_000_000);
    }
}
