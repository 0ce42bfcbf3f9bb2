//! The same auth session run by `corekvctl` (native protocol) and by
//! etcdctl 3.4 (gRPC) against real members, each compared line by line with
//! what etcdctl 3.4.23 printed against etcd 3.4.23 for the same commands
//! (`data/auth_etcdctl_3.4.txt`, recorded once; etcdctl's JSON log lines on
//! stderr dropped).

mod common;

use std::process::{Command, Stdio};

use common::*;

/// The recorded session: each line is one etcdctl argument list.
const SCRIPT: &[&str] = &[
    "user add root:rootpw",
    "role add root",
    "user grant-role root root",
    "role get root",
    "user add alice:apw",
    "role add r1",
    "role grant-permission r1 read /a/ --prefix",
    "role grant-permission r1 readwrite /b",
    "role grant-permission r1 write /w --from-key",
    "user grant-role alice r1",
    "role get r1",
    "user get alice",
    "user get alice --detail",
    "auth enable",
    "get /a/x",
    "--user alice:apw get /a/x",
    "--user alice:apw put /a/x 1",
    "--user alice:apw put /b 1",
    "--user alice:apw get /b",
    "--user alice:wrong get /b",
    "--user alice:apw user list",
    "--user root:rootpw user list",
    "--user root:rootpw role list",
    "--user root:rootpw role revoke-permission r1 /a/ --prefix",
    "--user root:rootpw role revoke-permission r1 /b",
    "--user root:rootpw role revoke-permission r1 /nope",
    "--user root:rootpw user revoke-role alice r1",
    "--user root:rootpw user delete alice",
    "--user root:rootpw role delete r1",
    "--user root:rootpw user delete root",
    "--user root:rootpw auth disable",
    "user list",
];

/// Runs `SCRIPT` with `cmd(args)` and returns stdout + stderr of every
/// command (log lines dropped).
fn transcript(run: impl Fn(&[&str]) -> std::process::Output) -> String {
    let mut transcript = String::new();
    for line in SCRIPT {
        let args: Vec<&str> = line.split(' ').collect();
        let out = run(&args);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let stderr: String = stderr
            .lines()
            .filter(|l| !l.starts_with("{\"level\""))
            .map(|l| format!("{l}\n"))
            .collect();
        // A command either succeeds (stdout) or fails (stderr, exit 1).
        assert_eq!(out.status.success(), stderr.is_empty(), "{line}: {stderr}");
        transcript.push_str(&stdout);
        transcript.push_str(&stderr);
    }
    transcript
}

fn assert_same(got: &str) {
    let expected = include_str!("data/auth_etcdctl_3.4.txt");
    for (i, (got, want)) in got.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {}", i + 1);
    }
    assert_eq!(got.lines().count(), expected.lines().count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corekvctl_auth_commands_print_what_etcdctl_prints() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let ep = cluster.members[0].native_addr();
    assert_same(&transcript(|args| {
        Command::new(env!("CARGO_BIN_EXE_corekvctl"))
            .args(["--endpoints", &ep])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run corekvctl")
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_auth_session_over_grpc_matches_etcd() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let ep = format!("127.0.0.1:{}", cluster.members[0].spec.http);
    let got = tokio::task::spawn_blocking(move || {
        transcript(|args| {
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &ep, "--command-timeout=10s"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .expect("etcdctl not found: run scripts/install-test-deps.sh")
        })
    })
    .await
    .unwrap();
    assert_same(&got);
}
