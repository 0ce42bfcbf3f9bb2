//! The recipes' requests through this shard's in-process request layer
//! (`node::route::Api`): what the gRPC Lock and Election services use. No
//! socket, no other runtime: a watch is a `WatchSession` on the shard's hub
//! whose sink is a local queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame};
use tokio::sync::Notify;

use super::{CoordError, CoordKv, EventStream, Result};
use crate::node::route::Api;
use crate::node::watch::{Hub, WatchSession, WatchSink};

impl Api {
    async fn coord_call(&self, req: w::Request) -> Result<w::Response> {
        let frame = OwnedFrame::encode_request(0, &req)
            .map_err(|e| CoordError::Api(ApiError::Internal(format!("encoding: {e}"))))?;
        self.call(frame).await.map_err(CoordError::Api)
    }
}

fn unexpected(what: &str, got: &w::Response) -> CoordError {
    CoordError::Api(ApiError::Internal(format!(
        "{what} answered with a {} response",
        got.name()
    )))
}

impl CoordKv for Api {
    type Events = LocalEvents;

    async fn txn(&self, t: w::TxnRequest) -> Result<w::TxnResponse> {
        match self.coord_call(w::Request::Txn(t)).await? {
            w::Response::Txn(r) => Ok(r),
            other => Err(unexpected("Txn", &other)),
        }
    }

    async fn range(&self, r: w::RangeRequest) -> Result<w::RangeResponse> {
        match self.coord_call(w::Request::Range(r)).await? {
            w::Response::Range(r) => Ok(r),
            other => Err(unexpected("Range", &other)),
        }
    }

    async fn delete(&self, key: &[u8]) -> Result<w::ResponseHeader> {
        let req = w::Request::DeleteRange(w::DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        });
        match self.coord_call(req).await? {
            w::Response::DeleteRange(r) => Ok(r.header),
            other => Err(unexpected("DeleteRange", &other)),
        }
    }

    async fn watch(&self, req: w::WatchCreateRequest) -> Result<LocalEvents> {
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&req)
            .map_err(|e| CoordError::Api(ApiError::Internal(format!("encoding: {e}"))))?;
        let archived =
            rkyv::access::<w::ArchivedWatchCreateRequest, rkyv::rancor::Error>(&bytes)
                .map_err(|e| CoordError::Api(ApiError::Internal(format!("encoding: {e}"))))?;
        let sink = Rc::new(QueueSink::default());
        let session = WatchSession::default();
        // A refused create is answered in-band (canceled) on the sink.
        self.watch_create(&session, archived, sink.clone());
        Ok(LocalEvents {
            hub: self.hub.clone(),
            session,
            sink,
        })
    }
}

/// Responses queued for one recipe's watch (bounded by the hub's
/// slow-consumer rule through `pending_bytes`).
#[derive(Default)]
struct QueueSink {
    queue: RefCell<VecDeque<w::WatchResponse>>,
    bytes: Cell<usize>,
    wake: Notify,
}

fn response_bytes(r: &w::WatchResponse) -> usize {
    r.events
        .iter()
        .map(|e| 64 + e.kv.key.len() + e.kv.value.len())
        .sum::<usize>()
        + 64
}

impl WatchSink for QueueSink {
    fn push(&self, resp: w::WatchResponse, _last: bool) {
        self.bytes.set(self.bytes.get() + response_bytes(&resp));
        self.queue.borrow_mut().push_back(resp);
        self.wake.notify_one();
    }

    fn pending_bytes(&self) -> usize {
        self.bytes.get()
    }
}

/// One watch of a recipe; its watch leaves the hub when this is dropped.
pub struct LocalEvents {
    hub: Rc<Hub>,
    session: WatchSession,
    sink: Rc<QueueSink>,
}

impl EventStream for LocalEvents {
    async fn next(&mut self) -> Result<Option<w::WatchResponse>> {
        loop {
            let next = self.sink.queue.borrow_mut().pop_front();
            if let Some(resp) = next {
                let left = self.sink.bytes.get().saturating_sub(response_bytes(&resp));
                self.sink.bytes.set(left);
                return Ok(Some(resp));
            }
            self.sink.wake.notified().await;
        }
    }
}

impl Drop for LocalEvents {
    fn drop(&mut self) {
        self.session.clear(&self.hub);
    }
}
