//! etcdserverpb.Maintenance over the native protocol.

use std::sync::Arc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::{ArchivedResponse, ResponseStream, WireError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::pool::{NativePool, status};

pub struct MaintenanceService {
    pool: Arc<NativePool>,
    /// Responses queued towards a Snapshot client.
    stream_buffer_responses: usize,
}

impl MaintenanceService {
    pub fn new(pool: Arc<NativePool>, stream_buffer_responses: usize) -> Self {
        MaintenanceService {
            pool,
            stream_buffer_responses: stream_buffer_responses.max(1),
        }
    }
}

type SnapshotTx = mpsc::Sender<Result<pb::SnapshotResponse, Status>>;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        let req = convert::alarm_request(request.into_inner())?;
        let resp = self
            .pool
            .call(|c| async move { c.alarm(req).await })
            .await?;
        Ok(Response::new(convert::alarm_response(resp)))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let resp = self
            .pool
            .call(|c| async move { c.status(w::StatusRequest {}).await })
            .await?;
        Ok(Response::new(convert::status_response(resp)))
    }

    async fn defragment(
        &self,
        _request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        let resp = self
            .pool
            .call(|c| async move { c.defragment(w::DefragmentRequest {}).await })
            .await?;
        Ok(Response::new(pb::DefragmentResponse {
            header: convert::header(resp.header),
        }))
    }

    /// etcd hashes the whole backend file; corekv has no equivalent, so
    /// `Hash` answers the HashKV hash of the key space at the current
    /// revision (equal across members holding the same data, which is what
    /// callers compare).
    async fn hash(
        &self,
        _request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        let resp = self
            .pool
            .call(|c| async move { c.hash_kv(w::HashKvRequest { revision: 0 }).await })
            .await?;
        Ok(Response::new(pb::HashResponse {
            header: convert::header(resp.header),
            hash: resp.hash,
        }))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        let req = w::HashKvRequest {
            revision: request.into_inner().revision,
        };
        let resp = self
            .pool
            .call(|c| async move { c.hash_kv(req).await })
            .await?;
        Ok(Response::new(pb::HashKvResponse {
            header: convert::header(resp.header),
            hash: resp.hash,
            compact_revision: resp.compact_revision,
            hash_revision: resp.hash_revision,
        }))
    }

    type SnapshotStream = ReceiverStream<Result<pb::SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        // The first native frame arrives before we answer, so a refused
        // snapshot is an error status rather than an empty stream.
        let native = self
            .pool
            .call(|c| async move { c.snapshot().await })
            .await?;
        let (tx, rx) = mpsc::channel(self.stream_buffer_responses);
        let addr = self.pool.addr().to_owned();
        tokio::spawn(async move {
            if let Err(e) = forward_snapshot(native, &tx).await {
                // The client may be gone already; nothing else to tell.
                let _ = tx.send(Err(status(&addr, e))).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let req = w::MoveLeaderRequest {
            target_id: request.into_inner().target_id,
        };
        let resp = self
            .pool
            .call(|c| async move { c.move_leader(req).await })
            .await?;
        Ok(Response::new(pb::MoveLeaderResponse {
            header: convert::header(resp.header),
        }))
    }
}

/// Forwards the native chunks unchanged: the member already streams etcd's
/// form (padding and SHA-256 trailer, see `node/snapshot_stream.rs`).
/// Returns early (Ok) if the gRPC client went away.
async fn forward_snapshot(mut native: ResponseStream, tx: &SnapshotTx) -> Result<(), WireError> {
    while let Some(frame) = native.next_frame().await? {
        let ArchivedResponse::Snapshot(chunk) = frame.get() else {
            return Err(WireError::UnexpectedResponse {
                operation: "Snapshot",
                got: frame.get().name(),
            });
        };
        let header = w::ResponseHeader {
            cluster_id: chunk.header.cluster_id.to_native(),
            member_id: chunk.header.member_id.to_native(),
            revision: chunk.header.revision.to_native(),
            raft_term: chunk.header.raft_term.to_native(),
        };
        let resp = pb::SnapshotResponse {
            header: convert::header(header),
            remaining_bytes: chunk.remaining_bytes.to_native(),
            blob: bytes::Bytes::copy_from_slice(chunk.blob.as_slice()),
        };
        if tx.send(Ok(resp)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}
