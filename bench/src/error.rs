//! The bench crate's error type. Per-request failures are not errors of the
//! tool: they are counted by kind in the report (see `OpError`).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("invalid endpoint {endpoint:?}: {source}")]
    Endpoint {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("connecting to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: tonic::transport::Error,
    },
    #[error("{operation} failed during setup: {status}")]
    Setup {
        operation: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("{operation}: {detail}")]
    Protocol {
        operation: &'static str,
        detail: String,
    },
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing histogram log {path}: {detail}")]
    HistogramLog { path: PathBuf, detail: String },
    #[error("no endpoint reports itself as leader ({0})")]
    NoLeader(String),
    #[error("{what} failed to start: {detail}")]
    ServerStart { what: String, detail: String },
    #[error("native protocol: {0}")]
    Native(String),
    #[error("wal bench: {0}")]
    Wal(String),
    #[error("TLS: {operation} {path}: {detail}")]
    Tls {
        operation: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("authenticating as {user:?} at {endpoint}: {detail}")]
    Auth {
        endpoint: String,
        user: String,
        detail: String,
    },
}

impl BenchError {
    pub fn setup(operation: &'static str, status: tonic::Status) -> Self {
        BenchError::Setup {
            operation,
            status: Box::new(status),
        }
    }
}

/// One failed request, grouped in the report by `kind`.
#[derive(Debug, Clone)]
pub struct OpError {
    pub kind: String,
}

/// Longest error kind kept; longer messages are cut so that unique details
/// (ids, addresses) cannot blow up the error table.
const MAX_KIND_CHARS: usize = 120;

impl OpError {
    pub fn new(kind: impl Into<String>) -> Self {
        let mut kind: String = kind.into();
        if let Some((idx, _)) = kind.char_indices().nth(MAX_KIND_CHARS) {
            kind.truncate(idx);
        }
        OpError { kind }
    }
}

impl From<tonic::Status> for OpError {
    fn from(s: tonic::Status) -> Self {
        OpError::new(format!("{:?}: {}", s.code(), s.message()))
    }
}
