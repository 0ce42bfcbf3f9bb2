//! Maintenance.Snapshot framing through the gateway, over a scripted native
//! server (this keeps the test independent of the member's snapshot
//! support): the data is streamed unchanged, padded to 512 bytes, and
//! followed by its SHA-256, which is what `etcdctl snapshot save` needs.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;

use corekv_server::gateway::{self, GatewayOptions};
use corekv_wire::frame::{FrameFlags, encode_frame_flags};
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::*;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Chunk sizes of the scripted snapshot: 5077 bytes, not 512-aligned.
const CHUNKS: [usize; 3] = [1000, 4000, 77];

fn image() -> Vec<u8> {
    (0..CHUNKS.iter().sum::<usize>())
        .map(|i| (i * 7 % 251) as u8)
        .collect()
}

fn header() -> ResponseHeader {
    ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: 3,
        raft_term: 4,
    }
}

/// Answers Snapshot with `CHUNKS` of `image()` (or with NotCapable if
/// `refuse`), everything else with an Internal error.
async fn fake_native(mut sock: TcpStream, refuse: bool) {
    let mut dec = FrameDecoder::new(&WireLimits::default());
    let data = image();
    loop {
        let n = match sock.read(dec.buf_mut()).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.advance(n);
        let mut out = Vec::new();
        while let Ok(Some(f)) = dec.next_frame() {
            let id = f.request_id();
            let Ok(req) = validate_request_frame(&f, &WireLimits::default()) else {
                return;
            };
            match req {
                ArchivedRequest::Snapshot(_) if refuse => encode_frame_flags(
                    id,
                    FrameFlags::NONE,
                    &Response::Error(ApiError::NotCapable),
                    &mut out,
                )
                .unwrap(),
                ArchivedRequest::Snapshot(_) => {
                    let mut sent = 0;
                    for (i, n) in CHUNKS.iter().enumerate() {
                        let last = i == CHUNKS.len() - 1;
                        let resp = Response::Snapshot(SnapshotResponse {
                            header: header(),
                            remaining_bytes: (data.len() - sent - n) as u64,
                            blob: data[sent..sent + n].to_vec(),
                        });
                        sent += n;
                        let flags = if last {
                            FrameFlags::NONE
                        } else {
                            FrameFlags::MORE
                        };
                        encode_frame_flags(id, flags, &resp, &mut out).unwrap();
                    }
                }
                other => encode_frame_flags(
                    id,
                    FrameFlags::NONE,
                    &Response::Error(ApiError::Internal(format!("unscripted {}", other.name()))),
                    &mut out,
                )
                .unwrap(),
            }
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn setup(refuse: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let native = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(fake_native(sock, refuse));
        }
    });
    gateway::spawn(
        "127.0.0.1:0".parse().unwrap(),
        native,
        Arc::new(|| Ok(())),
        GatewayOptions::default(),
    )
    .unwrap()
}

fn check_framing(got: &[u8]) {
    let data = image();
    assert_eq!(got.len() % 512, 32, "etcd's snapshot trailer rule");
    let (body, digest) = got.split_at(got.len() - 32);
    assert_eq!(&body[..data.len()], &data[..], "data unchanged");
    assert!(body[data.len()..].iter().all(|&b| b == 0), "zero padding");
    assert_eq!(body.len(), data.len().div_ceil(512) * 512);
    assert_eq!(Sha256::digest(body).as_slice(), digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_stream_is_padded_and_ends_with_its_sha256() {
    let gw = setup(false).await;
    let mut m = pb::maintenance_client::MaintenanceClient::connect(format!("http://{gw}"))
        .await
        .unwrap();
    let mut stream = m
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut remaining = Vec::new();
    while let Some(r) = stream.message().await.unwrap() {
        assert_eq!(
            r.header.unwrap().member_id,
            2,
            "native header passes through"
        );
        got.extend_from_slice(&r.blob);
        remaining.push(r.remaining_bytes);
    }
    check_framing(&got);
    // Data chunks carry the native remaining count; padding and digest 0.
    assert_eq!(remaining, vec![4077, 77, 0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_snapshot_is_an_error_status() {
    let gw = setup(true).await;
    let mut m = pb::maintenance_client::MaintenanceClient::connect(format!("http://{gw}"))
        .await
        .unwrap();
    let e = m.snapshot(pb::SnapshotRequest {}).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable);
    assert_eq!(e.message(), "etcdserver: not capable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_snapshot_save_accepts_the_stream() {
    let ok = Command::new("etcdctl").arg("version").output().is_ok();
    if !ok {
        eprintln!("NOTICE: etcdctl not found; skipping (run scripts/install-test-deps.sh)");
        return;
    }
    let gw = setup(false).await;
    let dir = tempfile::Builder::new()
        .prefix("corekv-gw-snap-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let path = dir.path().join("snap.db");
    let path2 = path.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=127.0.0.1:{}", gw.port()))
            .arg("snapshot")
            .arg("save")
            .arg(&path2)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ etcdctl snapshot save {}\n{text}", path.display());
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Snapshot saved at"), "{text}");
    check_framing(&std::fs::read(&path).unwrap());
}
