//! Native-protocol messages. Names and semantics mirror etcd's v3 API
//! (`etcdserverpb`, `mvccpb`); see docs/wire-protocol.md for deviations.

/// Applies the derives every wire type needs: rkyv (with bytecheck
/// validation of the archived form) plus Debug/Clone/PartialEq/Eq. Structs
/// also get `Default`.
macro_rules! wire_structs {
    ($($(#[$m:meta])* pub struct $name:ident $body:tt)*) => {$(
        $(#[$m])*
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
        #[rkyv(derive(Debug))]
        pub struct $name $body
    )*};
}

macro_rules! wire_enums {
    ($($(#[$m:meta])* pub enum $name:ident $body:tt)*) => {$(
        $(#[$m])*
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
        #[rkyv(derive(Debug))]
        pub enum $name $body
    )*};
}

/// Like `wire_enums!`, plus `Default` (mark the default variant `#[default]`).
macro_rules! wire_default_enums {
    ($($(#[$m:meta])* pub enum $name:ident $body:tt)*) => {$(
        $(#[$m])*
        #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq, Default)]
        #[rkyv(derive(Debug))]
        pub enum $name $body
    )*};
}

mod auth;
mod cluster;
mod common;
mod envelope;
mod kv;
mod lease;
mod maintenance;
mod txn;
mod watch;

pub use auth::*;
pub use cluster::*;
pub use common::*;
pub use envelope::*;
pub use kv::*;
pub use lease::*;
pub use maintenance::*;
pub use txn::*;
pub use watch::*;
