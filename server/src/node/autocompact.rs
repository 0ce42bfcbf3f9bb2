//! Auto-compaction (etcd's `--auto-compaction-mode` and
//! `--auto-compaction-retention`, same meaning as etcd 3.4).
//!
//! - `periodic`, retention a duration (`"1h"`, `"30m"`; a bare integer is
//!   hours, `"0"` is off): the revision is sampled every `min(retention,
//!   1h) / 10`; every `min(retention, 1h)` the leader compacts to the oldest
//!   sample, i.e. the revision current one retention period ago. The first
//!   compaction waits one full retention period.
//! - `revision`, retention an integer N: every
//!   `--auto-compaction-revision-interval-ms` (etcd: fixed 5 min) the leader
//!   compacts to `current revision - N` if that moved.
//!
//! Only the leader compacts (followers keep sampling, so a new leader has
//! the history). The compaction is a Compact request through Raft, as a
//! client's; the physical work then runs in the store's bounded steps.
//!
//! `Planner` holds the decisions and takes time as an argument; `spawn` is
//! the glommio loop around it on shard 0.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_wire::ApiError;
use corekv_wire::messages as w;

use super::Shared;
use crate::config::{AutoCompactionMode, Config};

/// etcd's periodic compactor takes at most one hour between compactions.
const MAX_PERIODIC_INTERVAL: Duration = Duration::from_secs(3600);
/// Samples per compaction interval (etcd's retryDivisor).
const SAMPLES_PER_INTERVAL: u32 = 10;
/// How often the loop wakes up to ask the planner.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Off,
    /// Keep this much history.
    Periodic(Duration),
    /// Keep this many revisions, checking every `interval`.
    Revision {
        keep: i64,
        interval: Duration,
    },
}

/// The policy of the flags, or etcd-worded errors for bad values.
pub fn policy(cfg: &Config) -> Result<Policy, String> {
    let raw = cfg.auto_compaction_retention.trim();
    match cfg.auto_compaction_mode {
        AutoCompactionMode::Periodic => {
            let period = match raw.parse::<u64>() {
                Ok(hours) => Duration::from_secs(hours.saturating_mul(3600)),
                Err(_) => crate::duration::parse(raw).map_err(|e| {
                    format!("--auto-compaction-retention {raw:?} for mode periodic: {e}")
                })?,
            };
            Ok(if period.is_zero() {
                Policy::Off
            } else {
                Policy::Periodic(period)
            })
        }
        AutoCompactionMode::Revision => {
            let keep: i64 = raw.parse().map_err(|_| {
                format!("--auto-compaction-retention {raw:?} for mode revision: not an integer")
            })?;
            if keep < 0 {
                return Err(format!("--auto-compaction-retention {keep} is negative"));
            }
            Ok(if keep == 0 {
                Policy::Off
            } else {
                Policy::Revision {
                    keep,
                    interval: Duration::from_millis(
                        cfg.auto_compaction_revision_interval_ms.max(1),
                    ),
                }
            })
        }
    }
}

/// Decides when to compact and to which revision. Invariant: `samples` is
/// in time order and holds at most `max_samples` revisions.
pub struct Planner {
    policy: Policy,
    samples: VecDeque<i64>,
    max_samples: usize,
    next_sample: Instant,
    /// Start, or the last compaction proposed.
    last_compaction: Instant,
    initial_wait: bool,
    last_revision: i64,
}

impl Planner {
    pub fn new(policy: Policy, now: Instant) -> Planner {
        let max_samples = match policy {
            Policy::Periodic(period) => {
                let retry = retry_interval(period);
                (period.as_nanos() / retry.as_nanos().max(1)) as usize + 1
            }
            Policy::Off | Policy::Revision { .. } => 0,
        };
        Planner {
            policy,
            samples: VecDeque::new(),
            max_samples,
            next_sample: now,
            last_compaction: now,
            initial_wait: true,
            last_revision: 0,
        }
    }

    /// The revision to compact to now, if any. `revision` is the store's
    /// current one; only a leader compacts.
    pub fn poll(&mut self, now: Instant, revision: i64, leader: bool) -> Option<i64> {
        match self.policy {
            Policy::Off => None,
            Policy::Periodic(period) => self.poll_periodic(period, now, revision, leader),
            Policy::Revision { keep, interval } => {
                if now < self.last_compaction + interval {
                    return None;
                }
                self.last_compaction = now;
                let target = revision - keep;
                if !leader || target <= 0 || target == self.last_revision {
                    return None;
                }
                self.last_revision = target;
                Some(target)
            }
        }
    }

    fn poll_periodic(
        &mut self,
        period: Duration,
        now: Instant,
        revision: i64,
        leader: bool,
    ) -> Option<i64> {
        if now >= self.next_sample {
            self.samples.push_back(revision);
            while self.samples.len() > self.max_samples {
                self.samples.pop_front();
            }
            self.next_sample = now + retry_interval(period);
        }
        let since = now.saturating_duration_since(self.last_compaction);
        if self.initial_wait {
            if since < period {
                return None;
            }
            self.initial_wait = false;
        }
        if since < period.min(MAX_PERIODIC_INTERVAL) || !leader {
            return None;
        }
        let target = *self.samples.front()?;
        if target <= self.last_revision || target <= 0 {
            return None;
        }
        self.last_compaction = now;
        self.last_revision = target;
        Some(target)
    }
}

fn retry_interval(period: Duration) -> Duration {
    period.min(MAX_PERIODIC_INTERVAL) / SAMPLES_PER_INTERVAL
}

/// On shard 0: runs the planner and proposes its compactions.
pub fn spawn(shared: Arc<Shared>) {
    let policy = match policy(&shared.cfg) {
        Ok(Policy::Off) => return,
        Ok(p) => p,
        // Config::validate refused bad values before start.
        Err(reason) => {
            tracing::error!(%reason, "auto-compaction off");
            return;
        }
    };
    glommio::spawn_local(async move {
        let mut planner = Planner::new(policy, Instant::now());
        while !shared.stopping() {
            glommio::timer::sleep(POLL_INTERVAL).await;
            let revision = shared.store().current_revision();
            let leader = shared.leader() == Some(shared.member_id);
            let Some(target) = planner.poll(Instant::now(), revision, leader) else {
                continue;
            };
            tracing::info!(revision = target, "starting auto-compaction");
            let req = w::Request::Compact(w::CompactionRequest {
                revision: target,
                physical: false,
            });
            match super::internal::propose(&shared, &req).await {
                Ok(_) | Err(ApiError::Compacted) => {}
                Err(e) => tracing::warn!(error = %e, revision = target, "auto-compaction failed"),
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn periodic_compacts_to_the_revision_of_one_period_ago() {
        let t0 = Instant::now();
        let mut p = Planner::new(Policy::Periodic(secs(10)), t0);
        let mut got = Vec::new();
        // One revision per second; polled every 100 ms.
        for step in 0..=300u64 {
            let now = t0 + Duration::from_millis(step * 100);
            let rev = 1 + (step / 10) as i64;
            if let Some(r) = p.poll(now, rev, true) {
                got.push((step / 10, r));
            }
        }
        // First after one period, then every period, each to ~10 s ago.
        assert_eq!(got.first().map(|g| g.0), Some(10));
        for (at, rev) in &got {
            assert!((*at as i64 + 1 - rev - 10).abs() <= 1, "{got:?}");
        }
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn periodic_over_an_hour_compacts_hourly() {
        let t0 = Instant::now();
        let mut p = Planner::new(Policy::Periodic(secs(3 * 3600)), t0);
        let mut times = Vec::new();
        for m in 0..=(6 * 60u64) {
            if p.poll(t0 + secs(m * 60), 1 + m as i64, true).is_some() {
                times.push(m);
            }
        }
        assert_eq!(times, vec![180, 240, 300, 360]);
    }

    #[test]
    fn only_the_leader_compacts_and_never_twice_to_one_revision() {
        let t0 = Instant::now();
        let policy = Policy::Revision {
            keep: 5,
            interval: secs(1),
        };
        let mut p = Planner::new(policy, t0);
        assert_eq!(p.poll(t0 + secs(1), 3, true), None, "nothing to keep yet");
        assert_eq!(p.poll(t0 + secs(2), 20, false), None, "follower");
        assert_eq!(p.poll(t0 + secs(3), 20, true), Some(15));
        assert_eq!(p.poll(t0 + secs(4), 20, true), None, "same revision");
        assert_eq!(
            p.poll(t0 + Duration::from_millis(4500), 30, true),
            None,
            "too soon"
        );
        assert_eq!(p.poll(t0 + secs(5), 30, true), Some(25));
    }
}
