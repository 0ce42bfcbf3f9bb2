//! Installing a leader's snapshot image as this member's store.
//!
//! Everything here is blocking file IO: the driver runs it on glommio's
//! blocking pool, never on the Raft executor.
//!
//! Crash order: the image is restored into `db.restore`, stamped with this
//! member's identity and made durable, renamed over `db`, and the directory
//! is fsynced; only then does the driver step the snapshot message, so the
//! WAL's snapshot marker (written for the Ready that carries the snapshot)
//! is never durable before the store it describes. A crash before the
//! directory fsync leaves either the old store or the new one under `db`;
//! both are consistent with a WAL that has no marker yet.

use std::path::{Path, PathBuf};

use corekv_storage::{Store, StoreOptions};

/// Where and how to install.
pub struct InstallPaths {
    pub db: PathBuf,
    pub store_options: StoreOptions,
    pub member_meta_key: &'static [u8],
    pub member_id: u64,
}

/// Restores the image at `image` and, if it is ahead of `current_applied`,
/// makes it the store at `paths.db`. Returns the new store (None: the image
/// was not newer, or it was refused and logged). The image file is removed
/// either way. An error is fatal (the store directory is in doubt).
pub fn install_image(
    image: &Path,
    current_applied: u64,
    paths: &InstallPaths,
) -> Result<Option<Store>, String> {
    let staging = paths.db.with_extension("restore");
    let _ = std::fs::remove_file(&staging);
    let restored = match std::fs::File::open(image) {
        Ok(mut file) => Store::restore_snapshot(&staging, &mut file, paths.store_options.clone())
            .map_err(|e| e.to_string()),
        Err(e) => Err(format!("snapshot {}: {e}", image.display())),
    };
    let _ = std::fs::remove_file(image);
    let restored = match restored {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "snapshot image refused");
            let _ = std::fs::remove_file(&staging);
            return Ok(None);
        }
    };
    if restored.applied_index() <= current_applied {
        drop(restored);
        let _ = std::fs::remove_file(&staging);
        return Ok(None);
    }
    // The image carries the leader's identity; this store is ours.
    let applied = restored.applied_index();
    let fail = |e: &dyn std::fmt::Display| format!("snapshot install: {e}");
    let mut batch = restored.write().map_err(|e| fail(&e))?;
    batch.put_meta(paths.member_meta_key, &paths.member_id.to_le_bytes());
    corekv_storage::failpoint::hit("snapshot-install");
    batch.commit(applied, true).map_err(|e| fail(&e))?;
    drop(restored);
    corekv_storage::failpoint::hit("snapshot-rename");
    std::fs::rename(&staging, &paths.db).map_err(|e| fail(&e))?;
    sync_dir(&paths.db).map_err(|e| fail(&e))?;
    let store = Store::open(&paths.db, paths.store_options.clone()).map_err(|e| fail(&e))?;
    Ok(Some(store))
}

/// Makes a rename in `file`'s directory durable.
pub fn sync_dir(file: &Path) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or_else(|| Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| std::io::Error::new(e.kind(), format!("fsync {}: {e}", dir.display())))
}
