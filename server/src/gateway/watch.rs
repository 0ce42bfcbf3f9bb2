//! etcdserverpb.Watch: one gRPC bidi stream carries many watches.
//!
//! Each gRPC stream gets a session task and a native connection of its own
//! (a slow gRPC reader then back-pressures only its own native connection,
//! never the pool that serves KV calls). Watch ids are the gRPC stream's,
//! assigned like etcd's `watchStream`: a requested non-zero id is used if
//! free (else refused "mvcc: duplicate watch ID provided on the
//! WatchStream"), otherwise the lowest free id counting up from 0; the
//! native connection's own ids never leak out.
//!
//! Ordering: creates, cancels and progress requests wait on the native
//! server in a FIFO (`control`), so their answers go out in request order
//! while events keep flowing. A progress answer is sent only after every
//! event frame that reached the native connection before it has been
//! forwarded: the native client routes frames in arrival order, so when the
//! progress answer is delivered, all earlier event frames are already in
//! their watch's buffer, and `drain_ready` forwards them first.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::{ApiError, Client, WatchFrame, WatchStream, WireError};
use futures::stream::{FuturesOrdered, Stream, StreamExt};
use futures::{FutureExt, future::BoxFuture};
use tokio::sync::mpsc;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::GatewayOptions;
use super::convert;
use super::pool::{NativePool, api_status, status};

/// etcd's texts for refused creates (mvcc errors, not etcdserver ones).
const ERR_DUPLICATE_ID: &str = "mvcc: duplicate watch ID provided on the WatchStream";
const ERR_EMPTY_RANGE: &str = "mvcc: watcher range is empty";

pub struct WatchService {
    pool: Arc<NativePool>,
    opts: GatewayOptions,
}

impl WatchService {
    pub fn new(pool: Arc<NativePool>, opts: GatewayOptions) -> Self {
        WatchService { pool, opts }
    }
}

type Tx = mpsc::Sender<Result<pb::WatchResponse, Status>>;
type NativeEvents = Pin<Box<dyn Stream<Item = Result<WatchFrame, WireError>> + Send>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let require_leader = request
            .metadata()
            .get("hasleader")
            .and_then(|v| v.to_str().ok())
            == Some("true");
        let client = self.pool.dedicated().await?;
        let addr = self.pool.addr().to_owned();
        if require_leader {
            let s = client
                .status(w::StatusRequest {})
                .await
                .map_err(|e| status(&addr, e))?;
            if s.leader == 0 {
                return Err(api_status(&ApiError::NoLeader));
            }
        }
        let (tx, rx) = mpsc::channel(self.opts.grpc_stream_buffer_responses.max(1));
        let session = Session {
            client,
            addr,
            tx,
            watches: StreamMap::new(),
            control: FuturesOrdered::new(),
            reserved: HashSet::new(),
            cancel_on_create: HashSet::new(),
            next_id: 0,
            progress_in_flight: false,
            progress_waiters: 0,
            max_watches: self.opts.max_watches_per_stream,
            max_control: self.opts.max_pending_watch_control.max(1),
        };
        tokio::spawn(session.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The outcome of a create: the responses to send (created, and maybe a
/// first event or the final cancel), and the stream if the watch lives on.
struct Created {
    responses: Vec<pb::WatchResponse>,
    stream: Option<WatchStream>,
}

enum Control {
    Created {
        id: i64,
        outcome: Result<Created, WireError>,
    },
    Canceled {
        id: i64,
        header: Result<w::ResponseHeader, WireError>,
    },
    Progress(Result<w::WatchResponse, WireError>),
}

/// Why a session ends early.
enum End {
    /// The gRPC client is gone.
    ClientGone,
    /// Ends the stream with this status.
    Fail(Status),
}

struct Session {
    client: Client,
    addr: String,
    tx: Tx,
    watches: StreamMap<i64, NativeEvents>,
    control: FuturesOrdered<BoxFuture<'static, Control>>,
    /// Ids of creates still waiting on the native server.
    reserved: HashSet<i64>,
    /// Pending creates cancelled before they completed.
    cancel_on_create: HashSet<i64>,
    next_id: i64,
    progress_in_flight: bool,
    /// Progress requests the in-flight one answers.
    progress_waiters: usize,
    max_watches: usize,
    max_control: usize,
}

impl Session {
    async fn run(mut self, mut input: Streaming<pb::WatchRequest>) {
        let mut input_open = true;
        loop {
            let step = tokio::select! {
                _ = self.tx.closed() => Err(End::ClientGone),
                Some(c) = self.control.next(), if !self.control.is_empty() => {
                    self.on_control(c).await
                }
                Some((id, item)) = self.watches.next(), if !self.watches.is_empty() => {
                    self.on_event(id, item).await
                }
                // `next()` (poll_next) is cancel-safe: a lost race leaves the
                // partly read message in the stream's buffer.
                msg = input.next(), if input_open && self.control.len() < self.max_control => {
                    match msg {
                        Some(Ok(req)) => self.on_request(req),
                        // A half-closed stream keeps delivering events, as etcd's does.
                        None => {
                            input_open = false;
                            Ok(())
                        }
                        Some(Err(_)) => Err(End::ClientGone),
                    }
                }
            };
            match step {
                Ok(()) => {}
                Err(End::ClientGone) => return,
                Err(End::Fail(s)) => {
                    let _ = self.tx.send(Err(s)).await;
                    return;
                }
            }
        }
    }

    fn fail(&self, e: WireError) -> End {
        End::Fail(status(&self.addr, e))
    }

    fn in_use(&self, id: i64) -> bool {
        self.watches.contains_key(&id) || self.reserved.contains(&id)
    }

    fn on_request(&mut self, req: pb::WatchRequest) -> Result<(), End> {
        use pb::watch_request::RequestUnion as U;
        match req.request_union {
            Some(U::CreateRequest(c)) => self.on_create(c),
            Some(U::CancelRequest(c)) => self.on_cancel(c.watch_id),
            Some(U::ProgressRequest(_)) => self.on_progress(),
            // etcd ignores an empty request.
            None => {}
        }
        Ok(())
    }

    fn on_create(&mut self, c: pb::WatchCreateRequest) {
        let refuse = if c.watch_id != 0 && self.in_use(c.watch_id) {
            Some(ERR_DUPLICATE_ID.to_owned())
        } else if range_is_empty(&c.key, &c.range_end) {
            Some(ERR_EMPTY_RANGE.to_owned())
        } else if self.watches.len() + self.reserved.len() >= self.max_watches {
            Some(format!(
                "corekv gateway: too many watches on this stream (limit {})",
                self.max_watches
            ))
        } else {
            None
        };
        let client = self.client.clone();
        if let Some(reason) = refuse {
            self.control
                .push_back(Box::pin(refused(client, reason)) as BoxFuture<'static, Control>);
            return;
        }
        let id = if c.watch_id != 0 {
            c.watch_id
        } else {
            while self.in_use(self.next_id) {
                self.next_id += 1;
            }
            self.next_id += 1;
            self.next_id - 1
        };
        self.reserved.insert(id);
        let req = convert::watch_create(c);
        self.control.push_back(Box::pin(create(client, id, req)));
    }

    fn on_cancel(&mut self, id: i64) {
        if self.reserved.contains(&id) {
            self.cancel_on_create.insert(id);
            return;
        }
        // Dropping the native stream cancels the native watch.
        if self.watches.remove(&id).is_none() {
            // etcd answers nothing for an unknown id.
            return;
        }
        let client = self.client.clone();
        self.control.push_back(Box::pin(async move {
            let header = client.status(w::StatusRequest {}).await.map(|s| s.header);
            Control::Canceled { id, header }
        }));
    }

    fn on_progress(&mut self) {
        self.progress_waiters += 1;
        if self.progress_in_flight {
            return;
        }
        self.progress_in_flight = true;
        let client = self.client.clone();
        self.control.push_back(Box::pin(async move {
            Control::Progress(client.watch_progress(w::WatchProgressRequest {}).await)
        }));
    }

    async fn on_control(&mut self, c: Control) -> Result<(), End> {
        match c {
            Control::Created { id, outcome } => {
                self.reserved.remove(&id);
                let cancel = self.cancel_on_create.remove(&id);
                let created = outcome.map_err(|e| self.fail(e))?;
                let header = created.responses.first().and_then(|r| r.header);
                for r in created.responses {
                    send(&self.tx, r).await?;
                }
                if let Some(stream) = created.stream {
                    if cancel {
                        drop(stream);
                        send(&self.tx, canceled(id, header)).await?;
                    } else {
                        self.watches.insert(id, events(stream));
                    }
                }
                Ok(())
            }
            Control::Canceled { id, header } => {
                let header = header.map_err(|e| self.fail(e))?;
                send(&self.tx, canceled(id, convert::header(header))).await
            }
            Control::Progress(result) => {
                self.progress_in_flight = false;
                let waiters = std::mem::take(&mut self.progress_waiters);
                match result {
                    Ok(resp) => {
                        self.drain_ready().await?;
                        for _ in 0..waiters {
                            send(&self.tx, convert::watch_response(resp.clone(), -1)).await?;
                        }
                        Ok(())
                    }
                    // Like etcd, no notification while watches are still
                    // catching up (the native server times the request out).
                    Err(WireError::Api(e)) => {
                        tracing::debug!(error = %e, "watch progress request not answered");
                        Ok(())
                    }
                    Err(e) => Err(self.fail(e)),
                }
            }
        }
    }

    /// Forwards every event frame already received from the native server.
    async fn drain_ready(&mut self) -> Result<(), End> {
        while let Some(Some((id, item))) = self.watches.next().now_or_never() {
            self.on_event(id, item).await?;
        }
        Ok(())
    }

    async fn on_event(&mut self, id: i64, item: Result<WatchFrame, WireError>) -> Result<(), End> {
        match item {
            Ok(frame) => {
                let resp = frame.to_owned_watch().map_err(|e| self.fail(e))?;
                send(&self.tx, convert::watch_response(resp, id)).await
            }
            // The native server ended this watch with an error: the watch
            // is cancelled with that reason, the stream carries on.
            Err(WireError::Api(e)) => {
                self.watches.remove(&id);
                let mut resp = canceled(id, None);
                resp.cancel_reason = e.message().to_owned();
                send(&self.tx, resp).await
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

async fn send(tx: &Tx, resp: pb::WatchResponse) -> Result<(), End> {
    tx.send(Ok(resp)).await.map_err(|_| End::ClientGone)
}

fn canceled(watch_id: i64, header: Option<pb::ResponseHeader>) -> pb::WatchResponse {
    pb::WatchResponse {
        header,
        watch_id,
        canceled: true,
        ..Default::default()
    }
}

/// etcd: a non-empty range_end (other than "\0", meaning "to the end") must
/// be greater than key.
fn range_is_empty(key: &[u8], range_end: &[u8]) -> bool {
    !range_end.is_empty() && range_end != [0] && key >= range_end
}

fn events(ws: WatchStream) -> NativeEvents {
    Box::pin(futures::stream::unfold(Some(ws), |state| async move {
        let mut ws = state?;
        match ws.next().await {
            Ok(Some(f)) => Some((Ok(f), Some(ws))),
            Ok(None) => None,
            Err(e) => Some((Err(e), None)),
        }
    }))
}

/// etcd answers a refused create with created + canceled, watch id -1.
async fn refused(client: Client, reason: String) -> Control {
    let outcome = client.status(w::StatusRequest {}).await.map(|s| Created {
        responses: vec![pb::WatchResponse {
            header: convert::header(s.header),
            watch_id: -1,
            created: true,
            canceled: true,
            cancel_reason: reason,
            ..Default::default()
        }],
        stream: None,
    });
    Control::Created { id: -1, outcome }
}

async fn create(client: Client, id: i64, req: w::WatchCreateRequest) -> Control {
    let outcome = async {
        let mut ws = match client.watch(req).await {
            Ok(ws) => ws,
            Err(WireError::Api(e)) => {
                let s = client.status(w::StatusRequest {}).await?;
                return Ok(Created {
                    responses: vec![pb::WatchResponse {
                        header: convert::header(s.header),
                        watch_id: id,
                        created: true,
                        canceled: true,
                        cancel_reason: e.message().to_owned(),
                        ..Default::default()
                    }],
                    stream: None,
                });
            }
            Err(e) => return Err(e),
        };
        // The native client consumes the `created` frame unless it also
        // ends the watch; then it is the first frame of the stream.
        let first = ws.next().now_or_never();
        if let Some(Ok(Some(f))) = &first {
            if f.get().created {
                let resp = convert::watch_response(f.to_owned_watch()?, id);
                return Ok(Created {
                    responses: vec![resp],
                    stream: Some(ws),
                });
            }
        }
        // etcd's created response carries the revision current at creation.
        let s = client.status(w::StatusRequest {}).await?;
        let mut responses = vec![pb::WatchResponse {
            header: convert::header(s.header),
            watch_id: id,
            created: true,
            ..Default::default()
        }];
        match first {
            Some(Ok(Some(f))) => responses.push(convert::watch_response(f.to_owned_watch()?, id)),
            Some(Ok(None)) => {
                return Ok(Created {
                    responses,
                    stream: None,
                });
            }
            Some(Err(e)) => return Err(e),
            None => {}
        }
        Ok(Created {
            responses,
            stream: Some(ws),
        })
    }
    .await;
    Control::Created { id, outcome }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_watch_ranges_follow_etcd() {
        assert!(!range_is_empty(b"a", b""), "single key");
        assert!(!range_is_empty(b"a", b"\0"), "from key");
        assert!(!range_is_empty(b"a", b"b"));
        assert!(range_is_empty(b"b", b"a"));
        assert!(range_is_empty(b"a", b"a"));
    }
}
