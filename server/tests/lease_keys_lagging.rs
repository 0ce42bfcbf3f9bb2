//! LeaseTimeToLive with `keys` answers the leader's key set, not a lagging
//! follower's: a follower whose store commits are slowed by a failpoint
//! (`store-commit=sleep(300)`) still lists a key attached just before the
//! call, because the keys are read after a read barrier (ReadIndex).
//!
//! `cargo test -p corekv-server --features failpoints --test lease_keys_lagging`
#![cfg(feature = "failpoints")]

mod common;

use std::time::Duration;

use common::*;
use corekv_wire::messages as w;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_keys_on_a_lagging_follower_are_the_leaders() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let slow = (leader + 1) % 3;
    let m = &mut cluster.members[slow];
    m.stop();
    // Below the election timeout: the follower lags, it does not campaign.
    m.env = vec![("FAILPOINTS".into(), "store-commit=sleep(300)".into())];
    m.start();
    let lc = cluster.client(leader).await;
    let lease = lc
        .lease_grant(w::LeaseGrantRequest { ttl: 600, id: 77 })
        .await
        .unwrap()
        .id;
    let follower = cluster.client(slow).await;
    // The restarted follower has caught up with the grant.
    let mut caught_up = false;
    for _ in 0..100 {
        let t = follower
            .lease_time_to_live(w::LeaseTimeToLiveRequest {
                id: lease,
                keys: true,
            })
            .await;
        if t.is_ok_and(|t| t.ttl > 0) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(caught_up, "{}", cluster.members[slow].log());
    let mut want = Vec::new();
    for i in 0..5 {
        let key = format!("/k{i}");
        lc.put(w::PutRequest {
            lease,
            ..put(&key, "v")
        })
        .await
        .unwrap();
        want.push(key.into_bytes());
        // At once, on the follower that has not applied the put yet.
        let t = follower
            .lease_time_to_live(w::LeaseTimeToLiveRequest {
                id: lease,
                keys: true,
            })
            .await
            .unwrap();
        assert_eq!(t.keys, want, "after put {i}");
    }
}
