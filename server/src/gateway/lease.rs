//! etcdserverpb.Lease over the native protocol: each RPC converts the
//! proto message, calls the member (leases live in `node::lease`), and
//! converts the answer back. A keep-alive stream answers its requests in
//! order, one native keep-alive per request.

use std::pin::Pin;
use std::sync::Arc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::convert::header;
use super::pool::NativePool;

pub struct LeaseService {
    pool: Arc<NativePool>,
    /// Answers buffered per keep-alive stream.
    stream_buffer: usize,
}

impl LeaseService {
    pub fn new(pool: Arc<NativePool>, stream_buffer: usize) -> Self {
        LeaseService {
            pool,
            stream_buffer: stream_buffer.max(1),
        }
    }
}

type KeepAliveStream =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::lease_server::Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let r = request.into_inner();
        let req = w::LeaseGrantRequest {
            ttl: r.ttl,
            id: r.id,
        };
        let resp = self
            .pool
            .call(|c| async move { c.lease_grant(req).await })
            .await?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: header(resp.header),
            id: resp.id,
            ttl: resp.ttl,
            error: resp.error,
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let req = w::LeaseRevokeRequest {
            id: request.into_inner().id,
        };
        let resp = self
            .pool
            .call(|c| async move { c.lease_revoke(req).await })
            .await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: header(resp.header),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(self.stream_buffer);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            while let Some(next) = inbound.next().await {
                let answer = match next {
                    Ok(r) => {
                        let req = w::LeaseKeepAliveRequest { id: r.id };
                        pool.call(|c| async move { c.lease_keep_alive(req).await })
                            .await
                            .map(|resp| pb::LeaseKeepAliveResponse {
                                header: header(resp.header),
                                id: resp.id,
                                ttl: resp.ttl,
                            })
                    }
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let r = request.into_inner();
        let req = w::LeaseTimeToLiveRequest {
            id: r.id,
            keys: r.keys,
        };
        let resp = self
            .pool
            .call(|c| async move { c.lease_time_to_live(req).await })
            .await?;
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: header(resp.header),
            id: resp.id,
            ttl: resp.ttl,
            granted_ttl: resp.granted_ttl,
            keys: resp.keys.into_iter().map(Into::into).collect(),
        }))
    }

    async fn lease_leases(
        &self,
        _request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let resp = self
            .pool
            .call(|c| async move { c.lease_leases(w::LeaseLeasesRequest {}).await })
            .await?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: header(resp.header),
            leases: resp
                .leases
                .into_iter()
                .map(|l| pb::LeaseStatus { id: l.id })
                .collect(),
        }))
    }
}
