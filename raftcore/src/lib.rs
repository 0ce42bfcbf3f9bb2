//! Raft for corekv, as a pure state machine, and the write-ahead log.

pub mod types;
pub mod wal;

pub use types::{ConfChange, ConfState, Entry, EntryKind, HardState, NodeId, SnapshotMeta};
