//! `corekvctl check perf [--load s|m|l|xl] [--prefix P] [--auto-compact]
//! [--auto-defrag]`: etcdctl 3.4's performance check. For the load model's
//! duration, `clients` concurrent writers put random 256-byte keys (under
//! the prefix) with 1024-byte values, rate-limited to `limit` puts/s; then
//! the keys are deleted. It passes when the throughput exceeds 90% of the
//! limit, the slowest put took at most 0.5 s and the latency standard
//! deviation is at most 0.1 s (etcd's thresholds and messages).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Subcommand;
use corekv_wire::messages as w;

use super::maint::EXIT_BAD_FEATURE;
use super::{Cli, EXIT_ERROR, Failure, connect, connect_any};

/// etcdctl's ExitInvalidInput.
const EXIT_INVALID_INPUT: i32 = 3;
const KEY_BYTES: usize = 256;
const VALUE_BYTES: usize = 1024;
/// Writers share this many connections (the native protocol multiplexes).
const MAX_CONNECTIONS: usize = 64;

#[derive(Subcommand, Debug)]
pub enum CheckCmd {
    /// Check the performance of the corekv cluster.
    Perf {
        /// The performance check's workload model. Accepted workloads:
        /// s(small), m(medium), l(large), xl(xLarge)
        #[arg(long, default_value = "s")]
        load: String,
        /// The prefix for writing the performance check's keys.
        #[arg(long, default_value = "/etcdctl-check-perf/")]
        prefix: String,
        /// Compact storage with last revision after test is finished.
        #[arg(long)]
        auto_compact: bool,
        /// Defragment storage after test is finished.
        #[arg(long)]
        auto_defrag: bool,
        /// Length of the run (corekv addition; etcd's models run 60 s).
        #[arg(long, default_value = "60s", value_parser = crate::duration::parse)]
        duration: Duration,
    },
}

/// (puts per second, concurrent clients) of etcd's models.
fn model(load: &str) -> Option<(u32, usize)> {
    match load {
        "s" | "small" => Some((150, 50)),
        "m" | "medium" => Some((1000, 200)),
        "l" | "large" => Some((8000, 500)),
        "xl" | "xLarge" => Some((15000, 1000)),
        _ => None,
    }
}

/// Latencies in seconds and errors of one run.
#[derive(Default)]
struct Results {
    latencies: Vec<f64>,
    errors: std::collections::BTreeMap<String, u64>,
}

/// etcd's verdict lines and whether the check passed.
fn verdict(r: &Results, limit: u32, elapsed: Duration) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut ok = true;
    if !r.errors.is_empty() {
        lines.push("FAIL: too many errors".to_string());
        for (e, n) in &r.errors {
            lines.push(format!("FAIL: ERROR({e}) -> {n}"));
        }
        ok = false;
    }
    let n = r.latencies.len() as f64;
    let rps = n / elapsed.as_secs_f64().max(1e-9);
    if rps / f64::from(limit) <= 0.9 {
        lines.push(format!(
            "FAIL: Throughput too low: {} writes/s",
            rps as u64 + 1
        ));
        ok = false;
    } else {
        lines.push(format!("PASS: Throughput is {} writes/s", rps as u64 + 1));
    }
    let slowest = r.latencies.iter().copied().fold(0.0, f64::max);
    if slowest > 0.5 {
        lines.push(format!("Slowest request took too long: {slowest:.6}s"));
        ok = false;
    } else {
        lines.push(format!("PASS: Slowest request took {slowest:.6}s"));
    }
    let mean = r.latencies.iter().sum::<f64>() / n.max(1.0);
    let var = r.latencies.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / n.max(1.0);
    let stddev = var.sqrt();
    if stddev > 0.1 {
        lines.push(format!("Stddev too high: {stddev:.6}s"));
        ok = false;
    } else {
        lines.push(format!("PASS: Stddev is {stddev:.6}s"));
    }
    lines.push(if ok { "PASS" } else { "FAIL" }.to_string());
    (lines, ok)
}

fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    super::txn_parse::prefix_end(prefix)
}

pub async fn run(cli: &Cli, cmd: &CheckCmd) -> Result<(), Failure> {
    let CheckCmd::Perf {
        load,
        prefix,
        auto_compact,
        auto_defrag,
        duration,
    } = cmd;
    let (limit, clients) = model(load).ok_or_else(|| Failure {
        code: EXIT_BAD_FEATURE,
        message: format!("unknown load option {load}"),
    })?;
    let first = connect_any(cli).await?;
    let end = prefix_end(prefix.as_bytes());
    let existing = first
        .range(w::RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end.clone(),
            limit: 1,
            ..Default::default()
        })
        .await?;
    if !existing.kvs.is_empty() {
        return Err(Failure {
            code: EXIT_INVALID_INPUT,
            message: format!(
                "prefix {prefix:?} has keys. Delete with etcdctl del --prefix {prefix} first"
            ),
        });
    }
    let mut conns = Vec::new();
    for i in 0..clients.min(MAX_CONNECTIONS) {
        let ep = &cli.endpoints[i % cli.endpoints.len()];
        conns.push(connect(cli, ep).await?);
    }
    let results = Arc::new(Mutex::new(Results::default()));
    let started = Instant::now();
    let deadline = started + *duration;
    // A shared ticket clock: ticket k may start at started + k / limit.
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = conns[i % conns.len()].clone();
        let (results, next, prefix) = (results.clone(), next.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let at = started + Duration::from_secs_f64(k as f64 / f64::from(limit));
                if at >= deadline {
                    return;
                }
                tokio::time::sleep_until(at.into()).await;
                let mut key = prefix.as_bytes().to_vec();
                key.extend((0..KEY_BYTES).map(|_| rand::random::<u8>()));
                let req = w::PutRequest {
                    key,
                    value: vec![0u8; VALUE_BYTES],
                    ..Default::default()
                };
                let t = Instant::now();
                let r = client.put(req).await;
                let mut res = results.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(_) => res.latencies.push(t.elapsed().as_secs_f64()),
                    Err(e) => *res.errors.entry(e.to_string()).or_default() += 1,
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = started
        .elapsed()
        .min(*duration)
        .max(Duration::from_millis(1));
    let deleted = first
        .delete_range(w::DeleteRangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: end,
            prev_kv: false,
        })
        .await?;
    if *auto_compact {
        first
            .compact(w::CompactionRequest {
                revision: deleted.header.revision,
                physical: true,
            })
            .await?;
        println!("Compacted with revision {}", deleted.header.revision);
    }
    if *auto_defrag {
        for ep in &cli.endpoints {
            connect(cli, ep)
                .await?
                .defragment(w::DefragmentRequest {})
                .await?;
            println!("Defragmented {ep:?}");
        }
    }
    let res = results.lock().unwrap_or_else(|e| e.into_inner());
    let (lines, ok) = verdict(&res, limit, elapsed);
    for l in &lines {
        println!("{l}");
    }
    if ok {
        Ok(())
    } else {
        Err(Failure {
            code: EXIT_ERROR,
            message: "check perf failed".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_uses_etcds_thresholds() {
        let fast = Results {
            latencies: vec![0.001; 1500],
            errors: Default::default(),
        };
        let (lines, ok) = verdict(&fast, 150, Duration::from_secs(10));
        assert!(ok, "{lines:?}");
        assert_eq!(lines[0], "PASS: Throughput is 151 writes/s");
        assert_eq!(lines.last().unwrap(), "PASS");
        let slow = Results {
            latencies: vec![0.001, 0.9],
            errors: Default::default(),
        };
        let (lines, ok) = verdict(&slow, 150, Duration::from_secs(10));
        assert!(!ok);
        assert!(lines[0].starts_with("FAIL: Throughput too low"));
        assert_eq!(lines[1], "Slowest request took too long: 0.900000s");
        assert_eq!(lines.last().unwrap(), "FAIL");
    }
}
