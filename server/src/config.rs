//! Command-line flags and environment of the `corekv` daemon.
//!
//! etcd's flags keep etcd's names and `ETCD_*` environment variables so an
//! operator's unit files carry over; corekv's own settings use `COREKV_*`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ClusterState {
    New,
    Existing,
}

/// `--store-map-advice`: the store mapping's `madvise` advice.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum MapAdviceArg {
    Random,
    Normal,
}

/// etcd's `--auto-compaction-mode`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum AutoCompactionMode {
    Periodic,
    Revision,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "corekv",
    version,
    about = "corekv: an etcd-compatible, Raft-replicated key-value store"
)]
pub struct Config {
    /// Path to the server configuration file (etcd's YAML format: the keys
    /// are these flags' names; TLS under client-transport-security and
    /// peer-transport-security). Note that if a configuration file is
    /// provided, other command line flags and environment variables will be
    /// ignored.
    #[arg(long, env = "ETCD_CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// Human-readable name of this member.
    #[arg(long, env = "ETCD_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory (default: ./<name>.corekv).
    #[arg(long, env = "ETCD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// URLs to listen on for etcd's gRPC API and HTTP (/health, /readyz,
    /// /livez, /metrics, /version), HTTP/2 (h2c) and HTTP/1.1 on one port,
    /// served by every serve core (SO_REUSEPORT). Only the first URL is bound.
    #[arg(
        long,
        env = "ETCD_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    pub listen_client_urls: Vec<String>,

    /// Client URLs advertised to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    pub advertise_client_urls: Vec<String>,

    /// URLs to listen on for peer (Raft) traffic.
    #[arg(
        long,
        env = "ETCD_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub listen_peer_urls: Vec<String>,

    /// This member's peer URLs, advertised to the rest of the cluster.
    #[arg(
        long,
        env = "ETCD_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub initial_advertise_peer_urls: Vec<String>,

    /// Initial cluster configuration for bootstrapping: name=peer-url,...
    /// (default: this member alone, at its advertised peer URL).
    #[arg(long, env = "ETCD_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,

    /// Initial cluster state ('new' or 'existing').
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_STATE",
        value_enum,
        default_value = "new"
    )]
    pub initial_cluster_state: ClusterState,

    /// Initial cluster token, mixed into the cluster and member ids.
    #[arg(
        long,
        env = "ETCD_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Time (in milliseconds) of a heartbeat interval (one Raft tick).
    #[arg(long, env = "ETCD_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to time out.
    #[arg(long, env = "ETCD_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of applied entries between two Raft snapshots (log compactions).
    #[arg(long, env = "ETCD_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// Entries the leader keeps before a log compaction so slightly lagging
    /// followers catch up from the log instead of a snapshot (etcd's
    /// --experimental-snapshot-catchup-entries).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_SNAPSHOT_CATCHUP_ENTRIES",
        default_value_t = 5000
    )]
    pub snapshot_catchup_entries: u64,

    /// Raise alarms when backend size exceeds the given quota (0 defaults to
    /// 2 GiB): the NOSPACE alarm is raised cluster-wide and puts, txns with
    /// puts and lease grants fail until space is freed and the alarm disarmed.
    #[arg(long, env = "ETCD_QUOTA_BACKEND_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub quota_backend_bytes: u64,

    /// Duration of time between cluster corruption check passes (HashKV of
    /// every member at the leader's revision; 0 = off, etcd's default).
    #[arg(
        long,
        env = "ETCD_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = crate::duration::parse
    )]
    pub experimental_corrupt_check_time: Duration,

    /// Interpret 'auto-compaction-retention' one of: periodic|revision.
    /// 'periodic' for duration based retention, defaulting to hours if no
    /// time unit is provided (e.g. '5m'). 'revision' for revision number
    /// based retention.
    #[arg(
        long,
        env = "ETCD_AUTO_COMPACTION_MODE",
        value_enum,
        default_value = "periodic"
    )]
    pub auto_compaction_mode: AutoCompactionMode,

    /// Auto compaction retention for mvcc key value store. 0 means disable
    /// auto compaction.
    #[arg(long, env = "ETCD_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// In revision mode, time between two auto-compaction checks (etcd
    /// uses a fixed 5 minutes).
    #[arg(
        long,
        env = "COREKV_AUTO_COMPACTION_REVISION_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub auto_compaction_revision_interval_ms: u64,

    /// Maximum client request size in bytes.
    #[arg(long, env = "ETCD_MAX_REQUEST_BYTES", default_value_t = 1_572_864)]
    pub max_request_bytes: u64,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "ETCD_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: u32,

    /// Log level: debug, info, warn, error.
    #[arg(long, env = "ETCD_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Address the native (rkyv) protocol listens on.
    #[arg(
        long,
        env = "COREKV_LISTEN_NATIVE_ADDR",
        default_value = "127.0.0.1:2378"
    )]
    pub listen_native_addr: SocketAddr,

    /// Native address advertised to clients and peers (default: the listen address).
    #[arg(long, env = "COREKV_ADVERTISE_NATIVE_ADDR")]
    pub advertise_native_addr: Option<SocketAddr>,

    /// Number of executors (cores) to run; 0 = all online cores.
    #[arg(long, env = "COREKV_CORES", default_value_t = 0)]
    pub cores: usize,

    /// io_uring registered buffer memory per executor. glommio registers it
    /// with each of an executor's 3 rings, and RLIMIT_MEMLOCK is shared by
    /// every process of the user: 256 KiB lets 3 members x 3 executors fit in
    /// 8 MiB. (Over the limit glommio runs without registered buffers.)
    #[arg(long, env = "COREKV_IO_MEMORY_BYTES", default_value_t = 256 * 1024)]
    pub io_memory_bytes: usize,

    /// Upper bound of bytes in one WAL write (one group commit).
    #[arg(long, env = "COREKV_WAL_BATCH_MAX_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub wal_batch_max_bytes: u64,

    /// Upper bound of client proposals queued for the Raft core.
    #[arg(long, env = "COREKV_PROPOSAL_QUEUE_DEPTH", default_value_t = 16_384)]
    pub proposal_queue_depth: usize,

    /// Upper bound of requests in flight on one client connection.
    #[arg(long, env = "COREKV_MAX_REQUESTS_PER_CONN", default_value_t = 4096)]
    pub max_requests_per_conn: usize,

    /// Upper bound of client connections per serve core, on the native port
    /// and on the client URL each.
    #[arg(long, env = "COREKV_MAX_CONNS_PER_CORE", default_value_t = 10_000)]
    pub max_conns_per_core: usize,

    /// Upper bound of client writes and linearizable reads waiting in the
    /// Raft core (proposed, forwarded, parked or waiting for a read index);
    /// beyond it requests get "too many requests".
    #[arg(long, env = "COREKV_MAX_PENDING_REQUESTS", default_value_t = 65_536)]
    pub max_pending_requests: usize,

    /// Time a client write or linearizable read may wait before
    /// "etcdserver: request timed out".
    #[arg(long, env = "COREKV_REQUEST_TIMEOUT_MS", default_value_t = 7_000)]
    pub request_timeout_ms: u64,

    /// Interval of progress notifications to watchers that asked for them
    /// (etcd's --experimental-watch-progress-notify-interval, default 10m).
    #[arg(
        long,
        env = "COREKV_WATCH_PROGRESS_NOTIFY_INTERVAL_MS",
        default_value_t = 600_000
    )]
    pub watch_progress_notify_interval_ms: u64,

    /// Bytes of watch responses a client connection or gRPC watch stream may
    /// have queued before its watchers stop taking live events and catch up
    /// from the store instead (slow consumers never lose events, and server
    /// memory per client stays bounded); catch-up resumes below half of it.
    #[arg(
        long,
        env = "COREKV_WATCH_MAX_PENDING_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub watch_max_pending_bytes: usize,

    /// Size of one preallocated WAL segment file.
    #[arg(long, env = "COREKV_WAL_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub wal_segment_bytes: u64,

    /// Applied entries between two durable checkpoints of the store; the WAL
    /// below the last checkpoint may be released.
    #[arg(long, env = "COREKV_STORE_SYNC_ENTRIES", default_value_t = 10_000)]
    pub store_sync_entries: u64,

    /// Store commits (one per applied batch) whose page write-out may wait
    /// for the store's write-out thread; 0 writes them on the Raft core.
    #[arg(
        long,
        env = "COREKV_STORE_WRITEOUT_QUEUE_COMMITS",
        default_value_t = 16
    )]
    pub store_writeout_queue_commits: usize,

    /// `madvise` advice of the store file's read mapping: `random` (no
    /// read-ahead) or `normal` (the kernel's read-ahead).
    #[arg(long, env = "COREKV_STORE_MAP_ADVICE", value_enum, default_value_t = MapAdviceArg::Random)]
    pub store_map_advice: MapAdviceArg,

    /// etcd's `--auth-token`: `simple`, or
    /// `jwt,pub-key=PATH,priv-key=PATH,sign-method=RS256,ttl=5m`.
    #[arg(long, env = "ETCD_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,

    /// Seconds a simple token stays valid after its last use.
    #[arg(long, env = "ETCD_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// bcrypt cost of stored password hashes (4..=31).
    #[arg(long, env = "ETCD_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,

    /// Client TLS certificate (PEM). With it, the native address speaks only
    /// TLS; reloaded when the file changes.
    #[arg(long, env = "ETCD_CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// Client TLS private key (PEM).
    #[arg(long, env = "ETCD_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// CA that client certificates must chain to.
    #[arg(long, env = "ETCD_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Require client certificates; their common name is the user when auth
    /// is enabled and the request carries no token.
    #[arg(long, env = "ETCD_CLIENT_CERT_AUTH")]
    pub client_cert_auth: bool,

    /// Peer TLS certificate (PEM), also presented when dialling peers.
    #[arg(long, env = "ETCD_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Peer TLS private key (PEM).
    #[arg(long, env = "ETCD_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// CA that peer certificates must chain to.
    #[arg(long, env = "ETCD_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Require peer certificates signed by --peer-trusted-ca-file.
    #[arg(long, env = "ETCD_PEER_CLIENT_CERT_AUTH")]
    pub peer_client_cert_auth: bool,
    /// Most leases the leader revokes by expiry per second (etcd's
    /// leaseRevokeRate); a mass expiry is spread out at this rate.
    #[arg(long, env = "COREKV_LEASE_REVOKE_RATE", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub lease_revoke_rate: u32,

    /// How often the leader checkpoints each long lease's remaining TTL
    /// through Raft (persisted, so leader changes and full restarts resume
    /// from it; etcd's lease checkpoint + checkpoint-persist). 0 disables.
    #[arg(
        long,
        env = "COREKV_LEASE_CHECKPOINT_INTERVAL_MS",
        default_value_t = 300_000
    )]
    pub lease_checkpoint_interval_ms: u64,
}

impl Config {
    /// Client TLS files, if configured.
    pub fn client_tls(&self) -> Result<Option<crate::tls::TlsFiles>, String> {
        crate::tls::TlsFiles::from_flags(
            "",
            &self.cert_file,
            &self.key_file,
            &self.trusted_ca_file,
            self.client_cert_auth,
        )
    }

    /// Peer TLS files, if configured.
    pub fn peer_tls(&self) -> Result<Option<crate::tls::TlsFiles>, String> {
        crate::tls::TlsFiles::from_flags(
            "peer-",
            &self.peer_cert_file,
            &self.peer_key_file,
            &self.peer_trusted_ca_file,
            self.peer_client_cert_auth,
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.corekv", self.name)))
    }

    pub fn native_advertise(&self) -> SocketAddr {
        self.advertise_native_addr
            .unwrap_or(self.listen_native_addr)
    }

    pub fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval.max(1))
    }

    /// Election timeout in ticks, as Raft counts time.
    pub fn election_ticks(&self) -> u32 {
        let ticks = self.election_timeout / self.heartbeat_interval.max(1);
        u32::try_from(ticks).unwrap_or(u32::MAX)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn initial_cluster_spec(&self) -> String {
        match &self.initial_cluster {
            Some(spec) => spec.clone(),
            None => self
                .initial_advertise_peer_urls
                .iter()
                .map(|u| format!("{}={}", self.name, u))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    /// Checks the combinations etcd refuses too.
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_interval == 0 {
            return Err("--heartbeat-interval must be > 0".into());
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(format!(
                "--election-timeout[{}ms] should be at least as 5 times as --heartbeat-interval[{}ms]",
                self.election_timeout, self.heartbeat_interval
            ));
        }
        if self.max_txn_ops == 0 {
            return Err("--max-txn-ops must be > 0".into());
        }
        crate::node::autocompact::policy(self)?;
        if self.snapshot_count == 0 {
            return Err("--snapshot-count must be > 0".into());
        }
        self.validate_limits()
    }

    /// Every bound must admit at least one item: a zero queue depth or cap
    /// would panic (a channel of depth 0), hang (no request ever admitted)
    /// or refuse everything.
    fn validate_limits(&self) -> Result<(), String> {
        let limits: [(&str, u64); 9] = [
            ("--proposal-queue-depth", self.proposal_queue_depth as u64),
            ("--max-requests-per-conn", self.max_requests_per_conn as u64),
            ("--max-conns-per-core", self.max_conns_per_core as u64),
            ("--max-pending-requests", self.max_pending_requests as u64),
            ("--max-request-bytes", self.max_request_bytes),
            ("--wal-batch-max-bytes", self.wal_batch_max_bytes),
            ("--wal-segment-bytes", self.wal_segment_bytes),
            ("--store-sync-entries", self.store_sync_entries),
            ("--request-timeout-ms", self.request_timeout_ms),
        ];
        for (flag, value) in limits {
            if value == 0 {
                return Err(format!("{flag} must be > 0"));
            }
        }
        Ok(())
    }
}

/// Resolves the `host:port` of an `http://host:port` URL to a socket address.
pub fn url_to_addr(url: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let hostport = rest.split('/').next().unwrap_or(rest);
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {url}: {e}"))?
        .find(|a| a.is_ipv4())
        .or_else(|| hostport.to_socket_addrs().ok().and_then(|mut a| a.next()))
        .ok_or_else(|| format!("cannot resolve {url}: no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_at_start() {
        assert_eq!(Config::parse_from(["corekv"]).validate(), Ok(()));
        for flag in [
            "--proposal-queue-depth",
            "--max-requests-per-conn",
            "--max-conns-per-core",
            "--max-pending-requests",
            "--wal-batch-max-bytes",
            "--store-sync-entries",
            "--request-timeout-ms",
        ] {
            let cfg = Config::parse_from(["corekv", flag, "0"]);
            assert_eq!(cfg.validate(), Err(format!("{flag} must be > 0")), "{flag}");
        }
    }
}
