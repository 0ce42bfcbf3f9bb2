//! corekvctl against a real member: etcdctl's output shapes and exit codes.

mod common;

use std::process::{Command, Output, Stdio};

use common::*;

fn ctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corekvctl"));
    cmd.args(["--endpoints", endpoint])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = cmd.spawn().expect("spawn corekvctl");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("corekvctl output")
}

fn ok(endpoint: &str, args: &[&str]) -> String {
    let out = ctl(endpoint, args, None);
    assert!(
        out.status.success(),
        "corekvctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corekvctl_speaks_like_etcdctl() {
    let cluster = Cluster::start(1, &[]).await;
    let ep = cluster.members[0].native_addr();

    assert_eq!(ok(&ep, &["put", "foo", "bar"]), "OK\n");
    assert_eq!(ok(&ep, &["put", "foo2", "bar2"]), "OK\n");
    assert_eq!(ok(&ep, &["get", "foo"]), "foo\nbar\n");
    assert_eq!(
        ok(&ep, &["get", "foo", "--prefix", "--keys-only"]),
        "foo\n\nfoo2\n\n".replace("\n\n", "\n")
    );
    assert_eq!(ok(&ep, &["get", "", "--prefix", "--count-only"]), "2\n");
    assert_eq!(ok(&ep, &["get", "foo", "--print-value-only"]), "bar\n");
    assert_eq!(
        ok(
            &ep,
            &[
                "get",
                "foo",
                "--prefix",
                "--sort-by",
                "KEY",
                "--order",
                "DESCEND",
                "--limit",
                "1"
            ]
        ),
        "foo2\nbar2\n"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&ep, &["get", "foo", "-w", "json"])).unwrap();
    assert_eq!(json["kvs"][0]["key"], "Zm9v");
    assert_eq!(json["kvs"][0]["value"], "YmFy");
    assert_eq!(json["kvs"][0]["version"], 1);
    assert_eq!(json["count"], 1);
    assert!(json["header"]["revision"].as_i64().unwrap() >= 3);

    let txn = "value(\"foo\") = \"bar\"\n\nput foo baz\nget foo\n\nput foo nope\n";
    let out = ctl(&ep, &["txn"], Some(txn));
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "SUCCESS\n\nOK\n\nfoo\nbaz\n"
    );

    assert_eq!(ok(&ep, &["del", "foo", "--prefix"]), "2\n");
    assert!(ok(&ep, &["compaction", "3"]).starts_with("compacted revision 3"));

    let status = ok(&ep, &["endpoint", "status"]);
    let fields: Vec<&str> = status.trim_end().split(", ").collect();
    assert_eq!(fields[0], ep);
    assert_eq!(fields[4], "true", "single member is leader: {status}");
    let table = ok(&ep, &["endpoint", "status", "-w", "table"]);
    assert!(table.contains("RAFT APPLIED INDEX"));
    // etcdctl 3.4 prints health lines on stderr.
    let health = ctl(&ep, &["endpoint", "health"], None);
    assert!(health.status.success());
    assert!(
        String::from_utf8_lossy(&health.stderr)
            .contains("is healthy: successfully committed proposal")
    );
    let members = ok(&ep, &["member", "list"]);
    assert!(
        members.contains(", started, m1, http://127.0.0.1:"),
        "{members}"
    );

    // Errors: etcd's message on stderr, exit 1; bad connection exit 2.
    let out = ctl(&ep, &["put", "", "v"], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: etcdserver: key is not provided\n"
    );
    let out = ctl(&ep, &["get", "foo", "--rev", "2"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"));
    let dead = format!("127.0.0.1:{}", free_port());
    let out = ctl(&dead, &["get", "foo"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = ctl(&ep, &["get", "foo", "--prefix", "--from-key"], None);
    assert_eq!(out.status.code(), Some(128));
}
