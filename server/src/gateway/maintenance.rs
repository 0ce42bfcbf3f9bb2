//! etcdserverpb.Maintenance through the shard's request layer.

use std::rc::Rc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use tonic::Status;

use super::grpc::ResponseStream;
use super::{call, convert, expect_response};
use crate::node::route::Api;
use crate::node::snapshot_stream;

pub async fn alarm(api: Rc<Api>, r: pb::AlarmRequest) -> Result<pb::AlarmResponse, Status> {
    let req = w::Request::Alarm(convert::alarm_request(r)?);
    let resp = expect_response!(call(&api, req).await?, Alarm);
    Ok(convert::alarm_response(resp))
}

pub async fn status(api: Rc<Api>, _r: pb::StatusRequest) -> Result<pb::StatusResponse, Status> {
    let resp = expect_response!(
        call(&api, w::Request::Status(w::StatusRequest {})).await?,
        Status
    );
    Ok(convert::status_response(resp))
}

pub async fn defragment(
    api: Rc<Api>,
    _r: pb::DefragmentRequest,
) -> Result<pb::DefragmentResponse, Status> {
    let req = w::Request::Defragment(w::DefragmentRequest {});
    let resp = expect_response!(call(&api, req).await?, Defragment);
    Ok(pb::DefragmentResponse {
        header: convert::header(resp.header),
    })
}

/// etcd hashes the whole backend file; corekv has no equivalent, so `Hash`
/// answers the HashKV hash of the key space at the current revision (equal
/// across members holding the same data, which is what callers compare).
pub async fn hash(api: Rc<Api>, _r: pb::HashRequest) -> Result<pb::HashResponse, Status> {
    let req = w::Request::HashKv(w::HashKvRequest { revision: 0 });
    let resp = expect_response!(call(&api, req).await?, HashKv);
    Ok(pb::HashResponse {
        header: convert::header(resp.header),
        hash: resp.hash,
    })
}

pub async fn hash_kv(api: Rc<Api>, r: pb::HashKvRequest) -> Result<pb::HashKvResponse, Status> {
    let req = w::Request::HashKv(w::HashKvRequest {
        revision: r.revision,
    });
    let resp = expect_response!(call(&api, req).await?, HashKv);
    Ok(pb::HashKvResponse {
        header: convert::header(resp.header),
        hash: resp.hash,
        compact_revision: resp.compact_revision,
        hash_revision: resp.hash_revision,
    })
}

pub async fn move_leader(
    api: Rc<Api>,
    r: pb::MoveLeaderRequest,
) -> Result<pb::MoveLeaderResponse, Status> {
    let req = w::Request::MoveLeader(w::MoveLeaderRequest {
        target_id: r.target_id,
    });
    let resp = expect_response!(call(&api, req).await?, MoveLeader);
    Ok(pb::MoveLeaderResponse {
        header: convert::header(resp.header),
    })
}

/// Maintenance.Snapshot: the member's stream (`node/snapshot_stream.rs`,
/// already in etcd's form: padding and SHA-256 trailer) forwarded chunk by
/// chunk. A refusal (too many streams) is the call's status, before any
/// data; a client that takes nothing for `SNAPSHOT_STALL_TIMEOUT` is
/// dropped.
pub async fn snapshot(
    api: Rc<Api>,
    _r: pb::SnapshotRequest,
) -> Result<ResponseStream<pb::SnapshotResponse>, Status> {
    crate::node::ready::wait(&api.shared)
        .await
        .map_err(super::status)?;
    let mut chunks = snapshot_stream::open(&api.shared).map_err(super::status)?;
    let (tx, rx) = tokio::sync::mpsc::channel(snapshot_stream::SNAPSHOT_QUEUE_CHUNKS);
    let shared = api.shared.clone();
    glommio::spawn_local(async move {
        while let Some(item) = chunks.next().await {
            let msg = item
                .map(|(revision, c)| pb::SnapshotResponse {
                    header: convert::header(shared.header(revision)),
                    remaining_bytes: c.remaining_bytes,
                    blob: c.blob.into(),
                })
                .map_err(super::status);
            let sent = futures_lite::future::or(async { tx.send(msg).await.is_ok() }, async {
                glommio::timer::sleep(snapshot_stream::SNAPSHOT_STALL_TIMEOUT).await;
                false
            });
            if !sent.await {
                break;
            }
        }
    })
    .detach();
    Ok(ResponseStream::new(rx))
}
