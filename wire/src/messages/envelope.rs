//! The top-level `Request` and `Response` enums carried in frames.

use super::auth::*;
use super::cluster::*;
use super::kv::*;
use super::lease::*;
use super::maintenance::*;
use super::txn::*;
use super::watch::*;
use crate::api_error::ApiError;

wire_enums! {
    /// Every client operation of the native protocol.
    pub enum Request {
        Range(RangeRequest),
        Put(PutRequest),
        DeleteRange(DeleteRangeRequest),
        Txn(TxnRequest),
        Compact(CompactionRequest),
        WatchCreate(WatchCreateRequest),
        WatchCancel(WatchCancelRequest),
        WatchProgress(WatchProgressRequest),
        LeaseGrant(LeaseGrantRequest),
        LeaseRevoke(LeaseRevokeRequest),
        LeaseKeepAlive(LeaseKeepAliveRequest),
        LeaseTimeToLive(LeaseTimeToLiveRequest),
        LeaseLeases(LeaseLeasesRequest),
        MemberList(MemberListRequest),
        MemberAdd(MemberAddRequest),
        MemberRemove(MemberRemoveRequest),
        MemberUpdate(MemberUpdateRequest),
        MemberPromote(MemberPromoteRequest),
        Status(StatusRequest),
        HashKv(HashKvRequest),
        Defragment(DefragmentRequest),
        Alarm(AlarmRequest),
        MoveLeader(MoveLeaderRequest),
        Snapshot(SnapshotRequest),
        /// etcd's Auth service (appended: archived discriminants are stable).
        Auth(AuthRequest),
        /// Internal: a checked `LeaseRevoke` carrying its caller (appended).
        LeaseRevokeAs(LeaseRevokeAsRequest),
        /// Internal: a checked `Put` with a lease, carrying its caller.
        PutAs(PutAsRequest),
    }

    /// Every answer. `Watch` answers WatchCreate (created, then the event
    /// stream), WatchCancel and WatchProgress; `Snapshot` is streamed.
    pub enum Response {
        Range(RangeResponse),
        Put(PutResponse),
        DeleteRange(DeleteRangeResponse),
        Txn(TxnResponse),
        Compact(CompactionResponse),
        Watch(WatchResponse),
        LeaseGrant(LeaseGrantResponse),
        LeaseRevoke(LeaseRevokeResponse),
        LeaseKeepAlive(LeaseKeepAliveResponse),
        LeaseTimeToLive(LeaseTimeToLiveResponse),
        LeaseLeases(LeaseLeasesResponse),
        MemberList(MemberListResponse),
        MemberAdd(MemberAddResponse),
        MemberRemove(MemberRemoveResponse),
        MemberUpdate(MemberUpdateResponse),
        MemberPromote(MemberPromoteResponse),
        Status(StatusResponse),
        HashKv(HashKvResponse),
        Defragment(DefragmentResponse),
        Alarm(AlarmResponse),
        MoveLeader(MoveLeaderResponse),
        Snapshot(SnapshotResponse),
        Error(ApiError),
        Auth(AuthResponse),
    }
}

macro_rules! names {
    ($ty:ident, $arch:ident: $($v:ident),*) => {
        impl $ty {
            /// The variant's name, for errors and logs.
            pub fn name(&self) -> &'static str {
                match self { $($ty::$v(..) => stringify!($v),)* }
            }
        }
        impl $arch {
            /// The variant's name, for errors and logs.
            pub fn name(&self) -> &'static str {
                match self { $($arch::$v(..) => stringify!($v),)* }
            }
        }
    };
}

names!(Request, ArchivedRequest: Range, Put, DeleteRange, Txn, Compact, WatchCreate, WatchCancel,
    WatchProgress, LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases, MemberList,
    MemberAdd, MemberRemove, MemberUpdate, MemberPromote, Status, HashKv, Defragment, Alarm,
    MoveLeader, Snapshot, Auth, LeaseRevokeAs, PutAs);
names!(Response, ArchivedResponse: Range, Put, DeleteRange, Txn, Compact, Watch, LeaseGrant,
    LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases, MemberList, MemberAdd, MemberRemove,
    MemberUpdate, MemberPromote, Status, HashKv, Defragment, Alarm, MoveLeader, Snapshot, Error, Auth);

impl ArchivedRequest {
    /// Deserializes into the owned form.
    pub fn to_owned_request(&self) -> Result<Request, crate::WireError> {
        rkyv::deserialize::<Request, rkyv::rancor::Error>(self).map_err(|e| {
            crate::WireError::Validation {
                request_id: 0,
                type_name: "Request",
                reason: e.to_string(),
            }
        })
    }
}

impl ArchivedResponse {
    /// Deserializes into the owned form.
    pub fn to_owned_response(&self) -> Result<Response, crate::WireError> {
        rkyv::deserialize::<Response, rkyv::rancor::Error>(self).map_err(|e| {
            crate::WireError::Validation {
                request_id: 0,
                type_name: "Response",
                reason: e.to_string(),
            }
        })
    }
}
