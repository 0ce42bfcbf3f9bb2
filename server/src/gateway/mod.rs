//! The etcd v3 gRPC gateway: etcd's `etcdserverpb` services (KV, Watch,
//! Maintenance, Cluster, Lease, Auth) plus `grpc.health.v1.Health`, served by
//! translating every call into corekv's native protocol, and etcd's plain
//! HTTP endpoints (`/health`, `/readyz`, `/livez`, `/metrics`, `/version`) on
//! the same port, like etcd's client URL.
//!
//! The gateway runs on its own thread with its own tokio runtime and talks to
//! the member through `corekv_wire::Client` connections to the member's
//! native address: a round-robin pool for unary calls, and one dedicated
//! connection per gRPC Watch stream (a slow watch consumer pauses only its
//! own native connection; see `watch`). See docs/gateway.md for the mapping
//! and for what is absent.

mod auth;
mod cluster;
mod convert;
mod http_routes;
mod kv;
mod lease;
mod maintenance;
mod pool;
mod watch;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use corekv_wire::limits::{DEFAULT_FRAME_HEADROOM_BYTES, DEFAULT_MAX_REQUEST_BYTES};
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::{ClientOptions, WireLimits};
use futures::StreamExt;

pub use crate::http::HealthProbe;
pub use pool::NativePool;

/// Every bound and knob of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// etcd's `--max-request-bytes`: a request larger than this is answered
    /// "etcdserver: request is too large" (by the native server).
    pub max_request_bytes: usize,
    /// gRPC's receive limit is `max_request_bytes + grpc_headroom_bytes`
    /// (etcd: 512 KiB); a larger message is refused by gRPC itself.
    pub grpc_headroom_bytes: usize,
    /// etcd's `--max-txn-ops`, passed to the native client's limits.
    pub max_txn_ops: usize,
    /// Tokio worker threads of the gateway's runtime.
    pub worker_threads: usize,
    /// Native connections in the unary round-robin pool.
    pub native_connections: usize,
    /// Deadline of one native request (and of a stream's first frame).
    pub request_timeout: Duration,
    /// Deadline for connecting to the native address.
    pub dial_timeout: Duration,
    /// Native frames buffered per watch or snapshot stream.
    pub native_stream_buffer_frames: usize,
    /// Responses queued towards one gRPC Watch or Snapshot client.
    pub grpc_stream_buffer_responses: usize,
    /// Watches one gRPC Watch stream may hold at once.
    pub max_watches_per_stream: usize,
    /// Watch creates, cancels and progress requests of one stream awaiting
    /// the native server; more are not read from the client until one ends.
    pub max_pending_watch_control: usize,
    /// HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            grpc_headroom_bytes: DEFAULT_FRAME_HEADROOM_BYTES,
            max_txn_ops: corekv_wire::limits::DEFAULT_MAX_TXN_OPS,
            worker_threads: 1,
            native_connections: std::thread::available_parallelism().map_or(1, |n| n.get()),
            request_timeout: Duration::from_secs(10),
            dial_timeout: Duration::from_secs(2),
            native_stream_buffer_frames: 256,
            grpc_stream_buffer_responses: 128,
            max_watches_per_stream: 10_000,
            max_pending_watch_control: 64,
            max_concurrent_streams: 1024,
        }
    }
}

impl GatewayOptions {
    /// gRPC receive limit (etcd: max-request-bytes + 512 KiB).
    pub fn grpc_max_recv_bytes(&self) -> usize {
        self.max_request_bytes
            .saturating_add(self.grpc_headroom_bytes)
    }

    /// Options of every native client the gateway opens.
    pub fn client_options(&self) -> ClientOptions {
        let limits = WireLimits {
            max_request_bytes: self.max_request_bytes,
            max_frame_bytes: self.grpc_max_recv_bytes(),
            max_txn_ops: self.max_txn_ops,
            ..WireLimits::default()
        };
        ClientOptions {
            dial_timeout: self.dial_timeout,
            request_timeout: self.request_timeout,
            stream_buffer_frames: self.native_stream_buffer_frames,
            limits,
            ..ClientOptions::default()
        }
    }
}

/// The address the gateway dials for a native listener bound to `listen`:
/// an unspecified listen IP (0.0.0.0, ::) is reached over loopback.
pub fn native_connect_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Binds `addr`, starts the gateway on its own thread (thread
/// `corekv-gateway`, a tokio runtime with `opts.worker_threads` workers)
/// and returns the bound address. Native connections are opened lazily, so
/// the member's native listener may come up after this returns.
pub fn spawn(
    addr: SocketAddr,
    native_addr: SocketAddr,
    health: HealthProbe,
    opts: GatewayOptions,
) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let bound = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.worker_threads.max(1))
        .thread_name("corekv-gateway-rt")
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("corekv-gateway".into())
        .spawn(move || {
            runtime.block_on(async move {
                if let Err(e) = serve(listener, native_addr, health, opts).await {
                    tracing::error!(error = %e, "gateway stopped");
                }
            });
        })?;
    Ok(bound)
}

async fn serve(
    listener: std::net::TcpListener,
    native_addr: SocketAddr,
    health: HealthProbe,
    opts: GatewayOptions,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let pool = Arc::new(NativePool::new(
        native_addr.to_string(),
        opts.client_options(),
        opts.native_connections,
    ));
    let recv_limit = opts.grpc_max_recv_bytes();
    let (reporter, health_service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    let mut builder = tonic::service::Routes::builder();
    builder
        .add_service(
            pb::kv_server::KvServer::new(kv::KvService::new(pool.clone()))
                .max_decoding_message_size(recv_limit),
        )
        .add_service(
            pb::watch_server::WatchServer::new(watch::WatchService::new(
                pool.clone(),
                opts.clone(),
            ))
            .max_decoding_message_size(recv_limit),
        )
        .add_service(
            pb::maintenance_server::MaintenanceServer::new(maintenance::MaintenanceService::new(
                pool.clone(),
                opts.grpc_stream_buffer_responses,
            ))
            .max_decoding_message_size(recv_limit),
        )
        .add_service(
            pb::cluster_server::ClusterServer::new(cluster::ClusterService::new(pool.clone()))
                .max_decoding_message_size(recv_limit),
        )
        .add_service(
            pb::lease_server::LeaseServer::new(lease::LeaseService)
                .max_decoding_message_size(recv_limit),
        )
        .add_service(
            pb::auth_server::AuthServer::new(auth::AuthService::new(pool.clone()))
                .max_decoding_message_size(recv_limit),
        )
        .add_service(health_service);
    let routes = builder.routes();
    let router = http_routes::add(routes.into_axum_router(), health);

    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        conn.set_nodelay(true)?;
        Ok::<_, std::io::Error>(conn)
    });
    tonic::transport::Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(opts.max_concurrent_streams)
        .add_routes(tonic::service::Routes::from(router))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_native_listen_is_dialled_on_loopback() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(native_connect_addr(a("0.0.0.0:2378")), a("127.0.0.1:2378"));
        assert_eq!(native_connect_addr(a("[::]:2378")), a("[::1]:2378"));
        assert_eq!(native_connect_addr(a("10.1.2.3:9")), a("10.1.2.3:9"));
    }

    #[test]
    fn grpc_limit_is_request_limit_plus_headroom() {
        let o = GatewayOptions::default();
        assert_eq!(o.grpc_max_recv_bytes(), 1_572_864 + 512 * 1024);
        let c = o.client_options();
        assert_eq!(c.limits.max_request_bytes, 1_572_864);
        assert_eq!(c.limits.max_frame_bytes, o.grpc_max_recv_bytes());
    }
}
