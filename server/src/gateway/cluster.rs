//! etcdserverpb.Cluster: every call goes to the native server, which
//! answers membership changes itself (today with an error: runtime
//! reconfiguration is not built; the gateway passes that answer on).

use std::sync::Arc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use tonic::{Request, Response, Status};

use super::convert::{header, member, members};
use super::pool::NativePool;

pub struct ClusterService {
    pool: Arc<NativePool>,
}

impl ClusterService {
    pub fn new(pool: Arc<NativePool>) -> Self {
        ClusterService { pool }
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        let r = request.into_inner();
        let req = w::MemberAddRequest {
            peer_urls: r.peer_ur_ls,
            is_learner: r.is_learner,
        };
        let resp = self
            .pool
            .call(|c| async move { c.member_add(req).await })
            .await?;
        Ok(Response::new(pb::MemberAddResponse {
            header: header(resp.header),
            member: resp.member.map(member),
            members: members(resp.members),
        }))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        let req = w::MemberRemoveRequest {
            id: request.into_inner().id,
        };
        let resp = self
            .pool
            .call(|c| async move { c.member_remove(req).await })
            .await?;
        Ok(Response::new(pb::MemberRemoveResponse {
            header: header(resp.header),
            members: members(resp.members),
        }))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        let r = request.into_inner();
        let req = w::MemberUpdateRequest {
            id: r.id,
            peer_urls: r.peer_ur_ls,
        };
        let resp = self
            .pool
            .call(|c| async move { c.member_update(req).await })
            .await?;
        Ok(Response::new(pb::MemberUpdateResponse {
            header: header(resp.header),
            members: members(resp.members),
        }))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let req = w::MemberListRequest {
            linearizable: request.into_inner().linearizable,
        };
        let resp = self
            .pool
            .call(|c| async move { c.member_list(req).await })
            .await?;
        Ok(Response::new(pb::MemberListResponse {
            header: header(resp.header),
            members: members(resp.members),
        }))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        let req = w::MemberPromoteRequest {
            id: request.into_inner().id,
        };
        let resp = self
            .pool
            .call(|c| async move { c.member_promote(req).await })
            .await?;
        Ok(Response::new(pb::MemberPromoteResponse {
            header: header(resp.header),
            members: members(resp.members),
        }))
    }
}
