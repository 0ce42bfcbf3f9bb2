//! In-process TCP proxies for the peer links, used where network
//! namespaces are unavailable (not root, no `ip netns`). Every member
//! listens for peers on a private loopback port and advertises a proxy
//! port instead; all peer traffic to member `i` goes through proxy `i`.
//!
//! A connection's source member is found from its source port: the member
//! process holding the socket with that local port (`/proc/net/tcp` gives
//! the socket's inode, `/proc/<pid>/fd` who holds it). A connection whose
//! source is not a known member is closed.
//!
//! Partitions cut a link (both directions) in one of two ways:
//! - blackhole: the link's connections stop moving bytes (the sockets stay
//!   open, writers fill their buffers and stall, as when packets are
//!   dropped); bytes already read are delivered after the heal;
//! - drop: the link's connections are closed at once and new ones are
//!   closed on accept, until the heal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// Bytes one direction of a proxied connection moves per read.
const PUMP_BUF_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    Blackhole,
    Drop,
}

/// Cut links (unordered member pairs) and the member processes.
struct Links {
    cut: Mutex<HashMap<(usize, usize), CutMode>>,
    /// Bumped on every cut and heal; pumps wait on it.
    changed: watch::Sender<u64>,
    pids: Mutex<Vec<Option<u32>>>,
    stats: Stats,
}

/// What the proxies did in a run (printed by the runner, so a run shows
/// its partitions took effect).
#[derive(Default)]
struct Stats {
    /// Connections proxied.
    accepted: AtomicU64,
    /// Connections closed on accept: unknown source or a dropped link.
    refused: AtomicU64,
    /// Connections closed because their link was dropped.
    dropped: AtomicU64,
    /// Times a connection's bytes were held by a blackholed link.
    held: AtomicU64,
}

fn count(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Links {
    fn mode(&self, link: (usize, usize)) -> Option<CutMode> {
        self.cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&link)
            .copied()
    }

    /// The member whose process holds the loopback socket with local port
    /// `port` connected to `to_port`.
    fn owner(&self, port: u16, to_port: u16) -> Option<usize> {
        let inode = socket_inode(port, to_port)?;
        let target = format!("socket:[{inode}]");
        let pids = self
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        pids.iter().position(|pid| {
            pid.is_some_and(|pid| {
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .any(|fd| {
                        std::fs::read_link(fd.path())
                            .is_ok_and(|l| l.as_os_str() == target.as_str())
                    })
            })
        })
    }

    /// Waits while `link` is blackholed; false once it is dropped or the
    /// proxy is gone.
    async fn open(&self, link: (usize, usize), changes: &mut watch::Receiver<u64>) -> bool {
        loop {
            match self.mode(link) {
                None => return true,
                Some(CutMode::Drop) => {
                    count(&self.stats.dropped);
                    return false;
                }
                Some(CutMode::Blackhole) => {
                    count(&self.stats.held);
                    if changes.changed().await.is_err() {
                        return false;
                    }
                }
            }
        }
    }
}

/// Inode of the IPv4 TCP socket 127.0.0.1:`port` -> 127.0.0.1:`to_port`.
fn socket_inode(port: u16, to_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (local, remote) = (
        format!("0100007F:{port:04X}"),
        format!("0100007F:{to_port:04X}"),
    );
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2] == remote)
            .then(|| f[9].parse().ok())
            .flatten()
    })
}

/// One proxy per member.
pub struct Proxy {
    links: Arc<Links>,
    /// (advertised proxy port, member's own peer port) per member.
    ports: Vec<(u16, u16)>,
    accepters: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds a proxy port for each of `members` members and picks each
    /// member's private peer port. Must run inside the Tokio runtime.
    pub fn start(members: usize) -> Result<Proxy> {
        let (changed, _) = watch::channel(0);
        let links = Arc::new(Links {
            cut: Mutex::new(HashMap::new()),
            changed,
            pids: Mutex::new(vec![None; members]),
            stats: Stats::default(),
        });
        let mut proxy = Proxy {
            links,
            ports: Vec::with_capacity(members),
            accepters: Vec::with_capacity(members),
        };
        for _ in 0..members {
            let (ports, accepter) = proxy.listen(proxy.ports.len())?;
            proxy.ports.push(ports);
            proxy.accepters.push(accepter);
        }
        Ok(proxy)
    }

    /// A proxy port for member `dst` and a private peer port for it.
    fn listen(&self, dst: usize) -> Result<((u16, u16), JoinHandle<()>)> {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding a proxy port")?;
        std_listener.set_nonblocking(true)?;
        let port = std_listener.local_addr()?.port();
        let real = crate::cluster::free_port();
        let listener = TcpListener::from_std(std_listener)?;
        let accepter = tokio::spawn(accept(listener, dst, port, real, self.links.clone()));
        Ok(((port, real), accepter))
    }

    /// Member `i` (down) moves to a new peer address: a new proxy port and
    /// a new private port. The old proxy and its connections are closed.
    /// Returns (advertised port, private peer port).
    pub fn readdress(&mut self, i: usize) -> Result<(u16, u16)> {
        let (ports, accepter) = self.listen(i)?;
        std::mem::replace(&mut self.accepters[i], accepter).abort();
        self.ports[i] = ports;
        Ok(ports)
    }

    /// The port member `i` advertises to its peers.
    pub fn advertised_port(&self, i: usize) -> u16 {
        self.ports[i].0
    }

    /// The port member `i` listens on for peers.
    pub fn peer_port(&self, i: usize) -> u16 {
        self.ports[i].1
    }

    /// Member `i`'s process (None while it is down).
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        self.links
            .pids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)[i] = pid;
    }

    pub fn cut(&self, a: usize, b: usize, mode: CutMode) {
        self.links
            .cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(pair(a, b), mode);
        self.links.changed.send_modify(|g| *g += 1);
    }

    /// "accepted=A refused=R dropped=D held=H" so far.
    pub fn stats(&self) -> String {
        let s = &self.links.stats;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "accepted={} refused={} dropped={} held={}",
            get(&s.accepted),
            get(&s.refused),
            get(&s.dropped),
            get(&s.held)
        )
    }

    pub fn heal(&self) {
        self.links
            .cut
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.links.changed.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Each accepter owns its connections (a JoinSet): aborting it
        // closes them all.
        for a in &self.accepters {
            a.abort();
        }
    }
}

async fn accept(listener: TcpListener, dst: usize, port: u16, real: u16, links: Arc<Links>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((inbound, from)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let Some(src) = links.owner(from.port(), port) else {
            count(&links.stats.refused);
            continue;
        };
        let link = pair(src, dst);
        if links.mode(link) == Some(CutMode::Drop) {
            count(&links.stats.refused);
            continue;
        }
        count(&links.stats.accepted);
        let links = links.clone();
        conns.spawn(async move {
            let Ok(outbound) = TcpStream::connect(("127.0.0.1", real)).await else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            tokio::join!(pump(ri, wo, link, links.clone()), pump(ro, wi, link, links));
        });
    }
}

/// Moves bytes one way while the link is up; holds them while it is
/// blackholed; returns (dropping both halves) when it is dropped or either
/// side closes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: (usize, usize),
    links: Arc<Links>,
) {
    let mut changes = links.changed.subscribe();
    let mut buf = vec![0u8; PUMP_BUF_BYTES];
    loop {
        if !links.open(link, &mut changes).await {
            return;
        }
        // Reads and writes race the cut/heal signal; both are cancel-safe
        // (a cancelled read or write moved no bytes).
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            c = changes.changed() => {
                if c.is_err() {
                    return;
                }
                continue;
            }
        };
        let mut off = 0;
        while off < n {
            if !links.open(link, &mut changes).await {
                return;
            }
            tokio::select! {
                w = to.write(&buf[off..n]) => match w {
                    Ok(0) | Err(_) => return,
                    Ok(k) => off += k,
                },
                c = changes.changed() => {
                    if c.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const WAIT: Duration = Duration::from_millis(300);

    /// An echo server standing in for member 1's peer listener.
    async fn echo(port: u16) {
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await?;
        Ok(got)
    }

    /// Member 0 is this test process, member 1 an echo server.
    #[tokio::test]
    async fn blackhole_holds_drop_closes_heal_restores_unknown_sources_closed() {
        let proxy = Proxy::start(2).unwrap();
        echo(proxy.peer_port(1)).await;
        proxy.set_pid(0, Some(std::process::id()));
        let to_1 = ("127.0.0.1", proxy.advertised_port(1));

        let mut s = TcpStream::connect(to_1).await.unwrap();
        assert_eq!(round_trip(&mut s, b"ping").await.unwrap(), b"ping");

        proxy.cut(1, 0, CutMode::Blackhole);
        s.write_all(b"held").await.unwrap();
        let mut got = [0u8; 4];
        let stalled = tokio::time::timeout(WAIT, s.read_exact(&mut got)).await;
        assert!(stalled.is_err(), "bytes crossed a blackholed link");
        proxy.heal();
        tokio::time::timeout(WAIT * 10, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"held");

        proxy.cut(0, 1, CutMode::Drop);
        let mut one = [0u8; 1];
        let closed = tokio::time::timeout(WAIT * 10, s.read(&mut one)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let mut fresh = TcpStream::connect(to_1).await.unwrap();
        let refused = tokio::time::timeout(WAIT * 10, round_trip(&mut fresh, b"x")).await;
        assert!(matches!(refused, Ok(Err(_))), "{refused:?}");

        proxy.heal();
        let mut s = TcpStream::connect(to_1).await.unwrap();
        assert_eq!(round_trip(&mut s, b"back").await.unwrap(), b"back");

        proxy.set_pid(0, None);
        let mut stranger = TcpStream::connect(to_1).await.unwrap();
        let refused = tokio::time::timeout(WAIT * 10, round_trip(&mut stranger, b"x")).await;
        assert!(matches!(refused, Ok(Err(_))), "{refused:?}");
        // Established connections of a known source are not affected.
        assert_eq!(round_trip(&mut s, b"still").await.unwrap(), b"still");
    }

    /// A member moved to a new peer address: the old proxy port and its
    /// connections close, the new one reaches the member's new port.
    #[tokio::test]
    async fn readdress_closes_the_old_port_and_proxies_the_new_one() {
        let mut proxy = Proxy::start(2).unwrap();
        echo(proxy.peer_port(1)).await;
        proxy.set_pid(0, Some(std::process::id()));
        let old = proxy.advertised_port(1);
        let mut s = TcpStream::connect(("127.0.0.1", old)).await.unwrap();
        assert_eq!(round_trip(&mut s, b"ping").await.unwrap(), b"ping");

        let (advertised, real) = proxy.readdress(1).unwrap();
        assert_eq!(
            (advertised, real),
            (proxy.advertised_port(1), proxy.peer_port(1))
        );
        assert_ne!(advertised, old);
        let mut one = [0u8; 1];
        let closed = tokio::time::timeout(WAIT * 10, s.read(&mut one)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        assert!(TcpStream::connect(("127.0.0.1", old)).await.is_err());

        echo(real).await;
        let mut s = TcpStream::connect(("127.0.0.1", advertised)).await.unwrap();
        assert_eq!(round_trip(&mut s, b"moved").await.unwrap(), b"moved");
    }
}
