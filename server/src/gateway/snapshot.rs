//! etcd's snapshot stream framing over the native snapshot stream.
//!
//! etcd streams the backend file and then one last message whose blob is
//! the SHA-256 of everything before it; `etcdctl snapshot save` (and
//! restore) recognise that trailer by `size % 512 == 32`. corekv's snapshot
//! image has no alignment of its own, so the gateway pads the data with
//! zeros to a multiple of 512 bytes, then sends the 32-byte digest of data
//! and padding:
//!
//! ```text
//! [native chunks ...][0x00 * pad (0..=511)][sha256(data ++ pad): 32 bytes]
//! ```
//!
//! `remaining_bytes` of data chunks is the native server's value (bytes of
//! the image after this chunk); the padding chunk and the digest carry 0.

use sha2::{Digest, Sha256};

/// The alignment etcd's clients expect before the digest.
pub const SNAPSHOT_ALIGN_BYTES: u64 = 512;

#[derive(Default)]
pub struct SnapshotFramer {
    hasher: Sha256,
    data_bytes: u64,
}

impl SnapshotFramer {
    /// Accounts one data chunk, which is sent unchanged.
    pub fn data(&mut self, blob: &[u8]) {
        self.hasher.update(blob);
        self.data_bytes += blob.len() as u64;
    }

    /// The padding (possibly empty) and the digest that end the stream.
    pub fn finish(mut self) -> (Vec<u8>, [u8; 32]) {
        let rem = self.data_bytes % SNAPSHOT_ALIGN_BYTES;
        let pad_len = if rem == 0 {
            0
        } else {
            SNAPSHOT_ALIGN_BYTES - rem
        };
        let pad = vec![0u8; pad_len as usize];
        self.hasher.update(&pad);
        (pad, self.hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = SnapshotFramer::default();
        let mut out = Vec::new();
        for c in chunks {
            f.data(c);
            out.extend_from_slice(c);
        }
        let (pad, digest) = f.finish();
        out.extend_from_slice(&pad);
        out.extend_from_slice(&digest);
        out
    }

    #[test]
    fn total_is_aligned_plus_digest_and_digest_covers_padding() {
        for sizes in [
            vec![0usize],
            vec![1],
            vec![511],
            vec![512],
            vec![100, 700, 3],
        ] {
            let data: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| vec![i as u8 + 1; n])
                .collect();
            let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
            let out = framed(&refs);
            assert_eq!(out.len() % 512, 32, "sizes {sizes:?}");
            let (body, digest) = out.split_at(out.len() - 32);
            assert_eq!(Sha256::digest(body).as_slice(), digest);
            let n: usize = sizes.iter().sum();
            assert!(body[n..].iter().all(|&b| b == 0));
            assert_eq!(body.len(), n.div_ceil(512) * 512);
        }
    }
}
