//! Lock and Election services (gRPC, on the member's client URL) and
//! etcdctl 3.4's client-side `lock`/`elect` against real members.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::proto::v3electionpb as epb;
use corekv_wire::proto::v3lockpb as lpb;
use tonic::transport::Channel;

async fn channel(cluster: &Cluster, i: usize) -> Channel {
    let addr = format!("http://127.0.0.1:{}", cluster.members[i].spec.http);
    for _ in 0..100 {
        if let Ok(ch) = Channel::from_shared(addr.clone()).unwrap().connect().await {
            return ch;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no gRPC endpoint at {addr}");
}

async fn grant(ch: &Channel, ttl: i64) -> i64 {
    pb::lease_client::LeaseClient::new(ch.clone())
        .lease_grant(pb::LeaseGrantRequest { ttl, id: 0 })
        .await
        .unwrap()
        .into_inner()
        .id
}

/// Ten clients take one lock three times each; inside, each checks nobody
/// else is inside and bumps a counter with a txn fenced by its lock key's
/// create revision (the fencing the lock docs ask holders to use).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_is_mutually_exclusive_under_contention() {
    let cluster = Cluster::start(1, &[]).await;
    let ch = channel(&cluster, 0).await;
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let ch = ch.clone();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            let lease = grant(&ch, 30).await;
            let mut lock = lpb::lock_client::LockClient::new(ch.clone());
            let mut kv = pb::kv_client::KvClient::new(ch.clone());
            for _ in 0..3 {
                let held = lock
                    .lock(lpb::LockRequest {
                        name: "mtx".into(),
                        lease,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(held.key.starts_with(b"mtx/"));
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                let now = kv
                    .range(pb::RangeRequest {
                        key: "counter".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let n: u64 = now
                    .kvs
                    .first()
                    .map_or(0, |kv| String::from_utf8_lossy(&kv.value).parse().unwrap());
                tokio::time::sleep(Duration::from_millis(5)).await;
                let fenced = pb::TxnRequest {
                    compare: vec![pb::Compare {
                        result: pb::compare::CompareResult::Greater as i32,
                        target: pb::compare::CompareTarget::Create as i32,
                        key: held.key.clone(),
                        target_union: Some(pb::compare::TargetUnion::CreateRevision(0)),
                        range_end: Default::default(),
                    }],
                    success: vec![pb::RequestOp {
                        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                            key: "counter".into(),
                            value: (n + 1).to_string().into(),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![],
                };
                assert!(kv.txn(fenced).await.unwrap().into_inner().succeeded);
                inside.store(false, Ordering::SeqCst);
                lock.unlock(lpb::UnlockRequest { key: held.key })
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("lock round within 120 s")
            .unwrap();
    }
    let c = cluster.client(0).await;
    assert_eq!(c.get(b"counter").await.unwrap().unwrap().value, b"30");
}

/// The leader's lease expires: the waiting candidate takes over, observers
/// see the new value, the old leader can no longer proclaim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_when_the_leaders_lease_expires() {
    let cluster = Cluster::start(3, &[]).await;
    let ch = channel(&cluster, 1).await;
    let mut el = epb::election_client::ElectionClient::new(ch.clone());
    let short = grant(&ch, 2).await;
    let long = grant(&ch, 60).await;
    let a = el
        .campaign(epb::CampaignRequest {
            name: "el".into(),
            lease: short,
            value: "a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    let mut observe = el
        .observe(epb::LeaderRequest { name: "el".into() })
        .await
        .unwrap()
        .into_inner();
    let first = observe.message().await.unwrap().unwrap();
    assert_eq!(first.kv.unwrap().value, "a");
    let mut el_b = el.clone();
    let b = tokio::spawn(async move {
        el_b.campaign(epb::CampaignRequest {
            name: "el".into(),
            lease: long,
            value: "b".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap()
    });
    // Nobody keeps `short` alive: within its TTL (+ slack) b leads.
    let b = tokio::time::timeout(Duration::from_secs(15), b)
        .await
        .expect("b elected after a's lease expired")
        .unwrap();
    assert!(b.rev > a.rev);
    let next = tokio::time::timeout(Duration::from_secs(10), observe.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.kv.unwrap().value, "b");
    let l = el
        .leader(epb::LeaderRequest { name: "el".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(l.kv.unwrap().value, "b");
    let e = el
        .proclaim(epb::ProclaimRequest {
            leader: Some(a),
            value: "a2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "election: not leader");
    el.proclaim(epb::ProclaimRequest {
        leader: Some(b.clone()),
        value: "b2".into(),
    })
    .await
    .unwrap();
    let next = observe.message().await.unwrap().unwrap();
    assert_eq!(next.kv.unwrap().value, "b2");
    el.resign(epb::ResignRequest { leader: Some(b) })
        .await
        .unwrap();
    let e = el
        .leader(epb::LeaderRequest { name: "el".into() })
        .await
        .unwrap_err();
    assert_eq!(e.message(), "election: no leader");
}

fn etcdctl(port: u16) -> Command {
    let mut c = Command::new("etcdctl");
    c.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=127.0.0.1:{port}"))
        .arg("--command-timeout=10s");
    c
}

/// etcdctl 3.4's `lock` (with a command: it runs while the lock is held,
/// with ETCD_LOCK_KEY set) and `elect` (prints the leader key and value,
/// then campaigns until killed; `-l` observes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_lock_and_elect() {
    let cluster = Cluster::start(1, &[]).await;
    let port = cluster.members[0].spec.http;
    let out = etcdctl(port)
        .args(["lock", "job", "--", "sh", "-c", "echo held $ETCD_LOCK_KEY"])
        .output()
        .expect("run etcdctl (apt-get install etcd-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("held job/"), "{text}");
    // Released after the command: nothing left under job/.
    let c = cluster.client(0).await;
    assert!(c.range(range("job/", "job0")).await.unwrap().kvs.is_empty());

    let mut elect = etcdctl(port)
        .args(["elect", "svc", "p1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run etcdctl elect");
    let stdout = elect.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .expect("etcdctl elect printed the leader")
        .unwrap();
    assert!(lines[0].starts_with("svc/"), "{lines:?}");
    assert_eq!(lines[1], "p1");
    let observed = etcdctl(port)
        .args(["elect", "-l", "svc"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run etcdctl elect -l");
    let out = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut child = observed;
        let stdout = child.stdout.take().unwrap();
        let lines: Vec<String> = std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| l.unwrap())
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        lines
    });
    let observed = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("etcdctl elect -l printed the leader")
        .unwrap();
    assert_eq!(observed, lines);
    let _ = elect.kill();
    let _ = elect.wait();
}

fn corekvctl(native: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .arg(format!("--endpoints={native}"))
        .args(args)
        .output()
        .expect("run corekvctl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn etcdctl_out(port: u16, args: &[&str]) -> (bool, String) {
    let out = etcdctl(port).args(args).output().expect("run etcdctl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The same lease commands through corekvctl (native) and etcdctl 3.4
/// (gRPC) print the same text, lease ids and remaining TTLs aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corekvctl_lease_lock_elect_print_like_etcdctl() {
    let cluster = Cluster::start(1, &[]).await;
    let native = cluster.members[0].native_addr();
    let port = cluster.members[0].spec.http;
    type Tool<'a> = Box<dyn Fn(&[&str]) -> (bool, String) + 'a>;
    let tools: [(&str, Tool); 2] = [
        ("corekvctl", Box::new(|a: &[&str]| corekvctl(&native, a))),
        ("etcdctl", Box::new(|a: &[&str]| etcdctl_out(port, a))),
    ];
    let mut transcripts = Vec::new();
    for (tool, run) in &tools {
        let mut t = Vec::new();
        let (ok, out) = run(&["lease", "grant", "100"]);
        assert!(ok, "{tool}: {out}");
        let id = out.split_whitespace().nth(1).unwrap().to_string();
        let key = format!("k-{tool}");
        t.push(out.replace(&id, "ID"));
        let (ok, out) = run(&["put", &key, "v", &format!("--lease={id}")]);
        assert!(ok, "{tool}: {out}");
        t.push(out);
        let (ok, out) = run(&["lease", "timetolive", &id, "--keys"]);
        assert!(ok, "{tool}: {out}");
        // remaining(99s) or (100s): not part of the format.
        let masked = out.replace(&id, "ID").replace(&key, "KEY");
        let at = masked.find("remaining(").unwrap();
        let end = masked[at..].find(')').unwrap() + at;
        t.push(format!("{}remaining(N{}", &masked[..at], &masked[end..]));
        let (ok, out) = run(&["lease", "keep-alive", "--once", &id]);
        assert!(ok, "{tool}: {out}");
        t.push(out.replace(&id, "ID"));
        let (ok, out) = run(&["lease", "list"]);
        assert!(ok, "{tool}: {out}");
        t.push(out.replace(&id, "ID"));
        let (ok, out) = run(&["lease", "revoke", &id]);
        assert!(ok, "{tool}: {out}");
        t.push(out.replace(&id, "ID"));
        let (ok, out) = run(&["lease", "timetolive", &id]);
        assert!(ok, "{tool}: {out}");
        t.push(out.replace(&id, "ID"));
        let (ok, out) = run(&[
            "lock",
            "jobs",
            "--",
            "sh",
            "-c",
            "echo held ${ETCD_LOCK_KEY%/*}",
        ]);
        assert!(ok, "{tool}: {out}");
        t.push(out);
        transcripts.push(t);
    }
    assert_eq!(transcripts[0], transcripts[1]);
    assert_eq!(transcripts[0][0], "lease ID granted with TTL(100s)\n");
    assert_eq!(transcripts[0][7], "held jobs\n");

    // corekvctl elect prints the leader like etcdctl's.
    let mut elect = Command::new(env!("CARGO_BIN_EXE_corekvctl"))
        .arg(format!("--endpoints={native}"))
        .args(["elect", "svc", "p1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = elect.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .take(2)
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    });
    let lines = tokio::time::timeout(Duration::from_secs(20), lines)
        .await
        .expect("corekvctl elect printed the leader")
        .unwrap();
    let _ = elect.kill();
    let _ = elect.wait();
    assert!(lines[0].starts_with("svc/"), "{lines:?}");
    assert_eq!(lines[1], "p1");
}
