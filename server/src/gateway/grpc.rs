//! gRPC method dispatch: the request path names a `Method`, and one
//! exhaustive match sends it to its adapter. Unary calls run through
//! `tonic::server::Grpc::unary` with the prost codec; its handler future
//! has no `Send` bound, so adapters call the shard's request layer (`Rc`)
//! directly.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use hyper::body::Incoming;
use tonic::Status;
use tonic::body::Body;
use tonic::server::UnaryService;
use tonic_health::pb as health_pb;

use super::{GatewayOptions, auth, cluster, coord, kv, lease, maintenance, watch};
use crate::node::route::{Api, Caller};

macro_rules! methods {
    ($($variant:ident => $path:literal,)*) => {
        /// Every gRPC method served on the client URL.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Method { $($variant,)* }

        impl Method {
            /// The method named by a request path; `None` for any other path
            /// (answered `Unimplemented`, as gRPC servers do).
            pub fn from_path(path: &str) -> Option<Method> {
                match path {
                    $($path => Some(Method::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

methods! {
    Range => "/etcdserverpb.KV/Range",
    Put => "/etcdserverpb.KV/Put",
    DeleteRange => "/etcdserverpb.KV/DeleteRange",
    Txn => "/etcdserverpb.KV/Txn",
    Compact => "/etcdserverpb.KV/Compact",
    Watch => "/etcdserverpb.Watch/Watch",
    LeaseGrant => "/etcdserverpb.Lease/LeaseGrant",
    LeaseRevoke => "/etcdserverpb.Lease/LeaseRevoke",
    LeaseKeepAlive => "/etcdserverpb.Lease/LeaseKeepAlive",
    LeaseTimeToLive => "/etcdserverpb.Lease/LeaseTimeToLive",
    LeaseLeases => "/etcdserverpb.Lease/LeaseLeases",
    MemberAdd => "/etcdserverpb.Cluster/MemberAdd",
    MemberRemove => "/etcdserverpb.Cluster/MemberRemove",
    MemberUpdate => "/etcdserverpb.Cluster/MemberUpdate",
    MemberList => "/etcdserverpb.Cluster/MemberList",
    MemberPromote => "/etcdserverpb.Cluster/MemberPromote",
    Alarm => "/etcdserverpb.Maintenance/Alarm",
    Status => "/etcdserverpb.Maintenance/Status",
    Defragment => "/etcdserverpb.Maintenance/Defragment",
    Hash => "/etcdserverpb.Maintenance/Hash",
    HashKv => "/etcdserverpb.Maintenance/HashKV",
    Snapshot => "/etcdserverpb.Maintenance/Snapshot",
    MoveLeader => "/etcdserverpb.Maintenance/MoveLeader",
    AuthEnable => "/etcdserverpb.Auth/AuthEnable",
    AuthDisable => "/etcdserverpb.Auth/AuthDisable",
    AuthStatus => "/etcdserverpb.Auth/AuthStatus",
    Authenticate => "/etcdserverpb.Auth/Authenticate",
    UserAdd => "/etcdserverpb.Auth/UserAdd",
    UserGet => "/etcdserverpb.Auth/UserGet",
    UserList => "/etcdserverpb.Auth/UserList",
    UserDelete => "/etcdserverpb.Auth/UserDelete",
    UserChangePassword => "/etcdserverpb.Auth/UserChangePassword",
    UserGrantRole => "/etcdserverpb.Auth/UserGrantRole",
    UserRevokeRole => "/etcdserverpb.Auth/UserRevokeRole",
    RoleAdd => "/etcdserverpb.Auth/RoleAdd",
    RoleGet => "/etcdserverpb.Auth/RoleGet",
    RoleList => "/etcdserverpb.Auth/RoleList",
    RoleDelete => "/etcdserverpb.Auth/RoleDelete",
    RoleGrantPermission => "/etcdserverpb.Auth/RoleGrantPermission",
    RoleRevokePermission => "/etcdserverpb.Auth/RoleRevokePermission",
    Lock => "/v3lockpb.Lock/Lock",
    Unlock => "/v3lockpb.Lock/Unlock",
    Campaign => "/v3electionpb.Election/Campaign",
    Proclaim => "/v3electionpb.Election/Proclaim",
    Leader => "/v3electionpb.Election/Leader",
    Observe => "/v3electionpb.Election/Observe",
    Resign => "/v3electionpb.Election/Resign",
    HealthCheck => "/grpc.health.v1.Health/Check",
    HealthWatch => "/grpc.health.v1.Health/Watch",
}

pub async fn dispatch(
    api: Rc<Api>,
    opts: &GatewayOptions,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let Some(method) = Method::from_path(req.uri().path()) else {
        return Status::unimplemented(format!("corekv: unknown method {}", req.uri().path()))
            .into_http();
    };
    let limit = opts.grpc_max_recv_bytes();
    let api = for_headers(&api, req.headers());
    let call = Call { api, limit, req };
    use Method as M;
    let resp = match method {
        M::Range => call.unary(kv::range).await,
        M::Put => call.unary(kv::put).await,
        M::DeleteRange => call.unary(kv::delete_range).await,
        M::Txn => call.unary(kv::txn).await,
        M::Compact => call.unary(kv::compact).await,
        M::Watch => watch::serve(call.api, opts, limit, call.req).await,
        M::LeaseGrant => call.unary(lease::grant).await,
        M::LeaseRevoke => call.unary(lease::revoke).await,
        M::LeaseKeepAlive => lease::keep_alive(call.api, opts, limit, call.req).await,
        M::LeaseTimeToLive => call.unary(lease::time_to_live).await,
        M::LeaseLeases => call.unary(lease::leases).await,
        M::MemberAdd => call.unary(cluster::member_add).await,
        M::MemberRemove => call.unary(cluster::member_remove).await,
        M::MemberUpdate => call.unary(cluster::member_update).await,
        M::MemberList => call.unary(cluster::member_list).await,
        M::MemberPromote => call.unary(cluster::member_promote).await,
        M::Alarm => call.unary(maintenance::alarm).await,
        M::Status => call.unary(maintenance::status).await,
        M::Defragment => call.unary(maintenance::defragment).await,
        M::Hash => call.unary(maintenance::hash).await,
        M::HashKv => call.unary(maintenance::hash_kv).await,
        M::Snapshot => call.server_streaming(maintenance::snapshot).await,
        M::MoveLeader => call.unary(maintenance::move_leader).await,
        M::AuthStatus => call.unary(auth::auth_status).await,
        M::AuthEnable => call.unary(auth::auth_enable).await,
        M::AuthDisable => call.unary(auth::auth_disable).await,
        M::Authenticate => call.unary(auth::authenticate).await,
        M::UserAdd => call.unary(auth::user_add).await,
        M::UserGet => call.unary(auth::user_get).await,
        M::UserList => call.unary(auth::user_list).await,
        M::UserDelete => call.unary(auth::user_delete).await,
        M::UserChangePassword => call.unary(auth::user_change_password).await,
        M::UserGrantRole => call.unary(auth::user_grant_role).await,
        M::UserRevokeRole => call.unary(auth::user_revoke_role).await,
        M::RoleAdd => call.unary(auth::role_add).await,
        M::RoleGet => call.unary(auth::role_get).await,
        M::RoleList => call.unary(auth::role_list).await,
        M::RoleDelete => call.unary(auth::role_delete).await,
        M::RoleGrantPermission => call.unary(auth::role_grant_permission).await,
        M::RoleRevokePermission => call.unary(auth::role_revoke_permission).await,
        M::Lock => call.unary(coord::lock).await,
        M::Unlock => call.unary(coord::unlock).await,
        M::Campaign => call.unary(coord::campaign).await,
        M::Proclaim => call.unary(coord::proclaim).await,
        M::Leader => call.unary(coord::leader).await,
        M::Observe => call.server_streaming(coord::observe).await,
        M::Resign => call.unary(coord::resign).await,
        M::HealthCheck => call.unary(health_check).await,
        M::HealthWatch => call.server_streaming(health_watch).await,
    };
    over_limit_as_grpc_go(resp)
}

/// tonic's refusal of a message over the receive limit (OutOfRange, "Error,
/// decoded message length too large: found N bytes, the limit is: M
/// bytes") as grpc-go, and so etcd, answers it: ResourceExhausted, "grpc:
/// received message larger than max (N vs. M)". Other statuses unchanged.
pub fn grpc_go_status(s: Status) -> Status {
    if s.code() != tonic::Code::OutOfRange {
        return s;
    }
    let sizes = s
        .message()
        .strip_prefix("Error, decoded message length too large: found ")
        .and_then(|rest| rest.strip_suffix(" bytes"))
        .and_then(|rest| rest.split_once(" bytes, the limit is: "));
    match sizes {
        Some((found, limit)) => Status::resource_exhausted(format!(
            "grpc: received message larger than max ({found} vs. {limit})"
        )),
        None => s,
    }
}

/// A call refused before its handler ran carries its status in the
/// response (trailers-only, the `Status` in the extensions): the request
/// message was over the limit, or did not decode.
fn over_limit_as_grpc_go(resp: http::Response<Body>) -> http::Response<Body> {
    match resp.extensions().get::<Status>() {
        Some(s) if s.code() == tonic::Code::OutOfRange => {
            let mapped = grpc_go_status(s.clone());
            if mapped.code() == tonic::Code::OutOfRange {
                resp
            } else {
                mapped.into_http()
            }
        }
        _ => resp,
    }
}

/// The request layer for one call: the connection's certificate name and
/// the token the call carries. etcd reads metadata `token`, else
/// `authorization` (`TokenFieldNameSwagger`: how etcd's JSON gateway
/// forwards an HTTP `Authorization` header).
pub fn for_headers(api: &Api, headers: &http::HeaderMap) -> Rc<Api> {
    let token = ["token", "authorization"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cn = api.caller.cn.clone();
    api.for_caller(Caller { token, cn })
}

/// One gRPC call on its way to an adapter.
struct Call {
    api: Rc<Api>,
    limit: usize,
    req: http::Request<Incoming>,
}

impl Call {
    /// Decodes the request message, runs `f` and encodes its answer (or
    /// status).
    async fn unary<Req, Resp, F, Fut>(self, f: F) -> http::Response<Body>
    where
        Req: prost::Message + Default + Send + 'static,
        Resp: prost::Message + Send + 'static,
        F: Fn(Rc<Api>, Req) -> Fut,
        Fut: Future<Output = Result<Resp, Status>> + 'static,
    {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<Resp, Req>::default())
            .max_decoding_message_size(self.limit);
        grpc.unary(Unary { api: self.api, f }, self.req).await
    }

    /// Decodes the request message; `f` returns the response stream.
    async fn server_streaming<Req, M, F, Fut>(self, f: F) -> http::Response<Body>
    where
        Req: prost::Message + Default + Send + 'static,
        M: prost::Message + Send + 'static,
        F: Fn(Rc<Api>, Req) -> Fut,
        Fut: Future<Output = Result<ResponseStream<M>, Status>> + 'static,
    {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<M, Req>::default())
            .max_decoding_message_size(self.limit);
        grpc.server_streaming(StreamOnce { api: self.api, f }, self.req)
            .await
    }
}

struct Unary<F> {
    api: Rc<Api>,
    f: F,
}

impl<Req, Resp, F, Fut> UnaryService<Req> for Unary<F>
where
    F: Fn(Rc<Api>, Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>> + 'static,
{
    type Response = Resp;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<Resp>, Status>>>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let fut = (self.f)(self.api.clone(), request.into_inner());
        Box::pin(async move { fut.await.map(tonic::Response::new) })
    }
}

/// `grpc.health.v1.Health/Check`: SERVING for the server as a whole (""),
/// as etcd's; like etcd's, not a probe of the member (use `/health`).
async fn health_check(
    _api: Rc<Api>,
    r: health_pb::HealthCheckRequest,
) -> Result<health_pb::HealthCheckResponse, Status> {
    if !r.service.is_empty() {
        return Err(Status::not_found("service not registered"));
    }
    Ok(health_pb::HealthCheckResponse {
        status: health_pb::health_check_response::ServingStatus::Serving as i32,
    })
}

/// `grpc.health.v1.Health/Watch`: the status once; the stream then stays
/// open (the status never changes while the server runs) until the client
/// leaves.
async fn health_watch(
    api: Rc<Api>,
    r: health_pb::HealthCheckRequest,
) -> Result<ResponseStream<health_pb::HealthCheckResponse>, Status> {
    let first = health_check(api, r).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // Capacity 1 and nothing queued: cannot fail.
    let _ = tx.try_send(Ok(first));
    glommio::spawn_local(async move { tx.closed().await }).detach();
    Ok(ResponseStream::new(rx))
}

/// The response stream of a server-streaming call: a channel fed by a
/// local task (the stream itself must be `Send`).
pub type ResponseStream<M> = tokio_stream::wrappers::ReceiverStream<Result<M, Status>>;

/// A server-streaming adapter: `f` returns the response stream.
struct StreamOnce<F> {
    api: Rc<Api>,
    f: F,
}

impl<Req, M, F, Fut> tonic::server::ServerStreamingService<Req> for StreamOnce<F>
where
    F: Fn(Rc<Api>, Req) -> Fut,
    Fut: Future<Output = Result<ResponseStream<M>, Status>> + 'static,
    M: Send + 'static,
{
    type Response = M;
    type ResponseStream = ResponseStream<M>;
    type Future = Pin<Box<dyn Future<Output = Result<tonic::Response<ResponseStream<M>>, Status>>>>;

    fn call(&mut self, request: tonic::Request<Req>) -> Self::Future {
        let fut = (self.f)(self.api.clone(), request.into_inner());
        Box::pin(async move { fut.await.map(tonic::Response::new) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_limit_is_grpc_gos_resource_exhausted() {
        let tonic_says = Status::out_of_range(
            "Error, decoded message length too large: found 3145739 bytes, the limit is: 2621440 bytes",
        );
        let s = grpc_go_status(tonic_says.clone());
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            s.message(),
            "grpc: received message larger than max (3145739 vs. 2621440)"
        );
        let resp = over_limit_as_grpc_go(tonic_says.into_http());
        let got = resp.extensions().get::<Status>().unwrap();
        assert_eq!(got.code(), tonic::Code::ResourceExhausted);
        assert_eq!(resp.headers()["grpc-status"], "8");
        // etcd's own OutOfRange errors keep their code and text.
        let compacted =
            Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert_eq!(
            grpc_go_status(compacted.clone()).message(),
            compacted.message()
        );
    }

    #[test]
    fn paths_name_their_methods() {
        assert_eq!(
            Method::from_path("/etcdserverpb.KV/Range"),
            Some(Method::Range)
        );
        assert_eq!(
            Method::from_path("/etcdserverpb.Maintenance/HashKV"),
            Some(Method::HashKv)
        );
        assert_eq!(Method::from_path("/etcdserverpb.KV/Nope"), None);
    }
}
