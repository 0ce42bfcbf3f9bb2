//! The crate's single error type.

use std::path::PathBuf;

/// Every failure the storage engine reports. Bad bytes on disk are
/// `Corrupted`, never a panic.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The requested revision was removed by compaction.
    #[error(
        "mvcc: required revision has been compacted (requested {requested}, compacted {compacted})"
    )]
    Compacted { requested: i64, compacted: i64 },
    /// The requested revision is above the current revision.
    #[error(
        "mvcc: required revision is a future revision (requested {requested}, current {current})"
    )]
    FutureRevision { requested: i64, current: i64 },
    /// A put would grow the file beyond the quota.
    #[error("mvcc: database space exceeded (size {size_bytes} B, quota {quota_bytes} B)")]
    NoSpace { size_bytes: u64, quota_bytes: u64 },
    #[error("invalid sort option")]
    InvalidSortOption,
    #[error("key is not provided")]
    KeyNotProvided,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// Key longer than [`crate::MAX_KEY_BYTES`].
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },
    /// Value longer than [`crate::MAX_VALUE_BYTES`].
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge { len: usize, max: usize },
    /// On-disk bytes failed validation.
    #[error("corrupted data at page {page}: {what}")]
    Corrupted { page: u64, what: String },
    /// The file's meta pages are valid but of another on-disk format
    /// version. Upgrade: `Store::write_snapshot` with the build that wrote
    /// the file (the stream format does not depend on the file format),
    /// then `Store::restore_snapshot` with this one.
    #[error(
        "unsupported store format version {found} (this build reads version {supported}; \
         move the data with a snapshot: `snapshot save` with the old build, \
         `snapshot restore` with this one)"
    )]
    UnsupportedFormat { found: u8, supported: u8 },
    /// An IO call failed; the store latches into the failed state afterwards.
    #[error("io error during {op} on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A previous IO error latched the store (fail-stop); reopen it.
    #[error("store failed earlier and must be reopened: {0}")]
    Failed(String),
    /// `Store::read` refused a new reader: readers already hold `live`
    /// distinct older snapshots, the limit (`StoreOptions::max_live_snapshots`).
    #[error("too many live read snapshots ({live}, limit {max})")]
    TooManyReaders { live: usize, max: usize },
    /// A put or revoke named a lease the store does not hold.
    #[error("lease {id:x} not found")]
    LeaseNotFound { id: i64 },
    /// A grant named a lease id that is taken.
    #[error("lease {id:x} already exists")]
    LeaseExists { id: i64 },
    /// A snapshot stream was malformed.
    #[error("invalid snapshot stream: {0}")]
    InvalidSnapshot(String),
}

impl StorageError {
    pub(crate) fn corrupted(page: u64, what: impl Into<String>) -> Self {
        StorageError::Corrupted {
            page,
            what: what.into(),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;
