//! Reading `/proc` and `/sys` under a configurable root, so the probe can be
//! run against a fixture tree in tests.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Result, TuneError};

/// Kernel text files are small; this bounds what we read from any of them.
pub const MAX_KERNEL_FILE_BYTES: u64 = 1 << 20;

/// Where `proc/` and `sys/` live: `/` on a real host, a fixture dir in tests.
#[derive(Debug, Clone)]
pub struct HostFs {
    root: PathBuf,
}

impl HostFs {
    /// The running system.
    pub fn system() -> Self {
        HostFs {
            root: PathBuf::from("/"),
        }
    }

    /// A tree laid out like `/` (with `proc/...` and `sys/...`) under `root`.
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        HostFs { root: root.into() }
    }

    /// Absolute path of a root-relative kernel file such as `proc/meminfo`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// Reads a root-relative kernel text file, bounded by [`MAX_KERNEL_FILE_BYTES`].
    pub fn read(&self, rel: &str) -> Result<String> {
        read_bounded(&self.path(rel))
    }

    /// Reads and parses a root-relative file, naming it in any error.
    pub fn parse<T>(
        &self,
        rel: &str,
        what: &'static str,
        parser: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T> {
        let path = self.path(rel);
        let text = read_bounded(&path)?;
        parser(&text).ok_or_else(|| TuneError::parse(what, path, &text))
    }

    /// True when the root-relative path exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }
}

/// Reads at most [`MAX_KERNEL_FILE_BYTES`] of a text file.
pub fn read_bounded(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).map_err(|e| TuneError::io("open", path, e))?;
    let mut text = String::new();
    file.take(MAX_KERNEL_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| TuneError::io("read", path, e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_relative_to_root() {
        let dir = tempfile::Builder::new()
            .prefix("corekv-tune-host")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        std::fs::create_dir_all(dir.path().join("proc/sys/vm")).expect("mkdir");
        std::fs::write(dir.path().join("proc/sys/vm/swappiness"), "30\n").expect("write");
        std::fs::write(dir.path().join("proc/sys/vm/dirty_ratio"), "lots\n").expect("write");
        let host = HostFs::with_root(dir.path());
        assert_eq!(host.read("/proc/sys/vm/swappiness").expect("read"), "30\n");
        assert_eq!(
            host.parse(
                "proc/sys/vm/swappiness",
                "swappiness",
                crate::parse::single_u64
            )
            .expect("parse"),
            30
        );
        let err = host
            .parse(
                "proc/sys/vm/dirty_ratio",
                "dirty ratio",
                crate::parse::single_u64,
            )
            .expect_err("junk");
        assert!(matches!(
            err,
            TuneError::Parse {
                what: "dirty ratio",
                ..
            }
        ));
        assert!(matches!(
            host.read("proc/missing"),
            Err(TuneError::Io { op: "open", .. })
        ));
        assert!(host.exists("proc/sys") && !host.exists("sys"));
    }
}
