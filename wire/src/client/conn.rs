//! The connection's shared routing table and its reader/writer tasks.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use crate::error::WireError;
use crate::frame::{FrameDecoder, OwnedFrame};
use crate::limits::WireLimits;
use crate::messages::{ArchivedResponse, Response};

/// Request id 0 is never used by a client; frames with it carry
/// connection-level messages from the server.
pub const CONNECTION_REQUEST_ID: u64 = 0;

/// Where the answer(s) to a request id go.
pub(crate) enum Route {
    /// One frame, then the route is removed.
    Unary(oneshot::Sender<OwnedFrame>),
    /// Frames until one arrives without the MORE flag.
    Stream(mpsc::Sender<OwnedFrame>),
}

struct Routes {
    map: HashMap<u64, Route>,
    /// Set once the connection is gone; no route is added afterwards.
    closed: Option<String>,
}

/// State shared by the client handles and the connection tasks.
pub(crate) struct Shared {
    pub(crate) addr: String,
    routes: Mutex<Routes>,
}

impl Shared {
    pub(crate) fn new(addr: String) -> Self {
        Shared {
            addr,
            routes: Mutex::new(Routes {
                map: HashMap::new(),
                closed: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Routes> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (single insert/remove), so a poisoned lock is still usable.
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn register(&self, id: u64, route: Route) -> Result<(), WireError> {
        let mut r = self.lock();
        if let Some(reason) = &r.closed {
            return Err(WireError::ConnectionClosed {
                addr: self.addr.clone(),
                reason: reason.clone(),
            });
        }
        r.map.insert(id, route);
        Ok(())
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.lock().map.remove(&id);
    }

    pub(crate) fn closed_error(&self) -> WireError {
        let reason = self
            .lock()
            .closed
            .clone()
            .unwrap_or_else(|| "client dropped".to_owned());
        WireError::ConnectionClosed {
            addr: self.addr.clone(),
            reason,
        }
    }

    /// Marks the connection dead and fails every pending request (dropping
    /// the senders wakes the waiters, which then read `closed`).
    pub(crate) fn close(&self, reason: String) {
        let drained: Vec<Route> = {
            let mut r = self.lock();
            if r.closed.is_none() {
                r.closed = Some(reason);
            }
            r.map.drain().map(|(_, v)| v).collect()
        };
        drop(drained);
    }

    /// Delivers one frame to its route. Frames for unknown ids (cancelled or
    /// timed-out requests) are dropped.
    async fn route(&self, frame: OwnedFrame) {
        let id = frame.request_id();
        let more = frame.flags().more();
        let stream_tx = {
            let mut r = self.lock();
            match r.map.remove(&id) {
                None => return,
                Some(Route::Unary(tx)) => {
                    // The waiter may have timed out meanwhile; nothing to do.
                    let _ = tx.send(frame);
                    return;
                }
                Some(Route::Stream(tx)) => {
                    if more {
                        r.map.insert(id, Route::Stream(tx.clone()));
                    }
                    tx
                }
            }
        };
        if stream_tx.send(frame).await.is_err() {
            // The stream was dropped; stop routing to it.
            self.unregister(id);
        }
    }
}

pub(crate) async fn reader<R: AsyncRead + Unpin>(
    shared: std::sync::Arc<Shared>,
    mut read: R,
    limits: WireLimits,
    read_chunk_bytes: usize,
) {
    let mut decoder = FrameDecoder::with_read_chunk(&limits, read_chunk_bytes);
    let reason = loop {
        let n = match read.read(decoder.buf_mut()).await {
            Ok(0) => {
                break match decoder.finish() {
                    Ok(()) => "closed by server".to_owned(),
                    Err(e) => format!("closed by server mid-frame: {e}"),
                };
            }
            Ok(n) => n,
            Err(e) => break format!("read: {e}"),
        };
        decoder.advance(n);
        let mut failed = None;
        loop {
            match decoder.next_owned_frame() {
                Ok(Some(frame)) if frame.request_id() == CONNECTION_REQUEST_ID => {
                    // A connection-level error announced right before the
                    // server closes the connection; it becomes the reason
                    // every pending request fails with.
                    if let Ok(ArchivedResponse::Error(e)) = frame.access::<Response>() {
                        shared.close(format!("server: {}", e.to_owned_error()));
                    }
                }
                Ok(Some(frame)) => shared.route(frame).await,
                Ok(None) => break,
                Err(e) => {
                    failed = Some(format!("bad frame from server: {e}"));
                    break;
                }
            }
        }
        if let Some(reason) = failed {
            break reason;
        }
    };
    shared.close(reason);
}

pub(crate) async fn writer<W: AsyncWrite + Unpin>(
    shared: std::sync::Arc<Shared>,
    mut write: W,
    mut rx: mpsc::Receiver<Vec<u8>>,
    write_coalesce_bytes: usize,
) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < write_coalesce_bytes {
            match rx.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = write.write_all(&batch).await {
            shared.close(format!("write: {e}"));
            return;
        }
    }
    // Every client handle is gone: half-close so the server sees EOF.
    let _ = write.shutdown().await;
}
