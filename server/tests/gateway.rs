//! etcd's gRPC API and HTTP endpoints on a real `corekv` member's client
//! URL (served by its shards, no loopback hop), driven by the generated
//! tonic clients and by etcdctl 3.4 (installed by
//! scripts/install-test-deps.sh; the etcdctl test fails when it is missing).

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Cluster;
use corekv_wire::proto::etcdserverpb as pb;
use pb::kv_client::KvClient;
use pb::watch_client::WatchClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// The client URL (gRPC + HTTP) of member `i`.
fn client_url(cluster: &Cluster, i: usize) -> SocketAddr {
    format!("127.0.0.1:{}", cluster.members[i].spec.http)
        .parse()
        .unwrap()
}

/// One member; its client URL.
async fn setup() -> (Cluster, SocketAddr) {
    let cluster = Cluster::start(1, &[]).await;
    let url = client_url(&cluster, 0);
    (cluster, url)
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to gateway")
}

fn b(s: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(s.as_bytes())
}

fn put(k: &str, v: &str) -> pb::PutRequest {
    pb::PutRequest {
        key: b(k),
        value: b(v),
        ..Default::default()
    }
}

fn get(k: &str) -> pb::RangeRequest {
    pb::RangeRequest {
        key: b(k),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_rpcs_map_to_native_semantics_and_errors() {
    let (_cluster, gw) = setup().await;
    let mut kv = KvClient::new(channel(gw).await);

    let r = kv.put(put("a", "1")).await.unwrap().into_inner();
    let h = r.header.unwrap();
    assert!(h.cluster_id != 0 && h.member_id != 0 && h.raft_term != 0);
    assert_eq!(h.revision, 2, "the first put makes revision 2, as etcd");
    kv.put(put("b", "2")).await.unwrap();
    let r = kv
        .put(pb::PutRequest {
            prev_kv: true,
            ..put("a", "11")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.prev_kv.unwrap().value, b("1"));

    let r = kv
        .range(pb::RangeRequest {
            key: b("a"),
            range_end: b("c"),
            sort_order: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let keys: Vec<_> = r.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![b("b"), b("a")], "descending by key");
    assert_eq!(r.count, 2);
    let a = &r.kvs[1];
    assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 4, 2));

    // Nested txn: If a == "11" Then (put c; Txn(If b == "nope" Then .. Else get b)).
    let inner = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: 0,
            target: 3,
            key: b("b"),
            target_union: Some(pb::compare::TargetUnion::Value(b("nope"))),
            ..Default::default()
        }],
        success: vec![],
        failure: vec![pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(get("b"))),
        }],
    };
    let txn = pb::TxnRequest {
        compare: vec![pb::Compare {
            result: 0,
            target: 3,
            key: b("a"),
            target_union: Some(pb::compare::TargetUnion::Value(b("11"))),
            ..Default::default()
        }],
        success: vec![
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(put("c", "3"))),
            },
            pb::RequestOp {
                request: Some(pb::request_op::Request::RequestTxn(inner)),
            },
        ],
        failure: vec![],
    };
    let r = kv.txn(txn).await.unwrap().into_inner();
    assert!(r.succeeded);
    let Some(pb::response_op::Response::ResponseTxn(nested)) = &r.responses[1].response else {
        panic!("expected a nested txn response: {r:?}");
    };
    assert!(!nested.succeeded);
    let Some(pb::response_op::Response::ResponseRange(got_b)) = &nested.responses[0].response
    else {
        panic!("expected a range in the nested failure branch");
    };
    assert_eq!(got_b.kvs[0].value, b("2"));

    let r = kv
        .delete_range(pb::DeleteRangeRequest {
            key: b("a"),
            range_end: b("c"),
            prev_kv: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.deleted, 2);
    assert_eq!(r.prev_kvs.len(), 2);
    let rev = r.header.unwrap().revision;

    // Errors: etcd's gRPC code and exact message.
    let e = kv.put(put("", "x")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "etcdserver: key is not provided");
    kv.compact(pb::CompactionRequest {
        revision: rev,
        physical: false,
    })
    .await
    .unwrap();
    let e = kv
        .range(pb::RangeRequest {
            revision: 2,
            ..get("a")
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let e = kv
        .range(pb::RangeRequest {
            revision: rev + 100,
            ..get("a")
        })
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    let e = kv
        .range(pb::RangeRequest {
            sort_target: 99,
            ..get("a")
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "etcdserver: invalid sort option");

    // Size limits: over max-request-bytes is etcd's "request is too large";
    // over max-request-bytes + 512 KiB gRPC itself refuses.
    let big = "x".repeat(1_700_000);
    let e = kv.put(put("big", &big)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(e.message(), "etcdserver: request is too large");
    let huge = "x".repeat(2_200_000);
    let e = kv.put(put("huge", &huge)).await.unwrap_err();
    assert_ne!(e.message(), "etcdserver: request is too large");
    assert!(
        matches!(
            e.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
        ),
        "{e:?}"
    );
    // The connection still serves after the refusal.
    kv.put(put("after", "ok")).await.unwrap();
}

/// A gRPC watch stream with a request sender.
struct WatchSession {
    tx: mpsc::Sender<pb::WatchRequest>,
    rx: tonic::Streaming<pb::WatchResponse>,
}

impl WatchSession {
    async fn open(ch: Channel, has_leader: bool) -> Result<WatchSession, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if has_leader {
            req.metadata_mut()
                .insert("hasleader", "true".parse().unwrap());
        }
        let rx = WatchClient::new(ch).watch(req).await?.into_inner();
        Ok(WatchSession { tx, rx })
    }

    async fn send(&self, u: pb::watch_request::RequestUnion) {
        self.tx
            .send(pb::WatchRequest {
                request_union: Some(u),
            })
            .await
            .unwrap();
    }

    async fn create(&self, c: pb::WatchCreateRequest) {
        self.send(pb::watch_request::RequestUnion::CreateRequest(c))
            .await;
    }

    async fn next(&mut self) -> pb::WatchResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("watch response within 10 s")
            .expect("stream ok")
            .expect("stream open")
    }
}

fn watch_key(k: &str) -> pb::WatchCreateRequest {
    pb::WatchCreateRequest {
        key: b(k),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_stream_multiplexes_watches_like_etcd() {
    let (_cluster, gw) = setup().await;
    let ch = channel(gw).await;
    let mut kv = KvClient::new(ch.clone());
    let mut s = WatchSession::open(ch.clone(), true).await.unwrap();

    // Ids are assigned per stream from 0, like etcd's.
    s.create(pb::WatchCreateRequest {
        prev_kv: true,
        ..watch_key("a")
    })
    .await;
    let c0 = s.next().await;
    assert!(c0.created && !c0.canceled, "{c0:?}");
    assert_eq!(c0.watch_id, 0);
    s.create(pb::WatchCreateRequest {
        range_end: b("\0"),
        filters: vec![0], // NOPUT
        ..watch_key("a")
    })
    .await;
    let c1 = s.next().await;
    assert_eq!((c1.created, c1.watch_id), (true, 1));
    // A requested id in use is refused with etcd's mvcc error.
    s.create(pb::WatchCreateRequest {
        watch_id: 1,
        ..watch_key("z")
    })
    .await;
    let dup = s.next().await;
    assert!(dup.created && dup.canceled);
    assert_eq!(dup.watch_id, -1);
    assert_eq!(
        dup.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    // A requested free id is used.
    s.create(pb::WatchCreateRequest {
        watch_id: 7,
        ..watch_key("b")
    })
    .await;
    let c7 = s.next().await;
    assert_eq!((c7.created, c7.watch_id), (true, 7));

    kv.put(put("a", "1")).await.unwrap();
    kv.put(put("a", "2")).await.unwrap();
    kv.delete_range(pb::DeleteRangeRequest {
        key: b("a"),
        ..Default::default()
    })
    .await
    .unwrap();
    kv.put(put("b", "x")).await.unwrap();

    // Collect until every watch saw what it should.
    let mut w0 = Vec::new();
    let mut w1 = Vec::new();
    let mut w7 = Vec::new();
    while w0.len() < 3 || w1.is_empty() || w7.is_empty() {
        let r = s.next().await;
        match r.watch_id {
            0 => w0.extend(r.events),
            1 => w1.extend(r.events),
            7 => w7.extend(r.events),
            other => panic!("unexpected watch id {other}: {r:?}"),
        }
    }
    assert_eq!(w0.len(), 3);
    assert_eq!(w0[1].prev_kv.as_ref().unwrap().value, b("1"), "prev_kv");
    assert_eq!(w0[2].r#type, 1, "delete event");
    assert_eq!(w1.len(), 1, "NOPUT leaves only the delete");
    assert_eq!(w1[0].r#type, 1);
    assert_eq!(w7[0].kv.as_ref().unwrap().value, b("x"));

    // Progress request: watch id -1, no events, current revision.
    s.send(pb::watch_request::RequestUnion::ProgressRequest(
        pb::WatchProgressRequest {},
    ))
    .await;
    let p = s.next().await;
    assert_eq!(p.watch_id, -1);
    assert!(p.events.is_empty() && !p.created && !p.canceled);
    assert_eq!(p.compact_revision, 0);
    assert_eq!(p.header.unwrap().revision, 5);

    // Cancel.
    s.send(pb::watch_request::RequestUnion::CancelRequest(
        pb::WatchCancelRequest { watch_id: 0 },
    ))
    .await;
    let c = s.next().await;
    assert!(c.canceled && c.watch_id == 0, "{c:?}");
    kv.put(put("a", "3")).await.unwrap();
    kv.put(put("b", "y")).await.unwrap();
    let r = s.next().await;
    assert_eq!(r.watch_id, 7, "the cancelled watch gets no more events");

    // History from a past revision, and a compacted start revision.
    s.create(pb::WatchCreateRequest {
        start_revision: 2,
        ..watch_key("a")
    })
    .await;
    let created = s.next().await;
    assert!(created.created);
    let mut hist = Vec::new();
    while hist.len() < 4 {
        let r = s.next().await;
        if r.watch_id == created.watch_id {
            hist.extend(r.events);
        }
    }
    let revs: Vec<i64> = hist
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, vec![2, 3, 4, 6]);

    kv.compact(pb::CompactionRequest {
        revision: 5,
        physical: true,
    })
    .await
    .unwrap();
    s.create(pb::WatchCreateRequest {
        start_revision: 2,
        ..watch_key("a")
    })
    .await;
    let mut saw_created = false;
    loop {
        let r = s.next().await;
        if r.created {
            saw_created = true;
        }
        if r.canceled {
            assert_eq!(r.compact_revision, 5, "{r:?}");
            break;
        }
    }
    assert!(saw_created);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_cluster_lease_auth_and_http_on_one_port() {
    let (_cluster, gw) = setup().await;
    let ch = channel(gw).await;
    let mut kv = KvClient::new(ch.clone());
    kv.put(put("k", "v")).await.unwrap();

    let mut m = pb::maintenance_client::MaintenanceClient::new(ch.clone());
    let st = m.status(pb::StatusRequest {}).await.unwrap().into_inner();
    let h = st.header.unwrap();
    assert_eq!(st.leader, h.member_id, "a single member leads");
    assert!(st.version.starts_with("3.4"), "{}", st.version);
    assert!(st.db_size > 0 && st.raft_index > 0);
    let hkv = m
        .hash_kv(pb::HashKvRequest { revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let hash = m.hash(pb::HashRequest {}).await.unwrap().into_inner();
    assert_eq!(
        hash.hash, hkv.hash,
        "Hash is HashKV at the current revision"
    );
    m.defragment(pb::DefragmentRequest {}).await.unwrap();
    let alarms = m
        .alarm(pb::AlarmRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(alarms.alarms.is_empty());

    let mut cl = pb::cluster_client::ClusterClient::new(ch.clone());
    let ml = cl
        .member_list(pb::MemberListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ml.members.len(), 1);
    assert_eq!(ml.members[0].id, h.member_id);
    assert_eq!(ml.members[0].name, "m1");
    // Membership changes carry the request layer's answer, etcd's code and
    // text (the changes themselves: tests/membership.rs).
    let e = cl
        .member_add(pb::MemberAddRequest {
            peer_ur_ls: vec!["127.0.0.1:1".into()],
            is_learner: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(e.message(), "etcdserver: given member URLs are invalid");

    // Leases: etcd's answers and error codes (semantics in tests/lease.rs).
    let mut lease = pb::lease_client::LeaseClient::new(ch.clone());
    let g = lease
        .lease_grant(pb::LeaseGrantRequest { ttl: 10, id: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(g.id > 0 && g.ttl == 10, "{g:?}");
    let e = lease
        .lease_grant(pb::LeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::OutOfRange);
    assert_eq!(e.message(), "etcdserver: too large lease TTL");
    let e = lease
        .lease_revoke(pb::LeaseRevokeRequest { id: 12345 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(e.message(), "etcdserver: requested lease not found");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = lease
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for (id, ttl) in [(g.id, 10), (12345, 0)] {
        tx.send(pb::LeaseKeepAliveRequest { id }).await.unwrap();
        let k = answers.message().await.unwrap().unwrap();
        assert_eq!((k.id, k.ttl), (id, ttl));
    }
    let t = lease
        .lease_time_to_live(pb::LeaseTimeToLiveRequest {
            id: 12345,
            keys: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.ttl, -1);
    lease
        .lease_revoke(pb::LeaseRevokeRequest { id: g.id })
        .await
        .unwrap();

    let mut auth = pb::auth_client::AuthClient::new(ch.clone());
    let a = auth
        .auth_status(pb::AuthStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!a.enabled);
    let e = auth
        .auth_enable(pb::AuthEnableRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(e.message(), "etcdserver: root user does not exist");

    let mut health = tonic_health::pb::health_client::HealthClient::new(ch);
    let hr = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        hr.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Plain HTTP on the same port.
    let (code, body) = http_get(gw, "/health");
    assert_eq!(code, 200);
    assert_eq!(body, "{\"health\":\"true\",\"reason\":\"\"}");
    let (code, body) = http_get(gw, "/version");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["etcdcluster"], "3.4.0");
    let (code, body) = http_get(gw, "/metrics");
    assert_eq!(code, 200);
    assert!(body.contains("etcd_server_has_leader"), "{body}");
    assert_eq!(http_get(gw, "/livez").0, 200);
}

/// Blocking HTTP/1.1 GET; returns (status, body).
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match text.find("\r\n\r\n") {
        Some(i) => dechunk(&text[i + 4..], &text[..i]),
        None => String::new(),
    };
    (code, body)
}

/// Undoes chunked transfer encoding if the head says so.
fn dechunk(body: &str, head: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("\r\n") {
        let n = usize::from_str_radix(rest[..i].trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[i + 2..i + 2 + n]);
        rest = &rest[i + 2 + n + 2..];
    }
    out
}

// ---- etcdctl ----

/// etcdctl must be installed (scripts/install-test-deps.sh): fail loudly.
fn require_etcdctl() {
    let ok = Command::new("etcdctl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "etcdctl not found: run scripts/install-test-deps.sh (Debian package etcd-client)"
    );
}

fn etcdctl(gw: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{}", gw.port()))
        .arg("--command-timeout=10s")
        .args(args)
        .output()
        .expect("run etcdctl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    eprintln!("$ etcdctl {}\n{}", args.join(" "), text);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_drives_the_gateway() {
    require_etcdctl();
    let (_cluster, gw) = setup().await;
    let run =
        move |args: &'static [&'static str]| tokio::task::spawn_blocking(move || etcdctl(gw, args));

    let (ok, out) = run(&["put", "foo", "bar"]).await.unwrap();
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = run(&["get", "foo"]).await.unwrap();
    assert!(ok && out.trim() == "foo\nbar", "{out}");
    run(&["put", "foo2", "baz"]).await.unwrap();
    let (ok, out) = run(&["get", "--prefix", "--keys-only", "foo"])
        .await
        .unwrap();
    assert!(ok, "{out}");
    let keys: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(keys, ["foo", "foo2"]);
    let (ok, out) = run(&["get", "foo", "-w", "json"]).await.unwrap();
    assert!(ok, "{out}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(j["count"], 1);

    // txn reads its program from stdin.
    let txn = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=127.0.0.1:{}", gw.port()))
            .arg("txn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"value(\"foo\") = \"bar\"\n\nput foo qux\n\nput foo nope\n\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    eprintln!("$ etcdctl txn\n{txn}");
    assert!(txn.starts_with("SUCCESS"), "{txn}");
    let (_, out) = run(&["get", "foo", "--print-value-only"]).await.unwrap();
    assert_eq!(out.trim(), "qux");

    // watch: history from revision 1, then a live event, then stop.
    let watch = tokio::task::spawn_blocking(move || {
        let child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=127.0.0.1:{}", gw.port()))
            .args(["watch", "--rev=1", "--prefix", "foo"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        etcdctl(gw, &["put", "foo", "live"]);
        std::thread::sleep(Duration::from_millis(1000));
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap();
    eprintln!("$ etcdctl watch --rev=1 --prefix foo\n{watch}");
    let lines: Vec<&str> = watch.lines().collect();
    assert_eq!(
        lines,
        [
            "PUT", "foo", "bar", "PUT", "foo2", "baz", "PUT", "foo", "qux", "PUT", "foo", "live"
        ],
        "{watch}"
    );

    let (ok, out) = run(&["del", "foo2"]).await.unwrap();
    assert!(ok && out.trim() == "1", "{out}");

    let (ok, out) = run(&["endpoint", "status", "-w", "json"]).await.unwrap();
    assert!(ok, "{out}");
    let j: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let st = &j[0]["Status"];
    assert_eq!(st["leader"], st["header"]["member_id"], "IS LEADER");
    let (ok, out) = run(&["endpoint", "health"]).await.unwrap();
    assert!(ok && out.contains("is healthy"), "{out}");
    let (ok, out) = run(&["member", "list"]).await.unwrap();
    assert!(ok && out.contains("m1"), "{out}");
    let (ok, out) = run(&["endpoint", "hashkv"]).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(&["compaction", "3"]).await.unwrap();
    assert!(ok && out.contains("compacted revision 3"), "{out}");
    let (ok, out) = run(&["get", "foo", "--rev=2"]).await.unwrap();
    assert!(
        !ok && out.contains("required revision has been compacted"),
        "{out}"
    );
    // etcdctl 3.4's lease commands and their output.
    let run_owned = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            etcdctl(gw, &args)
        })
    };
    let (ok, out) = run(&["lease", "grant", "10"]).await.unwrap();
    assert!(ok && out.ends_with("granted with TTL(10s)\n"), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    let (ok, out) = run_owned(vec![
        "put".to_string(),
        "leased".to_string(),
        "v".to_string(),
        format!("--lease={id}"),
    ])
    .await
    .unwrap();
    assert!(ok && out.trim() == "OK", "{out}");
    let (ok, out) = run_owned(vec![
        "lease".to_string(),
        "timetolive".to_string(),
        id.clone(),
        "--keys".to_string(),
    ])
    .await
    .unwrap();
    assert!(
        ok && out.starts_with(&format!("lease {id} granted with TTL(10s), remaining("))
            && out.ends_with("attached keys([leased])\n"),
        "{out}"
    );
    let (ok, out) = run_owned(vec![
        "lease".to_string(),
        "keep-alive".to_string(),
        "--once".to_string(),
        id.clone(),
    ])
    .await
    .unwrap();
    assert!(
        ok && out.trim() == format!("lease {id} keepalived with TTL(10)"),
        "{out}"
    );
    let (ok, out) = run(&["lease", "list"]).await.unwrap();
    assert!(ok && out == format!("found 1 leases\n{id}\n"), "{out}");
    let (ok, out) = run_owned(vec!["lease".to_string(), "revoke".to_string(), id.clone()])
        .await
        .unwrap();
    assert!(ok && out.trim() == format!("lease {id} revoked"), "{out}");
    let (ok, out) = run_owned(vec![
        "lease".to_string(),
        "timetolive".to_string(),
        id.clone(),
    ])
    .await
    .unwrap();
    assert!(
        ok && out.trim() == format!("lease {id} already expired"),
        "{out}"
    );
    let (ok, out) = run(&["get", "leased"]).await.unwrap();
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out) = run(&["defrag"]).await.unwrap();
    assert!(ok, "{out}");
    let (ok, out) = run(&["alarm", "list"]).await.unwrap();
    assert!(ok && out.trim().is_empty(), "{out}");
}

/// gRPC and HTTP/1.1 on `--listen-client-urls`, several connections of
/// both kinds at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_grpc_and_http_on_its_client_url() {
    let cluster = Cluster::start(1, &[]).await;
    let client_url: SocketAddr = format!("127.0.0.1:{}", cluster.members[0].spec.http)
        .parse()
        .unwrap();
    let mut kv = KvClient::new(channel(client_url).await);
    kv.put(put("via-daemon", "1")).await.unwrap();
    let r = kv.range(get("via-daemon")).await.unwrap().into_inner();
    assert_eq!(r.kvs[0].value, b("1"));
    let (code, body) = http_get(client_url, "/health");
    assert_eq!(
        (code, body.as_str()),
        (200, "{\"health\":\"true\",\"reason\":\"\"}")
    );
}

/// Metadata `hasleader: true` on Watch: refused while the member has no
/// leader (etcd's "etcdserver: no leader"); without it the stream opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_requiring_a_leader_is_refused_without_one() {
    let mut cluster = Cluster::start(3, &[]).await;
    let gw = client_url(&cluster, 0);
    let ch = channel(gw).await;
    WatchSession::open(ch.clone(), true)
        .await
        .expect("a leader exists");
    cluster.members[1].kill();
    cluster.members[2].kill();
    // Check-quorum makes a lone leader step down within an election timeout.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let err = loop {
        match WatchSession::open(ch.clone(), true).await {
            Err(e) => break e,
            Ok(_) if std::time::Instant::now() > deadline => panic!("leader never lost"),
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(err.message(), "etcdserver: no leader");
    WatchSession::open(ch, false)
        .await
        .expect("no leader required");
    // Without a leader /health answers 503 with the reason.
    let (code, body) = tokio::task::spawn_blocking(move || http_get(gw, "/health"))
        .await
        .unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("RAFT NO LEADER"), "{body}");
}
