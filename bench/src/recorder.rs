//! Latency and throughput recording. Each client task owns a `Recorder`
//! (no sharing on the hot path); recorders are merged after the run.

use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Highest latency the histograms track; larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 600_000_000;
/// Significant decimal digits kept by the histograms.
pub const HISTOGRAM_SIGFIG: u8 = 3;
/// Longest run the per-second throughput timeline covers (later seconds are
/// folded into the last slot), which bounds its memory.
pub const MAX_TIMELINE_SECS: usize = 24 * 3600;

pub fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that satisfy hdrhistogram's preconditions
    // (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// One named latency series (e.g. "put", "range", "put-to-event").
#[derive(Clone)]
pub struct Series {
    pub name: String,
    pub hist: Histogram<u64>,
    /// Successful operations completed in each second since `start`.
    pub timeline: Vec<u64>,
}

impl Series {
    fn new(name: &str) -> Self {
        Series {
            name: name.to_string(),
            hist: new_histogram(),
            timeline: Vec::new(),
        }
    }

    fn merge(&mut self, other: &Series) {
        // Same bounds on both sides, so `add` cannot fail.
        self.hist.add(&other.hist).expect("histograms share bounds");
        if self.timeline.len() < other.timeline.len() {
            self.timeline.resize(other.timeline.len(), 0);
        }
        for (a, b) in self.timeline.iter_mut().zip(&other.timeline) {
            *a += b;
        }
    }
}

pub struct Recorder {
    start: Instant,
    series: Vec<Series>,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub fn new(start: Instant, names: &[&str]) -> Self {
        Recorder {
            start,
            series: names.iter().map(|n| Series::new(n)).collect(),
            errors: BTreeMap::new(),
        }
    }

    pub fn record(&mut self, series: usize, latency: Duration, done_at: Instant) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let s = &mut self.series[series];
        s.hist.saturating_record(us.min(MAX_LATENCY_US));
        let sec = (done_at.saturating_duration_since(self.start).as_secs() as usize)
            .min(MAX_TIMELINE_SECS - 1);
        if s.timeline.len() <= sec {
            s.timeline.resize(sec + 1, 0);
        }
        s.timeline[sec] += 1;
    }

    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_string()).or_insert(0) += 1;
    }

    /// Merges `other` into `self`; series are matched by name and unknown
    /// ones are appended, so recorders of different phases can be combined.
    pub fn merge(&mut self, other: &Recorder) {
        for s in &other.series {
            match self.series.iter_mut().find(|m| m.name == s.name) {
                Some(m) => m.merge(s),
                None => self.series.push(s.clone()),
            }
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
    }

    pub fn series(&self) -> &[Series] {
        &self.series
    }

    pub fn errors(&self) -> &BTreeMap<String, u64> {
        &self.errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_matches_series_by_name_and_sums_timelines() {
        let t0 = Instant::now();
        let mut a = Recorder::new(t0, &["put"]);
        let mut b = Recorder::new(t0, &["put", "range"]);
        a.record(0, Duration::from_micros(100), t0);
        b.record(
            0,
            Duration::from_micros(300),
            t0 + Duration::from_millis(1500),
        );
        b.record(1, Duration::from_micros(50), t0);
        b.error("Unavailable: x");
        a.merge(&b);
        assert_eq!(a.series().len(), 2);
        assert_eq!(a.series()[0].hist.len(), 2);
        assert_eq!(a.series()[0].timeline, vec![1, 1]);
        assert_eq!(a.series()[1].name, "range");
        assert_eq!(a.errors().values().sum::<u64>(), 1);
    }

    #[test]
    fn huge_latency_is_clamped_not_lost() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, &["x"]);
        r.record(0, Duration::from_secs(100_000), t0);
        assert_eq!(r.series()[0].hist.len(), 1);
        assert!(r.series()[0].hist.max() >= MAX_LATENCY_US / 2);
    }
}
