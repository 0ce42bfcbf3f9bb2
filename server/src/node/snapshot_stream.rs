//! Maintenance.Snapshot: a consistent image of the store streamed to a
//! client while writes continue, in the form `etcdctl snapshot save` and
//! `corekvctl snapshot restore` accept.
//!
//! etcd streams its backend file and then one last message whose blob is
//! the SHA-256 of everything before it; etcd's tools recognise that trailer
//! by `size % 512 == 32`. corekv's image (`Store::write_snapshot`, format in
//! `docs/snapshot.md`) has no alignment of its own, so the stream is
//!
//! ```text
//! [image][0x00 * pad (0..=511)][sha256(image ++ pad): 32 bytes]
//! ```
//!
//! The image is written first to an unlinked file under `member/snap/` on a
//! thread of its own: the read view is held only while the image is written
//! at disk speed (a slow client does not pin store pages), the total size is
//! known before the first chunk, so `remaining_bytes` is exact (bytes of the
//! stream after this chunk; 0 on the last), and a crash leaves no file
//! behind. The same bytes go to native clients and, through the gRPC
//! service, to etcd clients: the framing is done once, here.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use corekv_storage::Store;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, FrameFlags};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::Shared;
use super::serve::Outbox;
use crate::metrics::{METRICS, ReqKind};

/// The alignment etcd's tools expect before the digest.
pub const SNAPSHOT_ALIGN_BYTES: u64 = 512;
/// Bytes of image in one stream message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 256 * 1024;
/// Chunks read ahead of the client (per stream).
pub const SNAPSHOT_QUEUE_CHUNKS: usize = 8;
/// Snapshot streams one member serves at once; more are answered
/// `etcdserver: too many requests`. Each costs a thread and a temporary
/// copy of the image on disk.
pub const MAX_SNAPSHOT_STREAMS: usize = 2;
/// A stream does not queue a chunk while the connection's outbox holds
/// more than this (the client reads slower than we produce).
pub const SNAPSHOT_OUTBOX_HIGH_WATER_BYTES: usize = 4 * 1024 * 1024;
/// A stream whose client has not taken any bytes for this long is
/// abandoned (the client is gone or stuck).
pub const SNAPSHOT_STALL_TIMEOUT: Duration = Duration::from_secs(60);

static ACTIVE_STREAMS: AtomicUsize = AtomicUsize::new(0);

/// One slot of `MAX_SNAPSHOT_STREAMS`, released on drop.
struct StreamSlot;

impl StreamSlot {
    fn acquire() -> Option<StreamSlot> {
        ACTIVE_STREAMS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SNAPSHOT_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        ACTIVE_STREAMS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One message of the stream.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk {
    pub blob: Vec<u8>,
    /// Bytes of the stream after this chunk.
    pub remaining_bytes: u64,
}

/// Cuts `image` (of `image_bytes` bytes) into the etcd-form stream:
/// image chunks, the zero padding, then the digest (always the last chunk).
pub struct Framer<R> {
    image: R,
    image_left: u64,
    pad_left: u64,
    digest_sent: bool,
    hasher: Sha256,
    remaining: u64,
}

impl<R: Read> Framer<R> {
    pub fn new(image: R, image_bytes: u64) -> Framer<R> {
        let pad =
            (SNAPSHOT_ALIGN_BYTES - image_bytes % SNAPSHOT_ALIGN_BYTES) % SNAPSHOT_ALIGN_BYTES;
        Framer {
            image,
            image_left: image_bytes,
            pad_left: pad,
            digest_sent: false,
            hasher: Sha256::new(),
            remaining: image_bytes + pad + 32,
        }
    }

    /// Total bytes of the stream.
    pub fn total_bytes(image_bytes: u64) -> u64 {
        Framer::new(std::io::empty(), image_bytes).remaining
    }

    /// The next chunk of at most `max` bytes (the digest is always a chunk
    /// of its own, as etcd sends it); `None` after the digest.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Option<Chunk>> {
        let blob = if self.image_left > 0 {
            let n = self.image_left.min(max as u64) as usize;
            let mut buf = vec![0u8; n];
            self.image.read_exact(&mut buf)?;
            self.image_left -= n as u64;
            self.hasher.update(&buf);
            buf
        } else if self.pad_left > 0 {
            let buf = vec![0u8; self.pad_left as usize];
            self.pad_left = 0;
            self.hasher.update(&buf);
            buf
        } else if !self.digest_sent {
            self.digest_sent = true;
            std::mem::take(&mut self.hasher).finalize().to_vec()
        } else {
            return Ok(None);
        };
        self.remaining -= blob.len() as u64;
        Ok(Some(Chunk {
            blob,
            remaining_bytes: self.remaining,
        }))
    }
}

/// One message of a member's snapshot stream: a chunk and the revision of
/// the image it belongs to.
pub type Item = Result<(i64, Chunk), ApiError>;

/// A running snapshot stream: the chunks in order (the digest last); a
/// producer error arrives as the last item. Holds one of
/// `MAX_SNAPSHOT_STREAMS` until dropped. Dropping it stops the producer.
pub struct Stream {
    rx: mpsc::Receiver<Item>,
    _slot: StreamSlot,
}

impl Stream {
    pub async fn next(&mut self) -> Option<Item> {
        self.rx.recv().await
    }
}

/// Starts streaming this member's store: refused with `too many requests`
/// when `MAX_SNAPSHOT_STREAMS` run already.
pub fn open(shared: &Shared) -> Result<Stream, ApiError> {
    let slot = StreamSlot::acquire().ok_or(ApiError::TooManyRequests)?;
    let (tx, rx) = mpsc::channel(SNAPSHOT_QUEUE_CHUNKS);
    let store = shared.store();
    let dir = super::start::snap_dir(&shared.cfg.data_dir());
    std::thread::Builder::new()
        .name("corekv-snapshot".into())
        .spawn(move || produce(store, &dir, &tx))
        .map_err(|e| ApiError::Internal(format!("start snapshot thread: {e}")))?;
    Ok(Stream { rx, _slot: slot })
}

/// Writes the image of `store` to an unlinked temporary file in `dir` and
/// sends it, framed, into `tx`. Stops quietly when the receiver is gone.
fn produce(store: Arc<Store>, dir: &Path, tx: &mpsc::Sender<Item>) {
    let result = (|| -> Result<(), String> {
        let (mut file, path) = temp_file(dir)?;
        // Unlinked at once: the space returns when the file is closed, even
        // if the process dies mid-stream.
        let _ = std::fs::remove_file(&path);
        let info = {
            let mut out = std::io::BufWriter::new(&mut file);
            let info = store
                .write_snapshot(&mut out)
                .map_err(|e| format!("write snapshot: {e}"))?;
            out.flush().map_err(|e| format!("write snapshot: {e}"))?;
            info
        };
        drop(store);
        file.seek(SeekFrom::Start(0))
            .map_err(|e| format!("read snapshot: {e}"))?;
        let mut framer = Framer::new(std::io::BufReader::new(file), info.bytes);
        while let Some(chunk) = framer
            .next_chunk(SNAPSHOT_CHUNK_BYTES)
            .map_err(|e| format!("read snapshot: {e}"))?
        {
            if tx.blocking_send(Ok((info.revision, chunk))).is_err() {
                return Ok(());
            }
        }
        Ok(())
    })();
    if let Err(reason) = result {
        tracing::warn!(%reason, "snapshot stream failed");
        let _ = tx.blocking_send(Err(ApiError::Internal(reason)));
    }
}

fn temp_file(dir: &Path) -> Result<(std::fs::File, PathBuf), String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = dir.join(format!("client-{}-{n}.snap.tmp", std::process::id()));
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map(|f| (f, path.clone()))
        .map_err(|e| format!("create {}: {e}", path.display()))
}

/// Serves one native Snapshot request on this connection: frames with the
/// MORE flag, the digest chunk last without it; an error ends the stream.
pub fn serve(shared: Arc<Shared>, outbox: Rc<Outbox>, request_id: u64) {
    let mut stream = match open(&shared) {
        Ok(s) => s,
        Err(e) => {
            METRICS.native_request(ReqKind::Maintenance, false);
            outbox.push(request_id, &w::Response::Error(e));
            return;
        }
    };
    glommio::spawn_local(async move {
        let ok = loop {
            let (revision, chunk) = match stream.next().await {
                None => break false,
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    outbox.push(request_id, &w::Response::Error(e));
                    break false;
                }
            };
            if !wait_for_room(&outbox).await {
                tracing::warn!("snapshot stream abandoned: the client stopped reading");
                break false;
            }
            let last = chunk.remaining_bytes == 0;
            let flags = if last {
                FrameFlags::NONE
            } else {
                FrameFlags::MORE
            };
            let resp = w::Response::Snapshot(w::SnapshotResponse {
                header: shared.header(revision),
                remaining_bytes: chunk.remaining_bytes,
                blob: chunk.blob,
            });
            outbox.push_flags(request_id, flags, &resp);
            if last {
                break true;
            }
        };
        METRICS.native_request(ReqKind::Maintenance, ok);
    })
    .detach();
}

/// Waits until the outbox is below the high-water mark; false if the
/// client took nothing for `SNAPSHOT_STALL_TIMEOUT`.
async fn wait_for_room(outbox: &Outbox) -> bool {
    let mut last = outbox.pending_bytes();
    let mut progress_at = Instant::now();
    while outbox.pending_bytes() > SNAPSHOT_OUTBOX_HIGH_WATER_BYTES {
        let now = outbox.pending_bytes();
        if now < last {
            progress_at = Instant::now();
        }
        last = now;
        if progress_at.elapsed() > SNAPSHOT_STALL_TIMEOUT {
            return false;
        }
        glommio::timer::sleep(Duration::from_millis(2)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks the etcd-form trailer of a saved stream and returns the length of
    /// the hashed part (image and padding). Errors carry etcd's wording.
    fn verify_digest(file: &[u8]) -> Result<usize, String> {
        let len = file.len();
        if len % SNAPSHOT_ALIGN_BYTES as usize != 32 {
            return Err(format!(
                "snapshot file has no SHA-256 trailer (size {len} % 512 != 32)"
            ));
        }
        let (body, digest) = file.split_at(len - 32);
        if Sha256::digest(body).as_slice() != digest {
            return Err(
                "expected sha256 [..], got [..]: snapshot file integrity check failed".into(),
            );
        }
        Ok(body.len())
    }

    fn stream(image: &[u8], max: usize) -> Vec<Chunk> {
        let mut f = Framer::new(image, image.len() as u64);
        let mut out = Vec::new();
        while let Some(c) = f.next_chunk(max).unwrap() {
            out.push(c);
        }
        out
    }

    #[test]
    fn total_is_aligned_plus_digest_and_remaining_counts_down() {
        for n in [0usize, 1, 480, 511, 512, 513, 5077] {
            let image: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            let chunks = stream(&image, 1000);
            let all: Vec<u8> = chunks.iter().flat_map(|c| c.blob.clone()).collect();
            assert_eq!(all.len() % 512, 32, "n {n}");
            assert_eq!(all.len() as u64, Framer::<&[u8]>::total_bytes(n as u64));
            assert_eq!(&all[..n], &image[..]);
            assert!(all[n..all.len() - 32].iter().all(|&b| b == 0));
            assert_eq!(verify_digest(&all), Ok(all.len() - 32));
            let mut left = all.len() as u64;
            for c in &chunks {
                left -= c.blob.len() as u64;
                assert_eq!(c.remaining_bytes, left);
                assert!(c.blob.len() <= 1000);
            }
            assert_eq!(chunks.last().unwrap().blob.len(), 32);
            assert_eq!(chunks.last().unwrap().remaining_bytes, 0);
        }
    }

    #[test]
    fn damaged_or_unframed_files_are_refused() {
        let image = vec![3u8; 700];
        let mut all: Vec<u8> = stream(&image, 256)
            .into_iter()
            .flat_map(|c| c.blob)
            .collect();
        all[10] ^= 1;
        assert!(verify_digest(&all).unwrap_err().contains("integrity"));
        assert!(verify_digest(&image).unwrap_err().contains("no SHA-256"));
    }
}
