//! Client <-> fake server over loopback: pipelining with out-of-order
//! answers, errors, watch and snapshot streams, timeouts, connection loss.

use std::time::Duration;

use corekv_wire::frame::{FrameFlags, encode_frame_flags};
use corekv_wire::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WATCH_ID: i64 = 7;

fn header(rev: i64) -> ResponseHeader {
    ResponseHeader {
        cluster_id: 1,
        member_id: 2,
        revision: rev,
        raft_term: 3,
    }
}

fn watch_resp(rev: i64) -> WatchResponse {
    WatchResponse {
        header: header(rev),
        watch_id: WATCH_ID,
        ..Default::default()
    }
}

/// A scripted server. Puts are answered in pairs, in reverse order; key
/// "fail" gets NoSpace; "hang" is never answered; "close" closes the socket.
/// Every request name seen is reported on `seen`.
async fn fake_server(mut sock: TcpStream, seen: mpsc::UnboundedSender<String>) {
    let mut dec = FrameDecoder::new(&WireLimits::default());
    let mut held: Vec<(u64, Response)> = Vec::new();
    let mut watch_req = None;
    loop {
        let n = match sock.read(dec.buf_mut()).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        dec.advance(n);
        let mut out = Vec::new();
        while let Some(f) = dec.next_frame().unwrap() {
            let id = f.request_id();
            let req = validate_request_frame(&f, &WireLimits::default())
                .unwrap()
                .to_owned_request()
                .unwrap();
            let _ = seen.send(req.name().to_owned());
            let mut send =
                |flags, r: &Response| encode_frame_flags(id, flags, r, &mut out).unwrap();
            match req {
                Request::Put(p) if p.key == b"close" => return,
                Request::Put(p) if p.key == b"kick" => {
                    let mut bye = Vec::new();
                    let err = Response::Error(ApiError::TooManyRequests);
                    encode_frame_flags(
                        client::CONNECTION_REQUEST_ID,
                        FrameFlags::NONE,
                        &err,
                        &mut bye,
                    )
                    .unwrap();
                    let _ = sock.write_all(&bye).await;
                    return;
                }
                Request::Put(p) if p.key == b"hang" => {}
                Request::Put(p) if p.key == b"fail" => {
                    send(FrameFlags::NONE, &Response::Error(ApiError::NoSpace))
                }
                Request::Put(p) => {
                    let kv = KeyValue {
                        key: p.key,
                        value: p.value,
                        ..Default::default()
                    };
                    held.push((
                        id,
                        Response::Put(PutResponse {
                            header: header(id as i64),
                            prev_kv: Some(kv),
                        }),
                    ));
                    if held.len() == 2 {
                        for (hid, r) in held.drain(..).rev() {
                            encode_frame_flags(hid, FrameFlags::NONE, &r, &mut out).unwrap();
                        }
                    }
                }
                Request::Range(r) if r.key == b"big" => {
                    let kvs = vec![KeyValue {
                        key: r.key.clone(),
                        value: vec![1; 3 << 20],
                        ..Default::default()
                    }];
                    send(
                        FrameFlags::NONE,
                        &Response::Range(RangeResponse {
                            header: header(9),
                            kvs,
                            more: false,
                            count: 1,
                        }),
                    );
                }
                Request::Range(r) => {
                    let kvs = vec![KeyValue {
                        key: r.key.clone(),
                        value: b"val".to_vec(),
                        version: 1,
                        ..Default::default()
                    }];
                    send(
                        FrameFlags::NONE,
                        &Response::Range(RangeResponse {
                            header: header(9),
                            kvs,
                            more: false,
                            count: 1,
                        }),
                    );
                }
                Request::Status(_) => send(
                    FrameFlags::NONE,
                    &Response::Status(StatusResponse {
                        header: header(5),
                        version: "3.4.31".into(),
                        ..Default::default()
                    }),
                ),
                Request::WatchCreate(w) if w.start_revision == 1 => {
                    send(
                        FrameFlags::MORE,
                        &Response::Watch(WatchResponse {
                            created: true,
                            ..watch_resp(10)
                        }),
                    );
                    let reason = ApiError::Compacted.message().to_owned();
                    let cancel = WatchResponse {
                        canceled: true,
                        compact_revision: 5,
                        cancel_reason: reason,
                        ..watch_resp(10)
                    };
                    send(FrameFlags::NONE, &Response::Watch(cancel));
                }
                Request::WatchCreate(w) => {
                    watch_req = Some(id);
                    send(
                        FrameFlags::MORE,
                        &Response::Watch(WatchResponse {
                            created: true,
                            ..watch_resp(10)
                        }),
                    );
                    for i in 0..3 {
                        let kv = KeyValue {
                            key: w.key.clone(),
                            value: vec![i],
                            mod_revision: 11 + i as i64,
                            ..Default::default()
                        };
                        let ev = Event {
                            event_type: EventType::Put,
                            kv,
                            prev_kv: None,
                        };
                        send(
                            FrameFlags::MORE,
                            &Response::Watch(WatchResponse {
                                events: vec![ev],
                                ..watch_resp(11 + i as i64)
                            }),
                        );
                    }
                }
                Request::WatchCancel(c) => {
                    assert_eq!(c.watch_id, WATCH_ID);
                    let cancel = Response::Watch(WatchResponse {
                        canceled: true,
                        ..watch_resp(20)
                    });
                    send(FrameFlags::NONE, &cancel);
                    if let Some(wid) = watch_req.take() {
                        encode_frame_flags(wid, FrameFlags::NONE, &cancel, &mut out).unwrap();
                    }
                }
                Request::Snapshot(_) => {
                    for (i, left) in [(0u8, 2u64), (1, 1), (2, 0)] {
                        let flags = if left > 0 {
                            FrameFlags::MORE
                        } else {
                            FrameFlags::NONE
                        };
                        send(
                            flags,
                            &Response::Snapshot(SnapshotResponse {
                                header: header(1),
                                remaining_bytes: left,
                                blob: vec![i; 4],
                            }),
                        );
                    }
                }
                other => send(
                    FrameFlags::NONE,
                    &Response::Error(ApiError::Internal(format!("unscripted {}", other.name()))),
                ),
            }
        }
        if sock.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn setup(opts: ClientOptions) -> (Client, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        fake_server(sock, tx).await;
    });
    (Client::connect(&addr, opts).await.unwrap(), rx)
}

fn put(key: &str) -> PutRequest {
    PutRequest {
        key: key.into(),
        value: format!("value of {key}").into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn pipelined_requests_are_matched_out_of_order() {
    let (client, _seen) = setup(ClientOptions::default()).await;
    let c2 = client.clone();
    let (a, b) = tokio::join!(client.put(put("a")), c2.put(put("b")));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.prev_kv.unwrap().key, b"a");
    assert_eq!(b.prev_kv.unwrap().key, b"b");
    // Zero-copy path: keys read straight from the received frame.
    let frame = client
        .request(&Request::Range(RangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap();
    match frame.get() {
        ArchivedResponse::Range(r) => {
            assert_eq!(r.kvs[0].key.as_slice(), b"k");
            assert_eq!(r.header.revision.to_native(), 9);
        }
        other => panic!("unexpected {}", other.name()),
    }
    assert_eq!(client.get(b"x").await.unwrap().unwrap().value, b"val");
    assert_eq!(
        client.status(StatusRequest {}).await.unwrap().version,
        "3.4.31"
    );
}

#[tokio::test]
async fn api_errors_come_back_typed() {
    let (client, _seen) = setup(ClientOptions::default()).await;
    match client.put(put("fail")).await {
        Err(WireError::Api(e)) => {
            assert_eq!(e, ApiError::NoSpace);
            assert_eq!(e.message(), "etcdserver: mvcc: database space exceeded");
        }
        other => panic!("expected NoSpace, got {other:?}"),
    }
    match client.defragment(DefragmentRequest {}).await {
        Err(WireError::Api(ApiError::Internal(m))) => assert!(m.contains("Defragment")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn watch_streams_events_and_cancels() {
    let (client, mut seen) = setup(ClientOptions::default()).await;
    let create = WatchCreateRequest {
        key: b"w".to_vec(),
        ..Default::default()
    };
    let mut watch = client.watch(create).await.unwrap();
    assert_eq!(watch.watch_id(), WATCH_ID);
    // Unary traffic interleaves with the stream.
    client.status(StatusRequest {}).await.unwrap();
    for i in 0..3u8 {
        let f = watch.next().await.unwrap().unwrap();
        let w = f.get();
        assert_eq!(w.events.len(), 1);
        assert_eq!(w.events[0].kv.value.as_slice(), &[i]);
        assert_eq!(w.events[0].kv.key.as_slice(), b"w");
    }
    let last = watch.cancel().await.unwrap().unwrap();
    assert!(last.get().canceled);
    let names: Vec<String> = std::iter::from_fn(|| seen.try_recv().ok()).collect();
    assert_eq!(names, ["WatchCreate", "Status", "WatchCancel"]);
}

#[tokio::test]
async fn dropping_a_watch_sends_cancel() {
    let (client, mut seen) = setup(ClientOptions::default()).await;
    let watch = client
        .watch(WatchCreateRequest {
            key: b"d".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(watch);
    assert_eq!(seen.recv().await.unwrap(), "WatchCreate");
    assert_eq!(seen.recv().await.unwrap(), "WatchCancel");
    // The connection is still usable afterwards.
    client.status(StatusRequest {}).await.unwrap();
}

#[tokio::test]
async fn snapshot_streams_chunks_in_order() {
    let (client, _seen) = setup(ClientOptions::default()).await;
    let mut s = client.snapshot().await.unwrap();
    let mut blobs = Vec::new();
    while let Some(f) = s.next_frame().await.unwrap() {
        match f.get() {
            ArchivedResponse::Snapshot(c) => {
                blobs.push((c.remaining_bytes.to_native(), c.blob.to_vec()))
            }
            other => panic!("{}", other.name()),
        }
    }
    assert_eq!(
        blobs,
        vec![(2, vec![0; 4]), (1, vec![1; 4]), (0, vec![2; 4])]
    );
}

#[tokio::test]
async fn timeout_and_connection_loss_fail_pending_requests() {
    let opts = ClientOptions {
        request_timeout: Duration::from_millis(200),
        ..Default::default()
    };
    let (client, _seen) = setup(opts).await;
    assert!(matches!(
        client.put(put("hang")).await,
        Err(WireError::Timeout { .. })
    ));

    let opts = ClientOptions {
        request_timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let (client, _seen) = setup(opts).await;
    let c2 = client.clone();
    let pending = tokio::spawn(async move { c2.put(put("hang")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let closing = client.put(put("close")).await;
    assert!(
        matches!(closing, Err(WireError::ConnectionClosed { .. })),
        "{closing:?}"
    );
    let pending = pending.await.unwrap();
    assert!(
        matches!(pending, Err(WireError::ConnectionClosed { .. })),
        "{pending:?}"
    );
    // New requests fail fast too.
    assert!(matches!(
        client.status(StatusRequest {}).await,
        Err(WireError::ConnectionClosed { .. })
    ));
}

#[tokio::test]
async fn oversized_request_is_refused_locally() {
    let limits = WireLimits {
        max_frame_bytes: 4096,
        ..Default::default()
    };
    let (client, _seen) = setup(ClientOptions {
        limits,
        ..Default::default()
    })
    .await;
    let big = PutRequest {
        key: b"k".to_vec(),
        value: vec![0; 8192],
        ..Default::default()
    };
    assert!(matches!(
        client.put(big).await,
        Err(WireError::Api(ApiError::RequestTooLarge))
    ));
}

#[tokio::test]
async fn dial_failure_is_typed() {
    // Bind then drop to get a port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    assert!(matches!(
        Client::connect(&addr, ClientOptions::default()).await,
        Err(WireError::Io {
            operation: "connect",
            ..
        })
    ));
}

#[tokio::test]
async fn connection_level_error_becomes_the_close_reason() {
    let (client, _seen) = setup(ClientOptions::default()).await;
    match client.put(put("kick")).await {
        Err(WireError::ConnectionClosed { reason, .. }) => {
            assert!(reason.contains("etcdserver: too many requests"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn watch_on_compacted_revision_ends_with_cancel() {
    let (client, _seen) = setup(ClientOptions::default()).await;
    let mut watch = client
        .watch(WatchCreateRequest {
            key: b"c".to_vec(),
            start_revision: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let f = watch.next().await.unwrap().unwrap();
    assert!(f.get().canceled);
    assert_eq!(f.get().compact_revision.to_native(), 5);
    assert_eq!(
        f.get().cancel_reason.as_str(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert!(watch.next().await.unwrap().is_none());
    assert!(watch.cancel().await.unwrap().is_none());
}

#[tokio::test]
async fn responses_larger_than_the_request_limit_are_accepted() {
    let (client, _seen) = setup(ClientOptions::default()).await;
    let r = client
        .range(RangeRequest {
            key: b"big".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.kvs[0].value.len(), 3 << 20);
    // With a small receive limit the same answer closes the connection.
    let opts = ClientOptions {
        max_response_frame_bytes: 1 << 20,
        ..Default::default()
    };
    let (client, _seen) = setup(opts).await;
    let r = client
        .range(RangeRequest {
            key: b"big".to_vec(),
            ..Default::default()
        })
        .await;
    match r {
        Err(WireError::ConnectionClosed { reason, .. }) => {
            assert!(reason.contains("too large"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
