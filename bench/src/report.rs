//! The summary: text for people, JSON for machines, an HdrHistogram log for
//! tools (HistogramLogAnalyzer, hdr-plot).

use crate::error::BenchError;
use crate::recorder::Recorder;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Serialize)]
pub struct SeriesSummary {
    pub name: String,
    pub count: u64,
    pub throughput_per_s: f64,
    pub latency_us_avg: f64,
    pub latency_us_stddev: f64,
    pub latency_us_p50: u64,
    pub latency_us_p90: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_max: u64,
    /// Successful operations per second of the run, second by second.
    pub timeline_per_s: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub workload: String,
    pub protocol: String,
    pub endpoints: Vec<String>,
    pub clients: usize,
    pub conns: usize,
    pub elapsed_s: f64,
    pub series: Vec<SeriesSummary>,
    pub errors: BTreeMap<String, u64>,
    /// Extra figures a workload reports (e.g. watcher creation time).
    pub extra: BTreeMap<String, f64>,
}

pub struct RunInfo<'a> {
    pub workload: &'a str,
    pub protocol: &'a str,
    pub endpoints: &'a [String],
    pub clients: usize,
    pub conns: usize,
}

impl Summary {
    /// `windows` gives, per series name, the time over which its throughput is
    /// computed; series without an entry use `elapsed`.
    pub fn build(
        info: &RunInfo<'_>,
        rec: &Recorder,
        elapsed: Duration,
        windows: &[(&str, Duration)],
    ) -> Summary {
        let series = rec
            .series()
            .iter()
            .map(|s| {
                let h = &s.hist;
                let window = windows
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map(|(_, w)| *w)
                    .unwrap_or(elapsed);
                let secs = window.as_secs_f64().max(1e-9);
                let empty = h.is_empty();
                let q = |p: f64| if empty { 0 } else { h.value_at_quantile(p) };
                SeriesSummary {
                    name: s.name.clone(),
                    count: h.len(),
                    throughput_per_s: h.len() as f64 / secs,
                    latency_us_avg: if empty { 0.0 } else { h.mean() },
                    latency_us_stddev: if empty { 0.0 } else { h.stdev() },
                    latency_us_p50: q(0.50),
                    latency_us_p90: q(0.90),
                    latency_us_p99: q(0.99),
                    latency_us_p999: q(0.999),
                    latency_us_max: if empty { 0 } else { h.max() },
                    timeline_per_s: s.timeline.clone(),
                }
            })
            .collect();
        Summary {
            workload: info.workload.to_string(),
            protocol: info.protocol.to_string(),
            endpoints: info.endpoints.to_vec(),
            clients: info.clients,
            conns: info.conns,
            elapsed_s: elapsed.as_secs_f64(),
            series,
            errors: rec.errors().clone(),
            extra: BTreeMap::new(),
        }
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} over {} ({} clients, {} conns) to {}",
            self.workload,
            self.protocol,
            self.clients,
            self.conns,
            self.endpoints.join(",")
        );
        let _ = writeln!(out, "Summary:");
        let _ = writeln!(out, "  Total:\t{:.4} s", self.elapsed_s);
        for s in &self.series {
            let _ = writeln!(out, "  [{}]", s.name);
            let _ = writeln!(out, "    Count:\t{}", s.count);
            let _ = writeln!(out, "    Throughput:\t{:.1} /s", s.throughput_per_s);
            let _ = writeln!(
                out,
                "    Latency ms:\tavg {:.3}  stddev {:.3}",
                s.latency_us_avg / 1000.0,
                s.latency_us_stddev / 1000.0
            );
            let _ = writeln!(
                out,
                "    Percentiles ms:\tp50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
                ms(s.latency_us_p50),
                ms(s.latency_us_p90),
                ms(s.latency_us_p99),
                ms(s.latency_us_p999),
                ms(s.latency_us_max)
            );
        }
        for (k, v) in &self.extra {
            let _ = writeln!(out, "  {k}:\t{v:.3}");
        }
        let total_errors: u64 = self.errors.values().sum();
        let _ = writeln!(out, "Errors: {total_errors}");
        for (kind, n) in &self.errors {
            let _ = writeln!(out, "  {n:>8}  {kind}");
        }
        out
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).expect("summary serializes")
    }
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Writes one interval histogram per series (tagged with the series name,
/// values in microseconds) as an HdrHistogram V2 log.
pub fn write_histogram_log(
    path: &Path,
    rec: &Recorder,
    run_started: SystemTime,
    elapsed: Duration,
) -> Result<(), BenchError> {
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("corekv-bench latency log, values in microseconds")
            .with_start_time(run_started)
            .with_base_time(run_started)
            .begin_log_with(&mut buf, &mut ser)
            .map_err(|e| log_err(path, e.to_string()))?;
        for s in rec.series() {
            let tag = Tag::new(&s.name);
            w.write_histogram(&s.hist, Duration::ZERO, elapsed, tag)
                .map_err(|e| log_err(path, e.to_string()))?;
        }
    }
    std::fs::write(path, buf).map_err(|source| BenchError::Io {
        operation: "write histogram log",
        path: path.to_path_buf(),
        source,
    })
}

fn log_err(path: &Path, detail: String) -> BenchError {
    BenchError::HistogramLog {
        path: path.to_path_buf(),
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use std::time::Instant;

    fn sample() -> Recorder {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, &["put"]);
        for us in 1..=1000u64 {
            r.record(0, Duration::from_micros(us), t0);
        }
        r.error("Unavailable: etcdserver: no leader");
        r
    }

    #[test]
    fn summary_percentiles_and_json() {
        let rec = sample();
        let eps = vec!["http://127.0.0.1:2379".to_string()];
        let info = RunInfo {
            workload: "put",
            protocol: "grpc",
            endpoints: &eps,
            clients: 1,
            conns: 1,
        };
        let s = Summary::build(&info, &rec, Duration::from_secs(2), &[]);
        let p = &s.series[0];
        assert_eq!(p.count, 1000);
        assert!((p.throughput_per_s - 500.0).abs() < 1e-6);
        assert!(
            (499..=501).contains(&p.latency_us_p50),
            "{}",
            p.latency_us_p50
        );
        assert!(
            (989..=991).contains(&p.latency_us_p99),
            "{}",
            p.latency_us_p99
        );
        assert_eq!(p.latency_us_max, 1000);
        let v: serde_json::Value = serde_json::from_str(&s.to_json()).unwrap();
        assert_eq!(v["series"][0]["count"], 1000);
        assert_eq!(v["errors"]["Unavailable: etcdserver: no leader"], 1);
        assert!(s.to_text().contains("p99.9"));
    }

    #[test]
    fn histogram_log_round_trips() {
        let rec = sample();
        let dir = tempfile::Builder::new().tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("h.hlog");
        write_histogram_log(&path, &rec, SystemTime::now(), Duration::from_secs(1)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let hists: Vec<_> = IntervalLogIterator::new(&bytes)
            .filter_map(|e| match e {
                Ok(LogEntry::Interval(h)) => Some(h.tag().map(|t| t.as_str().to_string())),
                _ => None,
            })
            .collect();
        assert_eq!(hists, vec![Some("put".to_string())]);
    }
}
