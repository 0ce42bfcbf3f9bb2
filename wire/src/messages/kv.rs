//! Range, Put, DeleteRange, Compact.

use super::common::{KeyValue, ResponseHeader};
use crate::api_error::ApiError;

wire_default_enums! {
    /// etcd `RangeRequest.SortOrder`.
    pub enum SortOrder { #[default] None, Ascend, Descend }
    /// etcd `RangeRequest.SortTarget`.
    pub enum SortTarget { #[default] Key, Version, Create, Mod, Value }
}

impl SortOrder {
    /// From etcd's protobuf enum value; unknown values are etcd's
    /// "invalid sort option".
    pub fn from_i32(v: i32) -> Result<Self, ApiError> {
        match v {
            0 => Ok(SortOrder::None),
            1 => Ok(SortOrder::Ascend),
            2 => Ok(SortOrder::Descend),
            _ => Err(ApiError::InvalidSortOption),
        }
    }
}

impl SortTarget {
    /// From etcd's protobuf enum value; unknown values are etcd's
    /// "invalid sort option".
    pub fn from_i32(v: i32) -> Result<Self, ApiError> {
        match v {
            0 => Ok(SortTarget::Key),
            1 => Ok(SortTarget::Version),
            2 => Ok(SortTarget::Create),
            3 => Ok(SortTarget::Mod),
            4 => Ok(SortTarget::Value),
            _ => Err(ApiError::InvalidSortOption),
        }
    }
}

wire_structs! {
    /// etcd `RangeRequest`. `range_end` empty: single key; `"\0"`: every key
    /// >= `key`; otherwise the half-open range `[key, range_end)`.
    pub struct RangeRequest {
        pub key: Vec<u8>,
        pub range_end: Vec<u8>,
        pub limit: i64,
        pub revision: i64,
        pub sort_order: SortOrder,
        pub sort_target: SortTarget,
        pub serializable: bool,
        pub keys_only: bool,
        pub count_only: bool,
        pub min_mod_revision: i64,
        pub max_mod_revision: i64,
        pub min_create_revision: i64,
        pub max_create_revision: i64,
    }

    pub struct RangeResponse {
        pub header: ResponseHeader,
        pub kvs: Vec<KeyValue>,
        pub more: bool,
        pub count: i64,
    }

    pub struct PutRequest {
        pub key: Vec<u8>,
        pub value: Vec<u8>,
        pub lease: i64,
        pub prev_kv: bool,
        pub ignore_value: bool,
        pub ignore_lease: bool,
    }

    pub struct PutResponse {
        pub header: ResponseHeader,
        pub prev_kv: Option<KeyValue>,
    }

    pub struct DeleteRangeRequest {
        pub key: Vec<u8>,
        pub range_end: Vec<u8>,
        pub prev_kv: bool,
    }

    pub struct DeleteRangeResponse {
        pub header: ResponseHeader,
        pub deleted: i64,
        pub prev_kvs: Vec<KeyValue>,
    }

    /// etcd `CompactionRequest`.
    pub struct CompactionRequest {
        pub revision: i64,
        pub physical: bool,
    }

    pub struct CompactionResponse {
        pub header: ResponseHeader,
    }
}
