//! Translation between etcd's protobuf messages and corekv's native ones.
//! Field by field, no semantics added: the request layer implements etcd's
//! behaviour; here only shapes change (bytes <-> Vec, enums <-> i32, the
//! recursive txn <-> the flattened native txn).

use bytes::Bytes;
use corekv_wire::messages as w;
use corekv_wire::proto::{etcdserverpb as pb, mvccpb};
use tonic::Status;

use super::status;

pub fn header(h: w::ResponseHeader) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: h.cluster_id,
        member_id: h.member_id,
        revision: h.revision,
        raft_term: h.raft_term,
    })
}

pub fn key_value(kv: w::KeyValue) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: Bytes::from(kv.key),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: Bytes::from(kv.value),
        lease: kv.lease,
    }
}

fn key_values(kvs: Vec<w::KeyValue>) -> Vec<mvccpb::KeyValue> {
    kvs.into_iter().map(key_value).collect()
}

pub fn range_request(r: pb::RangeRequest) -> Result<w::RangeRequest, Status> {
    Ok(w::RangeRequest {
        key: r.key.into(),
        range_end: r.range_end.into(),
        limit: r.limit,
        revision: r.revision,
        sort_order: w::SortOrder::from_i32(r.sort_order).map_err(status)?,
        sort_target: w::SortTarget::from_i32(r.sort_target).map_err(status)?,
        serializable: r.serializable,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision,
        max_mod_revision: r.max_mod_revision,
        min_create_revision: r.min_create_revision,
        max_create_revision: r.max_create_revision,
    })
}

pub fn range_response(r: w::RangeResponse) -> pb::RangeResponse {
    pb::RangeResponse {
        header: header(r.header),
        kvs: key_values(r.kvs),
        more: r.more,
        count: r.count,
    }
}

pub fn put_request(r: pb::PutRequest) -> w::PutRequest {
    w::PutRequest {
        key: r.key.into(),
        value: r.value.into(),
        lease: r.lease,
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn put_response(r: w::PutResponse) -> pb::PutResponse {
    pb::PutResponse {
        header: header(r.header),
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_request(r: pb::DeleteRangeRequest) -> w::DeleteRangeRequest {
    w::DeleteRangeRequest {
        key: r.key.into(),
        range_end: r.range_end.into(),
        prev_kv: r.prev_kv,
    }
}

pub fn delete_response(r: w::DeleteRangeResponse) -> pb::DeleteRangeResponse {
    pb::DeleteRangeResponse {
        header: header(r.header),
        deleted: r.deleted,
        prev_kvs: key_values(r.prev_kvs),
    }
}

pub fn compare(c: pb::Compare) -> Result<w::Compare, Status> {
    use pb::compare::TargetUnion as U;
    let result = match c.result {
        0 => w::CompareResult::Equal,
        1 => w::CompareResult::Greater,
        2 => w::CompareResult::Less,
        3 => w::CompareResult::NotEqual,
        v => {
            return Err(Status::invalid_argument(format!(
                "corekv gateway: unknown compare result {v}"
            )));
        }
    };
    // etcd reads the union member named by `target`; an unset (or other)
    // member compares against the zero value.
    let u = c.target_union;
    let target = match c.target {
        0 => w::CompareTarget::Version(match u {
            Some(U::Version(v)) => v,
            _ => 0,
        }),
        1 => w::CompareTarget::CreateRevision(match u {
            Some(U::CreateRevision(v)) => v,
            _ => 0,
        }),
        2 => w::CompareTarget::ModRevision(match u {
            Some(U::ModRevision(v)) => v,
            _ => 0,
        }),
        3 => w::CompareTarget::Value(match u {
            Some(U::Value(v)) => v.into(),
            _ => Vec::new(),
        }),
        4 => w::CompareTarget::Lease(match u {
            Some(U::Lease(v)) => v,
            _ => 0,
        }),
        v => {
            return Err(Status::invalid_argument(format!(
                "corekv gateway: unknown compare target {v}"
            )));
        }
    };
    Ok(w::Compare {
        result,
        target,
        key: c.key.into(),
        range_end: c.range_end.into(),
    })
}

/// The recursive native txn; `Txn::into_request` flattens it. Depth is
/// bounded by protobuf decoding's recursion limit.
pub fn txn(t: pb::TxnRequest) -> Result<w::Txn, Status> {
    fn ops(list: Vec<pb::RequestOp>) -> Result<Vec<w::Op>, Status> {
        use pb::request_op::Request as R;
        list.into_iter()
            .map(|op| match op.request {
                Some(R::RequestRange(r)) => Ok(w::Op::Range(range_request(r)?)),
                Some(R::RequestPut(p)) => Ok(w::Op::Put(put_request(p))),
                Some(R::RequestDeleteRange(d)) => Ok(w::Op::DeleteRange(delete_request(d))),
                Some(R::RequestTxn(t)) => Ok(w::Op::Txn(txn(t)?)),
                None => Err(Status::invalid_argument(
                    "corekv gateway: txn operation without a request",
                )),
            })
            .collect()
    }
    Ok(w::Txn {
        compare: t
            .compare
            .into_iter()
            .map(compare)
            .collect::<Result<_, _>>()?,
        success: ops(t.success)?,
        failure: ops(t.failure)?,
    })
}

/// Rebuilds etcd's recursive response from the flattened native one, with
/// etcd's headers: only the top-level response has a full header; a range,
/// put or delete response inside a txn carries only its revision, a nested
/// txn response an empty header.
pub fn txn_response(r: w::TxnResponse) -> Result<pb::TxnResponse, Status> {
    let mut slots: Vec<Option<w::NestedTxnResponse>> = r.nested.into_iter().map(Some).collect();
    let responses = response_ops(r.responses, &mut slots, r.header.revision)?;
    Ok(pb::TxnResponse {
        header: header(r.header),
        succeeded: r.succeeded,
        responses,
    })
}

fn response_ops(
    list: Vec<w::ResponseOp>,
    slots: &mut [Option<w::NestedTxnResponse>],
    revision: i64,
) -> Result<Vec<pb::ResponseOp>, Status> {
    use pb::response_op::Response as R;
    let own = || {
        Some(pb::ResponseHeader {
            revision,
            ..Default::default()
        })
    };
    list.into_iter()
        .map(|op| {
            let r = match op {
                w::ResponseOp::Range(r) => R::ResponseRange(pb::RangeResponse {
                    header: own(),
                    ..range_response(r)
                }),
                w::ResponseOp::Put(p) => R::ResponsePut(pb::PutResponse {
                    header: own(),
                    ..put_response(p)
                }),
                w::ResponseOp::DeleteRange(d) => R::ResponseDeleteRange(pb::DeleteRangeResponse {
                    header: own(),
                    ..delete_response(d)
                }),
                w::ResponseOp::Txn(i) => {
                    // Each index is taken once, so this recursion ends.
                    let nested = slots
                        .get_mut(i as usize)
                        .and_then(Option::take)
                        .ok_or_else(|| {
                            Status::internal(format!(
                                "corekv gateway: native txn response refers to nested \
                                 response {i}, which is missing or used twice"
                            ))
                        })?;
                    R::ResponseTxn(pb::TxnResponse {
                        header: Some(pb::ResponseHeader::default()),
                        succeeded: nested.succeeded,
                        responses: response_ops(nested.responses, slots, revision)?,
                    })
                }
            };
            Ok(pb::ResponseOp { response: Some(r) })
        })
        .collect()
}

pub fn watch_create(c: pb::WatchCreateRequest) -> w::WatchCreateRequest {
    w::WatchCreateRequest {
        key: c.key.into(),
        range_end: c.range_end.into(),
        start_revision: c.start_revision,
        progress_notify: c.progress_notify,
        // etcd ignores filter values it does not know.
        filters: c
            .filters
            .iter()
            .filter_map(|f| match f {
                0 => Some(w::WatchFilterType::NoPut),
                1 => Some(w::WatchFilterType::NoDelete),
                _ => None,
            })
            .collect(),
        prev_kv: c.prev_kv,
        watch_id: c.watch_id,
        fragment: c.fragment,
    }
}

/// Test-only: the prost form the Watch stream's direct encoder
/// (`watch_codec`) must match byte for byte.
#[cfg(test)]
pub fn event(e: w::Event) -> mvccpb::Event {
    mvccpb::Event {
        r#type: match e.event_type {
            w::EventType::Put => mvccpb::event::EventType::Put as i32,
            w::EventType::Delete => mvccpb::event::EventType::Delete as i32,
        },
        kv: Some(key_value(e.kv)),
        prev_kv: e.prev_kv.map(key_value),
    }
}

#[cfg(test)]
pub fn watch_response(r: w::WatchResponse) -> pb::WatchResponse {
    pb::WatchResponse {
        header: header(r.header),
        watch_id: r.watch_id,
        created: r.created,
        canceled: r.canceled,
        compact_revision: r.compact_revision,
        cancel_reason: r.cancel_reason,
        fragment: r.fragment,
        events: r.events.into_iter().map(event).collect(),
    }
}

pub fn member(m: w::Member) -> pb::Member {
    pb::Member {
        id: m.id,
        name: m.name,
        peer_ur_ls: m.peer_urls,
        client_ur_ls: m.client_urls,
        is_learner: m.is_learner,
    }
}

pub fn members(ms: Vec<w::Member>) -> Vec<pb::Member> {
    ms.into_iter().map(member).collect()
}

pub fn status_response(s: w::StatusResponse) -> pb::StatusResponse {
    pb::StatusResponse {
        header: header(s.header),
        version: s.version,
        db_size: s.db_size,
        leader: s.leader,
        raft_index: s.raft_index,
        raft_term: s.raft_term,
        raft_applied_index: s.raft_applied_index,
        errors: s.errors,
        db_size_in_use: s.db_size_in_use,
        is_learner: s.is_learner,
    }
}

fn alarm_type_from(v: i32) -> Result<w::AlarmType, Status> {
    match v {
        0 => Ok(w::AlarmType::None),
        1 => Ok(w::AlarmType::Nospace),
        2 => Ok(w::AlarmType::Corrupt),
        v => Err(Status::invalid_argument(format!(
            "corekv gateway: unknown alarm type {v}"
        ))),
    }
}

fn alarm_type_to(t: w::AlarmType) -> i32 {
    match t {
        w::AlarmType::None => pb::AlarmType::None as i32,
        w::AlarmType::Nospace => pb::AlarmType::Nospace as i32,
        w::AlarmType::Corrupt => pb::AlarmType::Corrupt as i32,
    }
}

pub fn alarm_request(a: pb::AlarmRequest) -> Result<w::AlarmRequest, Status> {
    let action = match a.action {
        0 => w::AlarmAction::Get,
        1 => w::AlarmAction::Activate,
        2 => w::AlarmAction::Deactivate,
        v => {
            return Err(Status::invalid_argument(format!(
                "corekv gateway: unknown alarm action {v}"
            )));
        }
    };
    Ok(w::AlarmRequest {
        action,
        member_id: a.member_id,
        alarm: alarm_type_from(a.alarm)?,
    })
}

pub fn alarm_response(r: w::AlarmResponse) -> pb::AlarmResponse {
    pb::AlarmResponse {
        header: header(r.header),
        alarms: r
            .alarms
            .into_iter()
            .map(|m| pb::AlarmMember {
                member_id: m.member_id,
                alarm: alarm_type_to(m.alarm),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_op(k: &str) -> pb::RequestOp {
        pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: Bytes::copy_from_slice(k.as_bytes()),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn nested_txn_round_trips_through_the_flat_form() {
        let inner = pb::TxnRequest {
            success: vec![put_op("b")],
            failure: vec![put_op("c")],
            ..Default::default()
        };
        let outer = pb::TxnRequest {
            compare: vec![pb::Compare {
                result: 3,
                target: 2,
                key: Bytes::from_static(b"k"),
                target_union: Some(pb::compare::TargetUnion::ModRevision(7)),
                ..Default::default()
            }],
            success: vec![
                put_op("a"),
                pb::RequestOp {
                    request: Some(pb::request_op::Request::RequestTxn(inner)),
                },
            ],
            failure: vec![],
        };
        let flat = txn(outer).unwrap().into_request();
        assert_eq!(flat.nested.len(), 1);
        assert_eq!(flat.success[1], w::RequestOp::Txn(0));
        assert_eq!(flat.compare[0].target, w::CompareTarget::ModRevision(7));
        assert_eq!(flat.compare[0].result, w::CompareResult::NotEqual);

        // The matching native response: responses[1] refers to nested[0].
        let h = w::ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 9,
            raft_term: 3,
        };
        let resp = w::TxnResponse {
            header: h.clone(),
            succeeded: true,
            responses: vec![
                w::ResponseOp::Put(w::PutResponse::default()),
                w::ResponseOp::Txn(0),
            ],
            nested: vec![w::NestedTxnResponse {
                succeeded: false,
                responses: vec![w::ResponseOp::Put(w::PutResponse::default())],
            }],
        };
        let pbr = txn_response(resp).unwrap();
        assert!(pbr.succeeded);
        match &pbr.responses[1].response {
            Some(pb::response_op::Response::ResponseTxn(t)) => {
                assert!(!t.succeeded);
                assert_eq!(t.responses.len(), 1);
                assert_eq!(t.header, Some(pb::ResponseHeader::default()), "etcd: empty");
                let Some(pb::response_op::Response::ResponsePut(p)) = &t.responses[0].response
                else {
                    panic!("expected a put in the nested txn");
                };
                assert_eq!(
                    p.header,
                    Some(pb::ResponseHeader {
                        revision: 9,
                        ..Default::default()
                    }),
                    "etcd: only the revision"
                );
            }
            other => panic!("expected a nested txn response, got {other:?}"),
        }
    }

    #[test]
    fn bad_nested_index_is_an_error_not_a_panic() {
        let resp = w::TxnResponse {
            responses: vec![w::ResponseOp::Txn(0), w::ResponseOp::Txn(0)],
            nested: vec![w::NestedTxnResponse::default()],
            ..Default::default()
        };
        assert_eq!(
            txn_response(resp).unwrap_err().code(),
            tonic::Code::Internal
        );
        let resp = w::TxnResponse {
            responses: vec![w::ResponseOp::Txn(5)],
            ..Default::default()
        };
        assert_eq!(
            txn_response(resp).unwrap_err().code(),
            tonic::Code::Internal
        );
    }

    #[test]
    fn invalid_enums_are_refused() {
        let e = range_request(pb::RangeRequest {
            sort_order: 9,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(e.message(), "etcdserver: invalid sort option");
        let e = compare(pb::Compare {
            target: 17,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = txn(pb::TxnRequest {
            success: vec![pb::RequestOp { request: None }],
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn compare_without_union_member_uses_zero_value() {
        let c = compare(pb::Compare {
            target: 3,
            key: Bytes::from_static(b"k"),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.target, w::CompareTarget::Value(Vec::new()));
    }

    #[test]
    fn watch_filters_map_and_unknown_ones_are_ignored() {
        let c = watch_create(pb::WatchCreateRequest {
            filters: vec![1, 0, 42],
            watch_id: 5,
            ..Default::default()
        });
        assert_eq!(
            c.filters,
            vec![w::WatchFilterType::NoDelete, w::WatchFilterType::NoPut]
        );
        assert_eq!(c.watch_id, 5, "ids belong to the stream's watch session");
    }
}
