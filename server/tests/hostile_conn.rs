//! Connection-level abuse against a real member: malformed native frames,
//! malformed protobufs, an HTTP/2 preface followed by garbage, 10,000 idle
//! connections, slowloris clients, watchers that never read. Each ends in
//! an error answer or a clean disconnect; the member keeps serving others;
//! its anonymous RSS stays bounded (measured and printed).

mod common;
#[path = "hostile/env.rs"]
mod env;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use env::*;
use tonic::transport::Channel;

// ---- malformed input: clean disconnects ----

/// Writes `bytes` on a fresh connection to `addr`, then reads until the
/// member closes it. Returns what it answered. Panics if the member keeps
/// the connection open (a hang, not a clean disconnect).
fn send_and_expect_close(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The member may close before everything is written; that is fine.
    let _ = s.write_all(bytes);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "member did not close the connection after {} bytes: {e}",
                bytes.len()
            ),
        }
    }
}

/// A valid native frame header for a payload of `payload` bytes.
fn frame_header(len_after_prefix: u32, version: u8, flags: u8, pad: u8) -> Vec<u8> {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&len_after_prefix.to_le_bytes());
    h.extend_from_slice(&7u64.to_le_bytes());
    h.extend_from_slice(&[version, flags, pad, 0]);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_native_frames_close_the_connection_only() {
    let env = Env::start().await;
    let addr = env.native_addr();
    let mut garbage_payload = frame_header(12 + 48, 1, 0, 0);
    garbage_payload.extend_from_slice(&[0xAB; 48]);
    let table: Vec<(&str, Vec<u8>)> = vec![
        (
            "random bytes",
            (0..4096u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
                .collect(),
        ),
        ("length not a multiple of 16", frame_header(13, 1, 0, 0)),
        ("unknown protocol version", {
            let mut f = frame_header(12 + 16, 9, 0, 0);
            f.extend_from_slice(&[0; 16]);
            f
        }),
        ("reserved flag bits", {
            let mut f = frame_header(12 + 16, 1, 0x80, 0);
            f.extend_from_slice(&[0; 16]);
            f
        }),
        (
            "announced length over the frame limit",
            frame_header(0xFFFF_FFF0, 1, 0, 0),
        ),
        (
            "HTTP/1.1 request",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
    ];
    for (name, bytes) in &table {
        let addr = addr.clone();
        let bytes = bytes.clone();
        tokio::task::spawn_blocking(move || send_and_expect_close(&addr, &bytes))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        env.assert_serving(name).await;
    }
    // A well-framed payload that is not a request archive is answered with
    // an error frame; the connection stays usable (framing is intact).
    let a = addr.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&a).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut status = Vec::new();
        corekv_wire::encode_frame(8, &w::Request::Status(w::StatusRequest {}), &mut status)
            .unwrap();
        s.write_all(&garbage_payload).unwrap();
        s.write_all(&status).unwrap();
        let mut ids = Vec::new();
        for _ in 0..2 {
            let mut head = [0u8; 16];
            s.read_exact(&mut head).expect("answer header");
            let len = u32::from_le_bytes(head[..4].try_into().unwrap()) as usize;
            let mut rest = vec![0u8; len + 4 - 16];
            s.read_exact(&mut rest).expect("answer body");
            ids.push(u64::from_le_bytes(head[4..12].try_into().unwrap()));
        }
        ids
    })
    .await
    .unwrap();
    assert_eq!(answers, vec![7, 8], "error answer, then the status answer");
    // A frame over the limit from a real client: the connection is dropped,
    // other connections keep working.
    let c = unlimited_client(&addr).await;
    let huge = vec![b'x'; 3 << 20];
    let r = c.put(n_put(b"huge", &huge, 0)).await;
    assert!(r.is_err(), "a 3 MiB frame must not be accepted");
    env.assert_serving("oversized frame").await;
    let rss = env.rss_kib();
    eprintln!("hostile: RSS after malformed native frames {rss} KiB");
    assert!(rss < RSS_BOUND_KIB);
}

/// A tonic codec that sends the given bytes as the message and ignores the
/// answer's body: raw, malformed protobufs on a real gRPC path.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

async fn raw_grpc(
    ch: &Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut g = tonic::client::Grpc::new(ch.clone());
    g.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    g.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobufs_are_refused_with_a_grpc_error() {
    let env = Env::start().await;
    let table: Vec<(&str, &'static str, Vec<u8>)> = vec![
        // Field 1 (key) announced as 100 bytes, 2 present.
        (
            "truncated length-delimited field",
            "/etcdserverpb.KV/Put",
            vec![0x0a, 100, b'a', b'b'],
        ),
        // A varint that never ends.
        (
            "unterminated varint",
            "/etcdserverpb.KV/Range",
            vec![
                0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
        ),
        // Wire type 7 does not exist.
        (
            "invalid wire type",
            "/etcdserverpb.KV/Txn",
            vec![0x0f, 0x01],
        ),
        // Field number 0 is invalid.
        (
            "field number zero",
            "/etcdserverpb.KV/DeleteRange",
            vec![0x02, 0x00],
        ),
        (
            "random bytes",
            "/etcdserverpb.Maintenance/Status",
            (0..512u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
                .collect(),
        ),
    ];
    for (name, path, body) in table {
        let r = raw_grpc(&env.grpc, path, body).await;
        match r {
            // grpc-go (etcd) answers decode failures with Internal.
            Err(s) if s.code() == tonic::Code::Internal => {}
            other => panic!("{name}: want an Internal status, got {other:?}"),
        }
    }
    // An unknown method is Unimplemented, as in etcd.
    match raw_grpc(&env.grpc, "/etcdserverpb.KV/NoSuchMethod", Vec::new()).await {
        Err(s) if s.code() == tonic::Code::Unimplemented => {}
        other => panic!("unknown method: want Unimplemented, got {other:?}"),
    }
    env.assert_serving("malformed protobufs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_preface_then_garbage_closes_the_connection() {
    let env = Env::start().await;
    let addr = env.http_addr();
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let a = addr.clone();
    tokio::task::spawn_blocking(move || send_and_expect_close(&a, &bytes))
        .await
        .expect("preface + garbage");
    // A valid preface followed by a frame header announcing 16 MiB.
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x00, 0x00, 0, 0, 0, 1]);
    let a = addr.clone();
    tokio::task::spawn_blocking(move || send_and_expect_close(&a, &bytes))
        .await
        .expect("preface + oversized frame");
    env.assert_serving("HTTP/2 garbage").await;
}

// ---- resource exhaustion ----

/// Opens `n` TCP connections to `addr` and holds them.
fn open_idle(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            TcpStream::connect(addr)
                .unwrap_or_else(|e| panic!("idle connection {i} to {addr}: {e}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_stop_service() {
    let env = Env::start().await;
    let before = env.rss_kib();
    let native = env.native_addr();
    let idle_native = tokio::task::spawn_blocking(move || open_idle(&native, 8_000))
        .await
        .unwrap();
    let http = env.http_addr();
    let idle_http = tokio::task::spawn_blocking(move || open_idle(&http, 2_000))
        .await
        .unwrap();
    // Let the member accept them all.
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.assert_serving("10,000 idle connections").await;
    let during = env.rss_kib();
    eprintln!("hostile: RSS before {before} KiB, with 10,000 idle connections {during} KiB");
    assert!(during < RSS_BOUND_KIB);
    drop(idle_native);
    drop(idle_http);
    tokio::time::sleep(Duration::from_millis(500)).await;
    env.assert_serving("closing 10,000 connections").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_do_not_stop_service() {
    let env = Env::start().await;
    let before = env.rss_kib();
    // 200 connections per port, each dripping a frame (native) or an HTTP/2
    // preface (gRPC) one byte every 50 ms, while real clients work.
    let mut frame = Vec::new();
    corekv_wire::encode_frame(1, &w::Request::Put(n_put(b"slow", b"v", 0)), &mut frame).unwrap();
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    let mut drippers = Vec::new();
    for (addr, bytes) in [(env.native_addr(), frame), (env.http_addr(), preface)] {
        let stop = Instant::now() + Duration::from_secs(4);
        drippers.push(std::thread::spawn(move || {
            let mut conns = open_idle(&addr, 200);
            let mut i = 0;
            while Instant::now() < stop {
                for c in &mut conns {
                    let _ = c.write_all(&bytes[i % bytes.len()..][..1]);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            conns
        }));
    }
    let mut served = 0;
    let stop = Instant::now() + Duration::from_secs(3);
    while Instant::now() < stop {
        env.assert_serving("slowloris").await;
        served += 1;
    }
    let during = env.rss_kib();
    for d in drippers {
        drop(d.join().expect("dripper"));
    }
    eprintln!("hostile: {served} put+get rounds during slowloris; RSS {before} -> {during} KiB");
    assert!(served > 0);
    assert!(during < RSS_BOUND_KIB);
}

/// Writes 48 MiB of puts (8 KiB values over 400 keys), 96 MiB of watch
/// events with prev_kv: more than the per-connection outbox bound.
async fn flood(env: &Env) {
    let value = vec![b'v'; 8 * 1024];
    let writers: Vec<_> = (0..8)
        .map(|t| {
            let c = env.native.clone();
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..750 {
                    c.put(n_put(format!("w{t}-{}", i % 50).as_bytes(), &value, 0))
                        .await
                        .expect("put while a watcher is stuck");
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}

fn watch_all() -> w::WatchCreateRequest {
    w::WatchCreateRequest {
        key: b"\0".to_vec(),
        range_end: b"\0".to_vec(),
        prev_kv: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_watcher_that_never_reads_keeps_memory_bounded() {
    let env = Env::start().await;
    let mut frame = Vec::new();
    corekv_wire::encode_frame(1, &w::Request::WatchCreate(watch_all()), &mut frame).unwrap();
    let mut stuck = TcpStream::connect(env.native_addr()).expect("connect");
    stuck.write_all(&frame).expect("watch create");
    let before = env.rss_kib();
    flood(&env).await;
    env.assert_serving("a stuck native watcher").await;
    let after = env.rss_kib();
    eprintln!(
        "hostile: RSS with a stuck native watcher {before} -> {after} KiB after 48 MiB of puts"
    );
    assert!(after < RSS_BOUND_KIB, "RSS {after} KiB");
    drop(stuck);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_watcher_that_never_reads_keeps_memory_bounded() {
    let env = Env::start().await;
    let c = watch_all();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b(&c.key),
                range_end: b(&c.range_end),
                prev_kv: true,
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let stuck = pb::watch_client::WatchClient::new(channel(&env.cluster).await)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("gRPC watch");
    let before = env.rss_kib();
    flood(&env).await;
    env.assert_serving("a stuck gRPC watcher").await;
    let after = env.rss_kib();
    eprintln!(
        "hostile: RSS with a stuck gRPC watcher {before} -> {after} KiB after 48 MiB of puts"
    );
    assert!(after < RSS_BOUND_KIB, "RSS {after} KiB");
    drop(stuck);
    drop(tx);
}
