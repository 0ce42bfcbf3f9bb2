//! Client connections on one serve shard (native protocol).
//!
//! Every shard binds the native address with SO_REUSEPORT, so the kernel
//! spreads connections over shards; a connection lives on one shard. Per
//! connection: a reader decodes frames in place from its receive buffer and
//! answers reads at once from a store snapshot; writes (and linearizable
//! reads, which need a read-index round) become tasks bounded by
//! `--max-requests-per-conn`; one writer task flushes every answer queued
//! meanwhile in one socket write. Answers may leave in any order; the client
//! matches them by request id.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use corekv_wire::messages as w;
use corekv_wire::{
    ApiError, Frame, FrameDecoder, FrameFlags, encode_frame, encode_frame_flags,
    validate_request_frame,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::sync::Semaphore;
use tokio::sync::{Notify, oneshot};

use super::auth;
use super::core::is_replicated;
use super::watch::{ConnWatches, Hub};
use super::{CoreMsg, Shared};
use crate::http::ETCD_COMPAT_VERSION;
use crate::kv;
use crate::metrics::{METRICS, ReqKind};

pub fn listen(shared: Arc<Shared>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let hub = Hub::start(shared.clone());
    glommio::spawn_local(async move {
        let active = Rc::new(Cell::new(0usize));
        while !shared.stopping() {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "client accept failed");
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if active.get() >= shared.cfg.max_conns_per_core {
                tracing::warn!("refusing a client connection: --max-conns-per-core reached");
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            active.set(active.get() + 1);
            let shared = shared.clone();
            let active = active.clone();
            let hub = hub.clone();
            glommio::spawn_local(async move {
                let result = match shared.client_tls.clone() {
                    None => connection(shared, hub, stream, None).await,
                    Some(tls) => {
                        match futures_rustls::TlsAcceptor::from(tls).accept(stream).await {
                            Ok(s) => {
                                // Set only when the verifier checked the chain.
                                let cn = s.get_ref().1.peer_certificates().and_then(|c| c.first());
                                let cn = cn.and_then(crate::tls::common_name);
                                connection(shared, hub, s, cn).await
                            }
                            Err(e) => Err(format!("TLS handshake: {e}")),
                        }
                    }
                };
                if let Err(e) = result {
                    tracing::debug!(error = %e, "client connection closed");
                }
                active.set(active.get() - 1);
            })
            .detach();
        }
    })
    .detach();
    Ok(bound)
}

/// Encoded answers waiting for the connection's writer.
#[derive(Default)]
pub struct Outbox {
    buf: RefCell<Vec<u8>>,
    wake: Notify,
    closed: Cell<bool>,
}

impl Outbox {
    pub fn push(&self, request_id: u64, resp: &w::Response) {
        self.push_flags(request_id, FrameFlags::NONE, resp);
    }

    /// Queues one frame; `MORE` marks a frame of a stream (watch) that
    /// more frames follow.
    pub fn push_flags(&self, request_id: u64, flags: FrameFlags, resp: &w::Response) {
        if self.closed.get() {
            return;
        }
        let mut buf = self.buf.borrow_mut();
        let was_empty = buf.is_empty();
        if let Err(e) = encode_frame_flags(request_id, flags, resp, &mut buf) {
            tracing::error!(error = %e, "cannot encode a response");
            let fallback = w::Response::Error(ApiError::Internal(e.to_string()));
            let _ = encode_frame(request_id, &fallback, &mut buf);
        }
        if was_empty {
            self.wake.notify_one();
        }
    }

    /// Bytes queued and not yet handed to the socket.
    pub fn pending_bytes(&self) -> usize {
        self.buf.borrow().len()
    }
}

/// What a connection's request handlers share.
struct Conn {
    shared: Arc<Shared>,
    outbox: Rc<Outbox>,
    permits: Rc<Semaphore>,
    hub: Rc<Hub>,
    watches: ConnWatches,
    /// Common name of the client's verified certificate (`--client-cert-auth`).
    cn: Option<String>,
}

async fn write_loop<W: futures_lite::AsyncWrite + Unpin>(
    mut writer: W,
    outbox: Rc<Outbox>,
) -> std::io::Result<()> {
    let mut spare = Vec::new();
    loop {
        outbox.wake.notified().await;
        loop {
            std::mem::swap(&mut *outbox.buf.borrow_mut(), &mut spare);
            if spare.is_empty() {
                break;
            }
            writer.write_all(&spare).await?;
            spare.clear();
        }
        if outbox.closed.get() {
            return writer.flush().await;
        }
    }
}

async fn connection<S>(
    shared: Arc<Shared>,
    hub: Rc<Hub>,
    stream: S,
    cn: Option<String>,
) -> Result<(), String>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let (mut reader, writer) = futures_lite::io::split(stream);
    let outbox = Rc::new(Outbox::default());
    let writer_task = glommio::spawn_local(write_loop(writer, outbox.clone()));
    let permits = Rc::new(Semaphore::new(shared.cfg.max_requests_per_conn as u64));
    let conn = Rc::new(Conn {
        shared: shared.clone(),
        outbox: outbox.clone(),
        permits: permits.clone(),
        hub,
        watches: ConnWatches::default(),
        cn,
    });
    let mut decoder = FrameDecoder::new(&shared.limits);
    let result = loop {
        let n = match reader.read(decoder.buf_mut()).await {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) => break Err(e.to_string()),
        };
        decoder.advance(n);
        let mut failed = None;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => handle_frame(&conn, &frame).await,
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot be resynchronised: answer and close.
                    outbox.push(
                        0,
                        &w::Response::Error(ApiError::MalformedRequest(e.to_string())),
                    );
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(e) = failed {
            break Err(e);
        }
    };
    // Let in-flight requests finish (bounded by the request timeout), then
    // flush and close.
    let _ = permits
        .acquire(shared.cfg.max_requests_per_conn as u64)
        .await;
    outbox.closed.set(true);
    outbox.wake.notify_one();
    let _ = writer_task.await;
    result
}

fn kind_of(req: &w::ArchivedRequest) -> ReqKind {
    match req {
        w::ArchivedRequest::Range(_) => ReqKind::Range,
        w::ArchivedRequest::Put(_) => ReqKind::Put,
        w::ArchivedRequest::DeleteRange(_) => ReqKind::DeleteRange,
        w::ArchivedRequest::Txn(_) => ReqKind::Txn,
        w::ArchivedRequest::Compact(_) => ReqKind::Compact,
        w::ArchivedRequest::WatchCreate(_)
        | w::ArchivedRequest::WatchCancel(_)
        | w::ArchivedRequest::WatchProgress(_) => ReqKind::Watch,
        w::ArchivedRequest::LeaseGrant(_)
        | w::ArchivedRequest::LeaseRevoke(_)
        | w::ArchivedRequest::LeaseKeepAlive(_)
        | w::ArchivedRequest::LeaseTimeToLive(_)
        | w::ArchivedRequest::LeaseLeases(_) => ReqKind::Lease,
        w::ArchivedRequest::MemberList(_)
        | w::ArchivedRequest::MemberAdd(_)
        | w::ArchivedRequest::MemberRemove(_)
        | w::ArchivedRequest::MemberUpdate(_)
        | w::ArchivedRequest::MemberPromote(_) => ReqKind::Cluster,
        _ => ReqKind::Maintenance,
    }
}

fn answer(outbox: &Outbox, request_id: u64, kind: ReqKind, result: Result<w::Response, ApiError>) {
    METRICS.native_request(kind, result.is_ok());
    let resp = result.unwrap_or_else(w::Response::Error);
    outbox.push(request_id, &resp);
}

async fn handle_frame(conn: &Rc<Conn>, frame: &Frame<'_>) {
    let (shared, outbox, permits) = (&conn.shared, &conn.outbox, &conn.permits);
    let id = frame.request_id();
    let req = match validate_request_frame(frame, &shared.limits) {
        Ok(r) => r,
        Err(e) => return answer(outbox, id, ReqKind::Other, Err(e)),
    };
    let kind = kind_of(req);
    let stamp = match auth::calls::gate(&shared.auth, frame.token(), conn.cn.as_deref(), req) {
        Ok(stamp) => stamp,
        Err(e) => return answer(outbox, id, kind, auth::calls::refusal(shared, req, e)),
    };
    // Reads that need no round trip are answered inline, from the receive
    // buffer, without a task.
    match req {
        w::ArchivedRequest::Range(r) if r.serializable => {
            return answer(outbox, id, kind, range(shared, r));
        }
        w::ArchivedRequest::Status(_) => return answer(outbox, id, kind, Ok(status(shared))),
        w::ArchivedRequest::MemberList(_) => {
            return answer(outbox, id, kind, Ok(member_list(shared)));
        }
        w::ArchivedRequest::HashKv(h) => {
            return answer(outbox, id, kind, hash_kv(shared, h.revision.to_native()));
        }
        w::ArchivedRequest::Alarm(a) => return answer(outbox, id, kind, alarm(shared, a)),
        w::ArchivedRequest::WatchCreate(c) => {
            if let Err(e) = watch_create(conn, id, c) {
                answer(outbox, id, kind, Err(e));
            } else {
                METRICS.native_request(kind, true);
            }
            return;
        }
        w::ArchivedRequest::WatchCancel(c) => {
            let watch_id = c.watch_id.to_native();
            conn.watches.cancel(&conn.hub, shared, watch_id);
            let resp = w::WatchResponse {
                header: shared.header(shared.store().current_revision()),
                watch_id,
                canceled: true,
                ..Default::default()
            };
            return answer(outbox, id, kind, Ok(w::Response::Watch(resp)));
        }
        _ => {}
    }
    let Ok(permit) = permits.clone().acquire_static_permit(1).await else {
        return answer(outbox, id, kind, Err(ApiError::Stopped));
    };
    let owned = frame.to_owned_frame();
    let conn = conn.clone();
    let replicated = is_replicated(req);
    glommio::spawn_local(async move {
        let result = match owned.access::<w::Request>() {
            Err(e) => Err(ApiError::MalformedRequest(e.to_string())),
            Ok(w::ArchivedRequest::Auth(_)) => {
                let (shared, frame) = (&conn.shared, owned.with_tag(stamp));
                let propose = async |f| propose(shared, f).await;
                auth::calls::call(shared, frame, propose, async || read_barrier(shared).await).await
            }
            Ok(_) if replicated => propose(&conn.shared, owned.with_tag(stamp)).await,
            Ok(w::ArchivedRequest::WatchProgress(_)) => watch_progress(&conn).await,
            Ok(req) => slow_path(&conn.shared, req).await,
        };
        answer(&conn.outbox, id, kind, result);
        drop(permit);
    })
    .detach();
}

async fn propose(shared: &Shared, frame: corekv_wire::OwnedFrame) -> Result<w::Response, ApiError> {
    let (reply, rx) = oneshot::channel();
    shared
        .to_core
        .send(CoreMsg::Propose { frame, reply })
        .await
        .map_err(|_| ApiError::Stopped)?;
    rx.await.map_err(|_| ApiError::Stopped)?
}

/// Waits until this member's store reflects every write committed before the
/// call (ReadIndex, batched in the core with every other waiting read).
pub async fn read_barrier(shared: &Shared) -> Result<(), ApiError> {
    let (reply, rx) = oneshot::channel();
    shared
        .to_core
        .send(CoreMsg::ReadIndex { reply })
        .await
        .map_err(|_| ApiError::Stopped)?;
    rx.await.map_err(|_| ApiError::Stopped)?
}

async fn slow_path(shared: &Shared, req: &w::ArchivedRequest) -> Result<w::Response, ApiError> {
    match req {
        w::ArchivedRequest::Range(r) => {
            read_barrier(shared).await?;
            range(shared, r)
        }
        w::ArchivedRequest::MoveLeader(m) => {
            let (reply, rx) = oneshot::channel();
            let target = m.target_id.to_native();
            shared
                .to_core
                .send(CoreMsg::MoveLeader { target, reply })
                .await
                .map_err(|_| ApiError::Stopped)?;
            rx.await.map_err(|_| ApiError::Stopped)??;
            Ok(w::Response::MoveLeader(w::MoveLeaderResponse {
                header: shared.header(shared.store().current_revision()),
            }))
        }
        w::ArchivedRequest::Defragment(_) => {
            let store = shared.store();
            let result = glommio::executor()
                .spawn_blocking(move || store.defragment())
                .await;
            result.map_err(kv::storage_error)?;
            Ok(w::Response::Defragment(w::DefragmentResponse {
                header: shared.header(shared.store().current_revision()),
            }))
        }
        // Not built yet: watch, leases, membership changes, snapshot
        // streaming (see README "Status"). Refused plainly, never faked.
        _ => Err(ApiError::NotCapable),
    }
}

fn range(shared: &Shared, r: &w::ArchivedRangeRequest) -> Result<w::Response, ApiError> {
    let view = shared.store().read().map_err(kv::storage_error)?;
    let resp = view
        .range(&kv::range_request(r))
        .map_err(kv::storage_error)?;
    let header = shared.header(view.revision());
    Ok(w::Response::Range(kv::range_response(header, resp)))
}

fn status(shared: &Shared) -> w::Response {
    let store = shared.store();
    let mut errors = Vec::new();
    if let Some(reason) = shared.fatal_reason() {
        errors.push(reason);
    }
    w::Response::Status(w::StatusResponse {
        header: shared.header(store.current_revision()),
        version: ETCD_COMPAT_VERSION.to_string(),
        db_size: i64::try_from(store.db_size_bytes()).unwrap_or(i64::MAX),
        leader: shared.leader.load(Ordering::Relaxed),
        raft_index: shared.commit_index.load(Ordering::Relaxed),
        raft_term: shared.term.load(Ordering::Relaxed),
        raft_applied_index: shared.applied_index.load(Ordering::Relaxed),
        errors,
        db_size_in_use: i64::try_from(store.db_size_in_use_bytes()).unwrap_or(i64::MAX),
        is_learner: shared.is_learner.load(Ordering::Relaxed),
    })
}

fn member_list(shared: &Shared) -> w::Response {
    let cluster = shared
        .cluster
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let members = cluster
        .members
        .values()
        .map(|m| w::Member {
            id: m.id,
            name: m.name.clone(),
            peer_urls: m.peer_urls.clone(),
            client_urls: if m.id == shared.member_id {
                shared.cfg.advertise_client_urls.clone()
            } else {
                m.client_urls.clone()
            },
            is_learner: m.is_learner,
        })
        .collect();
    let header = shared.header(shared.store().current_revision());
    w::Response::MemberList(w::MemberListResponse { header, members })
}

fn hash_kv(shared: &Shared, revision: i64) -> Result<w::Response, ApiError> {
    let view = shared.store().read().map_err(kv::storage_error)?;
    let (hash, compact_revision) = view.hash_kv(revision).map_err(kv::storage_error)?;
    let hash_revision = if revision == 0 {
        view.revision()
    } else {
        revision
    };
    Ok(w::Response::HashKv(w::HashKvResponse {
        header: shared.header(view.revision()),
        hash,
        compact_revision,
        hash_revision,
    }))
}

/// corekv raises no alarms yet (NOSPACE is answered per request): listing
/// alarms is truthful (none); activating one by hand is refused.
fn alarm(shared: &Shared, a: &w::ArchivedAlarmRequest) -> Result<w::Response, ApiError> {
    match a.action {
        w::ArchivedAlarmAction::Get | w::ArchivedAlarmAction::Deactivate => {
            Ok(w::Response::Alarm(w::AlarmResponse {
                header: shared.header(shared.store().current_revision()),
                alarms: Vec::new(),
            }))
        }
        w::ArchivedAlarmAction::Activate => Err(ApiError::NotCapable),
    }
}

fn watch_create(
    conn: &Conn,
    request_id: u64,
    req: &w::ArchivedWatchCreateRequest,
) -> Result<(), ApiError> {
    let watch_id = conn.watches.assign(req.watch_id.to_native())?;
    let (key, watcher) = conn.hub.add(req, watch_id, request_id, conn.outbox.clone());
    conn.watches.insert(watch_id, key, watcher);
    Ok(())
}

/// etcd's RequestProgress: once every watch of this connection is synced,
/// a notification (watch id -1) at the revision all of them have reached.
async fn watch_progress(conn: &Conn) -> Result<w::Response, ApiError> {
    let deadline = std::time::Instant::now() + conn.shared.cfg.request_timeout();
    while !conn.watches.all_synced() {
        if std::time::Instant::now() > deadline {
            return Err(ApiError::Timeout);
        }
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(w::Response::Watch(w::WatchResponse {
        header: conn.shared.header(conn.hub.progress_revision()),
        watch_id: -1,
        ..Default::default()
    }))
}
