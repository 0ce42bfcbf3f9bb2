//! Watch create/cancel/progress and the streamed watch responses.

use super::common::{KeyValue, ResponseHeader};

wire_enums! {
    /// etcd `WatchCreateRequest.FilterType`.
    pub enum WatchFilterType { NoPut, NoDelete }
}

wire_default_enums! {
    /// etcd `mvccpb.Event.EventType`.
    pub enum EventType { #[default] Put, Delete }
}

wire_structs! {
    pub struct WatchCreateRequest {
        pub key: Vec<u8>,
        pub range_end: Vec<u8>,
        pub start_revision: i64,
        pub progress_notify: bool,
        pub filters: Vec<WatchFilterType>,
        pub prev_kv: bool,
        /// 0: the server assigns one.
        pub watch_id: i64,
        pub fragment: bool,
    }

    pub struct WatchCancelRequest {
        pub watch_id: i64,
    }

    /// etcd `WatchProgressRequest`: asks for a progress notification
    /// (answered with `watch_id == -1`).
    pub struct WatchProgressRequest {}

    /// etcd `mvccpb.Event`.
    pub struct Event {
        pub event_type: EventType,
        pub kv: KeyValue,
        pub prev_kv: Option<KeyValue>,
    }

    /// etcd `WatchResponse`. A progress notification has no events, is
    /// neither created nor canceled, and `compact_revision == 0`.
    pub struct WatchResponse {
        pub header: ResponseHeader,
        pub watch_id: i64,
        pub created: bool,
        pub canceled: bool,
        pub compact_revision: i64,
        pub cancel_reason: String,
        pub fragment: bool,
        pub events: Vec<Event>,
    }
}
