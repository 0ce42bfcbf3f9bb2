//! A follower whose store commits are slowed by a failpoint
//! (`store-commit=sleep(300)`) lags its leader by a few hundred
//! milliseconds; what it answers must still be what the cluster
//! acknowledged:
//!
//! - LeaseTimeToLive with `keys` answers the leader's key set, not the
//!   follower's: a key attached just before the call is listed, because the
//!   keys are read after a read barrier (ReadIndex).
//! - A simple auth token issued by another member an instant ago is
//!   accepted, and a permission granted an instant ago is honoured: a
//!   refusal that may only mean "not applied here yet" is asked again after
//!   a read barrier (`Api::gate_as`).
//!
//! `cargo test -p corekv-server --features failpoints --test lagging_follower`
#![cfg(feature = "failpoints")]

mod common;

use std::time::Duration;

use common::*;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, Client, WireError};

/// A cluster of three whose member `slow` (a follower) applies every store
/// commit 300 ms late: below the election timeout, so it lags and does not
/// campaign. Returns the cluster, the leader and the slow member.
async fn cluster_with_a_slow_follower(extra: &[&str]) -> (Cluster, usize, usize) {
    let mut cluster = Cluster::start(3, extra).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let slow = (leader + 1) % 3;
    let m = &mut cluster.members[slow];
    m.stop();
    m.env = vec![("FAILPOINTS".into(), "store-commit=sleep(300)".into())];
    m.start();
    (cluster, leader, slow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_to_live_keys_on_a_lagging_follower_are_the_leaders() {
    let (cluster, leader, slow) = cluster_with_a_slow_follower(&[]).await;
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

async fn auth_call(c: &Client, req: w::AuthRequest) {
    c.auth(req).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_follower_accepts_fresh_tokens_and_grants() {
    let (cluster, leader, slow) = cluster_with_a_slow_follower(&["--bcrypt-cost", "4"]).await;
    let lc = cluster.client(leader).await;
    for (name, password) in [("root", "rootpw"), ("alice", "apw")] {
        auth_call(
            &lc,
            w::AuthRequest::UserAdd(w::AuthUserAddRequest {
                name: name.into(),
                password: password.into(),
                ..Default::default()
            }),
        )
        .await;
    }
    for role in ["root", "r1"] {
        auth_call(&lc, w::AuthRequest::RoleAdd { name: role.into() }).await;
    }
    for (user, role) in [("root", "root"), ("alice", "r1")] {
        auth_call(
            &lc,
            w::AuthRequest::UserGrantRole(w::AuthUserGrantRoleRequest {
                user: user.into(),
                role: role.into(),
            }),
        )
        .await;
    }
    auth_call(&lc, w::AuthRequest::Enable).await;
    let root_token = lc.authenticate("root", "rootpw").await.unwrap();
    let root = lc.with_token(Some(&root_token));
    let follower = cluster.client(slow).await;
    for i in 0..5 {
        // Issued by the leader; used at once on the follower, which has not
        // applied the token's entry yet.
        let token = lc.authenticate("alice", "apw").await.unwrap();
        let alice = follower.with_token(Some(&token));
        let key = format!("/g{i}");
        let denied = alice.put(put(&key, "v")).await;
        assert!(
            matches!(denied, Err(WireError::Api(ApiError::PermissionDenied))),
            "round {i} before the grant: {denied:?}\n{}",
            cluster.members[slow].log()
        );
        // Granted on the leader; alice's put on the follower at once.
        root.auth(w::AuthRequest::RoleGrantPermission(
            w::AuthRoleGrantPermissionRequest {
                name: "r1".into(),
                perm: w::Permission {
                    perm_type: w::PermissionType::ReadWrite,
                    key: key.clone().into_bytes(),
                    range_end: Vec::new(),
                },
            },
        ))
        .await
        .unwrap();
        let r = alice.put(put(&key, "v")).await;
        assert!(
            r.is_ok(),
            "round {i} after the grant: {r:?}\n{}",
            cluster.members[slow].log()
        );
    }
    // A password change on the leader ends alice's tokens: her linearizable
    // read on the follower at once is refused as etcd refuses it (the token
    // is resolved again after the read barrier), not as "old revision".
    let token = lc.authenticate("alice", "apw").await.unwrap();
    let alice = follower.with_token(Some(&token));
    assert!(alice.get(b"/g0").await.is_ok());
    root.auth(w::AuthRequest::UserChangePassword(
        w::AuthUserChangePasswordRequest {
            name: "alice".into(),
            password: "apw2".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    let r = alice.get(b"/g0").await;
    assert!(
        matches!(r, Err(WireError::Api(ApiError::InvalidAuthToken))),
        "after the password change: {r:?}"
    );
}
