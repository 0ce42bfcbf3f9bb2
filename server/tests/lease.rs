//! Leases against real members: etcd's grant/revoke/keep-alive/time-to-live
//! semantics, revoke atomic as watched, expiry through Raft across a leader
//! kill, and a lease surviving a full-cluster restart with its remaining TTL.

mod common;

use std::time::{Duration, Instant};

use common::*;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, Client, WireError};

fn api_err<T: std::fmt::Debug>(r: Result<T, WireError>) -> ApiError {
    match r {
        Err(WireError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn grant(c: &Client, ttl: i64, id: i64) -> w::LeaseGrantResponse {
    c.lease_grant(w::LeaseGrantRequest { ttl, id })
        .await
        .expect("grant")
}

fn put_leased(key: &str, lease: i64) -> w::PutRequest {
    w::PutRequest {
        lease,
        ..put(key, "v")
    }
}

async fn ttl_of(c: &Client, id: i64, keys: bool) -> w::LeaseTimeToLiveResponse {
    c.lease_time_to_live(w::LeaseTimeToLiveRequest { id, keys })
        .await
        .expect("time to live")
}

/// Retries `f` (a request that may meet a leader change) for up to 20 s.
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, WireError>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("still failing after 20 s: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_operations_follow_etcd_semantics() {
    let cluster = Cluster::start(1, &[]).await;
    let c = cluster.client(0).await;

    // Server-chosen and client-chosen ids; the minimum TTL (1.5 election
    // timeouts of 500 ms, rounded up: 1 s) and the maximum.
    let g = grant(&c, 60, 0).await;
    assert!(g.id > 0 && g.ttl == 60, "{g:?}");
    let tiny = grant(&c, 0, 4243).await;
    assert_eq!((tiny.id, tiny.ttl), (4243, 1));
    let mine = grant(&c, 3, 4242).await;
    assert_eq!((mine.id, mine.ttl), (4242, 3));
    assert_eq!(
        api_err(
            c.lease_grant(w::LeaseGrantRequest { ttl: 5, id: 4242 })
                .await
        ),
        ApiError::LeaseExist
    );
    assert_eq!(
        api_err(
            c.lease_grant(w::LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0
            })
            .await
        ),
        ApiError::LeaseTtlTooLarge
    );

    // Puts: an unknown lease is refused, in a txn too; the lease shows in
    // ranges; ignore_lease keeps it.
    assert_eq!(
        api_err(c.put(put_leased("k", 777)).await),
        ApiError::LeaseNotFound
    );
    let txn = w::TxnRequest {
        success: vec![w::RequestOp::Put(put_leased("k", 777))],
        ..Default::default()
    };
    assert_eq!(api_err(c.txn(txn).await), ApiError::LeaseNotFound);
    assert!(c.get(b"k").await.unwrap().is_none());
    c.put(put_leased("k1", g.id)).await.unwrap();
    c.put(put_leased("k2", g.id)).await.unwrap();
    c.put(put("other", "x")).await.unwrap();
    c.put(w::PutRequest {
        ignore_lease: true,
        ..put("k2", "v2")
    })
    .await
    .unwrap();
    assert_eq!(c.get(b"k2").await.unwrap().unwrap().lease, g.id);

    // Time to live with keys; keep-alive answers the granted TTL; unknown
    // leases: TTL -1 and TTL 0.
    let t = ttl_of(&c, g.id, true).await;
    assert_eq!(t.granted_ttl, 60);
    assert!((58..=60).contains(&t.ttl), "{t:?}");
    assert_eq!(t.keys, vec![b"k1".to_vec(), b"k2".to_vec()]);
    assert!(ttl_of(&c, g.id, false).await.keys.is_empty());
    assert_eq!(ttl_of(&c, 999, true).await.ttl, -1);
    let k = c
        .lease_keep_alive(w::LeaseKeepAliveRequest { id: g.id })
        .await
        .unwrap();
    assert_eq!((k.id, k.ttl), (g.id, 60));
    let k = c
        .lease_keep_alive(w::LeaseKeepAliveRequest { id: 999 })
        .await
        .unwrap();
    assert_eq!(k.ttl, 0);
    let ids: Vec<i64> = c
        .lease_leases(w::LeaseLeasesRequest {})
        .await
        .unwrap()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    assert!(ids.contains(&g.id) && ids.contains(&4242), "{ids:?}");

    // Revoke: every attached key goes in one revision, seen by a watcher in
    // one response.
    let before = c.get(b"other").await.unwrap().unwrap().mod_revision;
    let mut ws = c
        .watch(w::WatchCreateRequest {
            key: b"k".to_vec(),
            range_end: b"l".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = c
        .lease_revoke(w::LeaseRevokeRequest { id: g.id })
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("watch response")
        .unwrap()
        .unwrap();
    let resp = frame.to_owned_watch().unwrap();
    assert_eq!(resp.events.len(), 2, "{resp:?}");
    assert!(
        resp.events
            .iter()
            .all(|e| e.event_type == w::EventType::Delete && e.kv.mod_revision == r.header.revision)
    );
    assert!(r.header.revision > before);
    assert!(c.get(b"k1").await.unwrap().is_none());
    assert!(c.get(b"other").await.unwrap().is_some());
    assert_eq!(
        api_err(c.lease_revoke(w::LeaseRevokeRequest { id: g.id }).await),
        ApiError::LeaseNotFound
    );
    assert_eq!(ttl_of(&c, g.id, false).await.ttl, -1);

    // Expiry: the leader revokes a lease nobody keeps alive.
    c.put(put_leased("short", 4242)).await.unwrap();
    assert!(c.get(b"short").await.unwrap().is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get(b"short").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "lease 4242 never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ttl_of(&c, 4242, false).await.ttl, -1);
}

/// The leader is killed while a lease is kept alive through a follower and
/// another is left to expire: the kept lease survives (the new leader
/// extends it), the other expires through the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_keep_alive_across_a_leader_kill() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.wait_leader(Duration::from_secs(20)).await;
    let follower = (leader + 1) % 3;
    let c = cluster.client(follower).await;
    let kept = grant(&c, 6, 0).await;
    let dropped = grant(&c, 6, 0).await;
    c.put(put_leased("kept", kept.id)).await.unwrap();
    c.put(put_leased("dropped", dropped.id)).await.unwrap();
    // Keep-alive through the follower (forwarded to the leader).
    let k = c
        .lease_keep_alive(w::LeaseKeepAliveRequest { id: kept.id })
        .await
        .unwrap();
    assert_eq!(k.ttl, 6);

    cluster.members[leader].kill();
    let started = Instant::now();
    // Keep `kept` alive about every second through the surviving follower
    // while the cluster elects a new leader (as a client does: each try
    // bounded by its own timeout); `dropped` gets nothing.
    let mut dropped_gone = None;
    while started.elapsed() < Duration::from_secs(15) {
        let ask = c.lease_keep_alive(w::LeaseKeepAliveRequest { id: kept.id });
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(1), ask).await {
            assert_eq!(r.ttl, 6, "kept lease lost: {r:?}");
        }
        if dropped_gone.is_none() && c.get(b"dropped").await.is_ok_and(|kv| kv.is_none()) {
            dropped_gone = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let gone = dropped_gone.expect("the unkept lease never expired");
    // Not before its TTL (6 s from the grant, minus what passed before the
    // kill): the new leader gives it its full TTL plus an election timeout.
    assert!(gone > Duration::from_secs(4), "expired after {gone:?}");
    assert!(retry(|| c.get(b"kept")).await.is_some());
    let t = retry(|| {
        c.lease_time_to_live(w::LeaseTimeToLiveRequest {
            id: kept.id,
            keys: true,
        })
    })
    .await;
    assert_eq!(t.keys, vec![b"kept".to_vec()]);
}

/// A checkpointed lease survives a full restart of every member with its
/// remaining TTL (not the full TTL, and not expired by the downtime).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_survives_a_full_cluster_restart() {
    let mut cluster = Cluster::start(3, &["--lease-checkpoint-interval-ms", "1000"]).await;
    let c = cluster.client(0).await;
    let g = grant(&c, 120, 0).await;
    c.put(put_leased("svc", g.id)).await.unwrap();
    // Let at least two checkpoints pass (remaining <= 117 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(c);
    for m in &mut cluster.members {
        m.stop();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for m in &mut cluster.members {
        m.start();
    }
    cluster.wait_leader(Duration::from_secs(20)).await;
    let c = cluster.client(1).await;
    let t = retry(|| {
        c.lease_time_to_live(w::LeaseTimeToLiveRequest {
            id: g.id,
            keys: true,
        })
    })
    .await;
    assert_eq!(t.granted_ttl, 120);
    assert!(
        t.ttl > 100 && t.ttl < 120,
        "remaining TTL after restart: {t:?}"
    );
    assert_eq!(t.keys, vec![b"svc".to_vec()]);
    assert_eq!(c.get(b"svc").await.unwrap().unwrap().lease, g.id);
}

/// etcd's JSON gateway routes for leases (`/v3/lease/*`, `/v3/kv/lease/*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_gateway_serves_lease_routes() {
    let cluster = Cluster::start(1, &[]).await;
    let port = cluster.members[0].spec.http;
    let post = move |path: &'static str, body: &'static str| {
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(
                s,
                "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut text = String::new();
            s.read_to_string(&mut text).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.starts_with("HTTP/1.1 200"), "{path}: {text}");
            serde_json::from_str::<serde_json::Value>(body).unwrap()
        })
    };
    let g = post("/v3/lease/grant", r#"{"TTL": 30, "ID": 77}"#)
        .await
        .unwrap();
    assert_eq!(
        (g["ID"].as_str(), g["TTL"].as_str()),
        (Some("77"), Some("30")),
        "{g}"
    );
    let t = post("/v3/kv/lease/timetolive", r#"{"ID": 77}"#)
        .await
        .unwrap();
    assert_eq!(t["grantedTTL"].as_str(), Some("30"), "{t}");
    let l = post("/v3/lease/leases", "{}").await.unwrap();
    assert_eq!(l["leases"][0]["ID"].as_str(), Some("77"), "{l}");
    post("/v3/lease/revoke", r#"{"ID": 77}"#).await.unwrap();
    let t = post("/v3/lease/timetolive", r#"{"ID": 77}"#).await.unwrap();
    assert_eq!(t["TTL"].as_str(), Some("-1"), "{t}");
}
