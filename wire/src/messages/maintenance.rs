//! Maintenance: status, hash-kv, defragment, alarms, move-leader, snapshot.

use super::common::ResponseHeader;

wire_default_enums! {
    /// etcd `AlarmType`.
    pub enum AlarmType { #[default] None, Nospace, Corrupt }
    /// etcd `AlarmRequest.AlarmAction`.
    pub enum AlarmAction { #[default] Get, Activate, Deactivate }
}

wire_structs! {
    pub struct StatusRequest {}
    pub struct StatusResponse {
        pub header: ResponseHeader,
        pub version: String,
        pub db_size: i64,
        pub leader: u64,
        pub raft_index: u64,
        pub raft_term: u64,
        pub raft_applied_index: u64,
        pub errors: Vec<String>,
        pub db_size_in_use: i64,
        pub is_learner: bool,
    }
    pub struct HashKvRequest {
        pub revision: i64,
    }
    pub struct HashKvResponse {
        pub header: ResponseHeader,
        pub hash: u32,
        pub compact_revision: i64,
        /// etcd 3.5+: the revision the hash was computed at.
        pub hash_revision: i64,
    }
    pub struct DefragmentRequest {}
    pub struct DefragmentResponse {
        pub header: ResponseHeader,
    }
    pub struct AlarmRequest {
        pub action: AlarmAction,
        /// 0: all members.
        pub member_id: u64,
        pub alarm: AlarmType,
    }
    pub struct AlarmMember {
        pub member_id: u64,
        pub alarm: AlarmType,
    }
    pub struct AlarmResponse {
        pub header: ResponseHeader,
        pub alarms: Vec<AlarmMember>,
    }
    pub struct MoveLeaderRequest {
        pub target_id: u64,
    }
    pub struct MoveLeaderResponse {
        pub header: ResponseHeader,
    }
    pub struct SnapshotRequest {}
    /// One chunk of a snapshot stream; the last has `remaining_bytes == 0`.
    pub struct SnapshotResponse {
        pub header: ResponseHeader,
        pub remaining_bytes: u64,
        pub blob: Vec<u8>,
    }
}
