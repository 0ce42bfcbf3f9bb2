//! Three real `corekv` processes. With root and `ip netns`, each member
//! runs in its own network namespace joined to a bridge by a veth pair, so
//! partitions are blackhole (packets vanish) or prohibit (sends fail at
//! once) routes between member addresses (clients on the bridge are never
//! cut off). Without namespaces the members share loopback and their peer
//! traffic goes through in-process TCP proxies that blackhole or drop the
//! connections of a cut link (`proxy.rs`); clients connect directly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::proxy::{CutMode, Proxy};

pub const MEMBERS: usize = 3;
/// Members' `--election-timeout` (the checker's lease bounds use it).
pub const ELECTION_TIMEOUT_MS: u64 = 500;

#[derive(Debug, Clone)]
pub struct Net {
    /// Third octet of 10.77.x.0/24, also the suffix of every name.
    id: u8,
}

impl Net {
    fn ns(&self, i: usize) -> String {
        format!("ckv{}m{i}", self.id)
    }
    fn bridge(&self) -> String {
        format!("ckvb{}", self.id)
    }
    fn ip(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.id, 10 + i)
    }
    /// `ip route add|del <kind> <to>/32` in `from`'s namespace.
    fn route(&self, verb: &str, kind: &str, from: usize, to: usize) -> Result<()> {
        ip(&[
            "-n",
            &self.ns(from),
            "route",
            verb,
            kind,
            &format!("{}/32", self.ip(to)),
        ])
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Namespaces, veths and a bridge for the members; an error if the host
/// cannot make them (not root, no `ip netns`).
pub fn setup_net(id: u8) -> Result<Net> {
    let net = Net { id };
    let made = (|| -> Result<()> {
        let br = net.bridge();
        ip(&["link", "add", &br, "type", "bridge"])?;
        ip(&["addr", "add", &format!("10.77.{id}.1/24"), "dev", &br])?;
        ip(&["link", "set", &br, "up"])?;
        for i in 0..MEMBERS {
            let ns = net.ns(i);
            let (host, inner) = (format!("ckv{id}v{i}"), format!("ckv{id}p{i}"));
            ip(&["netns", "add", &ns])?;
            ip(&["link", "add", &host, "type", "veth", "peer", "name", &inner])?;
            ip(&["link", "set", &inner, "netns", &ns])?;
            ip(&["link", "set", &host, "master", &br, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", net.ip(i)),
                "dev",
                &inner,
            ])?;
            ip(&["-n", &ns, "link", "set", &inner, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    })();
    if made.is_err() {
        teardown_net(&net);
    }
    made.map(|()| net)
}

/// How the members are connected.
pub enum Network {
    /// Own network namespaces on a bridge.
    Namespaces(Net),
    /// Loopback, peer traffic through in-process proxies.
    Proxy(Proxy),
}

impl Network {
    pub fn describe(&self) -> String {
        match self {
            Network::Namespaces(n) => format!(
                "network namespaces on bridge {} (10.77.{}.0/24), partitions by routes",
                n.bridge(),
                n.id
            ),
            Network::Proxy(_) => {
                "loopback with in-process TCP proxies on the peer links, partitions by blackholing or dropping proxied connections".into()
            }
        }
    }
}

pub fn teardown_net(net: &Net) {
    for i in 0..MEMBERS {
        // The host end goes with its namespace, but only once the kernel
        // destroys it (lazily): delete it now so the names are free.
        let _ = ip(&["link", "del", &format!("ckv{}v{i}", net.id)]);
        let _ = ip(&["netns", "del", &net.ns(i)]);
    }
    let _ = ip(&["link", "del", &net.bridge()]);
}

pub struct Member {
    pub native: String,
    pub client_url: String,
    /// The peer URL the member advertises (what MemberAdd is given).
    pub peer_url: String,
    host: String,
    data_dir: PathBuf,
    args: Vec<String>,
    ns: Option<String>,
    pub child: Option<Child>,
    pub paused: bool,
    /// Removed from the cluster (its data dir wiped or about to be) and
    /// not yet added back: `start` leaves it down, since its flags would
    /// start it as the member it was.
    pub out: bool,
}

/// Peer ports a member in its own namespace alternates between when it
/// comes back on a new peer address.
const NETNS_PEER_PORTS: [u16; 2] = [2380, 2390];

/// Replaces the `name=value` flag `name` in `args` (or appends it).
fn set_flag(args: &mut Vec<String>, name: &str, value: &str) {
    let flag = format!("{name}={value}");
    let prefix = format!("{name}=");
    match args.iter_mut().find(|a| a.starts_with(&prefix)) {
        Some(a) => *a = flag,
        None => args.push(flag),
    }
}

pub struct Cluster {
    bin: PathBuf,
    pub net: Network,
    pub members: Vec<Member>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Cluster {
    pub fn new(bin: &Path, dir: &Path, net: Network) -> Result<Cluster> {
        // (host, native, client, peer, advertised peer) per member.
        let addrs: Vec<(String, u16, u16, u16, u16)> = (0..MEMBERS)
            .map(|i| match &net {
                Network::Namespaces(n) => (n.ip(i), 2378, 2379, 2380, 2380),
                Network::Proxy(p) => (
                    "127.0.0.1".into(),
                    free_port(),
                    free_port(),
                    p.peer_port(i),
                    p.advertised_port(i),
                ),
            })
            .collect();
        let initial: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, (h, _, _, _, a))| format!("m{i}=http://{h}:{a}"))
            .collect();
        let initial = initial.join(",");
        let members = addrs
            .iter()
            .enumerate()
            .map(|(i, (h, n, c, p, a))| {
                let data_dir = dir.join(format!("m{i}"));
                let mut args = vec![
                    format!("--name=m{i}"),
                    format!("--data-dir={}", data_dir.display()),
                    format!("--listen-client-urls=http://{h}:{c}"),
                    format!("--advertise-client-urls=http://{h}:{c}"),
                    format!("--listen-peer-urls=http://{h}:{p}"),
                    format!("--initial-advertise-peer-urls=http://{h}:{a}"),
                    format!("--listen-native-addr={h}:{n}"),
                    format!("--initial-cluster={initial}"),
                    "--cores=1".into(),
                    "--heartbeat-interval=50".into(),
                    format!("--election-timeout={ELECTION_TIMEOUT_MS}"),
                    "--wal-segment-bytes=4194304".into(),
                    "--snapshot-count=2000".into(),
                    "--store-sync-entries=500".into(),
                    "--request-timeout-ms=3000".into(),
                ];
                // Extra flags for every member, e.g. to exercise lease
                // checkpoints: CHAOS_MEMBER_ARGS="--lease-checkpoint-interval-ms=2000".
                args.extend(
                    std::env::var("CHAOS_MEMBER_ARGS")
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_owned),
                );
                Member {
                    native: format!("{h}:{n}"),
                    client_url: format!("http://{h}:{c}"),
                    peer_url: format!("http://{h}:{a}"),
                    host: h.clone(),
                    data_dir,
                    args,
                    ns: match &net {
                        Network::Namespaces(n) => Some(n.ns(i)),
                        Network::Proxy(_) => None,
                    },
                    child: None,
                    paused: false,
                    out: false,
                }
            })
            .collect();
        Ok(Cluster {
            bin: bin.to_owned(),
            net,
            members,
        })
    }

    /// Starts member `i` (with `failpoints` in FAILPOINTS if given); a
    /// member that is `out` of the cluster stays down.
    pub fn start(&mut self, i: usize, failpoints: Option<&str>) -> Result<()> {
        let m = &mut self.members[i];
        if m.child.is_some() || m.out {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.data_dir.with_extension("log"))?;
        let mut cmd = match &m.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.args(&m.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(fp) = failpoints {
            cmd.env("FAILPOINTS", fp);
        }
        let child = cmd.spawn().context("spawn corekv")?;
        if let Network::Proxy(p) = &self.net {
            p.set_pid(i, Some(child.id()));
        }
        m.child = Some(child);
        m.paused = false;
        Ok(())
    }

    fn signal(&mut self, i: usize, sig: i32) {
        if let Some(c) = &self.members[i].child {
            // SAFETY: kill(2) on a child we spawned (`ip netns exec` execs corekv).
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// kill -9 and reap.
    pub fn kill(&mut self, i: usize) {
        if self.members[i].paused {
            self.signal(i, libc::SIGCONT);
        }
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Network::Proxy(p) = &self.net {
            p.set_pid(i, None);
        }
        self.members[i].paused = false;
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.members[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.members[i].paused = false;
    }

    /// Member `i`'s exit status if it exited (reaped), None while it runs
    /// or when it is down.
    pub fn exited(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        let status = self.members[i].child.as_mut()?.try_wait().ok()??;
        self.members[i].child = None;
        if let Network::Proxy(p) = &self.net {
            p.set_pid(i, None);
        }
        Some(status)
    }

    /// Members that exited on their own (fail-stop or crash), reaped.
    pub fn reap_exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Some(c) = &mut m.child {
                if let Ok(Some(status)) = c.try_wait() {
                    out.push((i, format!("{status:?}")));
                    m.child = None;
                }
            }
        }
        out
    }

    /// Cuts traffic between members `a` and `b` both ways: packets vanish
    /// (blackhole) or connections fail (drop; a prohibit route in
    /// namespaces).
    pub fn cut(&self, a: usize, b: usize, mode: CutMode) -> Result<()> {
        let net = match &self.net {
            Network::Proxy(p) => {
                p.cut(a, b, mode);
                return Ok(());
            }
            Network::Namespaces(n) => n,
        };
        let kind = match mode {
            CutMode::Blackhole => "blackhole",
            CutMode::Drop => "prohibit",
        };
        for (x, y) in [(a, b), (b, a)] {
            net.route("add", kind, x, y)?;
        }
        Ok(())
    }

    /// Deletes the data dir of member `i`, which must be down (a removed
    /// member comes back only as a new member with an empty data dir).
    pub fn wipe(&mut self, i: usize) -> Result<()> {
        let m = &self.members[i];
        if m.child.is_some() {
            bail!("m{i} is running: not wiping its data dir");
        }
        match std::fs::remove_dir_all(&m.data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("wiping {}", m.data_dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// Moves member `i` (down) to a new peer address: the other port of
    /// its namespace, or a new proxy for it. Returns the new peer URL.
    pub fn readdress(&mut self, i: usize) -> Result<String> {
        let m = &mut self.members[i];
        let (listen, advertised) = match &mut self.net {
            Network::Namespaces(_) => {
                let now = m.peer_url.rsplit(':').next().unwrap_or_default();
                let port = NETNS_PEER_PORTS
                    .into_iter()
                    .find(|p| p.to_string() != now)
                    .unwrap_or(NETNS_PEER_PORTS[0]);
                (port, port)
            }
            Network::Proxy(p) => {
                let (advertised, listen) = p.readdress(i)?;
                (listen, advertised)
            }
        };
        let h = m.host.clone();
        set_flag(
            &mut m.args,
            "--listen-peer-urls",
            &format!("http://{h}:{listen}"),
        );
        m.peer_url = format!("http://{h}:{advertised}");
        let url = m.peer_url.clone();
        set_flag(&mut m.args, "--initial-advertise-peer-urls", &url);
        Ok(url)
    }

    /// From now on member `i` starts as a member added at run time: it
    /// joins the cluster listed in `initial_cluster`.
    pub fn set_joining(&mut self, i: usize, initial_cluster: &str) {
        let args = &mut self.members[i].args;
        set_flag(args, "--initial-cluster", initial_cluster);
        set_flag(args, "--initial-cluster-state", "existing");
    }

    /// Removes every partition.
    pub fn heal(&self) {
        let net = match &self.net {
            Network::Proxy(p) => return p.heal(),
            Network::Namespaces(n) => n,
        };
        for i in 0..MEMBERS {
            for j in (0..MEMBERS).filter(|&j| j != i) {
                for kind in ["blackhole", "prohibit"] {
                    let _ = net.route("del", kind, i, j);
                }
            }
        }
    }

    pub fn shutdown(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How long a member gets to come up before the run gives up on it.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::set_flag;

    #[test]
    fn set_flag_replaces_the_flag_or_appends_it() {
        let mut args = vec![
            "--initial-cluster=m0=http://a:1".to_owned(),
            "--initial-cluster-token=t".to_owned(),
        ];
        set_flag(&mut args, "--initial-cluster", "m0=http://b:2");
        set_flag(&mut args, "--initial-cluster-state", "existing");
        assert_eq!(
            args,
            [
                "--initial-cluster=m0=http://b:2",
                "--initial-cluster-token=t",
                "--initial-cluster-state=existing"
            ]
        );
    }
}
