//! Maintenance.Snapshot end to end: saved while writes continue (native
//! stream, `corekvctl snapshot save`, `etcdctl snapshot save` over gRPC),
//! `snapshot status`, and `snapshot restore` into a new three-member
//! cluster that holds the same keys and the same HashKV.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::*;
use corekv_wire::messages as w;
use sha2::{Digest, Sha256};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    eprintln!(
        "$ {cmd:?}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn corekvctl(endpoint: &str, args: &[&str]) -> Output {
    run(Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .args(["--endpoints", endpoint])
        .args(args))
}

fn check_etcd_form(file: &[u8]) {
    assert_eq!(file.len() % 512, 32, "etcd's trailer rule");
    let (body, digest) = file.split_at(file.len() - 32);
    assert_eq!(Sha256::digest(body).as_slice(), digest, "SHA-256 trailer");
}

/// Puts `w<n>` keys until `stop`; returns the count written.
fn writer(client: corekv_wire::Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let written = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let n = written.fetch_add(1, Ordering::Relaxed);
            client
                .put(put(&format!("w{n:06}"), &"x".repeat(100)))
                .await
                .expect("put during snapshot");
        }
        written.load(Ordering::Relaxed)
    })
}

/// The native stream is already in etcd's form; remaining_bytes counts down
/// to 0 on the last chunk.
async fn native_save(client: &corekv_wire::Client) -> Vec<u8> {
    let mut stream = client.snapshot().await.expect("snapshot");
    let mut file = Vec::new();
    let mut last_remaining = u64::MAX;
    while let Some(frame) = stream.next_frame().await.expect("chunk") {
        let w::Response::Snapshot(c) = frame.to_owned_response().unwrap() else {
            panic!("not a snapshot chunk");
        };
        file.extend_from_slice(&c.blob);
        assert!(c.remaining_bytes < last_remaining);
        last_remaining = c.remaining_bytes;
    }
    assert_eq!(last_remaining, 0);
    file
}

fn status_json(endpoint: &str, file: &Path) -> serde_json::Value {
    let out = corekvctl(
        endpoint,
        &["snapshot", "status", file.to_str().unwrap(), "-w", "json"],
    );
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_during_writes_then_restore_a_new_cluster() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster
        .wait_leader(std::time::Duration::from_secs(10))
        .await;
    let client = cluster.client(leader).await;
    for i in 0..200 {
        client
            .put(put(&format!("k{i:04}"), &format!("v{i}")))
            .await
            .unwrap();
    }
    client
        .delete_range(w::DeleteRangeRequest {
            key: b"k0000".to_vec(),
            range_end: b"k0010".to_vec(),
            prev_kv: false,
        })
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = writer(cluster.client(leader).await, stop.clone());

    let dir = tempfile::Builder::new()
        .prefix("corekv-snap-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    // Native, from a follower, while the load runs.
    let follower = (leader + 1) % 3;
    let native = native_save(&cluster.client(follower).await).await;
    check_etcd_form(&native);

    // corekvctl against the leader.
    let ep = cluster.members[leader].native_addr();
    let saved = dir.path().join("ctl.db");
    let out = corekvctl(&ep, &["snapshot", "save", saved.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Snapshot saved at {}\n", saved.display())
    );
    assert!(!dir.path().join("ctl.db.part").exists());
    check_etcd_form(&std::fs::read(&saved).unwrap());

    // etcdctl 3.4 over gRPC.
    let etcd_file = dir.path().join("etcdctl.db");
    let out = run(Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints=127.0.0.1:{}",
            cluster.members[leader].spec.http
        ))
        .args(["snapshot", "save"])
        .arg(&etcd_file));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Snapshot saved at"));
    check_etcd_form(&std::fs::read(&etcd_file).unwrap());

    stop.store(true, Ordering::Relaxed);
    let written = load.await.unwrap();
    assert!(written > 0);

    // Several endpoints: refused as etcdctl does (one node only).
    let two = format!("{ep},{}", cluster.members[follower].native_addr());
    let out = corekvctl(&two, &["snapshot", "save", "x.db"]);
    assert_eq!(out.status.code(), Some(5));

    let status = status_json(&ep, &saved);
    let rev = status["revision"].as_i64().unwrap();
    assert!(rev > 200, "{status}");
    assert!(status["totalKey"].as_u64().unwrap() >= 200);
    assert_eq!(
        status["totalSize"].as_u64().unwrap(),
        std::fs::metadata(&saved).unwrap().len()
    );
    // The etcdctl-saved file is the same kind of file.
    assert!(status_json(&ep, &etcd_file)["revision"].as_i64().unwrap() >= rev);

    // What the original cluster held at the snapshot's revision.
    let all = |r| w::RangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: r,
        ..Default::default()
    };
    let want = client.range(all(rev)).await.unwrap().kvs;
    let want_hash = client
        .hash_kv(w::HashKvRequest { revision: rev })
        .await
        .unwrap()
        .hash;
    drop(cluster);

    // Restore into three new members.
    let mut members = members(dir.path(), 3, &[]);
    for m in &mut members {
        let peer_url = format!("http://127.0.0.1:{}", m.spec.peer);
        let out = corekvctl(
            "127.0.0.1:1",
            &[
                "snapshot",
                "restore",
                saved.to_str().unwrap(),
                "--data-dir",
                m.spec.data_dir.to_str().unwrap(),
                "--name",
                &m.spec.name,
                "--initial-cluster",
                &m.initial_cluster,
                "--initial-cluster-token",
                "restored",
                "--initial-advertise-peer-urls",
                &peer_url,
            ],
        );
        assert!(out.status.success());
        m.extra = vec!["--initial-cluster-token".into(), "restored".into()];
    }
    let restored = Cluster::start_members(members, dir).await;
    let mut hashes = Vec::new();
    for i in 0..3 {
        let c = restored.client(i).await;
        // A linearizable read: this member has applied what the leader has.
        let got = c.range(all(0)).await.unwrap();
        assert_eq!(got.header.revision, rev, "member {i}");
        assert_eq!(got.kvs, want, "member {i}");
        let h = c.hash_kv(w::HashKvRequest { revision: 0 }).await.unwrap();
        hashes.push(h.hash);
    }
    assert_eq!(hashes, vec![want_hash; 3]);
    // The restored cluster takes writes, on top of the old revision.
    let c = restored.client(0).await;
    let r = c.put(put("after", "restore")).await.unwrap();
    assert_eq!(r.header.revision, rev + 1);
    let members = c
        .member_list(w::MemberListRequest::default())
        .await
        .unwrap()
        .members;
    assert_eq!(members.len(), 3);
}
