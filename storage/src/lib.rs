//! corekv's storage engine: a memory-mapped copy-on-write B+ tree and the
//! MVCC store on top of it. See `docs/storage-format.md` for the file format,
//! the commit protocol and the soundness argument for the memory mapping.

pub mod backend;
mod checksum;
mod db;
mod defrag;
mod error;
mod freelist;
#[doc(hidden)]
pub mod fuzzing;
mod mapping;
mod mvcc;
mod node;
mod page;
mod tree;
mod txn;
mod verified;

pub use backend::{Backend, FileBackend, Mapped, MemBackend};
pub use checksum::crc32c as checksum_crc32c;
pub use db::IntegrityReport;
pub use defrag::DefragReport;
pub use error::StorageError;
pub use mvcc::*;
pub use page::{FORMAT_VERSION, PAGE_SIZE};

#[cfg(test)]
mod tree_tests;

/// Largest user key (keys are stored inline in tree pages).
pub const MAX_KEY_BYTES: usize = 960;
/// Largest value (stored in overflow pages above ~2 KiB).
pub const MAX_VALUE_BYTES: usize = 2 << 20;
