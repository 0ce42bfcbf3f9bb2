//! Helpers for membership tests: members that join a running cluster,
//! convergence checks (keys and HashKV), a writer that records
//! acknowledged writes, process exits.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use corekv_wire::messages as w;
use corekv_wire::{ApiError, Client, WireError};

use super::*;

pub const WAIT: Duration = Duration::from_secs(30);

pub fn peer_url(m: &Member) -> String {
    format!("http://127.0.0.1:{}", m.spec.peer)
}

/// A member not yet in the cluster, to be started with `existing` once
/// added (its `initial_cluster` is set then).
pub fn joiner(dir: &std::path::Path, name: &str, extra: &[&str]) -> Member {
    let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    extra.extend(["--initial-cluster-state".into(), "existing".into()]);
    Member {
        spec: MemberSpec {
            name: name.into(),
            native: free_port(),
            http: free_port(),
            peer: free_port(),
            data_dir: dir.join(name),
        },
        child: None,
        extra,
        env: Vec::new(),
        initial_cluster: String::new(),
    }
}

pub fn initial_cluster(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| format!("{}={}", m.spec.name, peer_url(m)))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn api_err<T: std::fmt::Debug>(r: Result<T, WireError>) -> ApiError {
    match r {
        Err(WireError::Api(e)) => e,
        other => panic!("expected an etcd error, got {other:?}"),
    }
}

pub fn logs(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| format!("== {}\n{}", m.spec.name, m.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

pub async fn member_id(c: &Client) -> u64 {
    c.status(w::StatusRequest {})
        .await
        .unwrap()
        .header
        .member_id
}

/// Waits until every member in `members` holds `count` keys under `prefix`
/// at the same revision, then checks their HashKV at that revision.
pub async fn assert_same(members: &[&Member], prefix: &str, count: i64) {
    let deadline = Instant::now() + WAIT;
    let end = format!("{prefix}\u{7f}");
    let mut clients = Vec::new();
    for m in members {
        clients.push(connect(&m.native_addr()).await);
    }
    loop {
        let mut seen = Vec::new();
        for c in &clients {
            let r = c
                .range(w::RangeRequest {
                    serializable: true,
                    count_only: true,
                    ..range(prefix, &end)
                })
                .await;
            seen.push(r.map(|r| (r.count, r.header.revision)));
        }
        let revision = seen.first().and_then(|r| r.as_ref().ok()).map(|r| r.1);
        let done = seen.iter().all(|r| {
            r.as_ref()
                .is_ok_and(|r| r.0 == count && Some(r.1) == revision)
        });
        if done {
            let revision = revision.unwrap_or(0);
            let mut hashes = Vec::new();
            for c in &clients {
                // A member promoted a moment ago may still refuse as a learner.
                if let Ok(h) = c.hash_kv(w::HashKvRequest { revision }).await {
                    hashes.push(h.hash);
                }
            }
            if hashes.len() == clients.len() {
                assert!(
                    hashes.windows(2).all(|p| p[0] == p[1]),
                    "HashKV differs at revision {revision}: {hashes:?}"
                );
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "members did not converge on {count} keys: {seen:?}\n{}",
            logs(members)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn put_keys(c: &Client, prefix: &str, range: std::ops::Range<usize>) {
    for i in range {
        c.put(put(&format!("{prefix}{i:04}"), &i.to_string()))
            .await
            .unwrap();
    }
}

/// Writes `{prefix}{i}` keys through one member until stopped; a failed
/// write (leader change, member stopping) is not retried.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<Vec<String>>,
}

/// Writes acknowledged after a step, before the writer is checked.
pub const WRITES_AFTER_STEP: usize = 5;

impl Writer {
    pub async fn start(addr: &str, prefix: &'static str) -> Writer {
        let client = connect(addr).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), acked.clone());
        let task = tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("{prefix}{i:05}");
                if client.put(put(&key, "v")).await.is_ok() {
                    acked.push(key);
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                i += 1;
            }
            acked
        });
        Writer { stop, acked, task }
    }

    /// Stops; checks every acknowledged write is on `members` (all equal).
    pub async fn check(self, members: &[&Member], prefix: &str) {
        // Writes go on after the step (a write caught in a leader change
        // waits for its timeout).
        let before = self.acked.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + WAIT;
        while self.acked.load(std::sync::atomic::Ordering::Relaxed) < before + WRITES_AFTER_STEP {
            assert!(Instant::now() < deadline, "writes stopped after the step");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let acked = self.task.await.unwrap();
        let c = connect(&members[0].native_addr()).await;
        let end = format!("{prefix}\u{7f}");
        let all = c.range(range(prefix, &end)).await.unwrap();
        let present: std::collections::HashSet<String> = keys(&all).into_iter().collect();
        let lost: Vec<&String> = acked.iter().filter(|k| !present.contains(*k)).collect();
        assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
        assert_same(members, prefix, all.count).await;
    }
}

/// Waits for the member's process to end.
pub fn wait_exit(m: &mut Member) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    let child = m.child.as_mut().expect("running");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            m.child = None;
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not stop; log:\n{}",
            m.spec.name,
            m.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A removed member stops, and so does every later start with its data.
pub fn assert_removed_and_refused(m: &mut Member) {
    let status = wait_exit(m);
    assert!(!status.success(), "{}: {status}", m.spec.name);
    assert!(
        m.log()
            .contains("the member has been permanently removed from the cluster"),
        "{}: no removal line; log:\n{}",
        m.spec.name,
        m.log()
    );
    m.start();
    let status = wait_exit(m);
    assert!(!status.success(), "{} restarted: {status}", m.spec.name);
    assert!(
        m.log().contains("removed from the cluster"),
        "{} restarted without the removal line; log:\n{}",
        m.spec.name,
        m.log()
    );
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("corekv-members-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir")
}
