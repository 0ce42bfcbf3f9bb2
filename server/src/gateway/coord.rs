//! `v3lockpb.Lock` and `v3electionpb.Election`: thin adapters over the
//! recipes in `crate::coord`, run against the shard's request layer (as
//! etcd's servers run `clientv3/concurrency` over an in-process client).

use std::rc::Rc;

use corekv_wire::proto::v3electionpb as epb;
use corekv_wire::proto::v3lockpb as lpb;
use tokio::sync::mpsc;
use tonic::Status;

use super::convert::{header, key_value};
use super::grpc::ResponseStream;
use super::{GatewayOptions, status};
use crate::coord::{self, CoordError, election};
use crate::node::route::Api;

fn coord_status(e: CoordError) -> Status {
    match e {
        CoordError::Api(e) => status(e),
        CoordError::Invalid(msg) => Status::invalid_argument(msg),
        // etcd answers these as plain errors (gRPC code Unknown).
        other => Status::unknown(other.to_string()),
    }
}

pub async fn lock(api: Rc<Api>, r: lpb::LockRequest) -> Result<lpb::LockResponse, Status> {
    let held = coord::lock::lock(&*api, &r.name, r.lease)
        .await
        .map_err(coord_status)?;
    Ok(lpb::LockResponse {
        header: header(held.header),
        key: held.key.into(),
    })
}

pub async fn unlock(api: Rc<Api>, r: lpb::UnlockRequest) -> Result<lpb::UnlockResponse, Status> {
    let h = coord::lock::unlock(&*api, &r.key)
        .await
        .map_err(coord_status)?;
    Ok(lpb::UnlockResponse { header: header(h) })
}

fn leader_key(lk: Option<epb::LeaderKey>) -> Result<election::LeaderKey, Status> {
    // etcd's ErrMissingLeaderKey.
    let lk = lk.ok_or_else(|| Status::unknown("\"leader\" field must be provided"))?;
    Ok(election::LeaderKey {
        name: lk.name.to_vec(),
        key: lk.key.to_vec(),
        rev: lk.rev,
        lease: lk.lease,
    })
}

pub async fn campaign(
    api: Rc<Api>,
    r: epb::CampaignRequest,
) -> Result<epb::CampaignResponse, Status> {
    let (lk, h) = election::campaign(&*api, &r.name, r.lease, &r.value)
        .await
        .map_err(coord_status)?;
    Ok(epb::CampaignResponse {
        header: header(h),
        leader: Some(epb::LeaderKey {
            name: lk.name.into(),
            key: lk.key.into(),
            rev: lk.rev,
            lease: lk.lease,
        }),
    })
}

pub async fn proclaim(
    api: Rc<Api>,
    r: epb::ProclaimRequest,
) -> Result<epb::ProclaimResponse, Status> {
    let lk = leader_key(r.leader)?;
    let h = election::proclaim(&*api, &lk, &r.value)
        .await
        .map_err(coord_status)?;
    Ok(epb::ProclaimResponse { header: header(h) })
}

pub async fn leader(api: Rc<Api>, r: epb::LeaderRequest) -> Result<epb::LeaderResponse, Status> {
    let (kv, h) = election::leader(&*api, &r.name)
        .await
        .map_err(coord_status)?;
    Ok(epb::LeaderResponse {
        header: header(h),
        kv: Some(key_value(kv)),
    })
}

pub async fn resign(api: Rc<Api>, r: epb::ResignRequest) -> Result<epb::ResignResponse, Status> {
    let lk = leader_key(r.leader)?;
    let h = election::resign(&*api, &lk).await.map_err(coord_status)?;
    Ok(epb::ResignResponse { header: header(h) })
}

/// Observe: a local task follows the election and feeds the stream until
/// the client goes (or a watch fails: the stream ends with that error).
pub async fn observe(
    api: Rc<Api>,
    r: epb::LeaderRequest,
) -> Result<ResponseStream<epb::LeaderResponse>, Status> {
    let opts = GatewayOptions::from_config(&api.shared.cfg);
    let buffer = opts.grpc_stream_buffer_responses.max(1);
    let (tx, rx) = mpsc::channel(buffer);
    let (found_tx, mut found_rx) = mpsc::channel(buffer);
    let name = r.name.to_vec();
    glommio::spawn_local(async move {
        let out = tx.clone();
        let forward = async move {
            while let Some((kv, h)) = found_rx.recv().await {
                let resp = epb::LeaderResponse {
                    header: header(h),
                    kv: Some(key_value(kv)),
                };
                if out.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        };
        let follow = election::observe(&*api, &name, found_tx);
        let work = async {
            let (result, ()) = futures::join!(follow, forward);
            if let Err(e) = result {
                let _ = tx.send(Err(coord_status(e))).await;
            }
        };
        // The client left: stop at once (the watches leave the hub).
        futures_lite::future::or(work, tx.closed()).await;
    })
    .detach();
    Ok(ResponseStream::new(rx))
}
