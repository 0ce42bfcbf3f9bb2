//! corekv-bench: load generator for corekv and etcd, with etcd's benchmark
//! vocabulary (see `docs/benchmarks.md`).

mod cli;
mod cluster;
mod compare;
mod driver;
mod error;
mod grpc;
mod keys;
mod plot;
mod progress;
mod recorder;
mod report;
mod secure;
mod stages;
mod target;
mod wal;
mod workload;

use clap::Parser;
use cli::{Cli, Command, OutputFormat, Protocol};
use error::BenchError;
use mimalloc::MiMalloc;
use report::{RunInfo, Summary};
use std::time::SystemTime;
use workload::kv::{Common, RangeSpec};
use workload::watch::WatchPlan;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let cli = Cli::parse();
    // The WAL bench runs its own glommio executor; no tokio runtime needed.
    if let Command::Wal {
        dir,
        entry_bytes,
        proposers,
        duration,
        warmup,
        raw_duration,
    } = &cli.command
    {
        let args = wal::WalArgs {
            dir: dir.clone(),
            entry_bytes: *entry_bytes,
            proposers: proposers.clone(),
            duration: *duration,
            warmup: *warmup,
            raw_duration: *raw_duration,
        };
        if let Err(e) = wal::wal(args, cli.global.output) {
            eprintln!("corekv-bench: {e}");
            std::process::exit(1);
        }
        return;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("corekv-bench: cannot start the tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("corekv-bench: {e}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> Result<(), BenchError> {
    let g = &cli.global;
    if let Command::Compare(args) = &cli.command {
        return compare::run(args, g.seed).await;
    }
    if let Command::LeaseScale(a) = &cli.command {
        use workload::lease_scale as ls;
        ls::validate(a)?;
        let run = async |sys: &workload::lease_host::System| ls::run(sys, a, g.conns).await;
        return workload::lease_host::each_system(
            &a.server,
            &g.endpoints,
            run,
            ls::ScaleReport::to_text,
            ls::table,
        )
        .await;
    }
    if let Command::LeaseExpiry(a) = &cli.command {
        use workload::lease_expiry as le;
        le::validate(a)?;
        let run = async |sys: &workload::lease_host::System| le::run(sys, a, g.conns).await;
        return workload::lease_host::each_system(
            &a.server,
            &g.endpoints,
            run,
            le::ExpiryReport::to_text,
            le::table,
        )
        .await;
    }
    if g.clients == 0 || g.conns == 0 {
        return Err(BenchError::InvalidArgument(
            "--clients and --conns must be > 0".into(),
        ));
    }
    let sec = secure::Security::from_args(&g.security)?;
    let endpoints = match (g.target_leader, g.protocol) {
        (false, _) => g.endpoints.clone(),
        (true, Protocol::Grpc) => vec![grpc::find_leader(&g.endpoints, &sec).await?],
        (true, Protocol::Native) => vec![target::find_native_leader(&g.endpoints, &sec).await?],
    };
    let target = target::Target::open_secure(g.protocol, &endpoints, g.conns, &sec).await?;
    let common = Common {
        target: &target,
        clients: g.clients,
        seed: g.seed,
    };
    let stage_urls = stage_urls(&cli)?;
    let stages_before = match &stage_urls {
        Some(urls) => Some(stages::scrape_all(urls).await?),
        None => None,
    };
    let started = SystemTime::now();
    let (name, clients, out) = match &cli.command {
        Command::Put {
            load,
            keys,
            compact_interval,
            compact_index_delta,
            ..
        } => (
            "put",
            g.clients,
            workload::kv::put(&common, load, keys, *compact_interval, *compact_index_delta).await?,
        ),
        Command::Range {
            key,
            end,
            prefix,
            consistency,
            limit,
            keys_only,
            count_only,
            load,
        } => {
            let spec = RangeSpec {
                key,
                end: end.as_deref(),
                prefix: *prefix,
                consistency: *consistency,
                limit: *limit,
                keys_only: *keys_only,
                count_only: *count_only,
            };
            (
                "range",
                g.clients,
                workload::kv::range(&common, &spec, load).await?,
            )
        }
        Command::TxnPut {
            txn_ops,
            keys,
            load,
        } => (
            "txn-put",
            g.clients,
            workload::kv::txn_put(&common, *txn_ops, keys, load).await?,
        ),
        Command::Get {
            span,
            consistency,
            keys,
            load,
        } => (
            "get",
            g.clients,
            workload::kv::get(&common, *span, *consistency, keys, load).await?,
        ),
        Command::TxnMixed {
            rw_ratio,
            consistency,
            keys,
            load,
        } => (
            "txn-mixed",
            g.clients,
            workload::kv::txn_mixed(&common, *rw_ratio, *consistency, keys, load).await?,
        ),
        Command::Watch {
            streams,
            watch_per_stream,
            watched_key_total,
            put_total,
            put_rate,
            ev,
        } => {
            let plan = WatchPlan {
                streams: *streams,
                watchers_per_stream: *watch_per_stream,
                key_total: *watched_key_total,
                put_total: *put_total,
                put_rate: *put_rate,
                prev_kv: false,
            };
            (
                "watch",
                streams * watch_per_stream,
                workload::watch::run(&target, &plan, ev, "watch").await?,
            )
        }
        Command::WatchLatency {
            streams,
            watchers_per_stream,
            put_rate,
            put_total,
            prevkv,
            ev,
        } => {
            let plan = WatchPlan {
                streams: *streams,
                watchers_per_stream: *watchers_per_stream,
                key_total: 1,
                put_total: *put_total,
                put_rate: *put_rate,
                prev_kv: *prevkv,
            };
            (
                "watch-latency",
                streams * watchers_per_stream,
                workload::watch::run(&target, &plan, ev, "watch-latency").await?,
            )
        }
        Command::LeaseKeepalive { ttl, load } => (
            "lease-keepalive",
            g.clients,
            workload::lease::keepalive(&target, g.clients, *ttl, load).await?,
        ),
        Command::Compare(_)
        | Command::Wal { .. }
        | Command::LeaseScale(_)
        | Command::LeaseExpiry(_) => unreachable!("handled above"),
    };
    let info = RunInfo {
        workload: name,
        protocol: g.protocol.name(),
        endpoints: &endpoints,
        clients,
        conns: g.conns,
    };
    let mut summary = Summary::build(&info, &out.recorder, out.elapsed, &out.windows);
    summary.extra = out.extra;
    match g.output {
        OutputFormat::Text => print!("{}", summary.to_text()),
        OutputFormat::Json => println!("{}", summary.to_json()),
    }
    if let (Some(urls), Some(before)) = (&stage_urls, &stages_before) {
        let after = stages::scrape_all(urls).await?;
        print!("{}", stages::table(&stages::diff(&after, before)));
    }
    if let Some(path) = &g.histogram_out {
        report::write_histogram_log(path, &out.recorder, started, out.elapsed)?;
    }
    if let Some(path) = &g.plot {
        std::fs::write(path, plot::render(&summary, &out.recorder)).map_err(|source| {
            BenchError::Io {
                operation: "write plot",
                path: path.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// The /metrics URLs `put --stages` reads, or None without `--stages`.
fn stage_urls(cli: &Cli) -> Result<Option<Vec<String>>, BenchError> {
    let Command::Put {
        stages: true,
        metrics_urls,
        ..
    } = &cli.command
    else {
        return Ok(None);
    };
    if !metrics_urls.is_empty() {
        return Ok(Some(metrics_urls.clone()));
    }
    match cli.global.protocol {
        Protocol::Grpc if cli.global.endpoints.iter().any(|e| e.starts_with("https://")) => {
            Err(BenchError::InvalidArgument(
                "put --stages reads /metrics over plain HTTP: with https endpoints give --metrics-urls"
                    .into(),
            ))
        }
        Protocol::Grpc => Ok(Some(
            cli.global
                .endpoints
                .iter()
                .map(|e| format!("http://{}/metrics", e.trim_start_matches("http://")))
                .collect(),
        )),
        Protocol::Native => Err(BenchError::InvalidArgument(
            "put --stages with --protocol native needs --metrics-urls (the members' client URLs)"
                .into(),
        )),
    }
}
