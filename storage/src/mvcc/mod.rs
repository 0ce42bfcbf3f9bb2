//! The MVCC store (etcd semantics) on top of the B+ tree.

mod compact;
pub(crate) mod keys;
mod lease;
mod range;
mod range_del;
mod read;
mod snapshot;
mod store;
mod types;
mod write;

pub use lease::{LeaseRecord, LeaseRevokeResult};
pub use range::{KvRef, RangeSummary};
pub use store::{DEFAULT_MAX_LIVE_SNAPSHOTS, ReadView, Store, StoreOptions};
pub use types::*;
pub use write::WriteBatch;
