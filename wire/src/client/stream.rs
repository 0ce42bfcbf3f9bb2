//! Streams of frames answering one request id (watch, snapshot).

use std::collections::VecDeque;

use tokio::sync::mpsc;

use super::Client;
use super::response::{ResponseFrame, WatchFrame};
use crate::error::WireError;
use crate::frame::OwnedFrame;
use crate::messages::{Request, WatchCancelRequest, WatchResponse};

/// Frames of one streamed request, in order. Ends after the frame sent
/// without the MORE flag, or with an error if the connection is lost.
#[derive(Debug)]
pub struct ResponseStream {
    client: Client,
    request_id: u64,
    rx: mpsc::Receiver<OwnedFrame>,
    front: VecDeque<ResponseFrame>,
    finished: bool,
}

impl ResponseStream {
    pub(crate) fn new(client: Client, request_id: u64, rx: mpsc::Receiver<OwnedFrame>) -> Self {
        ResponseStream {
            client,
            request_id,
            rx,
            front: VecDeque::new(),
            finished: false,
        }
    }

    pub(crate) fn push_front(&mut self, f: ResponseFrame) {
        self.front.push_front(f);
    }

    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// True once the last frame was received.
    pub fn is_finished(&self) -> bool {
        self.finished && self.front.is_empty()
    }

    /// Next frame; `Ok(None)` after the last one. An `Error` response ends
    /// the stream and is returned as `WireError::Api`.
    pub async fn next_frame(&mut self) -> Result<Option<ResponseFrame>, WireError> {
        if let Some(f) = self.front.pop_front() {
            return Ok(Some(f));
        }
        if self.finished {
            return Ok(None);
        }
        let Some(frame) = self.rx.recv().await else {
            self.finished = true;
            return Err(self.client.closed_error());
        };
        let frame = ResponseFrame::new(frame);
        if !frame.as_ref().is_ok_and(ResponseFrame::more) {
            self.finished = true;
        }
        frame?.into_result().map(Some)
    }
}

impl Drop for ResponseStream {
    fn drop(&mut self) {
        if !self.finished {
            self.client.unregister(self.request_id);
        }
    }
}

/// A watch: `next()` yields watch responses (events, progress
/// notifications, and finally a `canceled` one). Dropping it unfinished
/// sends a `WatchCancel`.
#[derive(Debug)]
pub struct WatchStream {
    inner: ResponseStream,
    watch_id: i64,
    /// The server's `created` answer (header at the watch's creation).
    created: WatchResponse,
}

impl WatchStream {
    pub(crate) fn new(inner: ResponseStream, created: WatchFrame) -> Result<Self, WireError> {
        let watch_id = created.get().watch_id.to_native();
        let owned = created.to_owned_watch()?;
        let mut s = WatchStream {
            inner,
            watch_id,
            created: owned,
        };
        // A refused create (created + canceled) or a watch cancelled at
        // once (compacted start revision) ends in its first frame; keep it
        // in the stream so `next` returns the cancel.
        if created.get().canceled || !created.frame().more() {
            s.inner.push_front(created.into_frame());
        }
        Ok(s)
    }

    /// The id the server assigned (or the one requested); -1 for a create
    /// the server refused (`created().cancel_reason` says why).
    pub fn watch_id(&self) -> i64 {
        self.watch_id
    }

    /// The server's `created` response: its header carries the revision at
    /// which the watch was created, as etcd's does.
    pub fn created(&self) -> &WatchResponse {
        &self.created
    }

    /// Next watch response; `Ok(None)` once the watch is cancelled and its
    /// final (`canceled`) response was returned.
    pub async fn next(&mut self) -> Result<Option<WatchFrame>, WireError> {
        match self.inner.next_frame().await? {
            None => Ok(None),
            Some(f) => WatchFrame::new(f)
                .map(Some)
                .ok_or(WireError::UnexpectedResponse {
                    operation: "watch stream",
                    got: "non-watch response",
                }),
        }
    }

    /// Cancels the watch and drains it up to the server's final `canceled`
    /// response, which is returned (`None` if the stream had already ended).
    pub async fn cancel(mut self) -> Result<Option<WatchFrame>, WireError> {
        if self.inner.is_finished() {
            return Ok(None);
        }
        let req = Request::WatchCancel(WatchCancelRequest {
            watch_id: self.watch_id,
        });
        self.inner.client.request(&req).await?;
        let timeout = self.inner.client.options().request_timeout;
        let drain = async {
            let mut last = None;
            while let Some(f) = self.next().await? {
                last = Some(f);
            }
            Ok(last)
        };
        match tokio::time::timeout(timeout, drain).await {
            Ok(r) => r,
            Err(_) => Err(WireError::Timeout {
                request_id: self.inner.request_id,
                operation: "WatchCancel",
                timeout_ms: timeout.as_millis() as u64,
            }),
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        if !self.inner.finished {
            // Best effort: if the write queue is full the server keeps the
            // watch until the connection closes.
            let req = Request::WatchCancel(WatchCancelRequest {
                watch_id: self.watch_id,
            });
            self.inner.client.send_detached(&req);
        }
    }
}
