//! Real etcd client libraries against a corekv member's client URL: the Rust
//! `etcd-client` crate (tonic) and Python's `etcd-sdk-python` (grpcio, gRPC)
//! plus `etcd3gw` (the HTTP/JSON gateway). KV, txn and watch (and leases
//! over gRPC); each must work unchanged, as against etcd. The Python packages live in a venv made by
//! scripts/install-test-deps.sh; the test fails when it is missing.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::Cluster;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, LeaseTimeToLiveOptions,
    PutOptions, Txn, TxnOp, WatchOptions,
};

async fn message(stream: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch response within 10 s")
        .expect("watch stream ok")
        .expect("watch stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_etcd_client_kv_txn_watch() {
    let cluster = Cluster::start(1, &[]).await;
    let ep = format!("http://127.0.0.1:{}", cluster.members[0].spec.http);
    let mut c = Client::connect([ep], None).await.expect("connect");

    let r = c.put("foo", "bar", None).await.unwrap();
    assert_eq!(r.header().unwrap().revision(), 2);
    c.put("foo2", "baz", None).await.unwrap();
    let r = c.get("foo", None).await.unwrap();
    assert_eq!(r.kvs()[0].value(), b"bar");
    let r = c
        .get(
            "foo",
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .unwrap();
    assert_eq!(r.count(), 2);
    assert!(r.kvs()[1].value().is_empty(), "keys only");

    // Txn: If foo == bar Then put foo qux Else get foo.
    let txn = Txn::new()
        .when(vec![Compare::value("foo", CompareOp::Equal, "bar")])
        .and_then(vec![TxnOp::put("foo", "qux", None)])
        .or_else(vec![TxnOp::get("foo", None)]);
    let r = c.txn(txn.clone()).await.unwrap();
    assert!(r.succeeded());
    let r = c.txn(txn).await.unwrap();
    assert!(!r.succeeded(), "foo is qux now");

    // Watch a prefix: created, then the events of later writes.
    let mut ws = c
        .watch(
            "foo",
            Some(WatchOptions::new().with_prefix().with_prev_key()),
        )
        .await
        .unwrap();
    let created = message(&mut ws).await;
    assert!(created.created());
    let id = created.watch_id();
    c.put("foo3", "x", None).await.unwrap();
    c.delete("foo2", None).await.unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        let r = message(&mut ws).await;
        assert_eq!(r.watch_id(), id);
        events.extend(r.events().to_vec());
    }
    assert_eq!(events[0].event_type(), EventType::Put);
    assert_eq!(events[0].kv().unwrap().key(), b"foo3");
    assert_eq!(events[1].event_type(), EventType::Delete);
    assert_eq!(events[1].prev_kv().unwrap().value(), b"baz", "prev_kv");
    ws.request_progress().await.unwrap();
    let p = message(&mut ws).await;
    assert_eq!(p.watch_id(), -1, "progress notification");
    ws.cancel(id).await.unwrap();
    let r = message(&mut ws).await;
    assert!(r.canceled() && r.watch_id() == id, "{r:?}");

    let r = c
        .delete("foo", Some(DeleteOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(r.deleted(), 2);
    let rev = r.header().unwrap().revision();
    c.compact(rev, None).await.unwrap();
    let e = c
        .get("foo", Some(GetOptions::new().with_revision(2)))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("etcdserver: mvcc: required revision has been compacted"),
        "{e}"
    );
    // Leases: a key attached to a granted lease goes away with it.
    let lease = c.lease_grant(60, None).await.unwrap();
    assert_eq!(lease.ttl(), 60);
    c.put(
        "leased",
        "v",
        Some(PutOptions::new().with_lease(lease.id())),
    )
    .await
    .unwrap();
    let ttl = c
        .lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys()))
        .await
        .unwrap();
    assert_eq!(ttl.keys(), [b"leased".to_vec()]);
    c.lease_revoke(lease.id()).await.unwrap();
    assert!(c.get("leased", None).await.unwrap().kvs().is_empty());

    let s = c.status().await.unwrap();
    assert_eq!(s.leader(), s.header().unwrap().member_id());
    let m = c.member_list().await.unwrap();
    assert_eq!(m.members().len(), 1);
    assert_eq!(m.members()[0].name(), "m1");
}

/// The venv scripts/install-test-deps.sh creates (same default path).
fn python_venv() -> PathBuf {
    if let Some(p) = std::env::var_os("COREKV_PY_VENV") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").expect("HOME is set");
    PathBuf::from(home).join(".cache/corekv/py-clients")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_clients_kv_txn_watch() {
    let python = python_venv().join("bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        python.display()
    );
    let cluster = Cluster::start(1, &[]).await;
    let port = cluster.members[0].spec.http;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/python_clients.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .output()
            .expect("run python")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python clients failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains("pyetcd ok") && stdout.contains("etcd3gw ok"),
        "{stdout}"
    );
}
