//! corekv's native protocol and the etcd v3 protobuf API.

pub mod proto;
