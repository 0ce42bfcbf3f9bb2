//! Client connections on one serve shard (native protocol).
//!
//! Every shard binds the native address with SO_REUSEPORT, so the kernel
//! spreads connections over shards; a connection lives on one shard. Per
//! connection: a reader decodes frames in place from its receive buffer,
//! validates them and hands them to the shard's request layer (`route.rs`):
//! inline answers are encoded at once; writes, linearizable reads and
//! maintenance become tasks bounded by `--max-requests-per-conn`; watches
//! attach to the shard's hub with the connection's outbox as their sink. One
//! writer task flushes every answer queued meanwhile in one socket write.
//! Answers may leave in any order; the client matches them by request id.
//! When the connection closes, its watches leave the hub.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;

use corekv_wire::messages as w;
use corekv_wire::{
    ApiError, Frame, FrameDecoder, FrameFlags, encode_frame, encode_frame_flags,
    validate_request_frame,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use tokio::sync::Notify;

use super::auth;
use super::route::{Api, Route, WatchOp};
use super::watch::{WatchSession, WatchSink};
use crate::metrics::{METRICS, ReqKind};

pub fn listen(api: Rc<Api>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    accept_loop(listener, api.clone(), "native", move |stream| {
        let api = api.clone();
        async move {
            let result = match api.shared.client_tls.clone() {
                None => connection(api, stream, None).await,
                Some(tls) => match futures_rustls::TlsAcceptor::from(tls).accept(stream).await {
                    Ok(s) => {
                        // Present only when the verifier checked the chain.
                        let cn = s.get_ref().1.peer_certificates().and_then(|c| c.first());
                        let cn = cn.and_then(crate::tls::common_name);
                        connection(api, s, cn).await
                    }
                    Err(e) => Err(format!("TLS handshake: {e}")),
                },
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "client connection closed");
            }
        }
    });
    Ok(bound)
}

/// Accepts connections on `listener` (one front-end of this shard) until
/// the member stops, at most `--max-conns-per-core` open at once, each
/// served by `serve` in a task of its own.
pub fn accept_loop<F, Fut>(listener: TcpListener, api: Rc<Api>, front: &'static str, serve: F)
where
    F: Fn(TcpStream) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::spawn_local(async move {
        let shared = api.shared.clone();
        let active = Rc::new(Cell::new(0usize));
        while !shared.stopping() {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, front, "client accept failed");
                    glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            if active.get() >= shared.cfg.max_conns_per_core {
                tracing::warn!(
                    front,
                    "refusing a client connection: --max-conns-per-core reached"
                );
                drop(stream);
                continue;
            }
            let _ = stream.set_nodelay(true);
            active.set(active.get() + 1);
            let active = active.clone();
            let conn = serve(stream);
            glommio::spawn_local(async move {
                conn.await;
                active.set(active.get() - 1);
            })
            .detach();
        }
    })
    .detach();
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
    api: Rc<Api>,
    outbox: Rc<Outbox>,
    permits: Rc<Semaphore>,
    watches: WatchSession,
    /// Common name of the client's verified certificate (`--client-cert-auth`).
    cn: Option<String>,
}

/// A native watch's sink: frames on the create request's id, MORE on all
/// but the last.
struct NativeSink {
    outbox: Rc<Outbox>,
    request_id: u64,
}

impl WatchSink for NativeSink {
    fn push(&self, resp: w::WatchResponse, last: bool) {
        let flags = if last {
            FrameFlags::NONE
        } else {
            FrameFlags::MORE
        };
        self.outbox
            .push_flags(self.request_id, flags, &w::Response::Watch(resp));
    }

    fn pending_bytes(&self) -> usize {
        self.outbox.pending_bytes()
    }
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

async fn connection<S>(api: Rc<Api>, stream: S, cn: Option<String>) -> Result<(), String>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let shared = api.shared.clone();
    let (mut reader, writer) = futures_lite::io::split(stream);
    let outbox = Rc::new(Outbox::default());
    let writer_task = glommio::spawn_local(write_loop(writer, outbox.clone()));
    let permits = Rc::new(Semaphore::new(shared.cfg.max_requests_per_conn as u64));
    let conn = Rc::new(Conn {
        api: api.clone(),
        outbox: outbox.clone(),
        permits: permits.clone(),
        watches: WatchSession::default(),
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
    // The client is gone: its watches leave the hub now (no more matching,
    // no more memory). Then let in-flight requests finish (bounded by the
    // request timeout), flush and close.
    conn.watches.clear(&api.hub);
    let _ = permits
        .acquire(shared.cfg.max_requests_per_conn as u64)
        .await;
    outbox.closed.set(true);
    outbox.wake.notify_one();
    let _ = writer_task.await;
    result
}

fn kind_of(req: &w::ArchivedRequest) -> ReqKind {
    use w::ArchivedRequest as R;
    match req {
        R::Range(_) => ReqKind::Range,
        R::Put(_) | R::PutAs(_) => ReqKind::Put,
        R::DeleteRange(_) => ReqKind::DeleteRange,
        R::Txn(_) => ReqKind::Txn,
        R::Compact(_) => ReqKind::Compact,
        R::WatchCreate(_) | R::WatchCancel(_) | R::WatchProgress(_) => ReqKind::Watch,
        R::LeaseGrant(_)
        | R::LeaseRevoke(_)
        | R::LeaseRevokeAs(_)
        | R::LeaseKeepAlive(_)
        | R::LeaseTimeToLive(_)
        | R::LeaseLeases(_) => ReqKind::Lease,
        R::MemberList(_)
        | R::MemberAdd(_)
        | R::MemberRemove(_)
        | R::MemberUpdate(_)
        | R::MemberPromote(_) => ReqKind::Cluster,
        R::Status(_)
        | R::HashKv(_)
        | R::Defragment(_)
        | R::Alarm(_)
        | R::MoveLeader(_)
        | R::Snapshot(_)
        | R::Auth(_) => ReqKind::Maintenance,
    }
}

fn answer(outbox: &Outbox, request_id: u64, kind: ReqKind, result: Result<w::Response, ApiError>) {
    METRICS.native_request(kind, result.is_ok());
    let resp = result.unwrap_or_else(w::Response::Error);
    outbox.push(request_id, &resp);
}

async fn handle_frame(conn: &Rc<Conn>, frame: &Frame<'_>) {
    let (api, outbox) = (&conn.api, &conn.outbox);
    let id = frame.request_id();
    let req = match validate_request_frame(frame, &api.shared.limits) {
        Ok(r) => r,
        Err(e) => return answer(outbox, id, ReqKind::Other, Err(e)),
    };
    let kind = kind_of(req);
    if let Err(e) = super::ready::wait(&api.shared).await {
        return answer(outbox, id, kind, Err(e));
    }
    let admitted = match api.gate_as(frame.token(), conn.cn.as_deref(), req).await {
        Ok(admitted) => admitted,
        Err(e) => return answer(outbox, id, kind, auth::calls::refusal(&api.shared, req, e)),
    };
    // Inline answers and watch control are handled here, from the receive
    // buffer, without a task; everything that waits gets a task and a permit.
    let task = match api.route(req) {
        Route::Done(result) => return answer(outbox, id, kind, result),
        Route::Watch(WatchOp::Create(c)) => {
            let sink = Rc::new(NativeSink {
                outbox: outbox.clone(),
                request_id: id,
            });
            let created = api.watch_create(&conn.watches, c, sink);
            METRICS.native_request(kind, created.is_some());
            return;
        }
        Route::Watch(WatchOp::Cancel(watch_id)) => {
            let resp = api.watch_cancel(&conn.watches, watch_id);
            return answer(outbox, id, kind, Ok(w::Response::Watch(resp)));
        }
        Route::Watch(WatchOp::Progress) => Task::Progress,
        Route::Later(later) => Task::Later(later),
        Route::Propose => match admitted.proposal(frame.to_owned_frame()) {
            Ok(f) => Task::Propose(f),
            Err(e) => return answer(outbox, id, kind, Err(e)),
        },
        Route::Auth => Task::Auth(frame.to_owned_frame().with_tag(admitted.stamp)),
        Route::Member => Task::Member(frame.to_owned_frame().with_tag(admitted.stamp)),
        Route::Snapshot => {
            return super::snapshot_stream::serve(api.shared.clone(), outbox.clone(), id);
        }
    };
    let Ok(permit) = conn.permits.clone().acquire_static_permit(1).await else {
        return answer(outbox, id, kind, Err(ApiError::Stopped));
    };
    let conn = conn.clone();
    glommio::spawn_local(async move {
        let api = &conn.api;
        let result = match task {
            Task::Progress => api
                .watch_progress(&conn.watches)
                .await
                .map(w::Response::Watch),
            Task::Later(later) => api.finish_as(later, &admitted).await,
            Task::Propose(frame) => api.propose(frame).await,
            Task::Auth(frame) => api.auth_call(frame).await,
            Task::Member(frame) => api.member_change(frame).await,
        };
        answer(&conn.outbox, id, kind, result);
        drop(permit);
    })
    .detach();
}

/// A request that waits, run in a task of its own.
enum Task {
    Progress,
    Later(super::route::Later),
    Propose(corekv_wire::OwnedFrame),
    Auth(corekv_wire::OwnedFrame),
    Member(corekv_wire::OwnedFrame),
}
