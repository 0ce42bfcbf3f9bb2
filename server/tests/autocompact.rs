//! Auto-compaction keeps the revision window: revision mode compacts to
//! `current - retention`, periodic mode to the revision of one retention
//! period ago; older revisions answer etcd's "compacted" error.

mod common;

use std::time::{Duration, Instant};

use common::*;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, WireError};

async fn compacted(c: &corekv_wire::Client) -> i64 {
    c.hash_kv(w::HashKvRequest { revision: 0 })
        .await
        .unwrap()
        .compact_revision
}

async fn wait_compacted(c: &corekv_wire::Client, at_least: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = compacted(c).await;
        if got >= at_least {
            return got;
        }
        assert!(Instant::now() < deadline, "compacted revision stayed {got}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_mode_keeps_the_last_n_revisions() {
    let cluster = Cluster::start(
        3,
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "10",
            "--auto-compaction-revision-interval-ms",
            "200",
        ],
    )
    .await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let c = cluster.client(leader).await;
    let mut rev = 0;
    for i in 0..60 {
        rev = c
            .put(put(&format!("k{i}"), "v"))
            .await
            .unwrap()
            .header
            .revision;
    }
    let got = wait_compacted(&c, rev - 10).await;
    assert_eq!(got, rev - 10, "never more than the window");
    let old = c
        .range(w::RangeRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            revision: rev - 11,
            ..Default::default()
        })
        .await;
    assert!(
        matches!(old, Err(WireError::Api(ApiError::Compacted))),
        "{old:?}"
    );
    // Every member applied the same compaction.
    for i in 0..3 {
        wait_compacted(&cluster.client(i).await, rev - 10).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_mode_keeps_one_period() {
    let cluster = Cluster::start(1, &["--auto-compaction-retention", "1s"]).await;
    let c = cluster.client(0).await;
    // The member's compactor started before this clock: revisions before
    // the first write here are bounded by `initial`.
    let initial = c.status(w::StatusRequest {}).await.unwrap().header.revision;
    let started = Instant::now();
    let mut revs = vec![(Duration::ZERO, initial)];
    let mut last = 0;
    // Each compaction seen targets a revision sampled about one period
    // before it: no newer than what existed 0.8 s before it was seen. Run
    // until compaction follows the writes past the initial revision.
    while last <= initial + 5 {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "compaction stayed at {last}"
        );
        let r = c.put(put("k", "v")).await.unwrap().header.revision;
        revs.push((started.elapsed(), r));
        let got = compacted(&c).await;
        if got != last {
            let at = started.elapsed();
            let newest_allowed = revs
                .iter()
                .filter(|(t, _)| t.is_zero() || *t + Duration::from_millis(800) <= at)
                .map(|(_, r)| *r)
                .max()
                .unwrap();
            assert!(
                got <= newest_allowed,
                "compacted to {got} at {at:?}, newest allowed {newest_allowed}"
            );
            last = got;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
