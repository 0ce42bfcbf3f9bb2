//! Three real members on loopback: replication, follower writes and reads,
//! leader failure under load, restart and catch-up (also by snapshot).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use corekv_wire::messages as w;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_writes_and_linearizable_follower_reads() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let follower = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    let fc = cluster.client(follower).await;
    let oc = cluster.client(other).await;
    for i in 0..20 {
        let r = fc.put(put(&format!("f{i:02}"), "v")).await.unwrap();
        // Write through one follower, read linearizably through the other.
        let got = oc.range(range(&format!("f{i:02}"), "")).await.unwrap();
        assert_eq!(got.kvs.len(), 1, "read after acknowledged write {i}");
        assert!(got.header.revision >= r.header.revision);
    }
    let members = fc
        .member_list(w::MemberListRequest::default())
        .await
        .unwrap();
    assert_eq!(members.members.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_under_writes_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for (w_i, &m) in survivors.iter().enumerate() {
        let client = cluster.client(m).await;
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w_i}-{i:05}");
                if client.put(put(&key, "v")).await.is_ok() {
                    acked.push(key);
                }
                i += 1;
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.members[leader].kill();
    let killed = Instant::now();
    // A new leader among the survivors within a few election timeouts.
    let new_leader = cluster
        .wait_leader(Duration::from_millis(ELECTION_MS * 10))
        .await;
    assert_ne!(new_leader, leader);
    let failover = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.unwrap());
    }
    assert!(acked.len() > 10, "only {} writes acknowledged", acked.len());
    let c = cluster.client(new_leader).await;
    let all = c
        .range(w::RangeRequest {
            limit: 0,
            ..range("w", "x")
        })
        .await
        .unwrap();
    let present: std::collections::HashSet<String> = keys(&all).into_iter().collect();
    for k in &acked {
        assert!(present.contains(k), "acknowledged write {k} lost");
    }
    eprintln!(
        "failover took {failover:?}; {} acknowledged writes all present",
        acked.len()
    );

    // The killed member comes back and catches up.
    cluster.members[leader].start();
    let rc = connect(&cluster.members[leader].native_addr()).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rc
            .range(w::RangeRequest {
                serializable: true,
                count_only: true,
                ..range("w", "x")
            })
            .await;
        if r.as_ref().is_ok_and(|r| r.count == all.count) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted member did not catch up: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_member_catches_up_by_snapshot() {
    let mut cluster = Cluster::start(
        3,
        &[
            "--snapshot-count",
            "50",
            "--store-sync-entries",
            "20",
            "--snapshot-catchup-entries",
            "10",
        ],
    )
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let lagging = (leader + 1) % 3;
    cluster.members[lagging].stop();
    let c = cluster.client(leader).await;
    for i in 0..300 {
        c.put(put(&format!("s{i:04}"), &i.to_string()))
            .await
            .unwrap();
    }
    // The leader's log was compacted past what the lagging member has.
    cluster.members[lagging].start();
    let lc = connect(&cluster.members[lagging].native_addr()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = lc
            .range(w::RangeRequest {
                serializable: true,
                count_only: true,
                ..range("s", "t")
            })
            .await;
        if r.as_ref().is_ok_and(|r| r.count == 300) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lagging member did not catch up: {r:?}\nlogs:\n{}",
            cluster
                .members
                .iter()
                .map(|m| m.log())
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        cluster.members[lagging]
            .log()
            .contains("installed a snapshot from the leader"),
        "expected catch-up by snapshot; log:\n{}",
        cluster.members[lagging].log()
    );
    // And it keeps following.
    c.put(put("after", "snap")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lc
        .range(w::RangeRequest {
            serializable: true,
            ..range("after", "")
        })
        .await
        .map_or(true, |r| r.kvs.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "no replication after the snapshot"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The image came from the leader, but the member keeps its own identity,
    // also across a restart.
    let own_id = lc
        .status(w::StatusRequest {})
        .await
        .unwrap()
        .header
        .member_id;
    let leader_id = c
        .status(w::StatusRequest {})
        .await
        .unwrap()
        .header
        .member_id;
    assert_ne!(own_id, leader_id);
    drop(lc);
    cluster.members[lagging].kill();
    cluster.members[lagging].start();
    let addr = cluster.members[lagging].native_addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // A fresh connection per try: the member is restarting.
        let lc = connect(&addr).await;
        let all = w::RangeRequest {
            serializable: true,
            count_only: true,
            ..range("\0", "\0")
        };
        let r = lc.range(all).await;
        let status = lc.status(w::StatusRequest {}).await;
        if r.as_ref().is_ok_and(|r| r.count >= 301)
            && status.as_ref().is_ok_and(|s| s.header.member_id == own_id)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "member did not come back as itself: {r:?} {status:?}\nlog:\n{}",
            cluster.members[lagging].log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
