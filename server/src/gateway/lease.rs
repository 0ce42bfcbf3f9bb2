//! etcdserverpb.Lease: corekv does not implement leases yet. Every RPC is
//! answered `Unimplemented` with a message saying so; nothing is faked (a
//! granted lease that never expires would silently break locks and
//! elections built on it).

use std::rc::Rc;

use corekv_wire::proto::etcdserverpb as pb;
use tonic::Status;
use tonic::body::Body;

use crate::node::route::Api;

fn no_leases(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "corekv: leases are not implemented yet (etcdserverpb.Lease/{rpc})"
    ))
}

pub async fn grant(
    _api: Rc<Api>,
    _r: pb::LeaseGrantRequest,
) -> Result<pb::LeaseGrantResponse, Status> {
    Err(no_leases("LeaseGrant"))
}

pub async fn revoke(
    _api: Rc<Api>,
    _r: pb::LeaseRevokeRequest,
) -> Result<pb::LeaseRevokeResponse, Status> {
    Err(no_leases("LeaseRevoke"))
}

pub fn keep_alive() -> http::Response<Body> {
    no_leases("LeaseKeepAlive").into_http()
}

pub async fn time_to_live(
    _api: Rc<Api>,
    _r: pb::LeaseTimeToLiveRequest,
) -> Result<pb::LeaseTimeToLiveResponse, Status> {
    Err(no_leases("LeaseTimeToLive"))
}

pub async fn leases(
    _api: Rc<Api>,
    _r: pb::LeaseLeasesRequest,
) -> Result<pb::LeaseLeasesResponse, Status> {
    Err(no_leases("LeaseLeases"))
}
