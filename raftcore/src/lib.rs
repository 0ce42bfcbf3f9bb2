//! Raft for corekv, as a pure state machine, and the write-ahead log.

pub mod types;

pub use types::{ConfChange, ConfState, Entry, EntryKind, HardState, NodeId, SnapshotMeta};
