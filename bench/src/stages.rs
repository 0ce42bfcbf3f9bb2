//! `put --stages`: the member's write latency budget for this run, read
//! from `/metrics` (`corekv_write_stage_duration_seconds`, see
//! `server/src/stages.rs`) before and after the run and printed as a table.
//! Counts of several members are added up.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::BenchError;

const METRIC: &str = "corekv_write_stage_duration_seconds";
/// Stages in a write's order (the member's names).
const ORDER: [&str; 6] = [
    "to_core",
    "batch_wait",
    "wal_write",
    "commit",
    "apply",
    "total",
];
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest /metrics answer read.
const MAX_METRICS_BYTES: usize = 4 << 20;

/// One stage's histogram: bucket upper bounds (s) -> cumulative count.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StageHist {
    pub buckets: BTreeMap<u64, u64>,
    pub count: u64,
    pub sum_s: f64,
}

pub type Stages = BTreeMap<String, StageHist>;

/// Bucket bounds are kept in nanoseconds so they order as integers.
/// `+Inf` is left out (the count holds it).
fn le_ns(le: &str) -> Option<u64> {
    le.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite())
        .map(|s| (s * 1e9).round() as u64)
}

/// Parses the stage histograms out of a Prometheus text page.
pub fn parse(page: &str) -> Stages {
    let mut out = Stages::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(METRIC) else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once(' ') else {
            continue;
        };
        let Some((kind, labels)) = labels.split_once('{') else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .and_then(|v| v.split('"').next())
        };
        let Some(stage) = label("stage") else {
            continue;
        };
        let h = out.entry(stage.to_string()).or_default();
        match kind {
            "_bucket" => {
                if let (Some(le), Ok(v)) = (label("le").and_then(le_ns), value.parse::<u64>()) {
                    h.buckets.insert(le, v);
                }
            }
            "_count" => h.count = value.parse().unwrap_or(0),
            "_sum" => h.sum_s = value.parse().unwrap_or(0.0),
            _ => {}
        }
    }
    out
}

/// `after - before`, stage by stage.
pub fn diff(after: &Stages, before: &Stages) -> Stages {
    after
        .iter()
        .map(|(name, a)| {
            let b = before.get(name).cloned().unwrap_or_default();
            let buckets = a
                .buckets
                .iter()
                .map(|(le, n)| (*le, n.saturating_sub(*b.buckets.get(le).unwrap_or(&0))))
                .collect();
            let h = StageHist {
                buckets,
                count: a.count.saturating_sub(b.count),
                sum_s: (a.sum_s - b.sum_s).max(0.0),
            };
            (name.clone(), h)
        })
        .collect()
}

/// Adds `other` into `into` (several members).
pub fn add(into: &mut Stages, other: &Stages) {
    for (name, h) in other {
        let t = into.entry(name.clone()).or_default();
        for (le, n) in &h.buckets {
            *t.buckets.entry(*le).or_default() += n;
        }
        t.count += h.count;
        t.sum_s += h.sum_s;
    }
}

/// Estimated quantile in microseconds: linear inside the bucket that holds
/// it (buckets are powers of two, so this is within a factor of two).
pub fn quantile_us(h: &StageHist, q: f64) -> Option<f64> {
    if h.count == 0 {
        return None;
    }
    let rank = (q * h.count as f64).ceil().max(1.0) as u64;
    let mut lower_ns = 0u64;
    let mut below = 0u64;
    for (&le, &cum) in &h.buckets {
        if cum >= rank {
            let inside = (cum - below).max(1) as f64;
            let frac = (rank - below) as f64 / inside;
            return Some((lower_ns as f64 + frac * (le - lower_ns) as f64) / 1e3);
        }
        lower_ns = le;
        below = cum;
    }
    // Beyond the last finite bucket.
    Some(lower_ns as f64 / 1e3)
}

pub fn table(stages: &Stages) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nWrite stages (from the member's /metrics, this run):\n{:<12} {:>10} {:>11} {:>11} {:>11}",
        "stage", "count", "mean us", "p50 us", "p99 us"
    );
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let mut sum_means = 0.0;
    for name in ORDER {
        let Some(h) = stages.get(name) else { continue };
        let mean = (h.count > 0).then(|| h.sum_s * 1e6 / h.count as f64);
        if name != "total" {
            sum_means += mean.unwrap_or(0.0);
        }
        let _ = writeln!(
            out,
            "{name:<12} {:>10} {:>11} {:>11} {:>11}",
            h.count,
            fmt(mean),
            fmt(quantile_us(h, 0.5)),
            fmt(quantile_us(h, 0.99))
        );
    }
    if let Some(total) = stages.get("total").filter(|h| h.count > 0) {
        let mean = total.sum_s * 1e6 / total.count as f64;
        let _ = writeln!(
            out,
            "{:<12} {:>10} {:>11}   (total mean - sum of stage means: answer hand-over between executors)",
            "unaccounted",
            "",
            format!("{:.1}", mean - sum_means)
        );
    }
    out
}

/// Reads `http://host:port/metrics` with a plain HTTP/1.1 GET.
pub async fn scrape(url: &str) -> Result<Stages, BenchError> {
    let err = |reason: String| BenchError::InvalidArgument(format!("scrape {url}: {reason}"));
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let fetch = async {
        let mut s = TcpStream::connect(hostport)
            .await
            .map_err(|e| err(e.to_string()))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| err(e.to_string()))?;
        let mut body = Vec::new();
        (&mut s)
            .take(MAX_METRICS_BYTES as u64)
            .read_to_end(&mut body)
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok::<_, BenchError>(String::from_utf8_lossy(&body).into_owned())
    };
    let page = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| err("timed out".into()))??;
    if !page.starts_with("HTTP/1.1 200") && !page.starts_with("HTTP/1.0 200") {
        return Err(err(page.lines().next().unwrap_or("no answer").to_string()));
    }
    Ok(parse(&page))
}

/// Scrapes every URL and adds the stages up.
pub async fn scrape_all(urls: &[String]) -> Result<Stages, BenchError> {
    let mut all = Stages::new();
    for url in urls {
        add(&mut all, &scrape(url).await?);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# TYPE corekv_write_stage_duration_seconds histogram
corekv_write_stage_duration_seconds_bucket{stage=\"wal_write\",le=\"0.000256\"} 0
corekv_write_stage_duration_seconds_bucket{stage=\"wal_write\",le=\"0.000512\"} 10
corekv_write_stage_duration_seconds_bucket{stage=\"wal_write\",le=\"0.001024\"} 20
corekv_write_stage_duration_seconds_bucket{stage=\"wal_write\",le=\"+Inf\"} 20
corekv_write_stage_duration_seconds_sum{stage=\"wal_write\"} 0.01
corekv_write_stage_duration_seconds_count{stage=\"wal_write\"} 20
etcd_disk_wal_fsync_duration_seconds_count 5
";

    #[test]
    fn parses_diffs_and_estimates() {
        let after = parse(PAGE);
        let h = &after["wal_write"];
        assert_eq!(h.count, 20);
        assert_eq!(h.buckets.len(), 3);
        assert_eq!(quantile_us(h, 0.5), Some(512.0));
        assert_eq!(quantile_us(h, 0.75), Some(768.0));
        let d = diff(&after, &after);
        assert_eq!(d["wal_write"].count, 0);
        assert_eq!(quantile_us(&d["wal_write"], 0.5), None);
        let t = table(&after);
        assert!(t.contains("wal_write") && t.contains("500.0"), "{t}");
    }
}
