//! corekvctl's operator commands against real members, with etcdctl 3.4's
//! output (captured from etcd 3.4.23 for the same sequence of commands).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use corekv_wire::messages as w;

fn ctl(endpoint: &str, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .args(["--endpoints", endpoint])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("spawn corekvctl");
    eprintln!(
        "$ corekvctl {args:?} -> {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a watch for a while, then kills it; returns what it printed.
fn watch_output(endpoint: &str, args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .args(["--endpoints", endpoint, "watch"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn corekvctl watch");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = child.kill();
    let out = child.wait_with_output().expect("watch output");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fields_and_cluster_commands() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let ep = cluster.members[leader].native_addr();
    let c = cluster.client(leader).await;
    c.put(put("foo", "bar")).await.unwrap();
    c.put(put("foo", "baz")).await.unwrap();
    c.delete_range(w::DeleteRangeRequest {
        key: b"foo".to_vec(),
        ..Default::default()
    })
    .await
    .unwrap();

    // etcdctl 3.4.23: `watch foo --rev 1 --prev-kv` after put/put/del.
    assert_eq!(
        watch_output(&ep, &["foo", "--rev", "1", "--prev-kv"]),
        "PUT\nfoo\nbar\nPUT\nfoo\nbar\nfoo\nbaz\nDELETE\nfoo\nbaz\nfoo\n\n"
    );
    assert_eq!(
        watch_output(&ep, &["f", "--prefix", "--rev", "1"]),
        "PUT\nfoo\nbar\nPUT\nfoo\nbaz\nDELETE\nfoo\n\n"
    );
    // -w fields of an event (etcdctl's lines, header first).
    let fields = watch_output(&ep, &["foo", "--rev", "4", "-w", "fields"]);
    assert!(fields.starts_with("\"ClusterID\" : "), "{fields}");
    assert!(
        fields.ends_with(
            "\"Type\" : DELETE\n\"Key\" : \"foo\"\n\"CreateRevision\" : 0\n\"ModRevision\" : 4\n\
             \"Version\" : 0\n\"Value\" : \"\"\n\"Lease\" : 0\n"
        ),
        "{fields}"
    );

    // endpoint hashkv --cluster: every member, same hash.
    let out = ctl(&ep, &["endpoint", "hashkv", "--cluster"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let hashes: Vec<&str> = text
        .lines()
        .map(|l| l.rsplit(", ").next().unwrap())
        .collect();
    assert_eq!(hashes.len(), 3, "{text}");
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{text}");
    for m in &cluster.members {
        assert!(text.contains(&m.native_addr()), "{text}");
    }
    // defrag --cluster: etcdctl's line per member.
    let out = ctl(&ep, &["defrag", "--cluster"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("Finished defragmenting etcd member[")
    );

    // move-leader to a follower: "Leadership transferred from A to B".
    let status = c.status(w::StatusRequest {}).await.unwrap();
    let follower = (leader + 1) % 3;
    let target = cluster
        .client(follower)
        .await
        .status(w::StatusRequest {})
        .await
        .unwrap()
        .header
        .member_id;
    let all: Vec<String> = cluster.members.iter().map(|m| m.native_addr()).collect();
    let out = ctl(&all.join(","), &["move-leader", &format!("{target:x}")]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "Leadership transferred from {:x} to {target:x}\n",
            status.leader
        )
    );
    // A bad id is a bad argument (exit 128); a member add the server
    // refuses (bad peer URL) exits 1.
    assert_eq!(ctl(&ep, &["move-leader", "zz"]).status.code(), Some(128));
    assert_eq!(
        ctl(&ep, &["member", "remove", "zz"]).status.code(),
        Some(128)
    );
    let out = ctl(&ep, &["member", "add", "m4", "--peer-urls", "127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Error: etcdserver: given member URLs are invalid"),
        "{out:?}"
    );
    // member list -w fields: header, then one block per member.
    let out = ctl(&ep, &["member", "list", "-w", "fields"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.matches("\"IsLearner\" : false\n\n").count(),
        3,
        "{text}"
    );
}
