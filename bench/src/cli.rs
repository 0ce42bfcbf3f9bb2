//! Command line, in etcd's benchmark vocabulary so results compare directly.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "corekv-bench",
    version,
    about = "Load generator for corekv (native and gRPC) and etcd (gRPC)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Comma-separated endpoints (host:port or http://host:port).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Number of connections; connection j goes to endpoint j % endpoints.
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients; client i uses connection i % conns.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Grpc)]
    pub protocol: Protocol,
    /// Send everything to the current leader (found with Maintenance.Status).
    #[arg(long, global = true)]
    pub target_leader: bool,
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Write the latency histograms as an HdrHistogram log (V2, deflate).
    #[arg(long, global = true)]
    pub histogram_out: Option<PathBuf>,
    /// Write an SVG with the latency percentile distribution and throughput over time.
    #[arg(long, global = true)]
    pub plot: Option<PathBuf>,
    /// Seed of the key generators (same seed, same key sequence).
    #[arg(long, global = true, default_value_t = 1)]
    pub seed: u64,
    /// TLS and auth: --user, --password, --cacert, --cert, --key.
    #[command(flatten)]
    pub security: crate::secure::SecurityArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// corekv's rkyv protocol (corekv only).
    Native,
    /// etcd v3 gRPC (etcd, or corekv's gateway).
    Grpc,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Native => "native",
            Protocol::Grpc => "grpc",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

/// When to stop and how fast to send.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Total number of requests (default 10000 unless --duration is given).
    #[arg(long)]
    pub total: Option<u64>,
    /// Run for this long (e.g. 30s, 2m); with --total, whichever ends first.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Requests per second over all clients; latency is then measured from
    /// each request's intended send time (coordinated omission corrected).
    #[arg(long)]
    pub rate: Option<f64>,
}

/// Default total when neither --total nor --duration is given (as etcd's tool).
pub const DEFAULT_TOTAL: u64 = 10_000;

#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys written.
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Write keys 0,1,2... in order instead of at random.
    #[arg(long, conflicts_with = "scattered_keys")]
    pub sequential_keys: bool,
    /// Visit every key of the space once per pass, in a scattered order
    /// (key index (op * m) mod space, m coprime with the space): N puts load
    /// N distinct keys in pseudo-random order.
    #[arg(long)]
    pub scattered_keys: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Put keys.
    Put {
        #[command(flatten)]
        load: LoadArgs,
        #[command(flatten)]
        keys: KeyArgs,
        /// Compact to (latest revision - --compact-index-delta) this often (e.g. 1m).
        #[arg(long, value_parser = parse_duration)]
        compact_interval: Option<Duration>,
        #[arg(long, default_value_t = 1000)]
        compact_index_delta: i64,
        /// Print the members' write latency budget for this run, stage by
        /// stage (corekv only; read from their /metrics).
        #[arg(long)]
        stages: bool,
        /// /metrics URLs for --stages (default: http://<endpoint>/metrics
        /// for each --endpoints; with --protocol native give the members'
        /// client URLs, e.g. http://127.0.0.1:2379/metrics).
        #[arg(long, value_delimiter = ',')]
        metrics_urls: Vec<String>,
    },
    /// Range over a key, a range [key, end) or a prefix.
    Range {
        key: String,
        end: Option<String>,
        /// Treat KEY as a prefix.
        #[arg(long)]
        prefix: bool,
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
        #[arg(long, default_value_t = 0)]
        limit: i64,
        #[arg(long)]
        keys_only: bool,
        #[arg(long)]
        count_only: bool,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Txns of --txn-ops puts each (no compares).
    TxnPut {
        #[arg(long, default_value_t = 1)]
        txn_ops: usize,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Random reads over the key space written by `put` (same --key-size
    /// and --key-space-size): one key, or with --span N the range of N
    /// consecutive keys starting at a random one.
    Get {
        /// Keys per read (1: a single-key get; N: [key(i), key(i + N))).
        #[arg(long, default_value_t = 1)]
        span: u64,
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Txns that read or write one key, --rw-ratio reads per write.
    TxnMixed {
        #[arg(long, default_value_t = 1.0)]
        rw_ratio: f64,
        #[arg(long, value_enum, default_value_t = Consistency::L)]
        consistency: Consistency,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Create many watchers, then put to watched keys: watcher creation time
    /// and events delivered per second.
    Watch {
        #[arg(long, default_value_t = 10)]
        streams: usize,
        #[arg(long, default_value_t = 100)]
        watch_per_stream: usize,
        /// Distinct keys watched (watcher w watches key w % total).
        #[arg(long, default_value_t = 1)]
        watched_key_total: u64,
        #[arg(long, default_value_t = 10_000)]
        put_total: u64,
        #[arg(long, default_value_t = 1000.0)]
        put_rate: f64,
        #[command(flatten)]
        ev: EventArgs,
    },
    /// Watchers on one key, puts at a fixed rate: put-to-event latency.
    WatchLatency {
        #[arg(long, default_value_t = 10)]
        streams: usize,
        #[arg(long, default_value_t = 10)]
        watchers_per_stream: usize,
        #[arg(long, default_value_t = 100.0)]
        put_rate: f64,
        #[arg(long, default_value_t = 1000)]
        put_total: u64,
        /// Ask for the previous key-value in each event.
        #[arg(long)]
        prevkv: bool,
        #[command(flatten)]
        ev: EventArgs,
    },
    /// One lease per client, keep-alive round trips over a LeaseKeepAlive stream.
    LeaseKeepalive {
        #[arg(long, default_value_t = 60)]
        ttl: i64,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// WAL micro-benchmark (corekv_raftcore::wal::bench): group-committed
    /// appends from 1..N proposers next to a raw O_DIRECT write+fdatasync loop.
    Wal {
        /// Parent directory on the disk under test (not tmpfs).
        #[arg(long, default_value = "/var/tmp/corekv-wal-bench")]
        dir: PathBuf,
        #[arg(long, default_value_t = 256)]
        entry_bytes: usize,
        /// Concurrent proposer counts, one run each.
        #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
        proposers: Vec<usize>,
        /// Measured time per run.
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        duration: Duration,
        #[arg(long, value_parser = parse_duration, default_value = "300ms")]
        warmup: Duration,
        /// Duration of the raw write+fdatasync baseline.
        #[arg(long, value_parser = parse_duration, default_value = "3s")]
        raw_duration: Duration,
    },
    /// Start etcd (and corekv when it can serve) on free loopback ports, run
    /// the standard workloads against each, print one table.
    Compare(CompareArgs),
    /// Keep-alive at scale: --leases leases kept alive every TTL/3 over
    /// --streams LeaseKeepAlive streams; keep-alives/s, round trip, server
    /// CPU and memory per lease, and that no lease expired.
    LeaseScale(LeaseScaleArgs),
    /// Mass expiry: --leases leases with one key each and the same TTL, no
    /// keep-alives, under a steady put load; put latency before and while
    /// they expire, and how fast their keys go.
    LeaseExpiry(LeaseExpiryArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EventArgs {
    #[arg(long, default_value_t = 32)]
    pub key_size: usize,
    /// Value size; at least 8 (the value carries the put's intended send time).
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
    /// How long to wait for outstanding events after the last put.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub event_timeout: Duration,
}

#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// etcd binary (Debian etcd-server installs /usr/bin/etcd).
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: PathBuf,
    /// corekv binary; skipped with a message when it is missing or cannot serve.
    #[arg(long, default_value = "target/release/corekv")]
    pub corekv_bin: PathBuf,
    /// Parent of the servers' data dirs (same disk for both).
    #[arg(long, default_value = "/var/tmp")]
    pub data_root: PathBuf,
    /// Members per system (1 or 3; clients spread over all members).
    #[arg(long, default_value_t = 1)]
    pub members: usize,
    /// Repetitions of each workload; the table shows the median run.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Scale totals down by this factor (quick smoke runs).
    #[arg(long, default_value_t = 1)]
    pub scale_down: u64,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    pub markdown_out: Option<PathBuf>,
}

/// Which servers the lease-at-scale workloads run against.
#[derive(Debug, Clone, Args)]
pub struct LeaseServerArgs {
    /// Start etcd from this binary (one member, free loopback ports, data
    /// dir under --data-root) and run against it instead of --endpoints.
    #[arg(long)]
    pub etcd_bin: Option<PathBuf>,
    /// Start corekv from this binary the same way (after etcd when both
    /// are given: the same workload against both in one run).
    #[arg(long)]
    pub corekv_bin: Option<PathBuf>,
    /// Parent of the started servers' data dirs (a real disk, not tmpfs).
    #[arg(long, default_value = "/var/tmp")]
    pub data_root: PathBuf,
    /// With --endpoints: the server's process id, to read its CPU time and
    /// RSS from /proc (without it those figures are not reported).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Also write the table as Markdown to this file.
    #[arg(long)]
    pub markdown_out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct LeaseScaleArgs {
    #[arg(long, default_value_t = 100_000)]
    pub leases: u64,
    /// Lease TTL, seconds; each lease is kept alive every TTL/3.
    #[arg(long, default_value_t = 30)]
    pub ttl: i64,
    /// LeaseKeepAlive streams (lease i on stream i % streams; stream j on
    /// connection j % --conns).
    #[arg(long, default_value_t = 100)]
    pub streams: usize,
    /// Measured window, once every lease is in its keep-alive cadence.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub duration: Duration,
    /// Concurrent LeaseGrant callers (and LeaseTimeToLive callers at the end).
    #[arg(long, default_value_t = 100)]
    pub grant_clients: usize,
    #[command(flatten)]
    pub server: LeaseServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct LeaseExpiryArgs {
    #[arg(long, default_value_t = 100_000)]
    pub leases: u64,
    /// TTL of every lease, seconds; longer than granting them all takes, or
    /// no put is measured before expiry begins.
    #[arg(long, default_value_t = 60)]
    pub ttl: i64,
    /// Puts per second on other keys, from granting's end until the lease
    /// keys are gone.
    #[arg(long, default_value_t = 500.0)]
    pub put_rate: f64,
    #[arg(long, default_value_t = 16)]
    pub put_clients: usize,
    /// Concurrent callers granting the leases and attaching their keys.
    #[arg(long, default_value_t = 100)]
    pub grant_clients: usize,
    /// Give up waiting for the lease keys to go this long after granting ended.
    #[arg(long, value_parser = parse_duration, default_value = "600s")]
    pub max_wait: Duration,
    #[command(flatten)]
    pub server: LeaseServerArgs,
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 500ms, 30s, 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "us" => n / 1_000_000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit {unit:?} in {s:?}")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn security_options_parse_as_etcdctl() {
        let cli = Cli::try_parse_from([
            "corekv-bench",
            "--endpoints=https://127.0.0.1:2379",
            "--user=bench:pw",
            "--cacert=/ca.pem",
            "put",
            "--cert=/c.pem",
            "--key=/c.key",
        ])
        .unwrap();
        let s = &cli.global.security;
        assert_eq!(s.user.as_deref(), Some("bench:pw"));
        assert_eq!(s.password, None);
        assert_eq!(s.cacert.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(s.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(s.key.as_deref(), Some(std::path::Path::new("/c.key")));
        // `range KEY` keeps its positional key next to the global --key.
        let cli = Cli::try_parse_from(["corekv-bench", "--key=/c.key", "range", "k1"]).unwrap();
        assert!(matches!(cli.command, Command::Range { ref key, .. } if key == "k1"));
    }

    #[test]
    fn etcd_style_invocation_parses() {
        let cli = Cli::try_parse_from([
            "corekv-bench",
            "--endpoints=127.0.0.1:2379,127.0.0.1:22379",
            "--conns=100",
            "--clients=1000",
            "put",
            "--key-size=8",
            "--val-size=256",
            "--total=100000",
            "--key-space-size=100000",
        ])
        .unwrap();
        assert_eq!(cli.global.endpoints.len(), 2);
        assert_eq!(cli.global.clients, 1000);
        match cli.command {
            Command::Put { load, keys, .. } => {
                assert_eq!(load.total, Some(100_000));
                assert_eq!(keys.val_size, 256);
            }
            other => panic!("parsed as {other:?}"),
        }
    }
}
