//! Crash loops on the real disk: kill -9 at random moments under write load,
//! restart, and prove after every cycle that no acknowledged write is lost
//! and the revision never goes back. A single member and a 3-member cluster
//! (one random member per cycle, every fourth cycle all three).
//!
//! The default suite runs a short loop; `CKV_CRASH_CYCLES=500` (and
//! `CKV_CRASH_SEED`) for long runs, see docs/reliability.md.

mod common;
#[path = "crash/load.rs"]
mod load;

use std::time::Duration;

use common::Cluster;
use load::{Acked, Extra, Until};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn cycles(default: u32) -> u32 {
    std::env::var("CKV_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn rng() -> StdRng {
    let seed = std::env::var("CKV_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| u64::from(std::process::id()));
    eprintln!("crash_loop: seed {seed} (CKV_CRASH_SEED to replay)");
    StdRng::seed_from_u64(seed)
}

/// A store sync and a WAL snapshot marker every few hundred entries, so
/// kills land in every persistence phase.
const FLAGS: &[&str] = &["--store-sync-entries", "200", "--snapshot-count", "400"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_survives_kill9_loop() {
    let mut rng = rng();
    let mut cluster = Cluster::start(1, FLAGS).await;
    let addr = vec![cluster.members[0].native_addr()];
    let mut acked = Acked::new();
    let mut floor = 0;
    let n = cycles(12);
    for cycle in 0..n {
        let run_ms = rng.random_range(50..700);
        // The load outlives the kill: the kill lands while writes are in flight.
        let prefix = format!("k{cycle:04}-");
        let load = load::write_load(
            &addr,
            &prefix,
            Extra::None,
            Until::FirstError,
            Duration::from_secs(10),
        );
        let kill = async {
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            cluster.members[0].kill();
        };
        let (got, ()) = tokio::join!(load, kill);
        acked.extend(got);
        cluster.members[0].start();
        floor = load::verify(&addr[0], &acked, floor).await;
    }
    eprintln!(
        "crash_loop: single member: {n} kill -9 cycles, {} acknowledged writes all present, revision {floor}",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_survive_kill9_loop() {
    let mut rng = rng();
    let mut cluster = Cluster::start(3, FLAGS).await;
    let addrs: Vec<String> = cluster.members.iter().map(|m| m.native_addr()).collect();
    let mut acked = Acked::new();
    let mut floor = 0;
    let n = cycles(8);
    for cycle in 0..n {
        let run_ms = rng.random_range(200..1_200);
        let all = cycle % 4 == 3;
        let victim = rng.random_range(0..3);
        let prefix = format!("k{cycle:04}-");
        let load = load::write_load(
            &addrs,
            &prefix,
            Extra::None,
            Until::Deadline,
            Duration::from_millis(run_ms + 600),
        );
        let kill = async {
            tokio::time::sleep(Duration::from_millis(run_ms)).await;
            for (i, m) in cluster.members.iter_mut().enumerate() {
                if all || i == victim {
                    m.kill();
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            for m in cluster.members.iter_mut() {
                if m.child.is_none() {
                    m.start();
                }
            }
        };
        let (got, ()) = tokio::join!(load, kill);
        acked.extend(got);
        cluster.wait_leader(Duration::from_secs(30)).await;
        // Every member, not only the leader, must have everything.
        for a in &addrs {
            floor = floor.max(load::verify(a, &acked, floor).await);
        }
    }
    eprintln!(
        "crash_loop: 3 members: {n} kill -9 cycles, {} acknowledged writes present on every member, revision {floor}",
        acked.len()
    );
}

/// etcd serves clients only once the member has applied its log (it starts
/// its client listeners after ReadyNotify), so even a serializable read
/// never shows a revision below an acknowledged one after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serializable_reads_after_restart_do_not_go_back() {
    let mut cluster = Cluster::start(1, &["--store-sync-entries", "100000"]).await;
    let addr = vec![cluster.members[0].native_addr()];
    let acked = load::write_load(
        &addr,
        "k",
        Extra::None,
        Until::Deadline,
        Duration::from_secs(2),
    )
    .await;
    let max_acked = acked.values().copied().max().unwrap_or(0);
    cluster.members[0].kill();
    cluster.members[0].start();
    let c = common::connect(&addr[0]).await;
    let s = c
        .status(corekv_wire::messages::StatusRequest {})
        .await
        .expect("status");
    assert!(
        s.header.revision >= max_acked,
        "first answer after restart at revision {}, {max_acked} acknowledged before the kill",
        s.header.revision
    );
}
