//! Peer transport: Raft messages, forwarded proposals and snapshot images
//! between members, over TCP with the native framing (rkyv payloads).
//!
//! Each member dials every other member once (one outbound connection per
//! peer, carrying this member's messages to it) and accepts the others'
//! dials. Queues are bounded: when a peer's queue is full the message is
//! dropped and Raft is told the peer is unreachable; Raft's own retries
//! (heartbeats, probes) recover. Snapshot images go over a separate
//! connection so they never delay heartbeats.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use corekv_raftcore::{Message, NodeId};
use corekv_storage::Store;
use corekv_wire::{FrameDecoder, WireLimits, encode_frame};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use rkyv::{Archive, Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Shared;

/// Messages queued per peer before new ones are dropped.
pub const PEER_QUEUE_DEPTH: usize = 8192;
/// Largest peer frame (an append batch or a snapshot chunk).
pub const PEER_MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
const DIAL_TIMEOUT: Duration = Duration::from_secs(1);
const REDIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Most queued messages coalesced into one socket write.
const MAX_MSGS_PER_WRITE: usize = 512;

/// What travels between members.
#[derive(Archive, Serialize, Deserialize, Debug)]
pub enum PeerMsg {
    /// First frame of every connection.
    Hello(Hello),
    Raft(Message),
    /// A client proposal forwarded to the leader (an encoded entry payload).
    Forward {
        data: Vec<u8>,
    },
    /// Part of a snapshot image; the last chunk carries the Raft message.
    SnapshotChunk {
        offset: u64,
        data: Vec<u8>,
        done: Option<Message>,
    },
    /// Keep-alive / time-to-live forwarded to the leader, and its answer.
    Lease(super::lease::LeaseMsg),
    /// The answer to a dial of a member removed from the cluster (instead
    /// of the accepting member's own `Hello`); the dialer stops.
    Removed,
    /// First frame of a member joining with `--initial-cluster-state
    /// existing`: asks for the membership record (answered by `Cluster`).
    Join,
    /// The membership record (`ClusterInfo` as JSON).
    Cluster {
        json: Vec<u8>,
    },
    /// A membership change (an encoded entry of the client's request)
    /// forwarded to the leader.
    ForwardMember {
        data: Vec<u8>,
    },
    /// The leader refused a forwarded membership change: the error for the
    /// waiting client of that run.
    MemberRefused {
        proposal_id: u64,
        run_nonce: u64,
        error: String,
    },
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub struct Hello {
    pub cluster_id: u64,
    pub from: NodeId,
    pub name: String,
    pub client_urls: Vec<String>,
    pub native_addr: String,
}

/// From the transport to the Raft core.
pub enum PeerIn {
    Raft(Message),
    Forward {
        data: Vec<u8>,
    },
    Snapshot {
        path: PathBuf,
        msg: Message,
    },
    SnapshotSent {
        to: NodeId,
        ok: bool,
    },
    Lease {
        from: NodeId,
        msg: super::lease::LeaseMsg,
    },
    ForwardMember {
        data: Vec<u8>,
    },
    MemberRefused {
        proposal_id: u64,
        run_nonce: u64,
        error: String,
    },
}

/// From the Raft core to one peer.
pub enum PeerOut {
    Raft(Message),
    Forward {
        data: Vec<u8>,
    },
    Lease(super::lease::LeaseMsg),
    ForwardMember {
        data: Vec<u8>,
    },
    MemberRefused {
        proposal_id: u64,
        run_nonce: u64,
        error: String,
    },
}

pub struct Peers {
    shared: Arc<Shared>,
    queues: HashMap<NodeId, mpsc::Sender<PeerOut>>,
    addrs: HashMap<NodeId, SocketAddr>,
    to_core: mpsc::Sender<PeerIn>,
}

impl Peers {
    /// Starts one outbound task per peer on the current (Raft core) executor.
    pub fn start(
        shared: Arc<Shared>,
        addrs: HashMap<NodeId, SocketAddr>,
        to_core: mpsc::Sender<PeerIn>,
    ) -> Peers {
        let mut queues = HashMap::new();
        for (&id, &addr) in &addrs {
            let (tx, rx) = mpsc::channel(PEER_QUEUE_DEPTH);
            queues.insert(id, tx);
            glommio::spawn_local(outbound(shared.clone(), id, addr, rx)).detach();
        }
        Peers {
            shared,
            queues,
            addrs,
            to_core,
        }
    }

    /// Membership changed: opens connections to new members (or to new
    /// addresses) and closes those to members that are gone (their queue is
    /// dropped, so their outbound task ends).
    pub fn set_members(&mut self, want: HashMap<NodeId, SocketAddr>) {
        self.queues.retain(|id, _| want.contains_key(id));
        self.addrs.retain(|id, _| want.contains_key(id));
        for (id, addr) in want {
            if self.addrs.get(&id) == Some(&addr) {
                continue;
            }
            tracing::info!(peer = format_args!("{id:x}"), %addr, "peer added");
            let (tx, rx) = mpsc::channel(PEER_QUEUE_DEPTH);
            self.queues.insert(id, tx);
            self.addrs.insert(id, addr);
            glommio::spawn_local(outbound(self.shared.clone(), id, addr, rx)).detach();
        }
    }

    /// Queues a message; false if the peer is unknown or its queue is full.
    pub fn send(&self, to: NodeId, out: PeerOut) -> bool {
        self.queues
            .get(&to)
            .is_some_and(|q| q.try_send(out).is_ok())
    }

    /// Streams the store's image and then `msg` to `to` on a connection of
    /// its own; the outcome is reported to the core as `SnapshotSent`.
    pub fn send_snapshot(&self, to: NodeId, msg: Message, store: Arc<Store>) {
        let Some(&addr) = self.addrs.get(&to) else {
            return;
        };
        let shared = self.shared.clone();
        let to_core = self.to_core.clone();
        glommio::spawn_local(async move {
            let ok = match send_snapshot(&shared, addr, msg, store).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(peer = format_args!("{to:x}"), error = %e, "snapshot send failed");
                    false
                }
            };
            let _ = to_core.send(PeerIn::SnapshotSent { to, ok }).await;
        })
        .detach();
    }
}

fn hello(shared: &Shared) -> PeerMsg {
    PeerMsg::Hello(Hello {
        cluster_id: shared.cluster_id(),
        from: shared.member_id,
        name: shared.cfg.name.clone(),
        client_urls: shared.cfg.advertise_client_urls.clone(),
        native_addr: shared.cfg.native_advertise().to_string(),
    })
}

/// Why a dial failed.
enum DialError {
    Io(std::io::Error),
    /// The peer says this member was removed from the cluster.
    Removed,
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DialError::Io(e) => e.fmt(f),
            DialError::Removed => f.write_str(super::membership::runtime::REMOVED_REASON),
        }
    }
}

async fn connect(
    tls: Option<&Arc<rustls::ClientConfig>>,
    addr: SocketAddr,
) -> std::io::Result<Box<dyn crate::tls::Io>> {
    let tcp = TcpStream::connect_timeout(addr, DIAL_TIMEOUT).await?;
    tcp.set_nodelay(true)?;
    crate::tls::connect(tls, addr, tcp).await
}

/// Connects and says hello; the peer answers with its own hello (or
/// `Removed`) before anything else flows. A peer that does not answer
/// within `DIAL_TIMEOUT` is taken as a member of a version that does not
/// answer hellos (it still reads what we send).
async fn dial(shared: &Shared, addr: SocketAddr) -> Result<Box<dyn crate::tls::Io>, DialError> {
    let mut stream = connect(shared.peer_tls.as_ref().map(|t| &t.client), addr)
        .await
        .map_err(DialError::Io)?;
    let mut buf = Vec::new();
    encode_frame(0, &hello(shared), &mut buf)
        .map_err(|e| DialError::Io(std::io::Error::other(e)))?;
    stream.write_all(&buf).await.map_err(DialError::Io)?;
    match read_one(&mut stream)
        .await
        .map_err(|e| DialError::Io(std::io::Error::other(e)))?
    {
        Some(PeerMsg::Hello(h)) => {
            // Learn the peer's name and client addresses (MemberList).
            let _ = super::membership::runtime::note_hello(shared, &h);
            Ok(stream)
        }
        Some(PeerMsg::Removed) => Err(DialError::Removed),
        Some(_) => Err(DialError::Io(std::io::Error::other(
            "peer answered the hello with something else",
        ))),
        None => Ok(stream),
    }
}

/// Reads exactly one frame (the answer to a hello or a join); None if none
/// came within `DIAL_TIMEOUT`.
async fn read_one(stream: &mut Box<dyn crate::tls::Io>) -> Result<Option<PeerMsg>, String> {
    let limits = WireLimits {
        max_frame_bytes: PEER_MAX_FRAME_BYTES,
        ..WireLimits::default()
    };
    let mut decoder = FrameDecoder::new(&limits);
    let read = async {
        loop {
            let n = stream
                .read(decoder.buf_mut())
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("peer closed the connection".to_string());
            }
            decoder.advance(n);
            if let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
                let archived = frame.access::<PeerMsg>().map_err(|e| e.to_string())?;
                return rkyv::deserialize::<PeerMsg, rkyv::rancor::Error>(archived)
                    .map(Some)
                    .map_err(|e| e.to_string());
            }
        }
    };
    let timeout = async {
        glommio::timer::sleep(DIAL_TIMEOUT).await;
        Ok(None)
    };
    futures_lite::future::or(read, timeout).await
}

/// Asks the member at `addr` for the membership record (a joining member,
/// before it knows its own id). Returns the record's JSON.
pub async fn fetch_cluster(
    tls: Option<&Arc<rustls::ClientConfig>>,
    addr: SocketAddr,
) -> Result<Vec<u8>, String> {
    let mut stream = connect(tls, addr).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    encode_frame(0, &PeerMsg::Join, &mut buf).map_err(|e| e.to_string())?;
    stream.write_all(&buf).await.map_err(|e| e.to_string())?;
    match read_one(&mut stream).await? {
        Some(PeerMsg::Cluster { json }) => Ok(json),
        Some(_) => Err("peer answered the join with something else".into()),
        None => Err("peer did not answer the join in time".into()),
    }
}

/// Writes one frame on an accepted connection.
async fn reply(stream: &mut Box<dyn crate::tls::Io>, msg: &PeerMsg) -> Result<(), String> {
    let mut buf = Vec::new();
    encode_frame(0, msg, &mut buf).map_err(|e| e.to_string())?;
    stream.write_all(&buf).await.map_err(|e| e.to_string())?;
    stream.flush().await.map_err(|e| e.to_string())
}

async fn outbound(
    shared: Arc<Shared>,
    id: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<PeerOut>,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    'connect: while !shared.stopping() {
        let mut stream = match dial(&shared, addr).await {
            Ok(s) => s,
            Err(DialError::Removed) => {
                super::membership::runtime::removed(&shared);
                return;
            }
            Err(e) => {
                tracing::debug!(peer = format_args!("{id:x}"), %addr, error = %e, "peer dial failed");
                // Drop what queued up meanwhile: Raft resends what matters.
                // A closed queue: the peer left the cluster.
                loop {
                    match rx.try_recv() {
                        Ok(_) => {}
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                glommio::timer::sleep(REDIAL_BACKOFF).await;
                continue;
            }
        };
        tracing::debug!(peer = format_args!("{id:x}"), %addr, "peer connected");
        loop {
            let Some(first) = rx.recv().await else { return };
            buf.clear();
            let mut next = Some(first);
            let mut n = 0;
            while let Some(out) = next.take() {
                let msg = match out {
                    PeerOut::Raft(m) => PeerMsg::Raft(m),
                    PeerOut::Forward { data } => PeerMsg::Forward { data },
                    PeerOut::Lease(m) => PeerMsg::Lease(m),
                    PeerOut::ForwardMember { data } => PeerMsg::ForwardMember { data },
                    PeerOut::MemberRefused {
                        proposal_id,
                        run_nonce,
                        error,
                    } => PeerMsg::MemberRefused {
                        proposal_id,
                        run_nonce,
                        error,
                    },
                };
                if let Err(e) = encode_frame(0, &msg, &mut buf) {
                    tracing::error!(error = %e, "cannot encode a peer message");
                }
                n += 1;
                if n < MAX_MSGS_PER_WRITE {
                    next = rx.try_recv().ok();
                }
            }
            if let Err(e) = stream.write_all(&buf).await {
                tracing::debug!(peer = format_args!("{id:x}"), error = %e, "peer connection lost");
                glommio::timer::sleep(REDIAL_BACKOFF).await;
                continue 'connect;
            }
        }
    }
}

async fn send_snapshot(
    shared: &Shared,
    addr: SocketAddr,
    msg: Message,
    store: Arc<Store>,
) -> Result<(), String> {
    let dir = super::start::snap_dir(&shared.cfg.data_dir());
    let path = dir.join(format!(
        "outgoing-{:x}-{}.snap",
        msg.to,
        msg.snapshot.as_ref().map_or(0, |s| s.index)
    ));
    let p = path.clone();
    let written = glommio::executor()
        .spawn_blocking(move || -> Result<u64, String> {
            let mut f = std::fs::File::create(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            store.write_snapshot(&mut f).map_err(|e| e.to_string())?;
            f.sync_all().map_err(|e| e.to_string())?;
            Ok(f.metadata().map_err(|e| e.to_string())?.len())
        })
        .await;
    let result = async {
        let total = written?;
        let mut stream = dial(shared, addr).await.map_err(|e| e.to_string())?;
        let mut image = blocking(ImageFile::open(path.clone())).await?;
        let mut offset = 0u64;
        let mut buf = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES + 4096);
        loop {
            let (file, chunk) = blocking(image.read_chunk()).await?;
            image = file;
            let n = chunk.len();
            let done = offset + n as u64 >= total;
            let frame = PeerMsg::SnapshotChunk {
                offset,
                data: chunk,
                done: done.then(|| msg.clone()),
            };
            buf.clear();
            encode_frame(0, &frame, &mut buf).map_err(|e| e.to_string())?;
            stream.write_all(&buf).await.map_err(|e| e.to_string())?;
            offset += n as u64;
            if done {
                break;
            }
            if n == 0 {
                return Err(format!("snapshot image ended at {offset} of {total} bytes"));
            }
        }
        stream.flush().await.map_err(|e| e.to_string())?;
        // Wait for the receiver to close: it has the whole image then.
        let mut probe = [0u8; 1];
        let _ = stream.read(&mut probe).await;
        Ok(())
    }
    .await;
    let _ = glommio::executor()
        .spawn_blocking(move || std::fs::remove_file(&path))
        .await;
    result
}

/// Runs blocking file IO on glommio's blocking pool, off the Raft executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    glommio::executor().spawn_blocking(f).await
}

/// A snapshot image file moved between the executor and the blocking pool.
struct ImageFile {
    path: PathBuf,
    file: std::fs::File,
}

impl ImageFile {
    fn open(path: PathBuf) -> impl FnOnce() -> Result<ImageFile, String> + Send + 'static {
        move || {
            let file =
                std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(ImageFile { path, file })
        }
    }

    fn create(path: PathBuf) -> impl FnOnce() -> Result<ImageFile, String> + Send + 'static {
        move || {
            let file =
                std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(ImageFile { path, file })
        }
    }

    /// Reads the next chunk (empty at the end).
    fn read_chunk(
        mut self,
    ) -> impl FnOnce() -> Result<(ImageFile, Vec<u8>), String> + Send + 'static {
        move || {
            let mut chunk = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            let n = read_full(&mut self.file, &mut chunk)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            chunk.truncate(n);
            Ok((self, chunk))
        }
    }

    /// Appends `data` at `offset` (which must be the file's length), and
    /// fsyncs when `last`.
    fn write_chunk(
        mut self,
        offset: u64,
        data: Vec<u8>,
        last: bool,
    ) -> impl FnOnce() -> Result<ImageFile, String> + Send + 'static {
        move || {
            let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
            let len = self.file.metadata().map_err(err)?.len();
            if len != offset {
                return Err(format!("snapshot chunk at {offset}, expected {len}"));
            }
            std::io::Write::write_all(&mut self.file, &data).map_err(err)?;
            if last {
                self.file.sync_all().map_err(err)?;
            }
            Ok(self)
        }
    }
}

fn read_full(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match std::io::Read::read(file, &mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Accepts peer connections on the Raft core executor and hands what
/// arrives to the core.
pub fn listen(
    shared: Arc<Shared>,
    addr: SocketAddr,
    to_core: mpsc::Sender<PeerIn>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    glommio::spawn_local(async move {
        let active = Rc::new(());
        while !shared.stopping() {
            match listener.accept().await {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let shared = shared.clone();
                    let to_core = to_core.clone();
                    let guard = active.clone();
                    glommio::spawn_local(async move {
                        let tls = shared.peer_tls.as_ref().map(|t| t.server.clone());
                        let result = match crate::tls::accept(tls, stream).await {
                            Ok(stream) => inbound(&shared, stream, &to_core).await,
                            Err(e) => Err(format!("TLS handshake: {e}")),
                        };
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "peer connection closed");
                        }
                        drop(guard);
                    })
                    .detach();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    glommio::timer::sleep(REDIAL_BACKOFF).await;
                }
            }
        }
    })
    .detach();
    Ok(())
}

async fn inbound(
    shared: &Shared,
    mut stream: Box<dyn crate::tls::Io>,
    to_core: &mpsc::Sender<PeerIn>,
) -> Result<(), String> {
    let limits = WireLimits {
        max_frame_bytes: PEER_MAX_FRAME_BYTES,
        ..WireLimits::default()
    };
    let mut decoder = FrameDecoder::new(&limits);
    let mut from: Option<NodeId> = None;
    let mut snapshot: Option<ImageFile> = None;
    loop {
        let n = stream
            .read(decoder.buf_mut())
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        if let Some(peer) = from
            && !super::membership::runtime::is_member(shared, peer)
        {
            return Err(format!("peer {peer:x} is no longer a member"));
        }
        decoder.advance(n);
        while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            let archived = frame.access::<PeerMsg>().map_err(|e| e.to_string())?;
            let msg = rkyv::deserialize::<PeerMsg, rkyv::rancor::Error>(archived)
                .map_err(|e| e.to_string())?;
            match (msg, from) {
                (PeerMsg::Hello(h), None) => {
                    if h.cluster_id != shared.cluster_id() {
                        return Err(format!(
                            "peer {:x} belongs to cluster {:x}, not {:x}",
                            h.from,
                            h.cluster_id,
                            shared.cluster_id()
                        ));
                    }
                    use super::membership::runtime::{Verdict, note_hello};
                    match note_hello(shared, &h) {
                        Verdict::Member => reply(&mut stream, &hello(shared)).await?,
                        Verdict::Removed => {
                            reply(&mut stream, &PeerMsg::Removed).await?;
                            return Err(format!("peer {:x} was removed from the cluster", h.from));
                        }
                        Verdict::Unknown => {
                            return Err(format!("peer {:x} is not a member", h.from));
                        }
                    }
                    from = Some(h.from);
                }
                (PeerMsg::Join, None) => {
                    let json = {
                        let cluster = shared.cluster.read().unwrap_or_else(|e| e.into_inner());
                        serde_json::to_vec(&*cluster).map_err(|e| e.to_string())?
                    };
                    reply(&mut stream, &PeerMsg::Cluster { json }).await?;
                    return Ok(());
                }
                (PeerMsg::Hello(_), Some(_)) | (_, None) => {
                    return Err("peer protocol violation".into());
                }
                (PeerMsg::Raft(m), Some(_)) => {
                    to_core
                        .send(PeerIn::Raft(m))
                        .await
                        .map_err(|_| "core stopped")?;
                }
                (PeerMsg::Forward { data }, Some(_)) => {
                    to_core
                        .send(PeerIn::Forward { data })
                        .await
                        .map_err(|_| "core stopped")?;
                }
                (PeerMsg::ForwardMember { data }, Some(_)) => {
                    to_core
                        .send(PeerIn::ForwardMember { data })
                        .await
                        .map_err(|_| "core stopped")?;
                }
                (
                    PeerMsg::MemberRefused {
                        proposal_id,
                        run_nonce,
                        error,
                    },
                    Some(_),
                ) => {
                    to_core
                        .send(PeerIn::MemberRefused {
                            proposal_id,
                            run_nonce,
                            error,
                        })
                        .await
                        .map_err(|_| "core stopped")?;
                }
                (PeerMsg::Removed | PeerMsg::Join | PeerMsg::Cluster { .. }, Some(_)) => {
                    return Err("peer protocol violation".into());
                }
                (PeerMsg::Lease(msg), Some(from)) => {
                    to_core
                        .send(PeerIn::Lease { from, msg })
                        .await
                        .map_err(|_| "core stopped")?;
                }
                (PeerMsg::SnapshotChunk { offset, data, done }, Some(peer)) => {
                    let image = match snapshot.take() {
                        Some(image) => image,
                        None => {
                            let dir = super::start::snap_dir(&shared.cfg.data_dir());
                            let path = dir.join(format!("incoming-{peer:x}.snap"));
                            blocking(ImageFile::create(path)).await?
                        }
                    };
                    let last = done.is_some();
                    let image = blocking(image.write_chunk(offset, data, last)).await?;
                    if let Some(msg) = done {
                        to_core
                            .send(PeerIn::Snapshot {
                                path: image.path,
                                msg,
                            })
                            .await
                            .map_err(|_| "core stopped")?;
                        return Ok(());
                    }
                    snapshot = Some(image);
                }
            }
        }
    }
}
