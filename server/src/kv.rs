//! Translation between the native protocol's messages (`corekv_wire`) and
//! the MVCC store's requests (`corekv_storage`), and execution of KV requests
//! against a store view or write batch.
//!
//! Requests arrive archived (validated, read in place); keys and values are
//! copied once, into the store's request structs.

use corekv_storage as st;
use corekv_wire::ApiError;
use corekv_wire::messages as w;

/// Maps a storage error to the etcd error the client sees.
pub fn storage_error(e: st::StorageError) -> ApiError {
    match e {
        st::StorageError::Compacted { .. } => ApiError::Compacted,
        st::StorageError::FutureRevision { .. } => ApiError::FutureRev,
        st::StorageError::NoSpace { .. } => ApiError::NoSpace,
        st::StorageError::InvalidSortOption => ApiError::InvalidSortOption,
        st::StorageError::KeyNotProvided => ApiError::EmptyKey,
        st::StorageError::KeyTooLarge { .. } | st::StorageError::ValueTooLarge { .. } => {
            ApiError::RequestTooLarge
        }
        st::StorageError::KeyNotFound => ApiError::KeyNotFound,
        st::StorageError::LeaseNotFound { .. } => ApiError::LeaseNotFound,
        st::StorageError::LeaseExists { .. } => ApiError::LeaseExist,
        // Readers pin too many distinct snapshots: back off like etcd does
        // under overload ("etcdserver: too many requests", ResourceExhausted).
        st::StorageError::TooManyReaders { .. } => ApiError::TooManyRequests,
        other => ApiError::Internal(other.to_string()),
    }
}

/// Errors after which the store can no longer be trusted: the member stops.
pub fn is_fatal(e: &st::StorageError) -> bool {
    matches!(
        e,
        st::StorageError::Io { .. } | st::StorageError::Corrupted { .. }
    )
}

pub fn range_request(r: &w::ArchivedRangeRequest) -> st::RangeRequest {
    st::RangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        limit: r.limit.to_native(),
        revision: r.revision.to_native(),
        sort_order: match r.sort_order {
            w::ArchivedSortOrder::None => st::SortOrder::None,
            w::ArchivedSortOrder::Ascend => st::SortOrder::Ascend,
            w::ArchivedSortOrder::Descend => st::SortOrder::Descend,
        },
        sort_target: match r.sort_target {
            w::ArchivedSortTarget::Key => st::SortTarget::Key,
            w::ArchivedSortTarget::Version => st::SortTarget::Version,
            w::ArchivedSortTarget::Create => st::SortTarget::Create,
            w::ArchivedSortTarget::Mod => st::SortTarget::Mod,
            w::ArchivedSortTarget::Value => st::SortTarget::Value,
        },
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: r.min_mod_revision.to_native(),
        max_mod_revision: r.max_mod_revision.to_native(),
        min_create_revision: r.min_create_revision.to_native(),
        max_create_revision: r.max_create_revision.to_native(),
    }
}

pub fn put_request(r: &w::ArchivedPutRequest) -> st::PutRequest {
    st::PutRequest {
        key: r.key.to_vec(),
        value: r.value.to_vec(),
        lease: r.lease.to_native(),
        prev_kv: r.prev_kv,
        ignore_value: r.ignore_value,
        ignore_lease: r.ignore_lease,
    }
}

pub fn delete_request(r: &w::ArchivedDeleteRangeRequest) -> st::DeleteRangeRequest {
    st::DeleteRangeRequest {
        key: r.key.to_vec(),
        range_end: r.range_end.to_vec(),
        prev_kv: r.prev_kv,
    }
}

fn compare(c: &w::ArchivedCompare) -> st::Compare {
    st::Compare {
        result: match c.result {
            w::ArchivedCompareResult::Equal => st::CompareResult::Equal,
            w::ArchivedCompareResult::Greater => st::CompareResult::Greater,
            w::ArchivedCompareResult::Less => st::CompareResult::Less,
            w::ArchivedCompareResult::NotEqual => st::CompareResult::NotEqual,
        },
        target: match &c.target {
            w::ArchivedCompareTarget::Version(v) => st::CompareTarget::Version(v.to_native()),
            w::ArchivedCompareTarget::CreateRevision(v) => st::CompareTarget::Create(v.to_native()),
            w::ArchivedCompareTarget::ModRevision(v) => st::CompareTarget::Mod(v.to_native()),
            w::ArchivedCompareTarget::Value(v) => st::CompareTarget::Value(v.to_vec()),
            w::ArchivedCompareTarget::Lease(v) => st::CompareTarget::Lease(v.to_native()),
        },
        key: c.key.to_vec(),
        range_end: c.range_end.to_vec(),
    }
}

/// Rebuilds the recursive store txn from the wire's flattened form. The wire
/// validation (`validate_request`) has already checked the nested indices form
/// a tree; a bad index here is still an error, never a panic.
pub fn txn_request(t: &w::ArchivedTxnRequest) -> Result<st::TxnRequest, ApiError> {
    fn ops(
        list: &[w::ArchivedRequestOp],
        nested: &[w::ArchivedNestedTxn],
        depth: usize,
    ) -> Result<Vec<st::RequestOp>, ApiError> {
        list.iter()
            .map(|op| {
                Ok(match op {
                    w::ArchivedRequestOp::Range(r) => st::RequestOp::Range(range_request(r)),
                    w::ArchivedRequestOp::Put(p) => st::RequestOp::Put(put_request(p)),
                    w::ArchivedRequestOp::DeleteRange(d) => {
                        st::RequestOp::DeleteRange(delete_request(d))
                    }
                    w::ArchivedRequestOp::Txn(i) => {
                        let body = nested
                            .get(i.to_native() as usize)
                            .filter(|_| depth < nested.len() + 1)
                            .ok_or_else(|| {
                                ApiError::MalformedRequest("nested txn index out of range".into())
                            })?;
                        st::RequestOp::Txn(st::TxnRequest {
                            compare: body.compare.iter().map(compare).collect(),
                            success: ops(&body.success, nested, depth + 1)?,
                            failure: ops(&body.failure, nested, depth + 1)?,
                        })
                    }
                })
            })
            .collect()
    }
    Ok(st::TxnRequest {
        compare: t.compare.iter().map(compare).collect(),
        success: ops(&t.success, &t.nested, 0)?,
        failure: ops(&t.failure, &t.nested, 0)?,
    })
}

pub fn key_value(kv: st::KeyValue) -> w::KeyValue {
    w::KeyValue {
        key: kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        value: kv.value,
        lease: kv.lease,
    }
}

pub fn range_response(header: w::ResponseHeader, r: st::RangeResponse) -> w::RangeResponse {
    w::RangeResponse {
        header,
        kvs: r.kvs.into_iter().map(key_value).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn put_response(header: w::ResponseHeader, r: st::PutResponse) -> w::PutResponse {
    w::PutResponse {
        header,
        prev_kv: r.prev_kv.map(key_value),
    }
}

pub fn delete_response(
    header: w::ResponseHeader,
    r: st::DeleteRangeResponse,
) -> w::DeleteRangeResponse {
    w::DeleteRangeResponse {
        header,
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(key_value).collect(),
    }
}

/// Flattens the store's recursive txn response into the wire's form
/// (nested responses in `nested`, referenced by index, like the request).
pub fn txn_response(header: w::ResponseHeader, r: st::TxnResponse) -> w::TxnResponse {
    fn flatten(
        header: &w::ResponseHeader,
        responses: Vec<st::ResponseOp>,
        nested: &mut Vec<w::NestedTxnResponse>,
    ) -> Vec<w::ResponseOp> {
        responses
            .into_iter()
            .map(|op| match op {
                st::ResponseOp::Range(r) => w::ResponseOp::Range(range_response(header.clone(), r)),
                st::ResponseOp::Put(p) => w::ResponseOp::Put(put_response(header.clone(), p)),
                st::ResponseOp::DeleteRange(d) => {
                    w::ResponseOp::DeleteRange(delete_response(header.clone(), d))
                }
                st::ResponseOp::Txn(t) => {
                    let idx = nested.len();
                    nested.push(w::NestedTxnResponse::default());
                    let responses = flatten(header, t.responses, nested);
                    nested[idx] = w::NestedTxnResponse {
                        succeeded: t.succeeded,
                        responses,
                    };
                    w::ResponseOp::Txn(u32::try_from(idx).unwrap_or(u32::MAX))
                }
            })
            .collect()
    }
    let mut nested = Vec::new();
    let responses = flatten(&header, r.responses, &mut nested);
    w::TxnResponse {
        header,
        succeeded: r.succeeded,
        responses,
        nested,
    }
}
