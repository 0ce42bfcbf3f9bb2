//! Txn. Nested txns are flattened: a `RequestOp::Txn(i)` refers to
//! `TxnRequest::nested[i]` instead of containing it. The archived form is
//! therefore not recursive, so validating a hostile frame cannot recurse
//! deeply (bytecheck walks types recursively). Build requests from the
//! recursive owned `Txn` with `Txn::into_request`.
//!
//! Well-formedness (checked by `validate_request`): every nested index is in
//! range and referenced exactly once, and `nested[i]` only refers to `j > i`,
//! so the references form a tree rooted at the top-level body.

use super::common::ResponseHeader;
use super::kv::{
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
};

wire_default_enums! {
    /// etcd `Compare.CompareResult`.
    pub enum CompareResult { #[default] Equal, Greater, Less, NotEqual }
}

wire_enums! {

    /// etcd `Compare.CompareTarget` together with its `target_union` value.
    pub enum CompareTarget {
        Version(i64),
        CreateRevision(i64),
        ModRevision(i64),
        Value(Vec<u8>),
        Lease(i64),
    }

    /// etcd `RequestOp`; `Txn(i)` is an index into `TxnRequest::nested`.
    pub enum RequestOp {
        Range(RangeRequest),
        Put(PutRequest),
        DeleteRange(DeleteRangeRequest),
        Txn(u32),
    }

    /// etcd `ResponseOp`; `Txn(i)` is an index into `TxnResponse::nested`.
    pub enum ResponseOp {
        Range(RangeResponse),
        Put(PutResponse),
        DeleteRange(DeleteRangeResponse),
        Txn(u32),
    }
}

impl Default for CompareTarget {
    fn default() -> Self {
        CompareTarget::Version(0)
    }
}

wire_structs! {
    /// etcd `Compare`.
    pub struct Compare {
        pub result: CompareResult,
        pub target: CompareTarget,
        pub key: Vec<u8>,
        pub range_end: Vec<u8>,
    }

    /// One nested txn level.
    pub struct NestedTxn {
        pub compare: Vec<Compare>,
        pub success: Vec<RequestOp>,
        pub failure: Vec<RequestOp>,
    }

    /// etcd `TxnRequest`; the top level plus all nested levels.
    pub struct TxnRequest {
        pub compare: Vec<Compare>,
        pub success: Vec<RequestOp>,
        pub failure: Vec<RequestOp>,
        pub nested: Vec<NestedTxn>,
    }

    /// One nested txn's result. etcd's nested `TxnResponse` also carries a
    /// header; it equals the top-level one.
    pub struct NestedTxnResponse {
        pub succeeded: bool,
        pub responses: Vec<ResponseOp>,
    }

    /// etcd `TxnResponse`, nested results flattened like the request.
    pub struct TxnResponse {
        pub header: ResponseHeader,
        pub succeeded: bool,
        pub responses: Vec<ResponseOp>,
        pub nested: Vec<NestedTxnResponse>,
    }
}

/// Recursive, owned form of a txn op for building requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Range(RangeRequest),
    Put(PutRequest),
    DeleteRange(DeleteRangeRequest),
    Txn(Txn),
}

/// Recursive, owned txn (etcd's shape). `into_request` flattens it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    /// Flattens into the wire form. Indices are assigned in pre-order, so a
    /// child always has a larger index than its parent.
    pub fn into_request(self) -> TxnRequest {
        let mut nested = Vec::new();
        let success = flatten_ops(self.success, &mut nested);
        let failure = flatten_ops(self.failure, &mut nested);
        TxnRequest {
            compare: self.compare,
            success,
            failure,
            nested,
        }
    }
}

fn flatten_ops(ops: Vec<Op>, nested: &mut Vec<NestedTxn>) -> Vec<RequestOp> {
    ops.into_iter()
        .map(|op| match op {
            Op::Range(r) => RequestOp::Range(r),
            Op::Put(p) => RequestOp::Put(p),
            Op::DeleteRange(d) => RequestOp::DeleteRange(d),
            Op::Txn(t) => {
                let idx = nested.len();
                nested.push(NestedTxn::default());
                let success = flatten_ops(t.success, nested);
                let failure = flatten_ops(t.failure, nested);
                nested[idx] = NestedTxn {
                    compare: t.compare,
                    success,
                    failure,
                };
                // More than u32::MAX nested txns cannot fit in a frame.
                RequestOp::Txn(u32::try_from(idx).unwrap_or(u32::MAX))
            }
        })
        .collect()
}

impl TxnRequest {
    /// Rebuilds the recursive form. `None` if the nesting indices do not form
    /// a tree (see module docs).
    pub fn into_tree(self) -> Option<Txn> {
        let mut slots: Vec<Option<NestedTxn>> = self.nested.into_iter().map(Some).collect();
        let success = unflatten_ops(self.success, &mut slots, None)?;
        let failure = unflatten_ops(self.failure, &mut slots, None)?;
        if slots.iter().any(Option::is_some) {
            return None;
        }
        Some(Txn {
            compare: self.compare,
            success,
            failure,
        })
    }
}

fn unflatten_ops(
    ops: Vec<RequestOp>,
    slots: &mut Vec<Option<NestedTxn>>,
    parent: Option<usize>,
) -> Option<Vec<Op>> {
    ops.into_iter()
        .map(|op| {
            Some(match op {
                RequestOp::Range(r) => Op::Range(r),
                RequestOp::Put(p) => Op::Put(p),
                RequestOp::DeleteRange(d) => Op::DeleteRange(d),
                RequestOp::Txn(i) => {
                    let i = i as usize;
                    if parent.is_some_and(|p| i <= p) {
                        return None;
                    }
                    let body = slots.get_mut(i)?.take()?;
                    Op::Txn(Txn {
                        compare: body.compare,
                        success: unflatten_ops(body.success, slots, Some(i))?,
                        failure: unflatten_ops(body.failure, slots, Some(i))?,
                    })
                }
            })
        })
        .collect()
}
