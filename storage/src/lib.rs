//! corekv's storage engine: a memory-mapped copy-on-write B+ tree and the
//! MVCC store on top of it. See `docs/storage-format.md` for the file format,
//! the commit protocol and the soundness argument for the memory mapping.
//!
//! Usage: one [`Store`] per member. The apply loop is the single writer:
//! `store.write()` returns an exclusive [`WriteBatch`]; every mutating op in
//! it gets its own main revision and all of them land in one commit together
//! with the Raft applied index (`commit(applied_index, durable)`). Readers on
//! any thread take `store.read()` (a cheap [`ReadView`] snapshot) and never
//! block the writer.
//!
//! Things to know:
//! - Non-durable commits are the fast path; call [`Store::sync`] (or commit
//!   with `durable = true`) periodically as the checkpoint. After a crash the
//!   store reopens at the last durable commit; replay the WAL from
//!   [`Store::durable_applied_index`]. Pages freed since the last checkpoint
//!   that existed at it cannot be reused before the next one, so rare
//!   checkpoints cost file growth.
//! - Physical compaction runs a bounded step inside each commit; when no
//!   writes arrive, drive it with [`Store::compact_step`] while
//!   [`Store::compaction_pending`] is true.
//! - Do not call `sync`, `compact_step`, `defragment` or `check_integrity`
//!   on a thread that holds an open `WriteBatch`: they take the writer lock.
//! - Long-lived `ReadView`s pin the pages they can reach (file growth) and
//!   delay the shrink at the end of a defragmentation.
//! - After an IO error the store is latched failed (fail-stop); reopen it.

pub mod backend;
mod checksum;
mod db;
mod defrag;
mod error;
pub mod failpoint;
mod freelist;
#[doc(hidden)]
pub mod fuzzing;
mod inspect;
mod leaf_fill;
mod mapping;
mod mvcc;
mod node;
mod page;
mod repack;
mod splitkey;
mod tree;
mod txn;
mod txn_bulk;
mod verified;
mod writeout;

pub use backend::{Backend, FileBackend, MapAdvice, Mapped, MemBackend};
pub use checksum::crc32c as checksum_crc32c;
pub use db::IntegrityReport;
pub use defrag::DefragReport;
pub use error::StorageError;
pub use inspect::{Budget, LevelBudget, TableBudget, inspect};
pub use mvcc::*;
pub use page::{FORMAT_VERSION, PAGE_SIZE};

#[cfg(test)]
mod test_util;
#[cfg(test)]
mod tree_tests;

/// Largest user key: etcd's default request limit (`--max-request-bytes`,
/// 1.5 MiB), which bounds a key in etcd. The server's request-size limit
/// bounds key + value further. Keys longer than ~1 KiB are stored as
/// stubs with a key chain (see `docs/storage-format.md`).
pub const MAX_KEY_BYTES: usize = 1_572_864;
/// Largest value (stored in overflow pages above ~2 KiB).
pub const MAX_VALUE_BYTES: usize = 2 << 20;
