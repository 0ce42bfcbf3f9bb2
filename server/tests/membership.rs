//! Run-time membership changes on real members: growing a cluster from one
//! member (by snapshot streaming then log), a learner refused promotion
//! while behind and promoted once in sync, removing a follower and the
//! leader, replacing a failed member, removed members refusing to come
//! back, no acknowledged write lost meanwhile. After each step the members
//! hold the same keys and the same HashKV. (etcdctl: membership_etcdctl.rs.)

mod common;

use common::members::*;
use common::*;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, WireError};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_one_to_three_with_a_learner_promoted_once_in_sync() {
    // A short log, so a new member catches up by snapshot streaming.
    let extra = [
        "--snapshot-count",
        "50",
        "--store-sync-entries",
        "20",
        "--snapshot-catchup-entries",
        "10",
    ];
    let dir = tmp();
    let mut cluster = Cluster::start(1, &extra).await;
    let c1 = cluster.client(0).await;
    put_keys(&c1, "k", 0..200).await;

    // 1 -> 2: a voter.
    let mut m2 = joiner(dir.path(), "m2", &extra);
    let added = c1
        .member_add(w::MemberAddRequest {
            peer_urls: vec![peer_url(&m2)],
            is_learner: false,
        })
        .await
        .unwrap();
    let id2 = added.member.as_ref().expect("the new member").id;
    assert_eq!(added.members.len(), 2);
    assert!(!added.member.unwrap().is_learner);
    m2.initial_cluster = initial_cluster(&[&cluster.members[0], &m2]);
    m2.start();
    assert_same(&[&cluster.members[0], &m2], "k", 200).await;
    assert!(
        m2.log().contains("installed a snapshot from the leader"),
        "expected catch-up by snapshot; log:\n{}",
        m2.log()
    );

    // etcd's refusals.
    let again = c1.member_add(w::MemberAddRequest {
        peer_urls: vec![peer_url(&m2)],
        is_learner: false,
    });
    assert_eq!(api_err(again.await), ApiError::PeerUrlExist);
    let bad = c1.member_add(w::MemberAddRequest {
        peer_urls: vec!["127.0.0.1:1".into()],
        is_learner: false,
    });
    assert_eq!(api_err(bad.await), ApiError::MemberBadUrls);
    let missing = c1.member_remove(w::MemberRemoveRequest { id: 0xdead });
    assert_eq!(api_err(missing.await), ApiError::MemberNotFound);
    let voter = c1.member_promote(w::MemberPromoteRequest { id: id2 });
    assert_eq!(api_err(voter.await), ApiError::MemberNotLearner);

    // A learner, asked through a follower (forwarded to the leader), with
    // writes going on until it is promoted.
    let writer = Writer::start(&m2.native_addr(), "w").await;
    let c2 = connect(&m2.native_addr()).await;
    let mut m3 = joiner(dir.path(), "m3", &extra);
    let added = c2
        .member_add(w::MemberAddRequest {
            peer_urls: vec![peer_url(&m3)],
            is_learner: true,
        })
        .await
        .unwrap();
    let learner = added.member.expect("the new member");
    assert!(learner.is_learner);
    let second = c1.member_add(w::MemberAddRequest {
        peer_urls: vec!["http://127.0.0.1:1".into()],
        is_learner: true,
    });
    assert_eq!(api_err(second.await), ApiError::TooManyLearners);
    // Not started: far behind the leader.
    for c in [&c1, &c2] {
        let early = c.member_promote(w::MemberPromoteRequest { id: learner.id });
        assert_eq!(api_err(early.await), ApiError::LearnerNotReady);
    }
    m3.initial_cluster = initial_cluster(&[&cluster.members[0], &m2, &m3]);
    m3.start();
    let c3 = connect(&m3.native_addr()).await;
    let read = c3.range(range("k", "l"));
    assert_eq!(api_err(read.await), ApiError::NotSupportedForLearner);
    put_keys(&c1, "k", 200..260).await;
    let deadline = Instant::now() + WAIT;
    loop {
        match c2
            .member_promote(w::MemberPromoteRequest { id: learner.id })
            .await
        {
            Ok(r) => {
                assert!(r.members.iter().all(|m| !m.is_learner), "{r:?}");
                break;
            }
            Err(WireError::Api(ApiError::LearnerNotReady)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("promote: {e}\n{}", logs(&[&cluster.members[0], &m2, &m3])),
        }
    }
    writer.check(&[&cluster.members[0], &m2, &m3], "w").await;
    assert_same(&[&cluster.members[0], &m2, &m3], "k", 260).await;
    // A voter now: linearizable reads and writes through it.
    let deadline = Instant::now() + WAIT;
    while c3.range(range("k", "l")).await.is_err() {
        assert!(Instant::now() < deadline, "promoted member refuses reads");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c3.put(put("k9999", "from m3")).await.unwrap();
    let list = c3
        .member_list(w::MemberListRequest::default())
        .await
        .unwrap();
    let mut names: Vec<&str> = list.members.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["m1", "m2", "m3"]);
    // A member that joined (by snapshot) restarts from its own data.
    m2.stop();
    c1.put(put("k9998", "while m2 is down")).await.unwrap();
    m2.start();
    assert_same(&[&cluster.members[0], &m2, &m3], "k", 262).await;
    cluster.members.extend([m2, m3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_the_leader_a_follower_and_replace_a_failed_member() {
    let dir = tmp();
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(WAIT).await;
    let cl = cluster.client(leader).await;
    put_keys(&cl, "a", 0..50).await;

    // Remove the leader, asked on the leader: it answers, steps down and
    // stops; the other two elect a leader and go on. Writes go on through
    // a follower meanwhile.
    let stays = (leader + 1) % 3;
    let writer = Writer::start(&cluster.members[stays].native_addr(), "w").await;
    let leader_id = member_id(&cl).await;
    let r = cl
        .member_remove(w::MemberRemoveRequest { id: leader_id })
        .await
        .unwrap();
    assert_eq!(r.members.len(), 2);
    assert_removed_and_refused(&mut cluster.members[leader]);
    let next = cluster.wait_leader(WAIT).await;
    assert_ne!(next, leader);
    let cn = cluster.client(next).await;
    put_keys(&cn, "a", 50..80).await;
    let alive: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let pair = [&cluster.members[alive[0]], &cluster.members[alive[1]]];
    writer.check(&pair, "w").await;
    assert_same(&pair, "a", 80).await;

    // Back to three.
    let mut m4 = joiner(dir.path(), "m4", &[]);
    cn.member_add(w::MemberAddRequest {
        peer_urls: vec![peer_url(&m4)],
        is_learner: false,
    })
    .await
    .unwrap();
    m4.initial_cluster =
        initial_cluster(&[&cluster.members[alive[0]], &cluster.members[alive[1]], &m4]);
    m4.start();
    cluster.members.push(m4);
    let live = |c: &Cluster| -> Vec<usize> {
        (0..c.members.len())
            .filter(|&i| c.members[i].child.is_some())
            .collect()
    };
    let now = live(&cluster);
    assert_same(
        &now.iter().map(|&i| &cluster.members[i]).collect::<Vec<_>>(),
        "a",
        80,
    )
    .await;

    // Replace a failed member: kill a follower, remove it, add a fresh one.
    let next = cluster.wait_leader(WAIT).await;
    let failed = *now.iter().find(|&&i| i != next).unwrap();
    let cf = cluster.client(failed).await;
    let failed_id = member_id(&cf).await;
    drop(cf);
    cluster.members[failed].kill();
    let cn = cluster.client(next).await;
    put_keys(&cn, "a", 80..100).await;
    cn.member_remove(w::MemberRemoveRequest { id: failed_id })
        .await
        .unwrap();
    let mut m5 = joiner(dir.path(), "m5", &[]);
    cn.member_add(w::MemberAddRequest {
        peer_urls: vec![peer_url(&m5)],
        is_learner: false,
    })
    .await
    .unwrap();
    let now: Vec<usize> = live(&cluster);
    let mut listed: Vec<&Member> = now.iter().map(|&i| &cluster.members[i]).collect();
    listed.push(&m5);
    m5.initial_cluster = initial_cluster(&listed);
    m5.start();
    cluster.members.push(m5);
    let now = live(&cluster);
    assert_eq!(now.len(), 3);
    assert_same(
        &now.iter().map(|&i| &cluster.members[i]).collect::<Vec<_>>(),
        "a",
        100,
    )
    .await;

    // The failed member comes back with its old data: the others tell it
    // it was removed, and it stops, and refuses every later start.
    cluster.members[failed].start();
    assert_removed_and_refused(&mut cluster.members[failed]);

    // Remove a running follower: it stops by itself.
    let next = cluster.wait_leader(WAIT).await;
    let follower = *now.iter().find(|&&i| i != next).unwrap();
    let cf = cluster.client(follower).await;
    let follower_id = member_id(&cf).await;
    drop(cf);
    let cn = cluster.client(next).await;
    cn.member_remove(w::MemberRemoveRequest { id: follower_id })
        .await
        .unwrap();
    assert_removed_and_refused(&mut cluster.members[follower]);
    put_keys(&cn, "a", 100..110).await;
    let now = live(&cluster);
    assert_eq!(now.len(), 2);
    assert_same(
        &now.iter().map(|&i| &cluster.members[i]).collect::<Vec<_>>(),
        "a",
        110,
    )
    .await;
}
