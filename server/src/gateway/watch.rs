//! etcdserverpb.Watch: one gRPC bidi stream is one `WatchSession` on the
//! shard's watch hub, exactly like a native connection's: the same watch-id
//! allocator and create rules, the same slow-consumer policy. No connection
//! or task per watch.
//!
//! Data flow: the hub pushes each watcher's responses into the stream's
//! `StreamSink`, which encodes each one to protobuf once, right there
//! (`watch_codec`), and queues the bytes (a local queue); a forwarder task moves them into the
//! bounded channel that feeds the HTTP/2 response body (tonic needs a `Send`
//! stream). A response's bytes count as pending from the push until the
//! body takes it out of the channel (`WatchOut`). A slow reader fills the
//! channel, then the queue; past `--watch-max-pending-bytes` pending the hub
//! moves the stream's watchers to catch-up from the store, which resumes
//! once less than half of it is pending: nothing is dropped, and memory
//! stays bounded.
//!
//! When the client goes away (the response body is dropped), the session's
//! watches leave the hub. A request that cannot be read (over the receive
//! limit, or not decodable) ends the stream with its status after the
//! responses already queued, as etcd's watch server does (grpc-go's
//! ResourceExhausted for an oversized message).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::{ApiError, OwnedFrame, validate_owned_frame};
use futures::{Stream, StreamExt};
use hyper::body::Incoming;
use tokio::sync::{Notify, mpsc, oneshot};
use tonic::body::Body;
use tonic::{Status, Streaming};

use super::watch_codec::{WatchCodec, encode_response};
use super::{GatewayOptions, convert, status};
use crate::node::route::{Api, Route, WatchOp};
use crate::node::watch::{WatchSession, WatchSink};

/// An encoded response (or the status that ends the stream) and its length.
/// The status is boxed: the channel preallocates its slots in blocks, and
/// a small slot keeps an idle stream's block small.
type Item = (usize, Result<Bytes, Box<Status>>);

/// The session's end of the response channel.
pub struct Out {
    tx: mpsc::Sender<Item>,
    pending: Arc<AtomicUsize>,
}

/// The client's end: the response stream; taking a response out of it ends
/// its bytes' pending time.
pub struct WatchOut {
    rx: mpsc::Receiver<Item>,
    pending: Arc<AtomicUsize>,
}

impl Stream for WatchOut {
    type Item = Result<Bytes, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|next| {
            next.map(|(len, resp)| {
                self.pending.fetch_sub(len, Ordering::Relaxed);
                resp.map_err(|s| *s)
            })
        })
    }
}

/// A response channel of `capacity` responses.
pub fn out_channel(capacity: usize) -> (Out, WatchOut) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let pending = Arc::new(AtomicUsize::new(0));
    (
        Out {
            tx,
            pending: pending.clone(),
        },
        WatchOut { rx, pending },
    )
}

pub async fn serve(
    api: Rc<Api>,
    opts: &GatewayOptions,
    limit: usize,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    // etcd's `hasleader` metadata: refuse the stream while no leader is known.
    let require_leader =
        req.headers().get("hasleader").and_then(|v| v.to_str().ok()) == Some("true");
    if require_leader && api.shared.leader().is_none() {
        return status(ApiError::NoLeader).into_http();
    }
    let (input_tx, mut input_rx) = oneshot::channel();
    let (out_tx, out_rx) = out_channel(opts.grpc_stream_buffer_responses);
    let handoff = Handoff {
        input: Some(input_tx),
        output: Some(out_rx),
    };
    let mut grpc = tonic::server::Grpc::new(WatchCodec).max_decoding_message_size(limit);
    let resp = grpc.streaming(handoff, req).await;
    // `Handoff::call` ran inside `streaming`; without an input (the request
    // was refused before the call) there is no session.
    if let Ok(input) = input_rx.try_recv() {
        spawn_session(api, input, out_tx);
    }
    resp
}

/// tonic's streaming service must be `Send`: it only hands the decoded
/// request stream over to the session and returns the response channel.
struct Handoff {
    input: Option<oneshot::Sender<Streaming<pb::WatchRequest>>>,
    output: Option<WatchOut>,
}

impl tonic::server::StreamingService<pb::WatchRequest> for Handoff {
    type Response = Bytes;
    type ResponseStream = WatchOut;
    type Future = std::future::Ready<Result<tonic::Response<WatchOut>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<pb::WatchRequest>>) -> Self::Future {
        let result = match (self.input.take(), self.output.take()) {
            (Some(input), Some(output)) => {
                // The receiver lives in `serve` until this returns.
                let _ = input.send(request.into_inner());
                Ok(tonic::Response::new(output))
            }
            _ => Err(Status::internal("corekv: watch stream handed off twice")),
        };
        std::future::ready(result)
    }
}

/// The stream's response queue (see the module doc).
struct StreamSink {
    queue: RefCell<VecDeque<Bytes>>,
    /// Bytes pushed and not yet taken by the response body.
    pending: Arc<AtomicUsize>,
    wake: Notify,
    gone: Cell<bool>,
    /// Set when the request stream failed: sent after the queue, then the
    /// stream ends.
    failed: RefCell<Option<Status>>,
}

impl WatchSink for StreamSink {
    fn push(&self, resp: w::WatchResponse, _last: bool) {
        if self.gone.get() {
            return;
        }
        let bytes = encode_response(&resp);
        self.pending.fetch_add(bytes.len(), Ordering::Relaxed);
        self.queue.borrow_mut().push_back(bytes);
        self.wake.notify_one();
    }

    fn pending_bytes(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// Runs one watch stream: requests from `input` (gRPC, or the HTTP/JSON
/// gateway's decoded body), responses into `out`, until `out`'s receiver
/// is dropped (the client is gone).
pub fn spawn_session<S>(api: Rc<Api>, input: S, out: Out)
where
    S: Stream<Item = Result<pb::WatchRequest, Status>> + Unpin + 'static,
{
    glommio::spawn_local(session(api, input, out)).detach();
}

async fn session<S>(api: Rc<Api>, input: S, out: Out)
where
    S: Stream<Item = Result<pb::WatchRequest, Status>> + Unpin + 'static,
{
    let sink = Rc::new(StreamSink {
        queue: RefCell::new(VecDeque::new()),
        pending: out.pending.clone(),
        wake: Notify::new(),
        gone: Cell::new(false),
        failed: RefCell::new(None),
    });
    let watches = Rc::new(WatchSession::default());
    let reader = glommio::spawn_local(read_requests(
        api.clone(),
        input,
        watches.clone(),
        sink.clone(),
    ));
    forward(&sink, &out).await;
    // The client is gone: drop its watches from the hub, stop reading.
    sink.gone.set(true);
    sink.queue.borrow_mut().clear();
    watches.clear(&api.hub);
    drop(reader);
}

/// Moves queued responses into the response channel until the client goes.
async fn forward(sink: &StreamSink, out: &Out) {
    loop {
        let next = sink.queue.borrow_mut().pop_front();
        match next {
            Some(bytes) => {
                if out.tx.send((bytes.len(), Ok(bytes))).await.is_err() {
                    return;
                }
            }
            None if sink.failed.borrow().is_some() => {
                let failed = sink.failed.borrow_mut().take();
                if let Some(s) = failed {
                    let _ = out.tx.send((0, Err(Box::new(s)))).await;
                }
                return;
            }
            None => {
                let woken = async {
                    sink.wake.notified().await;
                    false
                };
                let closed = async {
                    out.tx.closed().await;
                    true
                };
                if futures_lite::future::or(woken, closed).await {
                    return;
                }
            }
        }
    }
}

/// Reads the client's requests. A half-closed request stream ends this
/// task but not the watches (etcd keeps delivering).
async fn read_requests<S>(
    api: Rc<Api>,
    mut input: S,
    watches: Rc<WatchSession>,
    sink: Rc<StreamSink>,
) where
    S: Stream<Item = Result<pb::WatchRequest, Status>> + Unpin,
{
    let progress_waiters = Rc::new(Cell::new(0usize));
    while let Some(next) = input.next().await {
        let req = match next {
            Ok(req) => req,
            Err(s) => {
                *sink.failed.borrow_mut() = Some(super::grpc::grpc_go_status(s));
                sink.wake.notify_one();
                return;
            }
        };
        use pb::watch_request::RequestUnion as U;
        let native = match req.request_union {
            Some(U::CreateRequest(c)) => w::Request::WatchCreate(convert::watch_create(c)),
            Some(U::CancelRequest(c)) => w::Request::WatchCancel(w::WatchCancelRequest {
                watch_id: c.watch_id,
            }),
            Some(U::ProgressRequest(_)) => w::Request::WatchProgress(w::WatchProgressRequest {}),
            // etcd ignores an empty request.
            None => continue,
        };
        let refused = |reason: &str| {
            sink.push(refusal(&api, reason), false);
        };
        let frame = match OwnedFrame::encode_request(0, &native) {
            Ok(f) => f,
            Err(e) => {
                refused(&e.to_string());
                continue;
            }
        };
        let req = match validate_owned_frame(&frame, &api.shared.limits) {
            Ok(r) => r,
            Err(e) => {
                refused(e.message());
                continue;
            }
        };
        if let Err(e) = crate::node::ready::wait(&api.shared).await {
            refused(e.message());
            continue;
        }
        if let Err(e) = api.gate(req).await {
            refused(e.message());
            continue;
        }
        match api.route(req) {
            Route::Watch(WatchOp::Create(c)) => {
                api.watch_create(&watches, c, sink.clone());
            }
            // etcd answers a cancel only through the watch's own final
            // response (none for an unknown id).
            Route::Watch(WatchOp::Cancel(id)) => {
                api.watch_cancel(&watches, id);
            }
            Route::Watch(WatchOp::Progress) => {
                progress_waiters.set(progress_waiters.get() + 1);
                if progress_waiters.get() == 1 {
                    let (api, watches, sink) = (api.clone(), watches.clone(), sink.clone());
                    let waiters = progress_waiters.clone();
                    glommio::spawn_local(async move {
                        let result = api.watch_progress(&watches).await;
                        // Like etcd, nothing while watches are still
                        // catching up.
                        if let Ok(resp) = result {
                            for _ in 0..waiters.get() {
                                sink.push(resp.clone(), false);
                            }
                        }
                        waiters.set(0);
                    })
                    .detach();
                }
            }
            Route::Done(_)
            | Route::Later(_)
            | Route::Propose
            | Route::Snapshot
            | Route::Auth
            | Route::Member => {
                refused("corekv: not a watch request");
            }
        }
    }
}

/// etcd's answer to a create it refuses: created + canceled, watch id -1.
fn refusal(api: &Api, reason: &str) -> w::WatchResponse {
    let shared = &api.shared;
    w::WatchResponse {
        header: shared.header(shared.store().current_revision()),
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason.to_string(),
        ..Default::default()
    }
}
