//! Alarms end to end: NOSPACE trips at `--quota-backend-bytes`, is raised
//! cluster-wide, lets reads, deletes, compaction and defragmentation through,
//! and clears with a disarm; CORRUPT is raised by the periodic HashKV check
//! for a member whose data differs, after which writes are refused.

mod common;

use std::time::{Duration, Instant};

use common::*;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, WireError};

const QUOTA: u64 = 16 * 1024 * 1024;

fn alarm_req(action: w::AlarmAction, member_id: u64, alarm: w::AlarmType) -> w::AlarmRequest {
    w::AlarmRequest {
        action,
        member_id,
        alarm,
    }
}

fn list() -> w::AlarmRequest {
    alarm_req(w::AlarmAction::Get, 0, w::AlarmType::None)
}

fn api_error(r: Result<impl std::fmt::Debug, WireError>) -> ApiError {
    match r {
        Err(WireError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn wait_alarms(c: &corekv_wire::Client, want: impl Fn(&[w::AlarmMember]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = c.alarm(list()).await.unwrap().alarms;
        if want(&got) {
            return;
        }
        assert!(Instant::now() < deadline, "alarms stayed {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nospace_trips_and_clears() {
    let quota = QUOTA.to_string();
    let cluster = Cluster::start(3, &["--quota-backend-bytes", &quota]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let c = cluster.client(leader).await;
    let value = "v".repeat(100 * 1024);
    let mut written = 0;
    let err = loop {
        match c.put(put(&format!("big{written:04}"), &value)).await {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 1000, "quota never reached");
    };
    match err {
        WireError::Api(ApiError::NoSpace) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        ApiError::NoSpace.message(),
        "etcdserver: mvcc: database space exceeded"
    );
    // Raised through Raft: every member lists it, and every member refuses
    // puts (and txns with puts), whatever its own file size.
    for i in 0..3 {
        let m = cluster.client(i).await;
        wait_alarms(&m, |a| {
            a.iter()
                .any(|x| x.alarm == w::AlarmType::Nospace && x.member_id != 0)
        })
        .await;
        assert_eq!(api_error(m.put(put("more", "x")).await), ApiError::NoSpace);
    }
    let txn_put = w::TxnRequest {
        success: vec![w::RequestOp::Put(put("t", "x"))],
        ..Default::default()
    };
    assert_eq!(api_error(c.txn(txn_put).await), ApiError::NoSpace);
    // Reads, deletes (also in a txn), compaction and defrag still work.
    let r = c.range(range("big", "bih")).await.unwrap();
    assert_eq!(r.kvs.len(), written);
    let txn_del = w::TxnRequest {
        success: vec![w::RequestOp::DeleteRange(w::DeleteRangeRequest {
            key: b"big0000".to_vec(),
            ..Default::default()
        })],
        ..Default::default()
    };
    assert!(c.txn(txn_del).await.unwrap().succeeded);
    let d = c
        .delete_range(w::DeleteRangeRequest {
            key: b"big".to_vec(),
            range_end: b"bih".to_vec(),
            prev_kv: false,
        })
        .await
        .unwrap();
    c.compact(w::CompactionRequest {
        revision: d.header.revision,
        physical: true,
    })
    .await
    .unwrap();
    for i in 0..3 {
        cluster
            .client(i)
            .await
            .defragment(w::DefragmentRequest {})
            .await
            .unwrap();
    }
    // Disarm every alarm (what `alarm disarm` does), then puts work again.
    let alarms = c.alarm(list()).await.unwrap().alarms;
    for a in alarms {
        let r = c
            .alarm(alarm_req(w::AlarmAction::Deactivate, a.member_id, a.alarm))
            .await
            .unwrap();
        assert_eq!(r.alarms.len(), 1);
    }
    for i in 0..3 {
        wait_alarms(&cluster.client(i).await, |a| a.is_empty()).await;
    }
    c.put(put("after", "disarm")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_member_is_detected_and_writes_stop() {
    let mut cluster = Cluster::start(3, &["--experimental-corrupt-check-time", "500ms"]).await;
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let c = cluster.client(leader).await;
    for i in 0..20 {
        c.put(put(&format!("k{i}"), "v")).await.unwrap();
    }
    // Damage one follower's data behind Raft's back: an extra key.
    let victim = (leader + 1) % 3;
    let victim_id = cluster
        .client(victim)
        .await
        .status(w::StatusRequest {})
        .await
        .unwrap()
        .header
        .member_id;
    cluster.members[victim].stop();
    {
        let db = cluster.members[victim].spec.data_dir.join("member/snap/db");
        let store = corekv_storage::Store::open(&db, Default::default()).unwrap();
        let applied = store.applied_index();
        let mut b = store.write().unwrap();
        b.put(&corekv_storage::PutRequest {
            key: b"rogue".to_vec(),
            value: b"x".to_vec(),
            ..Default::default()
        })
        .unwrap();
        b.commit(applied, true).unwrap();
    }
    cluster.members[victim].start();
    let leader = cluster.wait_leader(Duration::from_secs(10)).await;
    let c = cluster.client(leader).await;
    c.put(put("after", "restart")).await.unwrap();
    wait_alarms(&c, |a| {
        a.iter()
            .any(|x| x.alarm == w::AlarmType::Corrupt && x.member_id == victim_id)
    })
    .await;
    assert_eq!(api_error(c.put(put("x", "y")).await), ApiError::Corrupt);
    assert_eq!(ApiError::Corrupt.message(), "etcdserver: corrupt cluster");
    // Reads still work.
    assert_eq!(c.range(range("k", "l")).await.unwrap().kvs.len(), 20);
}
