//! `v3lockpb.Lock` and `v3electionpb.Election`: thin adapters over the
//! recipes in `crate::coord` (which run over the native protocol, as etcd's
//! servers run `clientv3/concurrency` over an in-process client).

use std::pin::Pin;
use std::sync::Arc;

use corekv_wire::proto::v3electionpb as epb;
use corekv_wire::proto::v3lockpb as lpb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert::{header, key_value};
use super::pool::{NativePool, status};
use crate::coord::{self, CoordError, election};

fn coord_status(addr: &str, e: CoordError) -> Status {
    match e {
        CoordError::Wire(w) => status(addr, w),
        CoordError::Invalid(msg) => Status::invalid_argument(msg),
        // etcd answers these as plain errors (gRPC code Unknown).
        other => Status::unknown(other.to_string()),
    }
}

pub struct LockService {
    pool: Arc<NativePool>,
}

impl LockService {
    pub fn new(pool: Arc<NativePool>) -> Self {
        LockService { pool }
    }
}

#[tonic::async_trait]
impl lpb::lock_server::Lock for LockService {
    async fn lock(
        &self,
        request: Request<lpb::LockRequest>,
    ) -> Result<Response<lpb::LockResponse>, Status> {
        let r = request.into_inner();
        let c = self.pool.dedicated().await?;
        let held = coord::lock::lock(&c, &r.name, r.lease)
            .await
            .map_err(|e| coord_status(self.pool.addr(), e))?;
        Ok(Response::new(lpb::LockResponse {
            header: header(held.header),
            key: held.key.into(),
        }))
    }

    async fn unlock(
        &self,
        request: Request<lpb::UnlockRequest>,
    ) -> Result<Response<lpb::UnlockResponse>, Status> {
        let key = request.into_inner().key;
        let h = self
            .pool
            .call(|c| async move {
                let r = c
                    .delete_range(corekv_wire::messages::DeleteRangeRequest {
                        key: key.to_vec(),
                        ..Default::default()
                    })
                    .await?;
                Ok(r.header)
            })
            .await?;
        Ok(Response::new(lpb::UnlockResponse { header: header(h) }))
    }
}

pub struct ElectionService {
    pool: Arc<NativePool>,
    /// Proclamations buffered per Observe stream.
    stream_buffer: usize,
}

impl ElectionService {
    pub fn new(pool: Arc<NativePool>, stream_buffer: usize) -> Self {
        ElectionService {
            pool,
            stream_buffer: stream_buffer.max(1),
        }
    }
}

fn leader_key(lk: Option<epb::LeaderKey>) -> Result<election::LeaderKey, Status> {
    // etcd's ErrMissingLeaderKey.
    let lk = lk.ok_or_else(|| Status::unknown("\"leader\" field must be provided"))?;
    Ok(election::LeaderKey {
        name: lk.name.to_vec(),
        key: lk.key.to_vec(),
        rev: lk.rev,
        lease: lk.lease,
    })
}

type ObserveStream = Pin<Box<dyn Stream<Item = Result<epb::LeaderResponse, Status>> + Send>>;

#[tonic::async_trait]
impl epb::election_server::Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<epb::CampaignRequest>,
    ) -> Result<Response<epb::CampaignResponse>, Status> {
        let r = request.into_inner();
        let c = self.pool.dedicated().await?;
        let (lk, h) = election::campaign(&c, &r.name, r.lease, &r.value)
            .await
            .map_err(|e| coord_status(self.pool.addr(), e))?;
        Ok(Response::new(epb::CampaignResponse {
            header: header(h),
            leader: Some(epb::LeaderKey {
                name: lk.name.into(),
                key: lk.key.into(),
                rev: lk.rev,
                lease: lk.lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<epb::ProclaimRequest>,
    ) -> Result<Response<epb::ProclaimResponse>, Status> {
        let r = request.into_inner();
        let lk = leader_key(r.leader)?;
        let c = self.pool.dedicated().await?;
        let h = election::proclaim(&c, &lk, &r.value)
            .await
            .map_err(|e| coord_status(self.pool.addr(), e))?;
        Ok(Response::new(epb::ProclaimResponse { header: header(h) }))
    }

    async fn leader(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<epb::LeaderResponse>, Status> {
        let name = request.into_inner().name;
        let c = self.pool.dedicated().await?;
        let (kv, h) = election::leader(&c, &name)
            .await
            .map_err(|e| coord_status(self.pool.addr(), e))?;
        Ok(Response::new(epb::LeaderResponse {
            header: header(h),
            kv: Some(key_value(kv)),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(
        &self,
        request: Request<epb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let name = request.into_inner().name.to_vec();
        let c = self.pool.dedicated().await?;
        let addr = self.pool.addr().to_owned();
        let (tx, rx) = mpsc::channel(self.stream_buffer);
        let (found_tx, mut found_rx) = mpsc::channel(self.stream_buffer);
        tokio::spawn(async move {
            let pump = tx.clone();
            let forward = async move {
                while let Some((kv, h)) = found_rx.recv().await {
                    let resp = epb::LeaderResponse {
                        header: header(h),
                        kv: Some(key_value(kv)),
                    };
                    if pump.send(Ok(resp)).await.is_err() {
                        break;
                    }
                }
            };
            let (result, ()) = tokio::join!(election::observe(&c, &name, found_tx), forward);
            if let Err(e) = result {
                let _ = tx.send(Err(coord_status(&addr, e))).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn resign(
        &self,
        request: Request<epb::ResignRequest>,
    ) -> Result<Response<epb::ResignResponse>, Status> {
        let lk = leader_key(request.into_inner().leader)?;
        let c = self.pool.dedicated().await?;
        let h = election::resign(&c, &lk)
            .await
            .map_err(|e| coord_status(self.pool.addr(), e))?;
        Ok(Response::new(epb::ResignResponse { header: header(h) }))
    }
}
