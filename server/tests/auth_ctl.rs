//! `corekvctl user|role|auth` and `--user` against a real member, compared
//! line by line with what etcdctl 3.4.23 printed against etcd 3.4.23 for the
//! same commands (`data/auth_etcdctl_3.4.txt`, recorded once; etcdctl's
//! stderr log lines dropped).

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_commands_print_what_etcdctl_prints() {
    let cluster = Cluster::start(1, &["--bcrypt-cost", "4"]).await;
    let ep = cluster.members[0].native_addr();
    let mut transcript = String::new();
    for line in SCRIPT {
        let out = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
            .args(["--endpoints", &ep])
            .args(line.split(' '))
            .stdin(Stdio::null())
            .output()
            .expect("run corekvctl");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        // A command either succeeds (stdout) or fails (stderr, exit 1).
        assert_eq!(out.status.success(), stderr.is_empty(), "{line}: {stderr}");
        transcript.push_str(&stdout);
        transcript.push_str(&stderr);
    }
    let expected = include_str!("data/auth_etcdctl_3.4.txt");
    for (i, (got, want)) in transcript.lines().zip(expected.lines()).enumerate() {
        assert_eq!(got, want, "line {}", i + 1);
    }
    assert_eq!(transcript.lines().count(), expected.lines().count());
}
