//! Lease grant/revoke/keep-alive/time-to-live/leases.

use super::common::ResponseHeader;
use super::kv::PutRequest;

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
    /// Internal to the cluster (refused from clients): a `LeaseRevoke`
    /// under auth, with the caller the accepting member resolved, so that
    /// every member checks at apply that the caller may write each key
    /// attached to the lease then (etcd's `checkLeasePuts`, which reads
    /// the entry header's user name and auth revision).
    pub struct LeaseRevokeAsRequest {
        pub id: i64,
        /// Empty: the request carried no credentials.
        pub user: String,
        /// The revision the caller's credentials are valid at (a JWT's
        /// signing revision; the current one for a simple token or a
        /// certificate name).
        pub auth_revision: u64,
    }
    /// Internal to the cluster (refused from clients): a `Put` naming a
    /// lease under auth, with its caller, so that apply checks the caller
    /// may write every key already on the lease (etcd's `checkLeasePuts`
    /// in its auth applier's Put: whoever cannot revoke a lease may not
    /// attach keys to it).
    pub struct PutAsRequest {
        pub put: PutRequest,
        /// As `LeaseRevokeAsRequest::user`.
        pub user: String,
        pub auth_revision: u64,
    }
}
