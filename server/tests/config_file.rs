//! `corekv --config-file FILE` starts a member from etcd's YAML format
//! alone: the environment and other flags are ignored, as in etcd.

mod common;

use std::process::{Command, Stdio};

use common::*;
use corekv_wire::messages as w;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_starts_from_the_yaml_file_alone() {
    let dir = tempfile::Builder::new()
        .prefix("corekv-cfg-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let (native, http, peer) = (free_port(), free_port(), free_port());
    let file = dir.path().join("corekv.yaml");
    std::fs::write(
        &file,
        format!(
            "# etcd-style configuration\n\
             name: from-file\n\
             data-dir: {data}\n\
             listen-client-urls: http://127.0.0.1:{http}\n\
             advertise-client-urls: [http://127.0.0.1:{http}]\n\
             listen-peer-urls: http://127.0.0.1:{peer}\n\
             initial-advertise-peer-urls: http://127.0.0.1:{peer}\n\
             initial-cluster: from-file=http://127.0.0.1:{peer}\n\
             initial-cluster-state: new\n\
             heartbeat-interval: 50\n\
             election-timeout: 500\n\
             quota-backend-bytes: 104857600\n\
             enable-v2: false\n\
             client-transport-security:\n  client-cert-auth: false\n\
             listen-native-addr: 127.0.0.1:{native}\n\
             cores: 1\n\
             wal-segment-bytes: 1048576\n",
            data = dir.path().join("data").display(),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("member.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_corekv"))
        .arg("--config-file")
        .arg(&file)
        // Both ignored: the file decides.
        .args(["--name", "from-flag"])
        .env("ETCD_NAME", "from-env")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let c = connect(&format!("127.0.0.1:{native}")).await;
    let members = c
        .member_list(w::MemberListRequest::default())
        .await
        .unwrap()
        .members;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "from-file");
    assert_eq!(
        members[0].peer_urls,
        vec![format!("http://127.0.0.1:{peer}")]
    );
    assert!(dir.path().join("data/member/snap/db").exists());
    let log = std::fs::read_to_string(dir.path().join("member.log")).unwrap();
    assert!(log.contains("enable-v2"), "ignored keys are logged: {log}");
    assert!(
        log.contains("other command line flags are ignored"),
        "{log}"
    );

    // A bad value is refused at start with the key's name.
    std::fs::write(&file, "heartbeat-interval: soon\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corekv"))
        .arg("--config-file")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("heartbeat-interval"));
}
