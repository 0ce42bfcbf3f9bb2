//! Types shared by many messages.

wire_structs! {
    /// Carried by every response (etcd `ResponseHeader`).
    pub struct ResponseHeader {
        pub cluster_id: u64,
        pub member_id: u64,
        pub revision: i64,
        pub raft_term: u64,
    }

    /// etcd `mvccpb.KeyValue`.
    pub struct KeyValue {
        pub key: Vec<u8>,
        pub create_revision: i64,
        pub mod_revision: i64,
        pub version: i64,
        pub value: Vec<u8>,
        pub lease: i64,
    }
}
