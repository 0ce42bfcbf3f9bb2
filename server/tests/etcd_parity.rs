//! The same operator session against etcd 3.4 and against corekv, both
//! driven by etcdctl 3.4 (corekv through its gRPC port), and corekvctl
//! against corekv: the outputs of `endpoint health|hashkv`, `member list`,
//! `snapshot save`, a put refused for NOSPACE, `alarm list` and `alarm
//! disarm` match etcd's once member ids, names, URLs, paths and timings are
//! replaced by placeholders; exit codes match.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// One server under test and the strings that differ between servers.
struct Target {
    /// What etcdctl dials (host:port of the gRPC port).
    grpc: String,
    /// What corekvctl dials (native), when the target is corekv.
    native: Option<String>,
    name: String,
    peer: String,
    member_id: u64,
}

struct Run {
    stdout: String,
    /// stderr lines without etcdctl's JSON log lines.
    stderr: String,
    code: Option<i32>,
}

fn run(cmd: &mut Command, stdin: Option<&Path>) -> Run {
    if let Some(p) = stdin {
        cmd.stdin(std::fs::File::open(p).unwrap());
    }
    let out: Output = cmd.output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with('{'))
        .map(|l| format!("{l}\n"))
        .collect();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        code: out.status.code(),
    }
}

fn etcdctl(t: &Target, args: &[&str], stdin: Option<&Path>) -> Run {
    run(
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", t.grpc))
            .args(args),
        stdin,
    )
}

fn corekvctl(t: &Target, args: &[&str], stdin: Option<&Path>) -> Run {
    run(
        Command::new(env!("CARGO_BIN_EXE_corekvctl"))
            .args(["--endpoints", t.native.as_deref().unwrap()])
            .args(args),
        stdin,
    )
}

/// Replaces what legitimately differs between two servers.
fn normalize(t: &Target, endpoint: &str, dir: &Path, s: &str) -> String {
    let mut s = s
        .replace(&dir.display().to_string(), "<DIR>")
        .replace(&format!("{:x}", t.member_id), "<ID>")
        .replace(&t.member_id.to_string(), "<ID>")
        .replace(&t.peer, "<PEER>")
        .replace(endpoint, "<EP>");
    if let Some(at) = s.find("took = ") {
        let end = s[at..].find('\n').map_or(s.len(), |e| at + e);
        s.replace_range(at + 7..end, "<T>");
    }
    s.replace(&format!(", {},", t.name), ", <NAME>,")
}

struct Session(Vec<(String, String, String, Option<i32>)>);

impl Session {
    fn record(&mut self, t: &Target, ep: &str, dir: &Path, what: &str, r: Run) {
        eprintln!("[{what}] code {:?}\n{}{}", r.code, r.stdout, r.stderr);
        self.0.push((
            what.to_string(),
            normalize(t, ep, dir, &r.stdout),
            normalize(t, ep, dir, &r.stderr),
            r.code,
        ));
    }
}

/// The session: runs `ctl` for each step and records normalized results.
fn session(
    t: &Target,
    ep: &str,
    dir: &Path,
    value: &Path,
    ctl: &dyn Fn(&[&str], Option<&Path>) -> Run,
) -> Session {
    let mut s = Session(Vec::new());
    s.record(t, ep, dir, "health", ctl(&["endpoint", "health"], None));
    s.record(
        t,
        ep,
        dir,
        "hashkv-table",
        ctl(&["endpoint", "hashkv", "-w", "table"], None).map_hash(),
    );
    let mut members = ctl(&["member", "list"], None);
    // etcd lists the client URL; corekv's test members advertise another.
    members.stdout = members
        .stdout
        .rsplitn(3, ", ")
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
        .map(|(i, p)| if i == 1 { "<CLIENT>" } else { p })
        .collect::<Vec<_>>()
        .join(", ");
    s.record(t, ep, dir, "member list", members);
    let file = dir.join("snap.db");
    let file = file.to_str().unwrap();
    s.record(
        t,
        ep,
        dir,
        "snapshot save",
        ctl(&["snapshot", "save", file], None),
    );
    // Fill the store until a put is refused.
    let mut refused = None;
    for i in 0..400 {
        let r = ctl(&["put", &format!("fill{i}")], Some(value));
        if r.code != Some(0) {
            refused = Some(r);
            break;
        }
    }
    s.record(
        t,
        ep,
        dir,
        "put over quota",
        refused.expect("quota never reached"),
    );
    // The alarm is raised asynchronously on corekv; wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ctl(&["alarm", "list"], None);
        if !r.stdout.is_empty() || Instant::now() > deadline {
            s.record(t, ep, dir, "alarm list", r);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    s.record(t, ep, dir, "alarm disarm", ctl(&["alarm", "disarm"], None));
    s.record(
        t,
        ep,
        dir,
        "alarm list after",
        ctl(&["alarm", "list"], None),
    );
    s.record(
        t,
        ep,
        dir,
        "alarm table",
        ctl(&["alarm", "list", "-w", "table"], None),
    );
    s
}

trait MapHash {
    fn map_hash(self) -> Run;
}

impl MapHash for Run {
    /// Hash values differ between servers; keep the table's shape.
    fn map_hash(mut self) -> Run {
        self.stdout = self
            .stdout
            .lines()
            .map(|l| {
                let cells: Vec<&str> = l.split('|').collect();
                if cells.len() == 4 && cells[2].trim().parse::<u64>().is_ok() {
                    format!("|{}| <HASH> |", cells[1])
                } else if l.starts_with('+') {
                    "+--+".to_string()
                } else {
                    format!("|{}|{}|", cells[1], cells[2].trim())
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        self
    }
}

fn member_id_from_status(t: &Target) -> u64 {
    let r = etcdctl(t, &["endpoint", "status", "-w", "json"], None);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("status json");
    v[0]["Status"]["header"]["member_id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_session_matches_etcd() {
    let dir = tempfile::Builder::new()
        .prefix("corekv-parity-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let value = dir.path().join("value");
    std::fs::write(&value, vec![b'x'; 300_000]).unwrap();

    // etcd.
    let (client, peer) = (free_port(), free_port());
    let etcd_dir = dir.path().join("etcd");
    std::fs::create_dir_all(&etcd_dir).unwrap();
    let _etcd = etcd::start_etcd(
        &etcd_dir,
        client,
        peer,
        &["--quota-backend-bytes", "1000000"],
    );
    let mut et = Target {
        grpc: format!("127.0.0.1:{client}"),
        native: None,
        name: "e1".into(),
        peer: format!("http://127.0.0.1:{peer}"),
        member_id: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while etcdctl(&et, &["endpoint", "health"], None).code != Some(0) {
        assert!(Instant::now() < deadline, "etcd did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    et.member_id = member_id_from_status(&et);
    let want = session(&et, &et.grpc.clone(), &etcd_dir, &value, &|a, i| {
        etcdctl(&et, a, i)
    });

    // corekv, through etcdctl and through corekvctl.
    let cluster = Cluster::start(1, &["--quota-backend-bytes", "8388608"]).await;
    let m = &cluster.members[0];
    let ck = Target {
        grpc: format!("127.0.0.1:{}", m.spec.http),
        native: Some(m.native_addr()),
        name: m.spec.name.clone(),
        peer: format!("http://127.0.0.1:{}", m.spec.peer),
        member_id: 0,
    };
    let ck = Target {
        member_id: member_id_from_status(&ck),
        ..ck
    };
    let ck_dir = dir.path().join("corekv");
    std::fs::create_dir_all(&ck_dir).unwrap();
    let got = session(&ck, &ck.grpc.clone(), &ck_dir, &value, &|a, i| {
        etcdctl(&ck, a, i)
    });
    assert_eq!(got.0, want.0, "etcdctl against corekv vs against etcd");

    // corekvctl against corekv: a fresh member, the same session.
    drop(cluster);
    let cluster = Cluster::start(1, &["--quota-backend-bytes", "8388608"]).await;
    let m = &cluster.members[0];
    let ck = Target {
        grpc: format!("127.0.0.1:{}", m.spec.http),
        native: Some(m.native_addr()),
        name: m.spec.name.clone(),
        peer: format!("http://127.0.0.1:{}", m.spec.peer),
        member_id: 0,
    };
    let ck = Target {
        member_id: member_id_from_status(&ck),
        ..ck
    };
    let native = ck.native.clone().unwrap();
    let ctl_dir = dir.path().join("corekvctl");
    std::fs::create_dir_all(&ctl_dir).unwrap();
    let got = session(&ck, &native, &ctl_dir, &value, &|a, i| corekvctl(&ck, a, i));
    assert_eq!(
        got.0, want.0,
        "corekvctl against corekv vs etcdctl against etcd"
    );
}
