//! etcdserverpb.Auth: corekv has no authentication yet. `AuthStatus`
//! truthfully answers "disabled"; every other RPC is `Unimplemented` with a
//! message saying so.

use std::rc::Rc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use tonic::Status;
use tonic::body::Body;

use super::grpc::Method;
use super::{call, convert, expect_response};
use crate::node::route::Api;

pub async fn auth_status(
    api: Rc<Api>,
    _r: pb::AuthStatusRequest,
) -> Result<pb::AuthStatusResponse, Status> {
    let status = expect_response!(
        call(&api, w::Request::Status(w::StatusRequest {})).await?,
        Status
    );
    Ok(pb::AuthStatusResponse {
        header: convert::header(status.header),
        enabled: false,
        auth_revision: 0,
    })
}

/// Every Auth RPC but AuthStatus, before its request is even decoded.
pub fn not_built(method: Method) -> http::Response<Body> {
    Status::unimplemented(format!(
        "corekv: authentication is not implemented yet (etcdserverpb.Auth/{method:?})"
    ))
    .into_http()
}
