//! The WAL's error type. Every variant names the operation and, where there
//! is one, the file and the offset or index involved.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An IO call failed. If it was a write or an fdatasync the WAL has
    /// latched into the failed state.
    #[error("wal: {op} failed on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Bytes on disk before the tail do not verify; the member must not
    /// start on this log.
    #[error(
        "wal: corrupted segment {} at offset {offset} (after index {last_good_index}): {reason}",
        path.display()
    )]
    Corrupted {
        path: PathBuf,
        offset: u64,
        last_good_index: u64,
        reason: String,
    },

    /// A previous write or fdatasync failed. Nothing after it is durable or
    /// acknowledged; the member must stop.
    #[error("wal: refusing {op}: the log failed earlier and is fail-stopped ({cause})")]
    Failed { op: &'static str, cause: String },

    /// The caller broke the append contract (non-contiguous entries, an
    /// index below the log's first index, ...). Nothing was written.
    #[error("wal: invalid {op}: {reason}")]
    InvalidArgument { op: &'static str, reason: String },

    /// One record would exceed `WalOptions::max_record_bytes`.
    #[error("wal: entry {index} needs {bytes} bytes, above max_record_bytes {max_bytes}")]
    RecordTooLarge {
        index: u64,
        bytes: usize,
        max_bytes: usize,
    },

    /// Requested entries are not in the log (compacted or not yet written).
    #[error("wal: entries [{lo}, {hi}) unavailable; the log holds [{first}, {last}]")]
    Unavailable {
        lo: u64,
        hi: u64,
        first: u64,
        last: u64,
    },

    /// Options that cannot work together.
    #[error("wal: invalid options: {0}")]
    InvalidOptions(String),

    /// A glommio executor could not be built (benchmark and helpers).
    #[error("wal: executor setup failed: {0}")]
    Executor(String),
}

impl WalError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        err: impl Into<std::io::Error>,
    ) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source: err.into(),
        }
    }
}
