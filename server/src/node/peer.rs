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
}

/// From the Raft core to one peer.
pub enum PeerOut {
    Raft(Message),
    Forward { data: Vec<u8> },
    Lease(super::lease::LeaseMsg),
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

async fn dial(shared: &Shared, addr: SocketAddr) -> std::io::Result<Box<dyn crate::tls::Io>> {
    let tcp = TcpStream::connect_timeout(addr, DIAL_TIMEOUT).await?;
    tcp.set_nodelay(true)?;
    let mut stream =
        crate::tls::connect(shared.peer_tls.as_ref().map(|t| &t.client), addr, tcp).await?;
    let mut buf = Vec::new();
    encode_frame(0, &hello(shared), &mut buf).map_err(std::io::Error::other)?;
    stream.write_all(&buf).await?;
    Ok(stream)
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
            Err(e) => {
                tracing::debug!(peer = format_args!("{id:x}"), %addr, error = %e, "peer dial failed");
                // Drop what queued up meanwhile: Raft resends what matters.
                while rx.try_recv().is_ok() {}
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
                    let mut cluster = shared.cluster.write().unwrap_or_else(|e| e.into_inner());
                    match cluster.members.get_mut(&h.from) {
                        Some(m) => {
                            m.client_urls = h.client_urls.clone();
                            m.native_addr = Some(h.native_addr.clone());
                        }
                        None => return Err(format!("peer {:x} is not a member", h.from)),
                    }
                    from = Some(h.from);
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
