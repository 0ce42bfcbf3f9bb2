//! Three real `corekv` processes. With root and `ip netns`, each member
//! runs in its own network namespace joined to a bridge by a veth pair, so
//! partitions are blackhole routes between member addresses (clients on
//! the bridge are never cut off). Without namespaces the members share
//! loopback and partitions are not available (reported as such).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub const MEMBERS: usize = 3;

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

/// Namespaces, veths and a bridge for the members; `None` if the host
/// cannot make them (not root, no `ip netns`).
pub fn setup_net(id: u8) -> Option<Net> {
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
    match made {
        Ok(()) => Some(net),
        Err(e) => {
            eprintln!(
                "chaos: network namespaces unavailable ({e}); members on loopback, no partitions"
            );
            teardown_net(&net);
            None
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
    data_dir: PathBuf,
    args: Vec<String>,
    ns: Option<String>,
    pub child: Option<Child>,
    pub paused: bool,
}

pub struct Cluster {
    bin: PathBuf,
    pub net: Option<Net>,
    pub members: Vec<Member>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

impl Cluster {
    pub fn new(bin: &Path, dir: &Path, net: Option<Net>) -> Result<Cluster> {
        // (host, native, client, peer) per member.
        let addrs: Vec<(String, u16, u16, u16)> = (0..MEMBERS)
            .map(|i| match &net {
                Some(n) => (n.ip(i), 2378, 2379, 2380),
                None => ("127.0.0.1".into(), free_port(), free_port(), free_port()),
            })
            .collect();
        let initial: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, (h, _, _, p))| format!("m{i}=http://{h}:{p}"))
            .collect();
        let initial = initial.join(",");
        let members = addrs
            .iter()
            .enumerate()
            .map(|(i, (h, n, c, p))| {
                let data_dir = dir.join(format!("m{i}"));
                let args = vec![
                    format!("--name=m{i}"),
                    format!("--data-dir={}", data_dir.display()),
                    format!("--listen-client-urls=http://{h}:{c}"),
                    format!("--advertise-client-urls=http://{h}:{c}"),
                    format!("--listen-peer-urls=http://{h}:{p}"),
                    format!("--initial-advertise-peer-urls=http://{h}:{p}"),
                    format!("--listen-native-addr={h}:{n}"),
                    format!("--initial-cluster={initial}"),
                    "--cores=1".into(),
                    "--heartbeat-interval=50".into(),
                    "--election-timeout=500".into(),
                    "--wal-segment-bytes=4194304".into(),
                    "--snapshot-count=2000".into(),
                    "--store-sync-entries=500".into(),
                    "--request-timeout-ms=3000".into(),
                ];
                Member {
                    native: format!("{h}:{n}"),
                    client_url: format!("http://{h}:{c}"),
                    data_dir,
                    args,
                    ns: net.as_ref().map(|n| n.ns(i)),
                    child: None,
                    paused: false,
                }
            })
            .collect();
        Ok(Cluster {
            bin: bin.to_owned(),
            net,
            members,
        })
    }

    /// Starts member `i` (with `failpoints` in FAILPOINTS if given).
    pub fn start(&mut self, i: usize, failpoints: Option<&str>) -> Result<()> {
        let m = &mut self.members[i];
        if m.child.is_some() {
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
        m.child = Some(cmd.spawn().context("spawn corekv")?);
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

    /// Cuts traffic between members `a` and `b` both ways.
    pub fn cut(&self, a: usize, b: usize) -> Result<()> {
        let Some(net) = &self.net else {
            bail!("partitions need network namespaces");
        };
        ip(&[
            "-n",
            &net.ns(a),
            "route",
            "add",
            "blackhole",
            &format!("{}/32", net.ip(b)),
        ])?;
        ip(&[
            "-n",
            &net.ns(b),
            "route",
            "add",
            "blackhole",
            &format!("{}/32", net.ip(a)),
        ])
    }

    /// Removes every partition.
    pub fn heal(&self) {
        if let Some(net) = &self.net {
            for i in 0..MEMBERS {
                for j in 0..MEMBERS {
                    if i != j {
                        let _ = ip(&[
                            "-n",
                            &net.ns(i),
                            "route",
                            "del",
                            "blackhole",
                            &format!("{}/32", net.ip(j)),
                        ]);
                    }
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
