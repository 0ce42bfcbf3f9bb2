//! Lease grant/revoke/keep-alive/time-to-live/leases.

use super::common::ResponseHeader;

wire_structs! {
    pub struct LeaseGrantRequest {
        /// etcd `TTL`, seconds.
        pub ttl: i64,
        /// etcd `ID`; 0: the server picks one.
        pub id: i64,
    }
    pub struct LeaseGrantResponse {
        pub header: ResponseHeader,
        pub id: i64,
        pub ttl: i64,
        pub error: String,
    }
    pub struct LeaseRevokeRequest {
        pub id: i64,
    }
    pub struct LeaseRevokeResponse {
        pub header: ResponseHeader,
    }
    pub struct LeaseKeepAliveRequest {
        pub id: i64,
    }
    /// `ttl == 0`: the lease was not found (etcd semantics).
    pub struct LeaseKeepAliveResponse {
        pub header: ResponseHeader,
        pub id: i64,
        pub ttl: i64,
    }
    pub struct LeaseTimeToLiveRequest {
        pub id: i64,
        pub keys: bool,
    }
    /// `ttl == -1`: the lease was not found (etcd semantics).
    pub struct LeaseTimeToLiveResponse {
        pub header: ResponseHeader,
        pub id: i64,
        pub ttl: i64,
        pub granted_ttl: i64,
        pub keys: Vec<Vec<u8>>,
    }
    pub struct LeaseLeasesRequest {}
    pub struct LeaseStatus {
        pub id: i64,
    }
    pub struct LeaseLeasesResponse {
        pub header: ResponseHeader,
        pub leases: Vec<LeaseStatus>,
    }
}
