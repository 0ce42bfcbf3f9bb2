//! Watches against real members: live events, history, filters, prev_kv,
//! compaction, cancel, progress; and on a follower of a 3-member cluster.

mod common;

use std::time::Duration;

use common::*;
use corekv_wire::messages as w;
use corekv_wire::{Client, WatchStream};

async fn next(ws: &mut WatchStream) -> w::WatchResponse {
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a watch response within 10 s")
        .expect("watch stream error")
        .expect("watch stream ended");
    frame.to_owned_watch().expect("decode watch response")
}

/// Collects events until `n` arrived.
async fn events(ws: &mut WatchStream, n: usize) -> Vec<w::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let r = next(ws).await;
        assert!(!r.canceled, "unexpected cancel: {r:?}");
        out.extend(r.events);
    }
    assert_eq!(out.len(), n);
    out
}

fn watch(key: &str, end: &str, start: i64) -> w::WatchCreateRequest {
    w::WatchCreateRequest {
        key: key.as_bytes().to_vec(),
        range_end: end.as_bytes().to_vec(),
        start_revision: start,
        ..Default::default()
    }
}

async fn created(c: &Client, req: w::WatchCreateRequest) -> WatchStream {
    c.watch(req).await.expect("watch")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_live_history_filters_and_cancel() {
    let cluster = Cluster::start(1, &["--watch-progress-notify-interval-ms", "200"]).await;
    let c = cluster.client(0).await;

    let mut live = created(
        &c,
        w::WatchCreateRequest {
            prev_kv: true,
            ..watch("k", "l", 0)
        },
    )
    .await;
    let mut no_put = created(
        &c,
        w::WatchCreateRequest {
            filters: vec![w::WatchFilterType::NoPut],
            ..watch("k", "l", 0)
        },
    )
    .await;
    c.put(put("k1", "a")).await.unwrap();
    c.put(put("k1", "b")).await.unwrap();
    c.put(put("other", "x")).await.unwrap();
    c.delete_range(w::DeleteRangeRequest {
        key: b"k1".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();

    let evs = events(&mut live, 3).await;
    assert_eq!(evs[0].event_type, w::EventType::Put);
    assert_eq!(evs[0].kv.value, b"a");
    assert!(evs[0].prev_kv.is_none());
    assert_eq!(evs[1].prev_kv.as_ref().unwrap().value, b"a");
    assert_eq!(evs[2].event_type, w::EventType::Delete);
    assert_eq!(evs[2].kv.mod_revision, 5);
    let evs = events(&mut no_put, 1).await;
    assert_eq!(evs[0].event_type, w::EventType::Delete);

    // From a past revision: history first, then live, no gap, no duplicate.
    let mut hist = created(&c, watch("k", "l", 2)).await;
    c.put(put("k2", "c")).await.unwrap();
    let evs = events(&mut hist, 4).await;
    let revs: Vec<i64> = evs.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revs, [2, 3, 5, 6]);

    // The live watch got k2 too, and no progress notification (it did not
    // ask for them) even though the interval (200 ms) passed meanwhile.
    let r = next(&mut live).await;
    assert_eq!(r.events.len(), 1, "{r:?}");
    assert_eq!(r.events[0].kv.key, b"k2");

    // Progress notification: no events, not created/canceled.
    let mut saw_progress = false;
    let mut pn = created(
        &c,
        w::WatchCreateRequest {
            progress_notify: true,
            ..watch("zzz", "", 0)
        },
    )
    .await;
    for _ in 0..5 {
        let r = next(&mut pn).await;
        if r.events.is_empty()
            && !r.created
            && !r.canceled
            && r.compact_revision == 0
            && r.header.revision != 0
        {
            saw_progress = true;
            break;
        }
    }
    assert!(saw_progress, "no progress notification");

    // RequestProgress is answered with watch id -1.
    let p = c.watch_progress(w::WatchProgressRequest {}).await.unwrap();
    assert_eq!(p.watch_id, -1);
    assert!(p.header.revision >= 6);

    // Cancel ends the stream with a canceled frame.
    let last = hist.cancel().await.unwrap();
    assert!(
        last.map(|f| f.to_owned_watch().unwrap().canceled)
            .unwrap_or(true)
    );
    let _ = live;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_is_canceled() {
    let cluster = Cluster::start(1, &[]).await;
    let c = cluster.client(0).await;
    for i in 0..5 {
        c.put(put("c", &i.to_string())).await.unwrap();
    }
    c.compact(w::CompactionRequest {
        revision: 5,
        physical: true,
    })
    .await
    .unwrap();
    let mut ws = c.watch(watch("c", "", 2)).await.unwrap();
    let mut canceled = None;
    for _ in 0..3 {
        let r = next(&mut ws).await;
        if r.canceled {
            canceled = Some(r);
            break;
        }
    }
    let r = canceled.expect("a canceled response");
    assert_eq!(r.compact_revision, 5);
    assert_eq!(
        r.cancel_reason,
        "etcdserver: mvcc: required revision has been compacted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_follower_sees_leader_writes() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    let fc = cluster.client(follower).await;
    let lc = cluster.client(leader).await;
    let mut ws = created(&fc, watch("f", "g", 0)).await;
    for i in 0..50 {
        lc.put(put(&format!("f{i:02}"), "v")).await.unwrap();
    }
    let evs = events(&mut ws, 50).await;
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.kv.key, format!("f{i:02}").into_bytes());
    }
}

/// `etcd_debugging_mvcc_watcher_total` from the member's /metrics.
fn watcher_gauge(http_port: u16) -> i64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no watcher gauge in /metrics:\n{out}"))
}

async fn wait_gauge(http_port: u16, want: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = tokio::task::spawn_blocking(move || watcher_gauge(http_port))
            .await
            .unwrap();
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher gauge stayed at {got}, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A client that goes away without cancelling (socket closed, gRPC
/// connection dropped) takes its watchers with it: they leave the hub.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_a_vanished_client_leave_the_hub() {
    use corekv_wire::proto::etcdserverpb as pb;
    use std::io::Write;

    let cluster = Cluster::start(1, &[]).await;
    let http = cluster.members[0].spec.http;
    wait_gauge(http, 0).await;

    // Native: 50 watch creates on a raw socket, then the socket closes.
    let mut sock = std::net::TcpStream::connect(cluster.members[0].native_addr()).unwrap();
    let mut buf = Vec::new();
    for i in 0..50u64 {
        let req = w::Request::WatchCreate(watch(&format!("n{i}"), "", 0));
        corekv_wire::encode_frame(i + 1, &req, &mut buf).unwrap();
    }
    sock.write_all(&buf).unwrap();
    wait_gauge(http, 50).await;
    drop(sock);
    wait_gauge(http, 0).await;

    // gRPC: one stream with 50 watches, then the connection is dropped.
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{http}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for i in 0..50 {
        let create = pb::WatchCreateRequest {
            key: format!("g{i}").into_bytes().into(),
            ..Default::default()
        };
        tx.send(pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        })
        .await
        .unwrap();
    }
    let mut stream = pb::watch_client::WatchClient::new(ch)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for id in 0..50 {
        let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("created within 10 s")
            .unwrap()
            .unwrap();
        assert!(r.created && r.watch_id == id, "{r:?}");
    }
    wait_gauge(http, 50).await;
    drop(stream);
    drop(tx);
    wait_gauge(http, 0).await;
}

/// The empty-range rule and duplicate ids are answered in-band on the
/// native protocol too (one rule for both front-ends), and `Client::watch`
/// returns the server's created response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_creates_and_created_header_on_native() {
    let cluster = Cluster::start(1, &[]).await;
    let c = cluster.client(0).await;
    c.put(put("h", "1")).await.unwrap();
    let ws = c.watch(watch("b", "a", 0)).await.unwrap();
    assert_eq!(ws.watch_id(), -1);
    assert!(ws.created().created && ws.created().canceled);
    assert_eq!(ws.created().cancel_reason, "mvcc: watcher range is empty");
    let ok = c
        .watch(w::WatchCreateRequest {
            watch_id: 7,
            ..watch("h", "", 0)
        })
        .await
        .unwrap();
    assert_eq!(ok.watch_id(), 7);
    assert_eq!(ok.created().header.revision, 2, "revision at creation");
    let dup = c
        .watch(w::WatchCreateRequest {
            watch_id: 7,
            ..watch("x", "", 0)
        })
        .await
        .unwrap();
    assert_eq!(dup.watch_id(), -1);
    assert_eq!(
        dup.created().cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
}

/// A gRPC watch stream that is not read while writes pile up: its watcher
/// moves to catch-up from the store once more than
/// `--watch-max-pending-bytes` are queued, and when the client reads again
/// it gets every event exactly once, in order (no silent loss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_grpc_watch_consumer_catches_up_without_loss() {
    use corekv_wire::proto::etcdserverpb as pb;

    let cluster = Cluster::start(1, &["--watch-max-pending-bytes", "262144"]).await;
    let http = cluster.members[0].spec.http;
    let c = cluster.client(0).await;
    let ch = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{http}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"s".to_vec().into(),
                range_end: b"t".to_vec().into(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = pb::watch_client::WatchClient::new(ch)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created);
    let first = created.header.unwrap().revision + 1;

    // 400 puts of 16 KiB (6.4 MiB): far more than the HTTP/2 windows, the
    // response channel and the 256 KiB queue hold while nobody reads.
    let value = "v".repeat(16 * 1024);
    let mut pending = Vec::new();
    for i in 0..400 {
        let c = c.clone();
        let value = value.clone();
        pending.push(tokio::spawn(async move {
            c.put(put(&format!("s{i:03}"), &value)).await.unwrap()
        }));
    }
    for p in pending {
        p.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut revs = Vec::new();
    while revs.len() < 400 {
        let r = tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .expect("events within 20 s")
            .unwrap()
            .expect("stream open");
        assert!(!r.canceled, "{:?}", r.cancel_reason);
        for e in r.events {
            let kv = e.kv.unwrap();
            assert_eq!(kv.value.len(), value.len());
            revs.push(kv.mod_revision);
        }
    }
    let want: Vec<i64> = (first..first + 400).collect();
    assert_eq!(revs, want, "every event once, in revision order");
    assert!(
        cluster.members[0]
            .log()
            .contains("watchers moved to catch-up from the store"),
        "the stream's watcher never went through catch-up"
    );
}

/// A follower that falls so far behind that the leader sends it a snapshot
/// (its store is replaced by the leader's image) must not let its synced
/// watchers skip the image's revisions: they catch up from the new store's
/// history (etcd's watchableStore.Restore). The chaos run found the gap: a
/// watch on a restarted member jumped from revision 3750 to 5325.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_on_follower_survives_a_snapshot_install() {
    let mut cluster = Cluster::start(
        3,
        &[
            "--snapshot-count",
            "50",
            "--store-sync-entries",
            "20",
            "--snapshot-catchup-entries",
            "10",
        ],
    )
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    let fc = cluster.client(follower).await;
    let lc = cluster.client(leader).await;
    let mut ws = created(&fc, watch("p", "q", 0)).await;
    lc.put(put("p0000", "before")).await.unwrap();
    assert_eq!(events(&mut ws, 1).await[0].kv.key, b"p0000".to_vec());
    // Freeze the follower (its connections stay open) while the others
    // write and compact their log past it.
    let pid = cluster.members[follower].child.as_ref().unwrap().id() as i32;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    for i in 1..300 {
        lc.put(put(&format!("p{i:04}"), "v")).await.unwrap();
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let evs = events(&mut ws, 299).await;
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(
            String::from_utf8_lossy(&e.kv.key),
            format!("p{:04}", i + 1),
            "event {i} of the watch after the snapshot"
        );
    }
    assert!(
        cluster.members[follower]
            .log()
            .contains("installed a snapshot from the leader"),
        "the follower was expected to catch up by snapshot; log:\n{}",
        cluster.members[follower].log()
    );
    drop(ws);
    cluster.members[follower].kill();
}

/// A watch catching up from history gets each revision's events in one
/// response, also where the 1,000-event response bound falls inside a
/// revision (a chaos run saw a txn's two puts split across two responses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_never_splits_a_revision_across_responses() {
    let cluster = Cluster::start(1, &[]).await;
    let c = cluster.client(0).await;
    // Revisions 2..=1000 hold one event each; 1001 a txn's two puts, so
    // the 1,000th and 1,001st events share a revision.
    for i in 0..999 {
        c.put(put(&format!("k{i:04}"), "v")).await.unwrap();
    }
    let txn = w::TxnRequest {
        compare: Vec::new(),
        success: vec![
            w::RequestOp::Put(put("ka", "x")),
            w::RequestOp::Put(put("kb", "y")),
        ],
        failure: Vec::new(),
        nested: Vec::new(),
    };
    assert_eq!(c.txn(txn).await.unwrap().header.revision, 1001);
    let mut ws = created(&c, watch("k", "l", 2)).await;
    let (mut events, mut last_rev) = (0, 0);
    while events < 1001 {
        let r = next(&mut ws).await;
        assert!(!r.canceled, "unexpected cancel: {r:?}");
        let Some(first) = r.events.first() else {
            continue;
        };
        assert!(
            first.kv.mod_revision > last_rev,
            "revision {} split across responses",
            first.kv.mod_revision
        );
        last_rev = r.events.last().unwrap().kv.mod_revision;
        events += r.events.len();
    }
    assert_eq!((events, last_rev), (1001, 1001));
}
