//! etcd's HTTP/JSON gateway (grpc-gateway in etcd 3.4) on the client URL:
//! `POST /v3/<service>/<call>` (and the `/v3beta/` alias) with the request
//! message as JSON, answered with the response message as JSON. Each route
//! calls the same gRPC adapter as the gRPC service, so behaviour and errors
//! are the gRPC ones.
//!
//! JSON follows grpc-gateway's `JSONPb{OrigName: true}`: proto field names,
//! 64-bit integers as strings, bytes as base64, enums by name, fields at
//! their default value left out; the mapping is driven by the compiled
//! descriptors (`corekv_wire::proto::FILE_DESCRIPTOR_SET`), so adding a route
//! is one line in `json_routes!` plus its arm in `dispatch`.
//!
//! Errors: `{"error": message, "code": grpc code, "message": message}` with
//! grpc-gateway's HTTP status for the code. `/v3/watch` streams one
//! `{"result": WatchResponse}` object per line.

use std::convert::Infallible;
use std::future::Future;
use std::rc::Rc;
use std::sync::LazyLock;

use bytes::Bytes;
use corekv_wire::proto::etcdserverpb as pb;
use http::StatusCode;
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use prost::Message;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::{Code, Status};

use super::http_routes::json as json_response;
use super::{GatewayOptions, auth, cluster, kv, lease, maintenance, watch};
use crate::node::route::Api;

macro_rules! json_routes {
    ($($variant:ident => $path:literal,)*) => {
        /// Every JSON route, by its path after `/v3/`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum JsonRoute { $($variant,)* }

        impl JsonRoute {
            pub fn from_path(path: &str) -> Option<JsonRoute> {
                let rest = path
                    .strip_prefix("/v3/")
                    .or_else(|| path.strip_prefix("/v3beta/"))?;
                match rest {
                    $($path => Some(JsonRoute::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

json_routes! {
    Range => "kv/range",
    Put => "kv/put",
    DeleteRange => "kv/deleterange",
    Txn => "kv/txn",
    Compaction => "kv/compaction",
    Watch => "watch",
    MaintenanceStatus => "maintenance/status",
    MemberList => "cluster/member/list",
    MemberAdd => "cluster/member/add",
    MemberRemove => "cluster/member/remove",
    MemberUpdate => "cluster/member/update",
    MemberPromote => "cluster/member/promote",
    LeaseGrant => "lease/grant",
    LeaseRevoke => "lease/revoke",
    LeaseRevokeKv => "kv/lease/revoke",
    LeaseTimeToLive => "lease/timetolive",
    LeaseTimeToLiveKv => "kv/lease/timetolive",
    LeaseLeases => "lease/leases",
    LeaseLeasesKv => "kv/lease/leases",
    LeaseKeepAlive => "lease/keepalive",
    AuthEnable => "auth/enable",
    AuthDisable => "auth/disable",
    Authenticate => "auth/authenticate",
    UserAdd => "auth/user/add",
    UserGet => "auth/user/get",
    UserList => "auth/user/list",
    UserDelete => "auth/user/delete",
    UserChangePassword => "auth/user/changepw",
    UserGrantRole => "auth/user/grant",
    UserRevokeRole => "auth/user/revoke",
    RoleAdd => "auth/role/add",
    RoleGet => "auth/role/get",
    RoleList => "auth/role/list",
    RoleDelete => "auth/role/delete",
    RoleGrantPermission => "auth/role/grant",
    RoleRevokePermission => "auth/role/revoke",
}

pub async fn dispatch(
    api: Rc<Api>,
    opts: &GatewayOptions,
    route: JsonRoute,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    // grpc-gateway forwards an `Authorization` header as the metadata
    // etcd reads the token from.
    let api = super::grpc::for_headers(&api, req.headers());
    let call = JsonCall {
        api,
        limit: opts.grpc_max_recv_bytes(),
        req,
    };
    use JsonRoute as J;
    match route {
        J::Range => call.unary("RangeRequest", "RangeResponse", kv::range).await,
        J::Put => call.unary("PutRequest", "PutResponse", kv::put).await,
        J::DeleteRange => {
            call.unary(
                "DeleteRangeRequest",
                "DeleteRangeResponse",
                kv::delete_range,
            )
            .await
        }
        J::Txn => call.unary("TxnRequest", "TxnResponse", kv::txn).await,
        J::Compaction => {
            call.unary("CompactionRequest", "CompactionResponse", kv::compact)
                .await
        }
        J::Watch => watch_stream(call, opts.grpc_stream_buffer_responses),
        J::MaintenanceStatus => {
            call.unary("StatusRequest", "StatusResponse", maintenance::status)
                .await
        }
        J::LeaseGrant => {
            call.unary("LeaseGrantRequest", "LeaseGrantResponse", lease::grant)
                .await
        }
        J::LeaseRevoke | J::LeaseRevokeKv => {
            call.unary("LeaseRevokeRequest", "LeaseRevokeResponse", lease::revoke)
                .await
        }
        J::LeaseTimeToLive | J::LeaseTimeToLiveKv => {
            call.unary(
                "LeaseTimeToLiveRequest",
                "LeaseTimeToLiveResponse",
                lease::time_to_live,
            )
            .await
        }
        J::LeaseLeases | J::LeaseLeasesKv => {
            call.unary("LeaseLeasesRequest", "LeaseLeasesResponse", lease::leases)
                .await
        }
        J::MemberList => {
            call.unary(
                "MemberListRequest",
                "MemberListResponse",
                cluster::member_list,
            )
            .await
        }
        J::LeaseKeepAlive => keep_alive_stream(call, opts.grpc_stream_buffer_responses),
        J::AuthEnable => {
            call.unary("AuthEnableRequest", "AuthEnableResponse", auth::auth_enable)
                .await
        }
        J::AuthDisable => {
            call.unary(
                "AuthDisableRequest",
                "AuthDisableResponse",
                auth::auth_disable,
            )
            .await
        }
        J::Authenticate => {
            call.unary(
                "AuthenticateRequest",
                "AuthenticateResponse",
                auth::authenticate,
            )
            .await
        }
        J::UserAdd => {
            call.unary("AuthUserAddRequest", "AuthUserAddResponse", auth::user_add)
                .await
        }
        J::UserGet => {
            call.unary("AuthUserGetRequest", "AuthUserGetResponse", auth::user_get)
                .await
        }
        J::UserList => {
            call.unary(
                "AuthUserListRequest",
                "AuthUserListResponse",
                auth::user_list,
            )
            .await
        }
        J::UserDelete => {
            call.unary(
                "AuthUserDeleteRequest",
                "AuthUserDeleteResponse",
                auth::user_delete,
            )
            .await
        }
        J::UserChangePassword => {
            call.unary(
                "AuthUserChangePasswordRequest",
                "AuthUserChangePasswordResponse",
                auth::user_change_password,
            )
            .await
        }
        J::UserGrantRole => {
            call.unary(
                "AuthUserGrantRoleRequest",
                "AuthUserGrantRoleResponse",
                auth::user_grant_role,
            )
            .await
        }
        J::UserRevokeRole => {
            call.unary(
                "AuthUserRevokeRoleRequest",
                "AuthUserRevokeRoleResponse",
                auth::user_revoke_role,
            )
            .await
        }
        J::RoleAdd => {
            call.unary("AuthRoleAddRequest", "AuthRoleAddResponse", auth::role_add)
                .await
        }
        J::RoleGet => {
            call.unary("AuthRoleGetRequest", "AuthRoleGetResponse", auth::role_get)
                .await
        }
        J::RoleList => {
            call.unary(
                "AuthRoleListRequest",
                "AuthRoleListResponse",
                auth::role_list,
            )
            .await
        }
        J::RoleDelete => {
            call.unary(
                "AuthRoleDeleteRequest",
                "AuthRoleDeleteResponse",
                auth::role_delete,
            )
            .await
        }
        J::RoleGrantPermission => {
            call.unary(
                "AuthRoleGrantPermissionRequest",
                "AuthRoleGrantPermissionResponse",
                auth::role_grant_permission,
            )
            .await
        }
        J::RoleRevokePermission => {
            call.unary(
                "AuthRoleRevokePermissionRequest",
                "AuthRoleRevokePermissionResponse",
                auth::role_revoke_permission,
            )
            .await
        }
        J::MemberAdd => {
            call.unary("MemberAddRequest", "MemberAddResponse", cluster::member_add)
                .await
        }
        J::MemberRemove => {
            call.unary(
                "MemberRemoveRequest",
                "MemberRemoveResponse",
                cluster::member_remove,
            )
            .await
        }
        J::MemberUpdate => {
            call.unary(
                "MemberUpdateRequest",
                "MemberUpdateResponse",
                cluster::member_update,
            )
            .await
        }
        J::MemberPromote => {
            call.unary(
                "MemberPromoteRequest",
                "MemberPromoteResponse",
                cluster::member_promote,
            )
            .await
        }
    }
}

struct JsonCall {
    api: Rc<Api>,
    limit: usize,
    req: http::Request<Incoming>,
}

impl JsonCall {
    /// Decodes the JSON body as `etcdserverpb.<req_name>`, runs the gRPC
    /// adapter `f`, encodes its answer as `etcdserverpb.<resp_name>`.
    async fn unary<Req, Resp, F, Fut>(
        self,
        req_name: &str,
        resp_name: &str,
        f: F,
    ) -> http::Response<Body>
    where
        Req: Message + Default,
        Resp: Message,
        F: FnOnce(Rc<Api>, Req) -> Fut,
        Fut: Future<Output = Result<Resp, Status>>,
    {
        let body = match Limited::new(self.req.into_body(), self.limit)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return error(&Status::invalid_argument(e.to_string())),
        };
        let msg: Req = match from_json(req_name, &body) {
            Ok(m) => m,
            Err(e) => return error(&Status::invalid_argument(e)),
        };
        match f(self.api, msg).await {
            Ok(resp) => match to_json(resp_name, &resp) {
                Ok(text) => json_response(StatusCode::OK, text),
                Err(e) => error(&Status::internal(e)),
            },
            Err(s) => error(&s),
        }
    }
}

/// grpc-gateway's JSON options (`JSONPb{OrigName: true}`, no defaults).
const SERIALIZE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .stringify_64_bit_integers(true)
    .skip_default_fields(true);

/// The compiled descriptors. Decoding can only fail if the build embedded a
/// corrupt set; every route then answers that error.
static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(corekv_wire::proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| format!("corekv: embedded protobuf descriptors: {e}"))
});

fn descriptor(name: &str) -> Result<prost_reflect::MessageDescriptor, String> {
    let pool = POOL.as_ref().map_err(Clone::clone)?;
    let full = format!("etcdserverpb.{name}");
    pool.get_message_by_name(&full)
        .ok_or_else(|| format!("corekv: no descriptor for {full}"))
}

/// Proto3 JSON -> message (an empty body is the empty message); an
/// unknown field is an error.
pub fn from_json<M: Message + Default>(name: &str, body: &[u8]) -> Result<M, String> {
    from_json_with(name, body, true)
}

/// `from_json`, ignoring unknown fields when `deny_unknown` is false (etcd
/// 3.4's gateway does so for the requests of a streamed call).
fn from_json_with<M: Message + Default>(
    name: &str,
    body: &[u8],
    deny_unknown: bool,
) -> Result<M, String> {
    let desc = descriptor(name)?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let options = DeserializeOptions::new().deny_unknown_fields(deny_unknown);
    let dynamic = DynamicMessage::deserialize_with_options(desc, &mut de, &options)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| e.to_string())
}

/// Message -> proto3 JSON with grpc-gateway's options.
pub fn to_json<M: Message>(name: &str, msg: &M) -> Result<String, String> {
    let desc = descriptor(name)?;
    let dynamic =
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    dynamic
        .serialize_with_options(&mut ser, &SERIALIZE)
        .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// grpc-gateway's HTTP status for a gRPC code (`runtime.HTTPStatusFromCode`).
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        // etcd 3.4.23 answers 412 (e.g. AuthEnable without a root user).
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn error_body(s: &Status) -> String {
    serde_json::json!({
        "error": s.message(),
        "code": s.code() as i32,
        "message": s.message(),
    })
    .to_string()
}

fn error(s: &Status) -> http::Response<Body> {
    json_response(http_status(s.code()), error_body(s))
}

/// `/v3/watch`: JSON `WatchRequest`s from the body (one or more objects),
/// one `{"result": WatchResponse}` line per response, until the client
/// closes the connection. The stream is a watch session on the shard's hub,
/// as a gRPC Watch stream is.
fn watch_stream(call: JsonCall, buffer: usize) -> http::Response<Body> {
    let buffer = buffer.max(1);
    let (in_tx, in_rx) = mpsc::channel(buffer);
    let (out_tx, out_rx) = watch::out_channel(buffer);
    glommio::spawn_local(read_requests::<pb::WatchRequest>(
        call.req.into_body(),
        call.limit,
        "WatchRequest",
        in_tx,
    ))
    .detach();
    watch::spawn_session(call.api, ReceiverStream::new(in_rx), out_tx);
    response_lines("WatchResponse", out_rx, buffer)
}

/// `/v3/lease/keepalive`: JSON `LeaseKeepAliveRequest`s from the body, one
/// `{"result": LeaseKeepAliveResponse}` line per request, in order, as
/// etcd's grpc-gateway streams the bidi call; the response ends when the
/// body does (etcd's server ends the stream at the client's end of
/// requests) or at the first error.
fn keep_alive_stream(call: JsonCall, buffer: usize) -> http::Response<Body> {
    let buffer = buffer.max(1);
    let (in_tx, in_rx) = mpsc::channel(buffer);
    let (out_tx, out_rx) = mpsc::channel(buffer);
    glommio::spawn_local(read_requests::<pb::LeaseKeepAliveRequest>(
        call.req.into_body(),
        call.limit,
        "LeaseKeepAliveRequest",
        in_tx,
    ))
    .detach();
    glommio::spawn_local(lease::session(call.api, ReceiverStream::new(in_rx), out_tx)).detach();
    response_lines(
        "LeaseKeepAliveResponse",
        ReceiverStream::new(out_rx),
        buffer,
    )
}

/// A streamed response body: one `{"result": <resp_name>}` line per
/// message, `{"error": ...}` for a status, until `out` ends or the client
/// goes (dropping `out` then ends the producer).
fn response_lines<M, S>(resp_name: &'static str, mut out: S, buffer: usize) -> http::Response<Body>
where
    M: Message,
    S: tokio_stream::Stream<Item = Result<M, Status>> + Unpin + 'static,
{
    let (body_tx, body_rx) = mpsc::channel::<Bytes>(buffer);
    glommio::spawn_local(async move {
        while let Some(item) = out.next().await {
            let line = match item {
                Ok(resp) => match to_json(resp_name, &resp) {
                    Ok(text) => format!("{{\"result\":{text}}}\n"),
                    Err(e) => format!("{{\"error\":{}}}\n", error_body(&Status::internal(e))),
                },
                Err(s) => format!("{{\"error\":{}}}\n", error_body(&s)),
            };
            if body_tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
    })
    .detach();
    let frames = ReceiverStream::new(body_rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut resp = http::Response::new(Body::new(StreamBody::new(frames)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Decodes concatenated JSON `etcdserverpb.<name>` objects as the body
/// arrives (unknown fields ignored, as etcd's gateway does for streamed
/// requests); a bad one ends the stream with its error. At most `limit` bytes
/// of one incomplete object are buffered.
async fn read_requests<M: Message + Default>(
    mut body: Incoming,
    limit: usize,
    name: &'static str,
    tx: mpsc::Sender<Result<M, Status>>,
) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        loop {
            let mut values =
                serde_json::Deserializer::from_slice(&buf).into_iter::<serde_json::Value>();
            let next = values.next();
            let consumed = values.byte_offset();
            match next {
                Some(Ok(value)) => {
                    let text = value.to_string();
                    let parsed = from_json_with::<M>(name, text.as_bytes(), false);
                    let item = parsed.map_err(Status::invalid_argument);
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        return;
                    }
                    buf.drain(..consumed);
                }
                Some(Err(e)) if e.is_eof() => {
                    if buf.len() > limit {
                        let _ = tx
                            .send(Err(Status::invalid_argument(
                                "etcdserver: request is too large",
                            )))
                            .await;
                        return;
                    }
                    break;
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                    return;
                }
                None => {
                    buf.clear();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_grpc_gateways() {
        let r = pb::RangeResponse {
            header: Some(pb::ResponseHeader {
                cluster_id: u64::MAX,
                revision: 7,
                ..Default::default()
            }),
            kvs: vec![corekv_wire::proto::mvccpb::KeyValue {
                key: Bytes::from_static(b"foo"),
                value: Bytes::from_static(b"bar"),
                create_revision: 2,
                mod_revision: 7,
                version: 3,
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        let v: serde_json::Value =
            serde_json::from_str(&to_json("RangeResponse", &r).unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "header": {"cluster_id": "18446744073709551615", "revision": "7"},
                "kvs": [{"key": "Zm9v", "value": "YmFy", "create_revision": "2",
                         "mod_revision": "7", "version": "3"}],
                "count": "1"
            })
        );
        let req: pb::RangeRequest = from_json(
            "RangeRequest",
            br#"{"key":"Zm9v","range_end":"Zm9w","limit":"5","sort_order":"DESCEND"}"#,
        )
        .unwrap();
        assert_eq!(&req.key[..], b"foo");
        assert_eq!(req.limit, 5);
        assert_eq!(req.sort_order, 2);
        let empty: pb::StatusRequest = from_json("StatusRequest", b"").unwrap();
        assert_eq!(empty, pb::StatusRequest {});
        assert!(from_json::<pb::RangeRequest>("RangeRequest", b"{\"nope\":1}").is_err());
    }

    #[test]
    fn routes_and_the_v3beta_alias() {
        assert_eq!(JsonRoute::from_path("/v3/kv/range"), Some(JsonRoute::Range));
        assert_eq!(
            JsonRoute::from_path("/v3beta/cluster/member/list"),
            Some(JsonRoute::MemberList)
        );
        assert_eq!(
            JsonRoute::from_path("/v3/auth/user/changepw"),
            Some(JsonRoute::UserChangePassword)
        );
        assert_eq!(
            JsonRoute::from_path("/v3/lease/keepalive"),
            Some(JsonRoute::LeaseKeepAlive)
        );
        // etcd 3.4 serves no AuthStatus route.
        assert_eq!(JsonRoute::from_path("/v3/auth/status"), None);
        assert_eq!(JsonRoute::from_path("/v3/kv/nope"), None);
        assert_eq!(JsonRoute::from_path("/v2/keys"), None);
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
