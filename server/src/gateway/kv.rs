//! etcdserverpb.KV over the native protocol.

use std::sync::Arc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use super::convert;
use super::pool::NativePool;

pub struct KvService {
    pool: Arc<NativePool>,
}

impl KvService {
    pub fn new(pool: Arc<NativePool>) -> Self {
        KvService { pool }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let req = convert::range_request(request.into_inner())?;
        let resp = self
            .pool
            .call(|c| async move { c.range(req).await })
            .await?;
        Ok(Response::new(convert::range_response(resp)))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let req = convert::put_request(request.into_inner());
        let resp = self.pool.call(|c| async move { c.put(req).await }).await?;
        Ok(Response::new(convert::put_response(resp)))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let req = convert::delete_request(request.into_inner());
        let resp = self
            .pool
            .call(|c| async move { c.delete_range(req).await })
            .await?;
        Ok(Response::new(convert::delete_response(resp)))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let req = convert::txn(request.into_inner())?.into_request();
        let resp = self.pool.call(|c| async move { c.txn(req).await }).await?;
        Ok(Response::new(convert::txn_response(resp)?))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let r = request.into_inner();
        let req = w::CompactionRequest {
            revision: r.revision,
            physical: r.physical,
        };
        let resp = self
            .pool
            .call(|c| async move { c.compact(req).await })
            .await?;
        Ok(Response::new(pb::CompactionResponse {
            header: convert::header(resp.header),
        }))
    }
}
