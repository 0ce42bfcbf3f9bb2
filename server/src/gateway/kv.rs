//! etcdserverpb.KV: proto -> native request -> the shard's request layer.

use std::rc::Rc;

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use tonic::Status;

use super::{call, convert, expect_response};
use crate::node::route::Api;

pub async fn range(api: Rc<Api>, r: pb::RangeRequest) -> Result<pb::RangeResponse, Status> {
    let req = w::Request::Range(convert::range_request(r)?);
    let resp = expect_response!(call(&api, req).await?, Range);
    Ok(convert::range_response(resp))
}

pub async fn put(api: Rc<Api>, r: pb::PutRequest) -> Result<pb::PutResponse, Status> {
    let req = w::Request::Put(convert::put_request(r));
    let resp = expect_response!(call(&api, req).await?, Put);
    Ok(convert::put_response(resp))
}

pub async fn delete_range(
    api: Rc<Api>,
    r: pb::DeleteRangeRequest,
) -> Result<pb::DeleteRangeResponse, Status> {
    let req = w::Request::DeleteRange(convert::delete_request(r));
    let resp = expect_response!(call(&api, req).await?, DeleteRange);
    Ok(convert::delete_response(resp))
}

pub async fn txn(api: Rc<Api>, r: pb::TxnRequest) -> Result<pb::TxnResponse, Status> {
    let req = w::Request::Txn(convert::txn(r)?.into_request());
    let resp = expect_response!(call(&api, req).await?, Txn);
    convert::txn_response(resp)
}

pub async fn compact(
    api: Rc<Api>,
    r: pb::CompactionRequest,
) -> Result<pb::CompactionResponse, Status> {
    let req = w::Request::Compact(w::CompactionRequest {
        revision: r.revision,
        physical: r.physical,
    });
    let resp = expect_response!(call(&api, req).await?, Compact);
    Ok(pb::CompactionResponse {
        header: convert::header(resp.header),
    })
}
