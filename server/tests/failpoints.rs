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
#[path = "crash/load.rs"]
mod load;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use common::{Cluster, Member};
use load::{Acked, Extra, Until};

/// Flags that make every persistence step happen often: small WAL
/// segments (from common), a store sync every 50 entries, a WAL snapshot
/// marker every 100.
const FLAGS: &[&str] = &["--store-sync-entries", "50", "--snapshot-count", "100"];

/// Write load until the member process exits (a transient error, e.g. a
/// timeout on a loaded host, only restarts the writers).
async fn load_until_exit(m: &mut Member, extra: Extra) -> Acked {
    let mut acked = Acked::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let addr = [m.native_addr()];
        acked.extend(
            load::write_load(
                &addr,
                "k",
                extra,
                Until::FirstError,
                Duration::from_secs(30),
            )
            .await,
        );
        let child = m.child.as_mut().expect("running");
        if child.try_wait().expect("try_wait").is_some() || Instant::now() > deadline {
            return acked;
        }
        // Exiting takes a moment after the last answer.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if child.try_wait().expect("try_wait").is_some() {
            return acked;
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
async fn verify_after_restart(m: &mut Member, acked: &Acked) {
    m.env.clear();
    m.start();
    load::verify(&m.native_addr(), acked, 0).await;
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
    let acked = load_until_exit(m, extra).await;
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
    crash_at_store_writeout_page: "store-writeout-page" after 1000 None;
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
    let acked = load_until_exit(m, Extra::None).await;
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

/// Crash at a snapshot step: member 2 lags (stopped) while the others take
/// writes and compact their logs; when it returns the leader sends it a
/// snapshot. `on_all` arms the failpoint on every member (the leader writes
/// the image), otherwise only on the lagging member (it installs it).
async fn crash_at_snapshot_step(failpoint: &str, on_all: bool) {
    let flags = [
        "--store-sync-entries",
        "50",
        "--snapshot-count",
        "100",
        "--snapshot-catchup-entries",
        "10",
    ];
    let mut cluster = Cluster::start(3, &flags).await;
    let fp = format!("{failpoint}=return(crash)");
    for (i, m) in cluster.members.iter_mut().enumerate() {
        if on_all || i == 2 {
            m.stop();
            m.env = vec![("FAILPOINTS".into(), fp.clone())];
            m.start();
        }
    }
    cluster.wait_leader(Duration::from_secs(30)).await;
    cluster.members[2].stop();
    let addrs: Vec<String> = cluster.members[..2]
        .iter()
        .map(|m| m.native_addr())
        .collect();
    // Enough writes for the others to compact their logs past member 3
    // (a loaded host may need several rounds).
    let mut acked = Acked::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.len() < 300 && Instant::now() < deadline {
        let prefix = format!("k{}-", acked.len());
        acked.extend(
            load::write_load(
                &addrs,
                &prefix,
                Extra::None,
                Until::Deadline,
                Duration::from_secs(2),
            )
            .await,
        );
    }
    assert!(
        acked.len() >= 300,
        "too few writes to compact the log: {}",
        acked.len()
    );
    cluster.members[2].start();
    // Some member dies by SIGKILL at the failpoint.
    let deadline = Instant::now() + Duration::from_secs(30);
    let crashed = 'found: loop {
        for (i, m) in cluster.members.iter_mut().enumerate() {
            if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                m.child = None;
                assert_eq!(status.signal(), Some(libc::SIGKILL), "m{i}: {status:?}");
                break 'found i;
            }
        }
        assert!(Instant::now() < deadline, "{failpoint} never hit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "failpoints: {failpoint}: m{crashed} crashed after {} acknowledged writes",
        acked.len()
    );
    for m in cluster.members.iter_mut() {
        m.kill();
        m.env.clear();
        m.start();
    }
    cluster.wait_leader(Duration::from_secs(30)).await;
    for m in &cluster.members {
        load::verify(&m.native_addr(), &acked, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_snapshot_write() {
    crash_at_snapshot_step("snapshot-write", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_snapshot_install() {
    crash_at_snapshot_step("snapshot-install", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_at_snapshot_rename() {
    crash_at_snapshot_step("snapshot-rename", false).await;
}
