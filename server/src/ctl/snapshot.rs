//! `corekvctl snapshot save|status|restore`, etcdctl 3.4's commands over
//! corekv's snapshot files.
//!
//! A saved file is what Maintenance.Snapshot streams (and what
//! `etcdctl snapshot save` writes from corekv): the store image, zero
//! padding to a multiple of 512 bytes, and the SHA-256 of both
//! (`node/snapshot_stream.rs`). `restore` builds the data directory of one
//! member of a *new* cluster from it: same keys, revisions and leases, a new
//! identity from `--initial-cluster`, an empty Raft log.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use corekv_storage::Store;
use corekv_wire::messages as w;
use corekv_wire::{ClientOptions, WireError};
use sha2::{Digest, Sha256};

use super::output::{self, Format};
use super::{Cli, EXIT_BAD_ARGS, EXIT_ERROR, Failure, print_json};
use crate::cluster::ClusterInfo;
use crate::node::snapshot_stream::SNAPSHOT_ALIGN_BYTES;
use crate::node::start;

/// etcdctl's ExitInterrupted: `snapshot save` failed mid-way.
pub const EXIT_INTERRUPTED: i32 = 5;
/// How long `snapshot save` waits for the first chunk (the member writes
/// the whole image before sending it).
const SAVE_FIRST_CHUNK_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stores an etcd node backend snapshot to a given file.
    Save { filename: PathBuf },
    /// Gets backend snapshot status of a given file.
    Status { filename: PathBuf },
    /// Restores an etcd member snapshot to an etcd directory.
    Restore {
        filename: PathBuf,
        /// Path to the data directory (default: ./<name>.corekv).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Human-readable name for this member.
        #[arg(long, default_value = "default")]
        name: String,
        /// Initial cluster configuration for restore bootstrap.
        #[arg(long, default_value = "default=http://localhost:2380")]
        initial_cluster: String,
        /// Initial cluster token for the etcd cluster during restore bootstrap.
        #[arg(long, default_value = "etcd-cluster")]
        initial_cluster_token: String,
        /// List of this member's peer URLs to advertise to the rest of the cluster.
        #[arg(long, default_value = "http://localhost:2380", value_delimiter = ',')]
        initial_advertise_peer_urls: Vec<String>,
        /// Ignore snapshot integrity hash value (required if copied from data directory).
        #[arg(long)]
        skip_hash_check: bool,
    },
}

fn failure(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

pub async fn run(cli: &Cli, cmd: &SnapshotCmd) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::Save { filename } => save(cli, filename).await,
        SnapshotCmd::Status { filename } => status(cli, filename),
        SnapshotCmd::Restore {
            filename,
            data_dir,
            name,
            initial_cluster,
            initial_cluster_token,
            initial_advertise_peer_urls,
            skip_hash_check,
        } => {
            let data_dir = data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{name}.corekv")));
            let spec = RestoreSpec {
                data_dir: &data_dir,
                name,
                initial_cluster,
                token: initial_cluster_token,
                advertise_peer_urls: initial_advertise_peer_urls,
                skip_hash_check: *skip_hash_check,
            };
            restore(filename, &spec)
        }
    }
}

/// Streams the snapshot of the one endpoint given into `FILE.part`,
/// checks its digest, fsyncs it and renames it to `FILE` (etcdctl's steps).
async fn save(cli: &Cli, path: &Path) -> Result<(), Failure> {
    let [endpoint] = cli.endpoints.as_slice() else {
        return Err(failure(
            EXIT_INTERRUPTED,
            format!(
                "snapshot must be requested to one selected node, not multiple {:?}",
                cli.endpoints
            ),
        ));
    };
    let opts = ClientOptions {
        dial_timeout: cli.dial_timeout,
        request_timeout: SAVE_FIRST_CHUNK_TIMEOUT,
        ..Default::default()
    };
    let interrupted = |e: WireError| {
        let f = Failure::from(e);
        failure(EXIT_INTERRUPTED, f.message)
    };
    let client = corekv_wire::Client::connect(endpoint, opts)
        .await
        .map_err(Failure::from)?;
    let part = PathBuf::from(format!("{}.part", path.display()));
    let io_err = |e: std::io::Error| failure(EXIT_INTERRUPTED, format!("{}: {e}", part.display()));
    let mut file = std::fs::File::create(&part).map_err(io_err)?;
    let streamed = async {
        let mut stream = client.snapshot().await.map_err(interrupted)?;
        let mut bytes = 0u64;
        let mut hasher = Sha256::new();
        let mut tail = Vec::new();
        while let Some(frame) = stream.next_frame().await.map_err(interrupted)? {
            let resp = frame.to_owned_response().map_err(interrupted)?;
            let w::Response::Snapshot(chunk) = resp else {
                return Err(failure(
                    EXIT_INTERRUPTED,
                    format!("unexpected {} in a snapshot stream", resp.name()),
                ));
            };
            file.write_all(&chunk.blob).map_err(io_err)?;
            bytes += chunk.blob.len() as u64;
            // Hash everything but the last 32 bytes seen so far.
            tail.extend_from_slice(&chunk.blob);
            if tail.len() > 32 {
                let cut = tail.len() - 32;
                hasher.update(&tail[..cut]);
                tail.drain(..cut);
            }
        }
        if bytes % SNAPSHOT_ALIGN_BYTES != 32 || hasher.finalize().as_slice() != tail.as_slice() {
            return Err(failure(
                EXIT_INTERRUPTED,
                "snapshot stream integrity check failed (size or SHA-256 trailer)",
            ));
        }
        file.sync_all().map_err(io_err)?;
        Ok(())
    }
    .await;
    if let Err(e) = streamed {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, path).map_err(io_err)?;
    println!("Snapshot saved at {}", path.display());
    Ok(())
}

/// What `snapshot status` prints.
struct Status {
    hash: u32,
    revision: i64,
    total_keys: u64,
    total_size: u64,
}

fn open(path: &Path) -> Result<std::fs::File, Failure> {
    std::fs::File::open(path).map_err(|e| failure(EXIT_ERROR, format!("{}: {e}", path.display())))
}

fn status(cli: &Cli, path: &Path) -> Result<(), Failure> {
    let file = open(path)?;
    let total_size = file
        .metadata()
        .map_err(|e| failure(EXIT_ERROR, e.to_string()))?
        .len();
    let info = Store::inspect_snapshot(&mut std::io::BufReader::new(file))
        .map_err(|e| failure(EXIT_ERROR, format!("{}: {e}", path.display())))?;
    let s = Status {
        hash: info.checksum,
        revision: info.revision,
        total_keys: info.entries,
        total_size,
    };
    print_status(cli.write_out, &s);
    Ok(())
}

fn print_status(format: Format, s: &Status) {
    let size = output::human_bytes(i64::try_from(s.total_size).unwrap_or(i64::MAX));
    match format {
        Format::Simple => println!("{:x}, {}, {}, {}", s.hash, s.revision, s.total_keys, size),
        Format::Json => print_json(&serde_json::json!({
            "hash": s.hash,
            "revision": s.revision,
            "totalKey": s.total_keys,
            "totalSize": s.total_size,
        })),
        Format::Fields => super::fields::Fields::default()
            .line("Hash", s.hash)
            .line("Revision", s.revision)
            .line("Keys", s.total_keys)
            .line("Size", s.total_size)
            .print(),
        Format::Table => print!(
            "{}",
            output::table(
                &["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"],
                &[vec![
                    format!("{:x}", s.hash),
                    s.revision.to_string(),
                    s.total_keys.to_string(),
                    size
                ]]
            )
        ),
    }
}

pub struct RestoreSpec<'a> {
    pub data_dir: &'a Path,
    pub name: &'a str,
    pub initial_cluster: &'a str,
    pub token: &'a str,
    pub advertise_peer_urls: &'a [String],
    pub skip_hash_check: bool,
}

/// Builds `data_dir` for one member of a new cluster from a snapshot file.
/// Refuses an existing data dir (as etcd). On failure nothing is left.
pub fn restore(path: &Path, spec: &RestoreSpec<'_>) -> Result<(), Failure> {
    let (cluster, member_id) = ClusterInfo::bootstrap_member(
        spec.initial_cluster,
        spec.token,
        spec.name,
        spec.advertise_peer_urls,
    )
    .map_err(|e| failure(EXIT_BAD_ARGS, e))?;
    if spec.data_dir.exists() {
        return Err(failure(
            EXIT_ERROR,
            format!("data-dir {:?} exists", spec.data_dir.display().to_string()),
        ));
    }
    let image_bytes = image_len(path, spec.skip_hash_check)?;
    let result = build_data_dir(path, image_bytes, spec.data_dir, &cluster, member_id);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(spec.data_dir);
    }
    result
}

/// Bytes of the file restore reads: all but the digest when the file has
/// one (verified unless `skip_hash_check`), the whole file otherwise (a raw
/// image needs `--skip-hash-check`, as etcd wants for a copied db file).
fn image_len(path: &Path, skip_hash_check: bool) -> Result<u64, Failure> {
    let len = open(path)?
        .metadata()
        .map_err(|e| failure(EXIT_ERROR, e.to_string()))?
        .len();
    let has_digest = len % SNAPSHOT_ALIGN_BYTES == 32;
    if skip_hash_check {
        return Ok(if has_digest { len - 32 } else { len });
    }
    if !has_digest {
        return Err(failure(
            EXIT_ERROR,
            "snapshot missing hash but --skip-hash-check=false",
        ));
    }
    // Streamed hash: the file may be large.
    let mut hasher = Sha256::new();
    let mut body = open(path)?.take(len - 32);
    std::io::copy(&mut body, &mut hasher).map_err(|e| failure(EXIT_ERROR, e.to_string()))?;
    let mut digest = [0u8; 32];
    let mut file = body.into_inner();
    file.read_exact(&mut digest)
        .map_err(|e| failure(EXIT_ERROR, e.to_string()))?;
    if hasher.finalize().as_slice() != digest {
        return Err(failure(
            EXIT_ERROR,
            "expected sha256 trailer does not match: snapshot file integrity check failed",
        ));
    }
    Ok(len - 32)
}

fn build_data_dir(
    path: &Path,
    image_bytes: u64,
    data_dir: &Path,
    cluster: &ClusterInfo,
    member_id: u64,
) -> Result<(), Failure> {
    let err = |e: &dyn std::fmt::Display| failure(EXIT_ERROR, e.to_string());
    for dir in [start::snap_dir(data_dir), start::wal_dir(data_dir)] {
        std::fs::create_dir_all(&dir)
            .map_err(|e| err(&format!("create {}: {e}", dir.display())))?;
    }
    let mut input = std::io::BufReader::new(open(path)?.take(image_bytes));
    let db = start::db_path(data_dir);
    let store = Store::restore_snapshot(&db, &mut input, corekv_storage::StoreOptions::default())
        .map_err(|e| err(&format!("restore {}: {e}", path.display())))?;
    // The image carries the old cluster's identity and Raft position; the
    // new member starts a new log at index 1 (applied 0) with the new
    // membership. Keys, revisions and compaction state are kept.
    let mut batch = store.write().map_err(|e| err(&e))?;
    let cluster_json = serde_json::to_vec(cluster).map_err(|e| err(&e))?;
    batch.put_meta(start::CLUSTER_META_KEY, &cluster_json);
    batch.put_meta(start::MEMBER_META_KEY, &member_id.to_le_bytes());
    batch.delete_meta(start::APPLIED_TERM_META_KEY);
    batch.commit(0, true).map_err(|e| err(&e))?;
    drop(store);
    sync_dir(&start::snap_dir(data_dir)).map_err(|e| err(&e))?;
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::snapshot_stream::Framer;

    fn saved_file(dir: &Path) -> (PathBuf, corekv_storage::SnapshotInfo) {
        let src = Store::open(&dir.join("src.db"), Default::default()).unwrap();
        let mut b = src.write().unwrap();
        for i in 0..30 {
            b.put(&corekv_storage::PutRequest {
                key: format!("k{i}").into_bytes(),
                value: b"v".to_vec(),
                ..Default::default()
            })
            .unwrap();
        }
        b.put_meta(start::APPLIED_TERM_META_KEY, &9u64.to_le_bytes());
        b.commit(40, true).unwrap();
        let mut image = Vec::new();
        let info = src.write_snapshot(&mut image).unwrap();
        let mut framer = Framer::new(image.as_slice(), image.len() as u64);
        let mut file = Vec::new();
        while let Some(c) = framer.next_chunk(1000).unwrap() {
            file.extend_from_slice(&c.blob);
        }
        let path = dir.join("snap.db");
        std::fs::write(&path, &file).unwrap();
        (path, info)
    }

    fn spec<'a>(data_dir: &'a Path, cluster: &'a str, urls: &'a [String]) -> RestoreSpec<'a> {
        RestoreSpec {
            data_dir,
            name: "m2",
            initial_cluster: cluster,
            token: "tok",
            advertise_peer_urls: urls,
            skip_hash_check: false,
        }
    }

    #[test]
    fn restore_keeps_data_and_takes_the_new_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (path, info) = saved_file(dir.path());
        let urls = vec!["http://127.0.0.1:2".to_string()];
        let data_dir = dir.path().join("m2");
        let spec = spec(
            &data_dir,
            "m1=http://127.0.0.1:1,m2=http://127.0.0.1:2",
            &urls,
        );
        restore(&path, &spec).unwrap_or_else(|f| panic!("{}", f.message));
        let store = Store::open(&start::db_path(spec.data_dir), Default::default()).unwrap();
        assert_eq!(store.current_revision(), info.revision);
        assert_eq!(store.applied_index(), 0);
        let view = store.read().unwrap();
        let (cluster, id) =
            ClusterInfo::bootstrap_member(spec.initial_cluster, "tok", "m2", &urls).unwrap();
        let stored: ClusterInfo =
            serde_json::from_slice(&view.get_meta(start::CLUSTER_META_KEY).unwrap()).unwrap();
        assert_eq!(stored, cluster);
        assert_eq!(
            view.get_meta(start::MEMBER_META_KEY).unwrap(),
            id.to_le_bytes()
        );
        assert!(view.get_meta(start::APPLIED_TERM_META_KEY).is_none());
        assert!(start::wal_dir(spec.data_dir).is_dir());
        // An existing data dir is refused and left alone.
        let again = restore(&path, &spec).err().unwrap();
        assert!(again.message.contains("exists"), "{}", again.message);
    }

    #[test]
    fn a_damaged_file_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = saved_file(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let urls = vec!["http://127.0.0.1:2".to_string()];
        let data_dir = dir.path().join("d");
        let spec = spec(&data_dir, "m2=http://127.0.0.1:2", &urls);
        let f = restore(&path, &spec).err().unwrap();
        assert!(f.message.contains("integrity"), "{}", f.message);
        assert!(!spec.data_dir.exists());
        // Without the hash check the damage is still caught by the image's
        // own checksum.
        let spec = RestoreSpec {
            skip_hash_check: true,
            ..spec
        };
        assert!(restore(&path, &spec).is_err());
        assert!(!spec.data_dir.exists());
    }
}
