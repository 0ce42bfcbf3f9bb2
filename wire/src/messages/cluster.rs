//! Cluster membership.

use super::common::ResponseHeader;

wire_structs! {
    /// etcd `Member`.
    pub struct Member {
        pub id: u64,
        pub name: String,
        pub peer_urls: Vec<String>,
        pub client_urls: Vec<String>,
        pub is_learner: bool,
        /// corekv: the member's native-protocol address ("" if unknown),
        /// so `corekvctl --cluster` can reach every member.
        pub native_addr: String,
    }
    pub struct MemberListRequest {
        pub linearizable: bool,
    }
    pub struct MemberListResponse {
        pub header: ResponseHeader,
        pub members: Vec<Member>,
    }
    pub struct MemberAddRequest {
        pub peer_urls: Vec<String>,
        pub is_learner: bool,
    }
    pub struct MemberAddResponse {
        pub header: ResponseHeader,
        pub member: Option<Member>,
        pub members: Vec<Member>,
    }
    pub struct MemberRemoveRequest {
        pub id: u64,
    }
    pub struct MemberRemoveResponse {
        pub header: ResponseHeader,
        pub members: Vec<Member>,
    }
    pub struct MemberUpdateRequest {
        pub id: u64,
        pub peer_urls: Vec<String>,
    }
    pub struct MemberUpdateResponse {
        pub header: ResponseHeader,
        pub members: Vec<Member>,
    }
    pub struct MemberPromoteRequest {
        pub id: u64,
    }
    pub struct MemberPromoteResponse {
        pub header: ResponseHeader,
        pub members: Vec<Member>,
    }
}
