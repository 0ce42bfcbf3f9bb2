//! etcdserverpb.Lease: proto -> native request -> the shard's request layer
//! (leases live in `node::lease`). A keep-alive stream answers its requests
//! in order, one keep-alive through the layer per request.

use std::rc::Rc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use futures::StreamExt;
use hyper::body::Incoming;
use tokio::sync::{mpsc, oneshot};
use tonic::body::Body;
use tonic::{Status, Streaming};

use super::grpc::ResponseStream;
use super::{GatewayOptions, call, convert, expect_response};
use crate::node::route::Api;

pub async fn grant(
    api: Rc<Api>,
    r: pb::LeaseGrantRequest,
) -> Result<pb::LeaseGrantResponse, Status> {
    let req = w::Request::LeaseGrant(w::LeaseGrantRequest {
        ttl: r.ttl,
        id: r.id,
    });
    let resp = expect_response!(call(&api, req).await?, LeaseGrant);
    Ok(pb::LeaseGrantResponse {
        header: convert::header(resp.header),
        id: resp.id,
        ttl: resp.ttl,
        error: resp.error,
    })
}

pub async fn revoke(
    api: Rc<Api>,
    r: pb::LeaseRevokeRequest,
) -> Result<pb::LeaseRevokeResponse, Status> {
    let req = w::Request::LeaseRevoke(w::LeaseRevokeRequest { id: r.id });
    let resp = expect_response!(call(&api, req).await?, LeaseRevoke);
    Ok(pb::LeaseRevokeResponse {
        header: convert::header(resp.header),
    })
}

pub async fn time_to_live(
    api: Rc<Api>,
    r: pb::LeaseTimeToLiveRequest,
) -> Result<pb::LeaseTimeToLiveResponse, Status> {
    let req = w::Request::LeaseTimeToLive(w::LeaseTimeToLiveRequest {
        id: r.id,
        keys: r.keys,
    });
    let resp = expect_response!(call(&api, req).await?, LeaseTimeToLive);
    Ok(pb::LeaseTimeToLiveResponse {
        header: convert::header(resp.header),
        id: resp.id,
        ttl: resp.ttl,
        granted_ttl: resp.granted_ttl,
        keys: resp.keys.into_iter().map(Into::into).collect(),
    })
}

pub async fn leases(
    api: Rc<Api>,
    _r: pb::LeaseLeasesRequest,
) -> Result<pb::LeaseLeasesResponse, Status> {
    let req = w::Request::LeaseLeases(w::LeaseLeasesRequest {});
    let resp = expect_response!(call(&api, req).await?, LeaseLeases);
    Ok(pb::LeaseLeasesResponse {
        header: convert::header(resp.header),
        leases: resp
            .leases
            .into_iter()
            .map(|l| pb::LeaseStatus { id: l.id })
            .collect(),
    })
}

type Out = mpsc::Sender<Result<pb::LeaseKeepAliveResponse, Status>>;

/// The keep-alive bidi stream: requests answered in order; the stream ends
/// at the first error (as etcd's) or when the client goes.
pub async fn keep_alive(
    api: Rc<Api>,
    opts: &GatewayOptions,
    limit: usize,
    req: http::Request<Incoming>,
) -> http::Response<Body> {
    let (input_tx, mut input_rx) = oneshot::channel();
    let (out_tx, out_rx) = mpsc::channel(opts.grpc_stream_buffer_responses.max(1));
    let handoff = Handoff {
        input: Some(input_tx),
        output: Some(out_rx),
    };
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<
        pb::LeaseKeepAliveResponse,
        pb::LeaseKeepAliveRequest,
    >::default())
    .max_decoding_message_size(limit);
    let resp = grpc.streaming(handoff, req).await;
    if let Ok(input) = input_rx.try_recv() {
        glommio::spawn_local(session(api, input, out_tx)).detach();
    }
    resp
}

/// Answers the keep-alive requests of one stream (gRPC or the JSON
/// gateway's) in order.
pub async fn session<S>(api: Rc<Api>, mut input: S, out: Out)
where
    S: tokio_stream::Stream<Item = Result<pb::LeaseKeepAliveRequest, Status>> + Unpin,
{
    while let Some(next) = input.next().await {
        let r = match next {
            Ok(r) => r,
            // A message over the limit (or broken) ends the stream with
            // its status, as grpc-go's.
            Err(status) => {
                let _ = out.send(Err(super::grpc::grpc_go_status(status))).await;
                return;
            }
        };
        let req = w::Request::LeaseKeepAlive(w::LeaseKeepAliveRequest { id: r.id });
        let answer = match call(&api, req).await {
            Ok(w::Response::LeaseKeepAlive(k)) => Ok(pb::LeaseKeepAliveResponse {
                header: convert::header(k.header),
                id: k.id,
                ttl: k.ttl,
            }),
            Ok(other) => Err(super::unexpected("LeaseKeepAlive", &other)),
            Err(status) => Err(status),
        };
        let failed = answer.is_err();
        if out.send(answer).await.is_err() || failed {
            return;
        }
    }
}

/// tonic's streaming service must be `Send`: it hands the decoded request
/// stream to the session and returns the response channel.
struct Handoff {
    input: Option<oneshot::Sender<Streaming<pb::LeaseKeepAliveRequest>>>,
    output: Option<mpsc::Receiver<Result<pb::LeaseKeepAliveResponse, Status>>>,
}

impl tonic::server::StreamingService<pb::LeaseKeepAliveRequest> for Handoff {
    type Response = pb::LeaseKeepAliveResponse;
    type ResponseStream = ResponseStream<pb::LeaseKeepAliveResponse>;
    type Future = std::future::Ready<
        Result<tonic::Response<ResponseStream<pb::LeaseKeepAliveResponse>>, Status>,
    >;

    fn call(
        &mut self,
        request: tonic::Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Self::Future {
        let result = match (self.input.take(), self.output.take()) {
            (Some(input), Some(output)) => {
                let _ = input.send(request.into_inner());
                Ok(tonic::Response::new(ResponseStream::new(output)))
            }
            _ => Err(Status::internal(
                "corekv: keep-alive stream handed off twice",
            )),
        };
        std::future::ready(result)
    }
}
