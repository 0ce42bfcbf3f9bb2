//! The crate's single error type.

use std::path::PathBuf;

/// Everything `corekv-tune` can fail with. Odd or missing `/proc` and `/sys`
/// contents are *not* errors of the probe as a whole: they are recorded as
/// unavailable items in the report. These variants are for the cases where a
/// command cannot do what it was asked (data dir unusable, bad arguments,
/// applying a profile without privileges).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TuneError {
    /// An IO operation on a named file failed.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A kernel-provided text file did not have the expected shape.
    #[error("cannot parse {what} from {path}: unexpected content {excerpt:?}")]
    Parse {
        what: &'static str,
        path: PathBuf,
        /// The first bytes of the offending text, bounded by `MAX_EXCERPT_CHARS`.
        excerpt: String,
    },
    /// A command-line or options value is out of range.
    #[error("invalid argument {name}: {detail}")]
    InvalidArgument { name: &'static str, detail: String },
    /// `profile --apply` needs root to write /etc/sysctl.d and run sysctl.
    #[error(
        "profile --apply must run as root (effective uid is {euid}); \
         run it with sudo, or print the profile without --apply and install it yourself"
    )]
    NotRoot { euid: u32 },
    /// The named profile is not one of the shipped ones.
    #[error("unknown profile {name:?}; available: {available}")]
    UnknownProfile { name: String, available: String },
    /// A shipped profile file does not follow the `key = value` format.
    #[error("profile {profile} line {line}: {detail}")]
    BadProfile {
        profile: String,
        line: usize,
        detail: String,
    },
    /// `sysctl -p` ran but reported failure.
    #[error("sysctl -e -p {path} failed ({status}): {stderr}")]
    Sysctl {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    /// JSON (de)serialisation of a probe report failed.
    #[error("{op} probe JSON: {source}")]
    Json {
        op: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Bound on how much offending text a [`TuneError::Parse`] carries.
pub const MAX_EXCERPT_CHARS: usize = 80;

impl TuneError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TuneError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parse(what: &'static str, path: impl Into<PathBuf>, text: &str) -> Self {
        TuneError::Parse {
            what,
            path: path.into(),
            excerpt: text.chars().take(MAX_EXCERPT_CHARS).collect(),
        }
    }
}

pub type Result<T, E = TuneError> = std::result::Result<T, E>;
