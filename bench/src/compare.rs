//! `corekv-bench compare`: starts etcd (and corekv, when it can serve) as a
//! single member on free loopback ports with a data dir on the same disk,
//! runs the standard workloads against each with the same client code, stops
//! them, and prints one table.

use crate::cli::Protocol;
use crate::cli::{CompareArgs, Consistency, EventArgs, KeyArgs, LoadArgs};
use crate::error::BenchError;
use crate::grpc;
use crate::target::{self, Target};

/// How long corekv's client URL gets to answer gRPC once its native port serves.
const GATEWAY_PROBE_S: u64 = 3;
use crate::cluster::{Cluster, find_binary, start_cluster};
use crate::report::{RunInfo, Summary};
use crate::workload::Outcome;
use crate::workload::kv::{self, Common, RangeSpec};
use crate::workload::watch::{self, WatchPlan};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// Time a server gets to elect itself and answer Status.
const START_TIMEOUT_S: u64 = 30;

struct Workload {
    name: &'static str,
    clients: usize,
    conns: usize,
    kind: Kind,
}

enum Kind {
    Put {
        total: u64,
    },
    Range {
        total: u64,
    },
    WatchLatency {
        streams: usize,
        per_stream: usize,
        rate: f64,
        total: u64,
    },
    WatchFanout {
        streams: usize,
        per_stream: usize,
        rate: f64,
        total: u64,
    },
}

fn workloads(scale_down: u64) -> Vec<Workload> {
    let s = scale_down.max(1);
    vec![
        Workload {
            name: "put, 1 client",
            clients: 1,
            conns: 1,
            kind: Kind::Put { total: 10_000 / s },
        },
        Workload {
            name: "put, 1000 clients / 100 conns",
            clients: 1000,
            conns: 100,
            kind: Kind::Put { total: 100_000 / s },
        },
        Workload {
            name: "range (linearizable), 1000 clients / 100 conns",
            clients: 1000,
            conns: 100,
            kind: Kind::Range { total: 100_000 / s },
        },
        Workload {
            name: "watch-latency, 100 watchers, 1000 puts/s",
            clients: 16,
            conns: 10,
            kind: Kind::WatchLatency {
                streams: 10,
                per_stream: 10,
                rate: 1000.0,
                total: 10_000 / s,
            },
        },
        Workload {
            name: "watch fan-out, 10000 watchers, 50 puts/s",
            clients: 16,
            conns: 100,
            kind: Kind::WatchFanout {
                streams: 100,
                per_stream: 100,
                rate: 50.0,
                total: 500 / s,
            },
        },
    ]
}

/// The figure a workload is compared on: for watch workloads the
/// put-to-event series, otherwise the workload's only request series.
fn headline(summary: &Summary) -> Option<&crate::report::SeriesSummary> {
    summary
        .series
        .iter()
        .find(|s| s.name == "put-to-event")
        .or_else(|| summary.series.iter().find(|s| s.name != "compact"))
}

struct Row {
    system: String,
    workload: &'static str,
    summary: Summary,
    rss_kib: Option<u64>,
}

async fn run_workload(
    endpoints: &[String],
    protocol: Protocol,
    w: &Workload,
    seed: u64,
) -> Result<Summary, BenchError> {
    let endpoints = endpoints.to_vec();
    let target = Target::open(protocol, &endpoints, w.conns).await?;
    let common = Common {
        target: &target,
        clients: w.clients,
        seed,
    };
    let keys = KeyArgs {
        key_size: 8,
        val_size: 256,
        key_space_size: 100_000,
        sequential_keys: false,
        scattered_keys: false,
    };
    let ev = EventArgs {
        key_size: 8,
        val_size: 256,
        event_timeout: Duration::from_secs(30),
    };
    let load = |total| LoadArgs {
        total: Some(total),
        duration: None,
        rate: None,
    };
    let out: Outcome = match w.kind {
        Kind::Put { total } => kv::put(&common, &load(total), &keys, None, 0).await?,
        Kind::Range { total } => {
            // Key 0 of the put workloads' key space (8-byte big-endian index),
            // written first so the range returns one 256-byte value.
            let key_bytes = crate::keys::key_bytes(0, 8);
            target
                .kv(0)
                .put(key_bytes.clone(), bytes::Bytes::from(vec![b'v'; 256]))
                .await
                .map_err(|e| BenchError::Protocol {
                    operation: "seed the range key",
                    detail: e.kind,
                })?;
            let key = String::from_utf8_lossy(&key_bytes).into_owned();
            let spec = RangeSpec {
                key: &key,
                end: None,
                prefix: false,
                consistency: Consistency::L,
                limit: 0,
                keys_only: false,
                count_only: false,
            };
            kv::range(&common, &spec, &load(total)).await?
        }
        Kind::WatchLatency {
            streams,
            per_stream,
            rate,
            total,
        }
        | Kind::WatchFanout {
            streams,
            per_stream,
            rate,
            total,
        } => {
            let plan = WatchPlan {
                streams,
                watchers_per_stream: per_stream,
                key_total: 1,
                put_total: total,
                put_rate: rate,
                prev_kv: false,
            };
            watch::run(&target, &plan, &ev, w.name).await?
        }
    };
    let info = RunInfo {
        workload: w.name,
        protocol: protocol.name(),
        endpoints: &endpoints,
        clients: w.clients,
        conns: w.conns,
    };
    let mut s = Summary::build(&info, &out.recorder, out.elapsed, &out.windows);
    s.extra = out.extra;
    Ok(s)
}

/// Runs every workload against one endpoint and protocol, keeping the
/// median of `repeat` runs.
#[allow(clippy::too_many_arguments)]
async fn bench_endpoint(
    label: &str,
    cluster: &Cluster,
    endpoints: &[String],
    protocol: Protocol,
    args: &CompareArgs,
    seed: u64,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) {
    'workloads: for w in workloads(args.scale_down) {
        let mut runs = Vec::new();
        for rep in 0..args.repeat.max(1) {
            eprintln!(
                "{label}: {} (run {}/{})",
                w.name,
                rep + 1,
                args.repeat.max(1)
            );
            match run_workload(endpoints, protocol, &w, seed).await {
                Ok(s) => runs.push(s),
                Err(e) => {
                    notes.push(format!("{label}: {} failed: {e}", w.name));
                    continue 'workloads;
                }
            }
        }
        runs.sort_by(|a, b| {
            let t = |s: &Summary| headline(s).map(|h| h.throughput_per_s).unwrap_or(0.0);
            t(a).total_cmp(&t(b))
        });
        let median = runs.swap_remove(runs.len() / 2);
        rows.push(Row {
            system: label.to_string(),
            workload: w.name,
            summary: median,
            rss_kib: cluster.rss_kib().map(|(rss, _)| rss),
        });
    }
}

async fn bench_etcd(
    bin: &Path,
    args: &CompareArgs,
    seed: u64,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<Option<u64>, BenchError> {
    let cluster = start_cluster(bin, "etcd", &args.data_root, args.members, false)?;
    let endpoints = cluster.client_endpoints();
    for ep in &endpoints {
        grpc::wait_ready(ep, Duration::from_secs(START_TIMEOUT_S))
            .await
            .map_err(|e| BenchError::ServerStart {
                what: format!("etcd ({}) at {ep}", bin.display()),
                detail: format!("no gRPC Status with a leader within {START_TIMEOUT_S}s: {e}"),
            })?;
    }
    eprintln!("etcd: serving on {}", endpoints.join(","));
    bench_endpoint(
        &system_label("etcd grpc", args.members),
        &cluster,
        &endpoints,
        Protocol::Grpc,
        args,
        seed,
        rows,
        notes,
    )
    .await;
    Ok(cluster.rss_kib().map(|(_, peak)| peak))
}

fn system_label(base: &str, members: usize) -> String {
    if members > 1 {
        format!("{base} ({members} members)")
    } else {
        base.to_string()
    }
}

/// corekv over native, then over gRPC when its client URL answers gRPC.
/// Returns the peak RSS and notes about what was skipped.
async fn bench_corekv(
    bin: &Path,
    args: &CompareArgs,
    seed: u64,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> Result<Option<u64>, BenchError> {
    let cluster = start_cluster(bin, "corekv", &args.data_root, args.members, true)?;
    let native = cluster.native_endpoints();
    for ep in &native {
        target::wait_native_ready(ep, Duration::from_secs(START_TIMEOUT_S))
            .await
            .map_err(|e| BenchError::ServerStart {
                what: format!("corekv ({}) at {ep}", bin.display()),
                detail: format!("no native Status with a leader within {START_TIMEOUT_S}s: {e}"),
            })?;
    }
    eprintln!("corekv: serving native on {}", native.join(","));
    bench_endpoint(
        &system_label("corekv native", args.members),
        &cluster,
        &native,
        Protocol::Native,
        args,
        seed,
        rows,
        notes,
    )
    .await;
    let endpoints = cluster.client_endpoints();
    match grpc::wait_ready(&endpoints[0], Duration::from_secs(GATEWAY_PROBE_S)).await {
        Ok(()) => {
            bench_endpoint(
                &system_label("corekv grpc", args.members),
                &cluster,
                &endpoints,
                Protocol::Grpc,
                args,
                seed,
                rows,
                notes,
            )
            .await
        }
        Err(e) => notes.push(format!(
            "corekv grpc skipped: {} does not answer etcd gRPC ({e})",
            endpoints[0]
        )),
    }
    Ok(cluster.rss_kib().map(|(_, peak)| peak))
}

pub async fn run(args: &CompareArgs, seed: u64) -> Result<(), BenchError> {
    let etcd = find_binary(&args.etcd_bin).ok_or_else(|| {
        BenchError::InvalidArgument(format!(
            "etcd binary {:?} not found: run bench/compare.sh (installs Debian etcd-server) or pass --etcd-bin",
            args.etcd_bin
        ))
    })?;
    let mut rows = Vec::new();
    let mut peaks = Vec::new();
    let mut notes = Vec::new();
    let peak = bench_etcd(&etcd, args, seed, &mut rows, &mut notes).await?;
    peaks.push(("etcd", peak));
    match find_binary(&args.corekv_bin) {
        None => notes.push(format!(
            "corekv skipped: binary {} not found (build it with `cargo build --release -p corekv-server`)",
            args.corekv_bin.display()
        )),
        Some(bin) => match bench_corekv(&bin, args, seed, &mut rows, &mut notes).await {
            Ok(peak) => peaks.push(("corekv", peak)),
            Err(e) => notes.push(format!("corekv skipped: {e}")),
        },
    }
    let table = render_table(&rows, &peaks, &notes);
    println!("{table}");
    if let Some(path) = &args.markdown_out {
        std::fs::write(path, &table).map_err(|source| BenchError::Io {
            operation: "write table",
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn render_table(rows: &[Row], peaks: &[(&str, Option<u64>)], notes: &[String]) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "| workload | system | throughput /s | p50 ms | p99 ms | p99.9 ms | errors | RSS MiB | corekv/etcd throughput | corekv/etcd p99 |"
    );
    let _ = writeln!(t, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let Some(h) = headline(&r.summary) else {
            continue;
        };
        let errors: u64 = r.summary.errors.values().sum();
        let etcd = rows
            .iter()
            .find(|e| e.workload == r.workload && e.system.starts_with("etcd"))
            .and_then(|e| headline(&e.summary));
        let (ratio_tp, ratio_p99) = match etcd {
            Some(e) if !r.system.starts_with("etcd") => (
                format!("{:.2}x", h.throughput_per_s / e.throughput_per_s.max(1e-9)),
                format!(
                    "{:.2}x",
                    h.latency_us_p99 as f64 / (e.latency_us_p99.max(1)) as f64
                ),
            ),
            _ => ("-".to_string(), "-".to_string()),
        };
        let label = if h.name == "put-to-event" {
            format!("{} (put-to-event)", r.workload)
        } else {
            r.workload.to_string()
        };
        let _ = writeln!(
            t,
            "| {label} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {errors} | {} | {ratio_tp} | {ratio_p99} |",
            r.system,
            h.throughput_per_s,
            h.latency_us_p50 as f64 / 1000.0,
            h.latency_us_p99 as f64 / 1000.0,
            h.latency_us_p999 as f64 / 1000.0,
            r.rss_kib
                .map(|k| format!("{:.0}", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
        );
    }
    for (system, peak) in peaks {
        if let Some(p) = peak {
            let _ = writeln!(t, "\n{system}: peak RSS {:.0} MiB", *p as f64 / 1024.0);
        }
    }
    for n in notes {
        let _ = writeln!(t, "\n{n}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Recorder;
    use std::time::Instant;

    fn summary(name: &str, series: &str, us: u64, n: u64) -> Summary {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, &[series]);
        for _ in 0..n {
            r.record(0, Duration::from_micros(us), t0);
        }
        let eps = vec!["e".to_string()];
        let info = RunInfo {
            workload: name,
            protocol: "grpc",
            endpoints: &eps,
            clients: 1,
            conns: 1,
        };
        Summary::build(&info, &r, Duration::from_secs(1), &[])
    }

    #[test]
    fn table_has_ratios_against_etcd_and_notes() {
        let rows = vec![
            Row {
                system: "etcd grpc".into(),
                workload: "put, 1 client",
                summary: summary("put, 1 client", "put", 1000, 100),
                rss_kib: Some(2048),
            },
            Row {
                system: "corekv native".into(),
                workload: "put, 1 client",
                summary: summary("put, 1 client", "put", 250, 400),
                rss_kib: None,
            },
        ];
        let t = render_table(
            &rows,
            &[("etcd", Some(4096))],
            &["corekv grpc skipped".into()],
        );
        let corekv = t.lines().find(|l| l.contains("corekv native")).unwrap();
        assert!(corekv.contains("| 4.00x |"), "{corekv}");
        assert!(corekv.contains("| 0.25x |"), "{corekv}");
        let etcd = t.lines().find(|l| l.contains("etcd grpc")).unwrap();
        assert!(etcd.contains("| 2 |"), "RSS in MiB: {etcd}");
        assert!(t.contains("etcd: peak RSS 4 MiB"));
        assert!(t.contains("corekv grpc skipped"));
    }

    #[test]
    fn headline_prefers_put_to_event() {
        let mut s = summary("w", "put", 100, 1);
        let e = summary("w", "put-to-event", 200, 1);
        s.series.extend(e.series);
        assert_eq!(headline(&s).map(|h| h.name.as_str()), Some("put-to-event"));
    }
}
