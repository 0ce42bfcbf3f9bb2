//! Server processes for `compare`: etcd or corekv members started with
//! etcd's flags on free loopback ports, each with a fresh data dir, killed
//! when dropped.

use crate::error::BenchError;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn free_port() -> Result<u16, BenchError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| BenchError::Io {
        operation: "bind a free port",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| BenchError::Io {
            operation: "read bound port",
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
}

/// Resident set size (VmRSS) and its peak (VmHWM) of a process, in KiB.
pub fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// `p` itself when it has a directory part, else the first match on PATH
/// (then /usr/bin, /usr/local/bin).
pub fn find_binary(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(p))
        .chain(["/usr/bin", "/usr/local/bin"].map(|d| Path::new(d).join(p)))
        .find(|c| c.is_file())
}

/// One member process, killed on drop.
pub struct Server {
    child: Child,
    /// The client URL (gRPC for etcd; HTTP and, once built, gRPC for corekv).
    pub endpoint: String,
    /// corekv's native address (`--listen-native-addr`), when asked for.
    pub native: Option<String>,
    _data: tempfile::TempDir,
}

impl Server {
    /// The member's process id (for /proc figures).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Already-exited children make these fail, which is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Cluster {
    pub members: Vec<Server>,
}

impl Cluster {
    pub fn client_endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    pub fn native_endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter_map(|m| m.native.clone())
            .collect()
    }

    /// Sum over members of (current RSS, peak RSS) in KiB; `None` if any
    /// member's figures cannot be read (e.g. it exited).
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        self.members.iter().try_fold((0, 0), |(r, p), m| {
            let (rss, peak) = rss_kib(m.child.id())?;
            Some((r + rss, p + peak))
        })
    }
}

struct MemberPlan {
    name: String,
    client: String,
    peer: String,
    native: Option<String>,
}

/// Starts `members` members of `system` (a name prefix) from `bin`.
pub fn start_cluster(
    bin: &Path,
    system: &str,
    data_root: &Path,
    members: usize,
    with_native: bool,
) -> Result<Cluster, BenchError> {
    let mut plans = Vec::with_capacity(members);
    for i in 0..members.max(1) {
        plans.push(MemberPlan {
            name: format!("{system}{i}"),
            client: format!("http://127.0.0.1:{}", free_port()?),
            peer: format!("http://127.0.0.1:{}", free_port()?),
            native: if with_native {
                Some(format!("127.0.0.1:{}", free_port()?))
            } else {
                None
            },
        });
    }
    let initial_cluster = plans
        .iter()
        .map(|p| format!("{}={}", p.name, p.peer))
        .collect::<Vec<_>>()
        .join(",");
    let mut servers = Vec::with_capacity(plans.len());
    for p in plans {
        servers.push(start_member(bin, system, data_root, p, &initial_cluster)?);
    }
    Ok(Cluster { members: servers })
}

fn start_member(
    bin: &Path,
    system: &str,
    data_root: &Path,
    plan: MemberPlan,
    initial_cluster: &str,
) -> Result<Server, BenchError> {
    let data = tempfile::Builder::new()
        .prefix(&format!("corekv-bench-{}-", plan.name))
        .tempdir_in(data_root)
        .map_err(|source| BenchError::Io {
            operation: "create data dir under",
            path: data_root.to_path_buf(),
            source,
        })?;
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).map_err(|source| BenchError::Io {
        operation: "create log",
        path: log_path.clone(),
        source,
    })?;
    let log2 = log.try_clone().map_err(|source| BenchError::Io {
        operation: "clone log handle",
        path: log_path.clone(),
        source,
    })?;
    let mut cmd = Command::new(bin);
    cmd.arg("--name")
        .arg(&plan.name)
        .arg("--data-dir")
        .arg(data.path().join("data"))
        .arg("--listen-client-urls")
        .arg(&plan.client)
        .arg("--advertise-client-urls")
        .arg(&plan.client)
        .arg("--listen-peer-urls")
        .arg(&plan.peer)
        .arg("--initial-advertise-peer-urls")
        .arg(&plan.peer)
        .arg("--initial-cluster")
        .arg(initial_cluster)
        .arg("--initial-cluster-token")
        .arg(format!("bench-{system}"))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    if let Some(addr) = &plan.native {
        cmd.arg("--listen-native-addr").arg(addr);
    }
    let child = cmd.spawn().map_err(|source| BenchError::Io {
        operation: "spawn",
        path: bin.to_path_buf(),
        source,
    })?;
    Ok(Server {
        child,
        endpoint: plan.client,
        native: plan.native,
        _data: data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable() {
        let p = free_port().unwrap();
        assert_ne!(p, 0);
        TcpListener::bind(("127.0.0.1", p)).unwrap();
    }

    #[test]
    fn own_rss_is_readable() {
        let (rss, peak) = rss_kib(std::process::id()).unwrap();
        assert!(rss > 0 && peak >= rss);
    }

    #[test]
    fn find_binary_on_path_and_by_path() {
        assert!(find_binary(Path::new("sh")).is_some());
        assert!(find_binary(Path::new("/nonexistent/corekv")).is_none());
    }
}
