//! lease-keepalive: one lease per client, keep-alive round trips on that
//! client's LeaseKeepAlive stream.

use super::{Outcome, schedule};
use crate::cli::LoadArgs;
use crate::driver::{Worker, drive};
use crate::error::{BenchError, OpError};
use crate::target::{Target, native_kind};
use corekv_wire::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Outgoing keep-alive queue per client (one request in flight at a time).
const KEEPALIVE_QUEUE: usize = 2;

struct GrpcKeepAlive {
    id: i64,
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    inbound: Streaming<LeaseKeepAliveResponse>,
}

impl Worker for GrpcKeepAlive {
    async fn run_one(&mut self, _op: u64, _intended: Instant) -> Result<usize, OpError> {
        self.tx
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| OpError::new("keep-alive stream closed"))?;
        match self.inbound.message().await? {
            Some(r) if r.ttl > 0 => Ok(0),
            Some(_) => Err(OpError::new("lease not found (TTL 0)")),
            None => Err(OpError::new("keep-alive stream closed by server")),
        }
    }
}

/// The native protocol has no keep-alive stream: each keep-alive is one
/// pipelined request on the shared connection.
struct NativeKeepAlive {
    id: i64,
    client: corekv_wire::Client,
}

impl Worker for NativeKeepAlive {
    async fn run_one(&mut self, _op: u64, _intended: Instant) -> Result<usize, OpError> {
        let r = self
            .client
            .lease_keep_alive(corekv_wire::LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|e| native_kind(&e))?;
        if r.ttl > 0 {
            Ok(0)
        } else {
            Err(OpError::new("lease not found (TTL 0)"))
        }
    }
}

pub async fn keepalive(
    target: &Target,
    clients: usize,
    ttl: i64,
    load: &LoadArgs,
) -> Result<Outcome, BenchError> {
    if ttl <= 0 {
        return Err(BenchError::InvalidArgument("--ttl must be > 0".into()));
    }
    let sched = schedule(load)?;
    match target {
        Target::Grpc(conns) => keepalive_grpc(conns, clients, ttl, sched).await,
        Target::Native(n) => {
            let mut workers = Vec::with_capacity(clients);
            for i in 0..clients {
                let client = n.client(i);
                let grant = client
                    .lease_grant(corekv_wire::LeaseGrantRequest { ttl, id: 0 })
                    .await
                    .map_err(|e| BenchError::Native(format!("LeaseGrant: {e}")))?;
                workers.push(NativeKeepAlive {
                    id: grant.id,
                    client,
                });
            }
            let ids: Vec<(i64, corekv_wire::Client)> =
                workers.iter().map(|w| (w.id, w.client.clone())).collect();
            let r = drive(workers, &["keepalive"], sched, "lease-keepalive").await;
            for (id, c) in ids {
                let _ = c.lease_revoke(corekv_wire::LeaseRevokeRequest { id }).await;
            }
            Ok(Outcome::new(r.recorder, r.elapsed))
        }
    }
}

async fn keepalive_grpc(
    conns: &crate::grpc::Conns,
    clients: usize,
    ttl: i64,
    sched: crate::driver::Schedule,
) -> Result<Outcome, BenchError> {
    let mut workers = Vec::with_capacity(clients);
    for i in 0..clients {
        let mut lease = conns.lease(i);
        let grant = lease
            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
            .await
            .map_err(|s| BenchError::setup("LeaseGrant", s))?
            .into_inner();
        if !grant.error.is_empty() {
            return Err(BenchError::Protocol {
                operation: "LeaseGrant",
                detail: grant.error,
            });
        }
        let (tx, rx) = mpsc::channel(KEEPALIVE_QUEUE);
        // Queue one keep-alive before opening the call: grpc-go servers send
        // response headers only with the first message.
        tx.send(LeaseKeepAliveRequest { id: grant.id })
            .await
            .map_err(|_| BenchError::Protocol {
                operation: "LeaseKeepAlive",
                detail: "request queue closed".into(),
            })?;
        let mut inbound = lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await
            .map_err(|s| BenchError::setup("LeaseKeepAlive", s))?
            .into_inner();
        // The warm-up answer is not measured.
        inbound
            .message()
            .await
            .map_err(|s| BenchError::setup("LeaseKeepAlive", s))?;
        workers.push(GrpcKeepAlive {
            id: grant.id,
            tx,
            inbound,
        });
    }
    let ids: Vec<i64> = workers.iter().map(|w| w.id).collect();
    let r = drive(workers, &["keepalive"], sched, "lease-keepalive").await;
    // Leave no leases behind; a failed revoke only means it expires later.
    let mut lease = conns.lease(0);
    for id in ids {
        let _ = lease.lease_revoke(LeaseRevokeRequest { id }).await;
    }
    Ok(Outcome::new(r.recorder, r.elapsed))
}
