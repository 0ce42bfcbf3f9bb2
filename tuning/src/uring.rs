//! Whether this process can create an io_uring, which glommio (and so
//! corekv's executors and WAL) cannot run without.

use serde::{Deserialize, Serialize};

/// Outcome of trying `io_uring_setup` once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoUringStatus {
    /// A ring was created (and closed again).
    Supported,
    /// `ENOSYS`: the kernel was built without io_uring or is older than 5.1.
    NotInKernel,
    /// `EPERM`: refused by `kernel.io_uring_disabled`, a seccomp filter
    /// (containers) or an LSM.
    Disabled,
    /// Any other error, e.g. `ENOMEM` from RLIMIT_MEMLOCK on kernels before 5.12.
    Failed,
}

/// What the io_uring check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoUringProbe {
    pub status: IoUringStatus,
    /// The errno of the failed setup, if it failed.
    pub errno: Option<i32>,
    /// The error text of the failed setup, if it failed.
    pub error: Option<String>,
    /// `kernel.io_uring_disabled` (kernel 6.6+): 0 allowed, 1 only for the
    /// `kernel.io_uring_group` group, 2 disabled.
    pub sysctl_disabled: Option<u64>,
}

/// Ring entries for the check; tiny so the check itself needs almost no memory.
const PROBE_RING_ENTRIES: u32 = 4;

/// Creates and drops a small ring.
pub fn probe(sysctl_disabled: Option<u64>) -> IoUringProbe {
    match io_uring::IoUring::new(PROBE_RING_ENTRIES) {
        Ok(ring) => {
            drop(ring);
            IoUringProbe {
                status: IoUringStatus::Supported,
                errno: None,
                error: None,
                sysctl_disabled,
            }
        }
        Err(e) => IoUringProbe {
            status: classify(e.raw_os_error()),
            errno: e.raw_os_error(),
            error: Some(e.to_string()),
            sysctl_disabled,
        },
    }
}

fn classify(errno: Option<i32>) -> IoUringStatus {
    match errno {
        Some(libc::ENOSYS) => IoUringStatus::NotInKernel,
        Some(libc::EPERM) | Some(libc::EACCES) => IoUringStatus::Disabled,
        _ => IoUringStatus::Failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_classification() {
        assert_eq!(classify(Some(libc::ENOSYS)), IoUringStatus::NotInKernel);
        assert_eq!(classify(Some(libc::EPERM)), IoUringStatus::Disabled);
        assert_eq!(classify(Some(libc::ENOMEM)), IoUringStatus::Failed);
        assert_eq!(classify(None), IoUringStatus::Failed);
    }

    #[test]
    fn probe_reports_consistently() {
        // Whatever this host supports, an error is reported iff setup failed.
        let p = probe(None);
        assert_eq!(p.status == IoUringStatus::Supported, p.errno.is_none());
        assert_eq!(p.errno.is_none(), p.error.is_none());
    }
}
