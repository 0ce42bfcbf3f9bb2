//! Workloads. Each returns an `Outcome`; `main` turns it into the report.

pub mod kv;
pub mod lease;
pub mod lease_expiry;
pub mod lease_host;
pub mod lease_scale;
pub mod lease_window;
pub mod watch;

use crate::cli::{DEFAULT_TOTAL, LoadArgs};
use crate::driver::Schedule;
use crate::error::BenchError;
use crate::recorder::Recorder;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Outcome {
    pub recorder: Recorder,
    pub elapsed: Duration,
    /// Per-series throughput windows (defaults to `elapsed`).
    pub windows: Vec<(&'static str, Duration)>,
    pub extra: BTreeMap<String, f64>,
}

impl Outcome {
    pub fn new(recorder: Recorder, elapsed: Duration) -> Self {
        Outcome {
            recorder,
            elapsed,
            windows: Vec::new(),
            extra: BTreeMap::new(),
        }
    }
}

pub fn schedule(load: &LoadArgs) -> Result<Schedule, BenchError> {
    if let Some(r) = load.rate
        && !(r.is_finite() && r > 0.0)
    {
        return Err(BenchError::InvalidArgument(format!(
            "--rate must be positive, got {r}"
        )));
    }
    let total = match (load.total, load.duration) {
        (None, None) => Some(DEFAULT_TOTAL),
        (t, _) => t,
    };
    Ok(Schedule {
        total,
        duration: load.duration,
        rate: load.rate,
    })
}
