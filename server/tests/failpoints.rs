//! Crash at every persistence step (build with `--features failpoints`):
//! a member under write load is killed by SIGKILL exactly at one failpoint
//! (`FAILPOINTS=<name>=N*off->return(crash)`), restarted without it, and
//! must hold every acknowledged write at its acknowledged revision, with a
//! revision that never went back. An fdatasync that fails with EIO stops
//! the member (fail-stop) with every acknowledged write durable.
//!
//! `cargo test -p corekv-server --features failpoints --test failpoints`
#![cfg(feature = "failpoints")]

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, Member, put};
use corekv_wire::messages as w;

/// Flags that make every persistence step happen often: small WAL
/// segments (from common), a store sync every 50 entries, a WAL snapshot
/// marker every 100.
const FLAGS: &[&str] = &["--store-sync-entries", "50", "--snapshot-count", "100"];

/// What the load does besides puts, so compaction and defrag run.
#[derive(Clone, Copy)]
enum Extra {
    None,
    /// Compact every 64 puts per writer.
    Compact,
    /// Write and delete filler, compact and defragment every 64 puts.
    Churn,
}

/// Acknowledged writes: key -> revision.
type Acked = Arc<Mutex<BTreeMap<String, i64>>>;

/// Runs 4 writers against member `m` until it stops answering; returns
/// what was acknowledged.
async fn load_until_down(m: &Member, extra: Extra, within: Duration) -> BTreeMap<String, i64> {
    let acked: Acked = Arc::default();
    let value = "v".repeat(2048);
    let stop_at = Instant::now() + within;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let c = common::connect(&m.native_addr()).await;
        let acked = acked.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0u64.. {
                if Instant::now() > stop_at {
                    return;
                }
                let key = format!("k{t}-{i:06}");
                match c.put(put(&key, &value)).await {
                    Ok(r) => {
                        acked.lock().unwrap().insert(key, r.header.revision);
                    }
                    Err(_) => return,
                }
                if i % 64 == 63 && side_work(&c, extra, t, i).await.is_err() {
                    return;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    acked.lock().unwrap().clone()
}

async fn side_work(c: &corekv_wire::Client, extra: Extra, t: u32, i: u64) -> Result<(), ()> {
    match extra {
        Extra::None => Ok(()),
        Extra::Compact | Extra::Churn => {
            if let Extra::Churn = extra {
                let filler = "f".repeat(8192);
                for j in 0..32 {
                    c.put(put(&format!("f{t}-{i}-{j}"), &filler))
                        .await
                        .map_err(drop)?;
                }
                c.delete_range(w::DeleteRangeRequest {
                    key: format!("f{t}-").into_bytes(),
                    range_end: format!("f{t}.").into_bytes(),
                    prev_kv: false,
                })
                .await
                .map_err(drop)?;
            }
            let rev = c
                .status(w::StatusRequest {})
                .await
                .map_err(drop)?
                .header
                .revision;
            // Another writer may have compacted past us: not an error.
            let _ = c
                .compact(w::CompactionRequest {
                    revision: rev,
                    physical: false,
                })
                .await;
            if let Extra::Churn = extra {
                c.defragment(w::DefragmentRequest {}).await.map_err(drop)?;
            }
            Ok(())
        }
    }
}

/// Waits for the member process to exit; returns its status.
fn wait_exit(m: &mut Member, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    let child = m.child.as_mut().expect("running");
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            m.child = None;
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "member still running after the load: failpoint never hit?\n{}",
            m.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Restarts `m` without failpoints and checks every acknowledged write.
async fn verify_after_restart(m: &mut Member, acked: &BTreeMap<String, i64>) {
    m.env.clear();
    m.start();
    let c = common::connect(&m.native_addr()).await;
    let max_acked = acked.values().copied().max().unwrap_or(0);
    // Linearizable: answered once the member applied everything committed.
    let r = c
        .range(w::RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            keys_only: true,
            ..Default::default()
        })
        .await
        .expect("range");
    assert!(
        r.header.revision >= max_acked,
        "revision went back: {} after restart, {max_acked} acknowledged",
        r.header.revision
    );
    let have: BTreeMap<String, i64> = r
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                kv.mod_revision,
            )
        })
        .collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|(k, rev)| have.get(*k) != Some(rev))
        .take(5)
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost or changed, e.g. {lost:?}",
        acked
            .iter()
            .filter(|(k, rev)| have.get(*k) != Some(rev))
            .count()
    );
}

/// Crash at `failpoint` after `skip` hits, then verify.
async fn crash_at(failpoint: &str, skip: u32, extra: Extra) {
    let mut cluster = Cluster::start(1, FLAGS).await;
    let m = &mut cluster.members[0];
    m.stop();
    m.env = vec![(
        "FAILPOINTS".into(),
        format!("{failpoint}={skip}*off->return(crash)"),
    )];
    m.start();
    let acked = load_until_down(m, extra, Duration::from_secs(60)).await;
    let status = wait_exit(m, Duration::from_secs(10));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{failpoint}: member should die by SIGKILL at the failpoint, got {status:?}"
    );
    assert!(
        !acked.is_empty(),
        "{failpoint}: nothing acknowledged before the crash"
    );
    eprintln!(
        "failpoints: {failpoint}: crashed after {} acknowledged writes",
        acked.len()
    );
    verify_after_restart(m, &acked).await;
}

macro_rules! crash_tests {
    ($($test:ident: $fp:literal after $skip:literal $extra:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            crash_at($fp, $skip, Extra::$extra).await;
        }
    )*};
}

crash_tests! {
    crash_at_wal_write: "wal-write" after 300 None;
    crash_at_wal_fsync: "wal-fsync" after 300 None;
    crash_at_wal_segment_rotation: "wal-rotate" after 1 None;
    crash_at_wal_segment_rename: "wal-segment-rename" after 2 None;
    crash_at_wal_snapshot_marker: "wal-snapshot-marker" after 2 None;
    crash_at_store_commit: "store-commit" after 300 None;
    crash_at_store_commit_meta: "store-commit-meta" after 4 None;
    crash_at_applied_index_record: "store-sync-applied" after 4 None;
    crash_at_compaction_pass: "store-compact-step" after 3 Compact;
    crash_at_defrag_relocation: "defrag-relocate" after 2 Churn;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_fdatasync_eio_stops_the_member() {
    let mut cluster = Cluster::start(1, FLAGS).await;
    let m = &mut cluster.members[0];
    m.stop();
    m.env = vec![("FAILPOINTS".into(), "wal-fsync=300*off->return(eio)".into())];
    m.start();
    let acked = load_until_down(m, Extra::None, Duration::from_secs(60)).await;
    let status = wait_exit(m, Duration::from_secs(10));
    assert_eq!(status.signal(), None, "fail-stop is an exit, not a crash");
    assert!(
        !status.success(),
        "a failed fdatasync must stop the member: {status:?}"
    );
    let log = m.log();
    assert!(
        log.contains("fdatasync"),
        "the log names the failed step:\n{log}"
    );
    eprintln!(
        "failpoints: EIO after {} acknowledged writes; {status:?}",
        acked.len()
    );
    verify_after_restart(m, &acked).await;
}
