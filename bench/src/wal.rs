//! `corekv-bench wal`: runs the raftcore WAL micro-benchmark and prints its
//! report (text) or the same figures as JSON.

use crate::cli::OutputFormat;
use crate::error::BenchError;
use corekv_raftcore::wal::bench::{WalBenchOptions, WalBenchReport, run};
use std::path::PathBuf;
use std::time::Duration;

pub struct WalArgs {
    pub dir: PathBuf,
    pub entry_bytes: usize,
    pub proposers: Vec<usize>,
    pub duration: Duration,
    pub warmup: Duration,
    pub raw_duration: Duration,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Blocking: the WAL bench runs on its own glommio executor thread.
pub fn wal(args: WalArgs, output: OutputFormat) -> Result<(), BenchError> {
    let opts = WalBenchOptions {
        dir: args.dir,
        entry_bytes: args.entry_bytes,
        proposers: args.proposers,
        duration_ms: ms(args.duration),
        warmup_ms: ms(args.warmup),
        raw_duration_ms: ms(args.raw_duration),
        ..WalBenchOptions::default()
    };
    let report = run(&opts).map_err(|e| BenchError::Wal(e.to_string()))?;
    match output {
        OutputFormat::Text => print!("{report}"),
        OutputFormat::Json => println!("{}", to_json(&report)),
    }
    Ok(())
}

fn to_json(r: &WalBenchReport) -> String {
    let runs: Vec<serde_json::Value> = r
        .runs
        .iter()
        .map(|p| {
            serde_json::json!({
                "proposers": p.proposers,
                "entries": p.entries,
                "entries_per_s": p.entries_per_sec,
                "fsyncs": p.fsyncs,
                "fsyncs_per_s": p.fsyncs_per_sec,
                "entries_per_fsync": p.entries_per_fsync,
                "latency_us_p50": p.latency_us_p50,
                "latency_us_p99": p.latency_us_p99,
            })
        })
        .collect();
    let v = serde_json::json!({
        "workload": "wal",
        "entry_bytes": r.entry_bytes,
        "raw_fsync": {
            "ops": r.raw.ops,
            "ops_per_s": r.raw.ops_per_sec,
            "latency_us_p50": r.raw.latency_us_p50,
            "latency_us_p99": r.raw.latency_us_p99,
        },
        "runs": runs,
    });
    // A tree of plain JSON values: serialization cannot fail.
    serde_json::to_string_pretty(&v).expect("json value serializes")
}
