//! etcdserverpb.Lease: corekv does not implement leases yet. Every RPC is
//! answered `Unimplemented` with a message saying so; nothing is faked (a
//! granted lease that never expires would silently break locks and
//! elections built on it).

use std::pin::Pin;

use corekv_wire::proto::etcdserverpb as pb;
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

pub struct LeaseService;

pub(super) fn no_leases(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "corekv: leases are not implemented yet (etcdserverpb.Lease/{rpc})"
    ))
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        _request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        Err(no_leases("LeaseGrant"))
    }

    async fn lease_revoke(
        &self,
        _request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        Err(no_leases("LeaseRevoke"))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        _request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        Err(no_leases("LeaseKeepAlive"))
    }

    async fn lease_time_to_live(
        &self,
        _request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        Err(no_leases("LeaseTimeToLive"))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        Err(no_leases("LeaseLeases"))
    }
}
