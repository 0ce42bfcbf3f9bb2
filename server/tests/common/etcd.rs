//! A single-member etcd 3.4 (Debian `etcd-server`) on loopback ports, for
//! tests that compare corekv's answers with etcd's.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The running etcd; killed when dropped.
pub struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts member `e1` with its data and log under `dir`; `extra` flags
/// are appended.
pub fn start_etcd(dir: &Path, client: u16, peer: u16, extra: &[&str]) -> Etcd {
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new("etcd")
        .args(["--name", "e1"])
        .arg("--data-dir")
        .arg(dir.join("etcd-data"))
        .args([
            "--listen-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args([
            "--advertise-client-urls",
            &format!("http://127.0.0.1:{client}"),
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("e1=http://127.0.0.1:{peer}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd 3.4 (apt install etcd-server)");
    Etcd(child)
}
