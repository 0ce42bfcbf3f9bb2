//! etcdserverpb.Cluster through the shard's request layer (the logic is in
//! `node/membership`; this front only converts).

use std::rc::Rc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use tonic::Status;

use super::convert::{header, member, members};
use super::{call, expect_response};
use crate::node::route::Api;

pub async fn member_add(
    api: Rc<Api>,
    r: pb::MemberAddRequest,
) -> Result<pb::MemberAddResponse, Status> {
    let req = w::Request::MemberAdd(w::MemberAddRequest {
        peer_urls: r.peer_ur_ls,
        is_learner: r.is_learner,
    });
    let resp = expect_response!(call(&api, req).await?, MemberAdd);
    Ok(pb::MemberAddResponse {
        header: header(resp.header),
        member: resp.member.map(member),
        members: members(resp.members),
    })
}

pub async fn member_remove(
    api: Rc<Api>,
    r: pb::MemberRemoveRequest,
) -> Result<pb::MemberRemoveResponse, Status> {
    let req = w::Request::MemberRemove(w::MemberRemoveRequest { id: r.id });
    let resp = expect_response!(call(&api, req).await?, MemberRemove);
    Ok(pb::MemberRemoveResponse {
        header: header(resp.header),
        members: members(resp.members),
    })
}

pub async fn member_update(
    api: Rc<Api>,
    r: pb::MemberUpdateRequest,
) -> Result<pb::MemberUpdateResponse, Status> {
    let req = w::Request::MemberUpdate(w::MemberUpdateRequest {
        id: r.id,
        peer_urls: r.peer_ur_ls,
    });
    let resp = expect_response!(call(&api, req).await?, MemberUpdate);
    Ok(pb::MemberUpdateResponse {
        header: header(resp.header),
        members: members(resp.members),
    })
}

pub async fn member_list(
    api: Rc<Api>,
    r: pb::MemberListRequest,
) -> Result<pb::MemberListResponse, Status> {
    let req = w::Request::MemberList(w::MemberListRequest {
        linearizable: r.linearizable,
    });
    let resp = expect_response!(call(&api, req).await?, MemberList);
    Ok(pb::MemberListResponse {
        header: header(resp.header),
        members: members(resp.members),
    })
}

pub async fn member_promote(
    api: Rc<Api>,
    r: pb::MemberPromoteRequest,
) -> Result<pb::MemberPromoteResponse, Status> {
    let req = w::Request::MemberPromote(w::MemberPromoteRequest { id: r.id });
    let resp = expect_response!(call(&api, req).await?, MemberPromote);
    Ok(pb::MemberPromoteResponse {
        header: header(resp.header),
        members: members(resp.members),
    })
}
