//! etcd's client API on the client URL (`--listen-client-urls`), served by
//! every serve shard: the v3 gRPC services (KV, Watch, Maintenance, Cluster,
//! Lease, Auth, `grpc.health.v1.Health`), etcd's HTTP/JSON gateway
//! (`POST /v3/...`, `json`) and plain HTTP (`/health`, `/readyz`, `/livez`,
//! `/metrics`, `/version`) on one port, HTTP/1.1 and HTTP/2 (h2c) alike.
//!
//! Each shard binds the client address with SO_REUSEPORT (as it does the
//! native one) and runs hyper on glommio (`rt`): a connection, its HTTP/2
//! streams and the request layer they call (`node::route`) live on the shard
//! that accepted it. gRPC calls are decoded with tonic's `Grpc` and the prost
//! codec (no `Send` bound on handler futures), turned into the native
//! request (`convert`), validated and routed by the request layer; nothing
//! goes through a socket or another runtime. Watch streams attach to the
//! shard's watch hub directly (`watch`). See docs/gateway.md.

mod auth;
mod cluster;
mod convert;
mod coord;
mod grpc;
mod http_routes;
mod json;
mod kv;
mod lease;
mod maintenance;
mod rt;
mod watch;
mod watch_codec;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;

use corekv_wire::limits::DEFAULT_FRAME_HEADROOM_BYTES;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame};
use glommio::net::TcpListener;
use hyper::body::Incoming;
use tonic::Status;

use crate::config::Config;
use crate::node::route::{Api, Caller};
use crate::node::serve::accept_loop;

/// Every bound of the client-URL front-end.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// etcd's `--max-request-bytes`: a larger request is answered
    /// "etcdserver: request is too large" (by the request layer).
    pub max_request_bytes: usize,
    /// gRPC's receive limit is `max_request_bytes + grpc_headroom_bytes`
    /// (etcd: 512 KiB); a larger message is refused by gRPC itself.
    pub grpc_headroom_bytes: usize,
    /// Responses queued in the channel towards one gRPC stream's HTTP/2
    /// body (Watch, Snapshot); beyond it a watch stream's queue grows up to
    /// `--watch-max-pending-bytes`, then its watchers catch up from the
    /// store.
    pub grpc_stream_buffer_responses: usize,
    /// HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 flow-control windows. h2 answers a peer that has more small
    /// DATA frames buffered than a budget of half the connection window with
    /// GOAWAY ENHANCE_YOUR_CALM; a gRPC client sending a burst of small
    /// messages (thousands of watch creates on one stream) hit it with
    /// hyper's 1 MiB default. The connection window is large so the budget
    /// covers a full stream window of the smallest messages several times
    /// over; the stream window bounds what one stream may have buffered.
    pub h2_connection_window_bytes: u32,
    pub h2_stream_window_bytes: u32,
}

impl GatewayOptions {
    pub fn from_config(cfg: &Config) -> GatewayOptions {
        GatewayOptions {
            max_request_bytes: usize::try_from(cfg.max_request_bytes).unwrap_or(usize::MAX),
            grpc_headroom_bytes: DEFAULT_FRAME_HEADROOM_BYTES,
            grpc_stream_buffer_responses: 128,
            max_concurrent_streams: 1024,
            h2_connection_window_bytes: 16 * 1024 * 1024,
            h2_stream_window_bytes: 256 * 1024,
        }
    }

    /// gRPC receive limit (etcd: max-request-bytes + 512 KiB).
    pub fn grpc_max_recv_bytes(&self) -> usize {
        self.max_request_bytes
            .saturating_add(self.grpc_headroom_bytes)
    }
}

/// The one mapping of a request-layer error to gRPC: etcd's code and exact
/// message, which clients match on.
pub fn status(e: ApiError) -> Status {
    Status::new(e.grpc_code(), e.message())
}

/// One request through the shard's request layer: archived as the native
/// request (the Raft entry body of a write), validated, routed, answered.
async fn call(api: &Api, req: w::Request) -> Result<w::Response, Status> {
    let frame = OwnedFrame::encode_request(0, &req)
        .map_err(|e| Status::internal(format!("corekv: encoding {}: {e}", req.name())))?;
    api.call(frame).await.map_err(status)
}

/// Takes the expected variant out of a request-layer response.
macro_rules! expect_response {
    ($resp:expr, $variant:ident) => {
        match $resp {
            corekv_wire::messages::Response::$variant(r) => r,
            other => return Err($crate::gateway::unexpected(stringify!($variant), &other)),
        }
    };
}
pub(crate) use expect_response;

/// A response of another kind than the request's: a bug, never silent.
fn unexpected(operation: &str, got: &w::Response) -> Status {
    Status::internal(format!(
        "corekv: {operation} answered with a {} response",
        got.name()
    ))
}

/// Binds the client address on this shard (SO_REUSEPORT) and serves it.
pub fn listen(api: Rc<Api>, addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let opts = Rc::new(GatewayOptions::from_config(&api.shared.cfg));
    // TLS when the client URL is https:// (etcd's rule), with --cert-file.
    let tls = match api.shared.cfg.listen_client_urls.first() {
        Some(url) if url.starts_with("https://") => {
            Some(api.shared.client_tls.clone().ok_or_else(|| {
                std::io::Error::other(format!("{url}: https needs --cert-file and --key-file"))
            })?)
        }
        _ => None,
    };
    accept_loop(listener, api.clone(), "client URL", move |stream| {
        let (api, opts, tls) = (api.clone(), opts.clone(), tls.clone());
        async move {
            let Some(tls) = tls else {
                return serve_connection(api, opts, stream).await;
            };
            match futures_rustls::TlsAcceptor::from(tls).accept(stream).await {
                Ok(s) => {
                    // Present only when the verifier checked the chain.
                    let cn = s.get_ref().1.peer_certificates().and_then(|c| c.first());
                    let cn = cn.and_then(crate::tls::common_name);
                    let api = api.for_caller(Caller { token: None, cn });
                    serve_connection(api, opts, s).await
                }
                Err(e) => tracing::debug!(error = %e, "client URL TLS handshake failed"),
            }
        }
    });
    Ok(bound)
}

async fn serve_connection<S>(api: Rc<Api>, opts: Rc<GatewayOptions>, stream: S)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(rt::LocalExec);
    builder
        .http2()
        .max_concurrent_streams(opts.max_concurrent_streams)
        .initial_connection_window_size(opts.h2_connection_window_bytes)
        .initial_stream_window_size(opts.h2_stream_window_bytes);
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let (api, opts) = (api.clone(), opts.clone());
        async move { Ok::<_, Infallible>(handle(api, opts, req).await) }
    });
    if let Err(e) = builder.serve_connection(rt::Io(stream), service).await {
        tracing::debug!(error = %e, "client URL connection closed");
    }
}

/// gRPC by content type; POST /v3/... is the JSON gateway; the rest is
/// plain HTTP.
async fn handle(
    api: Rc<Api>,
    opts: Rc<GatewayOptions>,
    req: http::Request<Incoming>,
) -> http::Response<tonic::body::Body> {
    let is_grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        return grpc::dispatch(api, &opts, req).await;
    }
    match json::JsonRoute::from_path(req.uri().path()) {
        Some(route) if req.method() == http::Method::POST => {
            json::dispatch(api, &opts, route, req).await
        }
        _ => http_routes::dispatch(&api, req).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_keep_etcd_code_and_message() {
        let s = status(ApiError::Compacted);
        assert_eq!(s.code(), tonic::Code::OutOfRange);
        assert_eq!(
            s.message(),
            "etcdserver: mvcc: required revision has been compacted"
        );
        let s = status(ApiError::Timeout);
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(s.message(), "etcdserver: request timed out");
    }
}
