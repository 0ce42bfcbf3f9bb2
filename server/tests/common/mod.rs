//! Test support: real `corekv` processes on loopback ports picked at run
//! time, data dirs on the real disk under the target dir.

#![allow(dead_code)]

pub mod etcd;
pub mod members;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corekv_wire::messages as w;
use corekv_wire::{Client, ClientOptions, WireError};

/// Ticks are 50 ms and elections 500 ms in tests, so failover is quick.
pub const HEARTBEAT_MS: u64 = 50;
pub const ELECTION_MS: u64 = 500;

/// Ports handed to members come from below Linux's ephemeral range
/// (32768-60999 by default). An ephemeral port can be taken by any outgoing
/// connection while its member is down for a restart, and a client dialling a
/// stopped member's ephemeral port can even be connected to itself (TCP
/// simultaneous open), which then looks like a reset by the member.
const MEMBER_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port in [`MEMBER_PORTS`] that is free now (picked at run time).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let span = u64::from(MEMBER_PORTS.end - MEMBER_PORTS.start);
    for _ in 0..10_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let x = seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .rotate_left(17);
        let port = MEMBER_PORTS.start + (x % span) as u16;
        // Never the same port twice in one test process: two members of one
        // cluster picked in the same millisecond must not share a port.
        if !handed_out().lock().unwrap().insert(port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {MEMBER_PORTS:?}");
}

fn handed_out() -> &'static std::sync::Mutex<std::collections::HashSet<u16>> {
    static PORTS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<u16>>> =
        std::sync::OnceLock::new();
    PORTS.get_or_init(Default::default)
}

/// How a member that lost a port race says so (another process bound the
/// port between our pick and the member's bind).
const PORT_TAKEN: &str = "Address already in use";

pub struct MemberSpec {
    pub name: String,
    pub native: u16,
    pub http: u16,
    pub peer: u16,
    pub data_dir: PathBuf,
}

pub struct Member {
    pub spec: MemberSpec,
    pub child: Option<Child>,
    pub extra: Vec<String>,
    /// Environment of the next start (e.g. FAILPOINTS).
    pub env: Vec<(String, String)>,
    pub initial_cluster: String,
}

impl Member {
    pub fn client_scheme(&self) -> &'static str {
        if self.extra.iter().any(|a| a == "--cert-file") {
            "https"
        } else {
            "http"
        }
    }

    pub fn native_addr(&self) -> String {
        format!("127.0.0.1:{}", self.spec.native)
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.spec.name);
        let log =
            std::fs::File::create(self.spec.data_dir.with_extension("log")).expect("log file");
        let s = &self.spec;
        let child = Command::new(env!("CARGO_BIN_EXE_corekv"))
            .args(["--name", &s.name])
            .arg("--data-dir")
            .arg(&s.data_dir)
            .args([
                "--listen-client-urls",
                // Members given a client certificate serve https there.
                &format!("{}://127.0.0.1:{}", self.client_scheme(), s.http),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{}", s.peer),
            ])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{}", s.peer),
            ])
            .args(["--listen-native-addr", &format!("127.0.0.1:{}", s.native)])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--heartbeat-interval", &HEARTBEAT_MS.to_string()])
            .args(["--election-timeout", &ELECTION_MS.to_string()])
            .args([
                "--cores",
                "1",
                "--wal-segment-bytes",
                "1048576",
                "--log-level",
                "info",
            ])
            .args(&self.extra)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn corekv");
        self.child = Some(child);
    }

    /// kill -9: no shutdown path runs.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.spec.data_dir.with_extension("log")).unwrap_or_default()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct Cluster {
    pub members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` members with `extra` flags each; waits for a leader.
    /// A pre-picked port can be taken by another process before the member
    /// binds it (tests of other binaries run at the same time): then the
    /// whole cluster is launched again on fresh ports, at most twice.
    pub async fn start(n: usize, extra: &[&str]) -> Cluster {
        for _ in 0..2 {
            let c = Cluster::launch(n, extra);
            match c.try_wait_leader(Duration::from_secs(20)).await {
                Ok(_) => return c,
                Err(logs) if logs.contains(PORT_TAKEN) => continue,
                Err(logs) => panic!("no leader within 20s; logs:\n{logs}"),
            }
        }
        let c = Cluster::launch(n, extra);
        c.wait_leader(Duration::from_secs(20)).await;
        c
    }

    /// Starts `n` members with `extra` flags each, without waiting (for
    /// members the plain client cannot talk to, e.g. TLS only).
    pub fn launch(n: usize, extra: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("corekv-it-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("tempdir");
        let members = members(dir.path(), n, extra);
        Cluster::launch_members(members, dir)
    }

    /// Starts prepared members (their data dirs may already exist, e.g.
    /// restored from a snapshot) and waits for a leader; `dir` holds them.
    pub async fn start_members(members: Vec<Member>, dir: tempfile::TempDir) -> Cluster {
        let c = Cluster::launch_members(members, dir);
        c.wait_leader(Duration::from_secs(20)).await;
        c
    }

    fn launch_members(mut members: Vec<Member>, dir: tempfile::TempDir) -> Cluster {
        for m in &mut members {
            m.start();
        }
        Cluster { members, _dir: dir }
    }

    /// A connected client of member `i`; panics with the member's log
    /// (why it did not come up) when it does not answer within 15 s.
    pub async fn client(&self, i: usize) -> Client {
        let addr = self.members[i].native_addr();
        match try_connect_within(&addr, CONNECT_WITHIN).await {
            Ok(c) => c,
            Err(e) => panic!(
                "connect m{i} {addr}: {e}; its log:\n{}",
                self.members[i].log()
            ),
        }
    }

    /// Index of the member that reports itself leader.
    pub async fn wait_leader(&self, within: Duration) -> usize {
        match self.try_wait_leader(within).await {
            Ok(i) => i,
            Err(logs) => panic!("no leader within {within:?}; logs:\n{logs}"),
        }
    }

    /// Index of the member that reports itself leader, or the members' logs
    /// when none does within `within` (early when a member lost a port race).
    pub async fn try_wait_leader(&self, within: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + within;
        let logs = || {
            self.members
                .iter()
                .map(|m| m.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        };
        let mut polls = 0u32;
        loop {
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                let Ok(c) = try_connect(&m.native_addr()).await else {
                    continue;
                };
                if let Ok(s) = c.status(w::StatusRequest {}).await {
                    if s.leader != 0 && s.leader == s.header.member_id {
                        return Ok(i);
                    }
                }
            }
            polls += 1;
            if Instant::now() > deadline {
                return Err(logs());
            }
            if polls % 10 == 0 {
                let l = logs();
                if l.contains(PORT_TAKEN) {
                    return Err(l);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `n` members `m1..mn` with fresh ports and data dirs under `dir`, one
/// cluster (`initial_cluster` lists them all), not started.
pub fn members(dir: &std::path::Path, n: usize, extra: &[&str]) -> Vec<Member> {
    let specs: Vec<MemberSpec> = (1..=n)
        .map(|i| MemberSpec {
            name: format!("m{i}"),
            native: free_port(),
            http: free_port(),
            peer: free_port(),
            data_dir: dir.join(format!("m{i}")),
        })
        .collect();
    let initial_cluster = specs
        .iter()
        .map(|s| format!("{}=http://127.0.0.1:{}", s.name, s.peer))
        .collect::<Vec<_>>()
        .join(",");
    specs
        .into_iter()
        .map(|spec| Member {
            spec,
            child: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            initial_cluster: initial_cluster.clone(),
        })
        .collect()
}

pub async fn try_connect(addr: &str) -> Result<Client, WireError> {
    let opts = ClientOptions {
        dial_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    Client::connect(addr, opts).await
}

/// How long `connect` and `Cluster::client` retry while a member starts.
const CONNECT_WITHIN: Duration = Duration::from_secs(15);

/// Connects, retrying while the member starts; the connection is returned
/// once the member has answered a status request on it.
pub async fn connect(addr: &str) -> Client {
    match try_connect_within(addr, CONNECT_WITHIN).await {
        Ok(c) => c,
        Err(e) => panic!("connect {addr}: {e}"),
    }
}

/// `connect`, with the last error instead of a panic after `within`.
async fn try_connect_within(addr: &str, within: Duration) -> Result<Client, WireError> {
    let deadline = Instant::now() + within;
    loop {
        let answered = match try_connect(addr).await {
            Ok(c) => c.status(w::StatusRequest {}).await.map(|_| c),
            Err(e) => Err(e),
        };
        match answered {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub fn put(key: &str, value: &str) -> w::PutRequest {
    w::PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn range(key: &str, end: &str) -> w::RangeRequest {
    w::RangeRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub fn keys(r: &w::RangeResponse) -> Vec<String> {
    r.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}
