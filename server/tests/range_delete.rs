//! A prefix delete big enough to be stored as one range tombstone
//! (`StoreOptions::range_delete_min_keys`, 1024) keeps etcd's semantics on
//! a real member: one revision, one delete event per key with prev_kv for
//! live and catch-up watchers, old revisions readable until compaction, a
//! key put again starts a new life.

mod common;

use std::time::Duration;

use common::*;
use corekv_wire::WatchStream;
use corekv_wire::messages as w;

const KEYS: usize = 3000;

async fn delete_events(ws: &mut WatchStream, n: usize) -> Vec<w::Event> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("watch events within 20 s")
            .expect("watch stream error")
            .expect("watch stream ended");
        let r = frame.to_owned_watch().expect("decode watch response");
        assert!(!r.canceled, "unexpected cancel: {r:?}");
        out.extend(r.events);
    }
    assert_eq!(out.len(), n);
    out
}

fn check_deletes(evs: &[w::Event], rev: i64) {
    for (i, e) in evs.iter().enumerate() {
        assert_eq!(e.event_type, w::EventType::Delete);
        assert_eq!(e.kv.mod_revision, rev);
        assert_eq!(e.kv.key, format!("p/{i:05}").into_bytes());
        let prev = e.prev_kv.as_ref().expect("prev_kv");
        assert_eq!(prev.value, format!("v{i}").into_bytes());
        assert_eq!(prev.version, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_prefix_delete_keeps_etcd_semantics() {
    let cluster = Cluster::start(1, &[]).await;
    let c = cluster.client(0).await;
    // Puts in txns of 100 (etcd's default txn op limit is 128).
    for chunk in 0..KEYS / 100 {
        let ops = (chunk * 100..(chunk + 1) * 100)
            .map(|i| w::RequestOp::Put(put(&format!("p/{i:05}"), &format!("v{i}"))))
            .collect();
        c.txn(w::TxnRequest {
            success: ops,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    c.put(put("q", "outside")).await.unwrap();
    let before = c.range(range("p/", "p0")).await.unwrap();
    assert_eq!(before.kvs.len(), KEYS);
    let before_rev = before.header.revision;

    let mut live = c
        .watch(w::WatchCreateRequest {
            key: b"p/".to_vec(),
            range_end: b"p0".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let del = c
        .delete_range(w::DeleteRangeRequest {
            key: b"p/".to_vec(),
            range_end: b"p0".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(del.deleted, KEYS as i64);
    let rev = del.header.revision;
    assert_eq!(rev, before_rev + 1, "one revision for the whole delete");
    check_deletes(&delete_events(&mut live, KEYS).await, rev);

    // Catch-up from the delete's revision (watch history), on a sub-range.
    let mut hist = c
        .watch(w::WatchCreateRequest {
            key: b"p/".to_vec(),
            range_end: b"p0".to_vec(),
            start_revision: rev,
            prev_kv: true,
            ..Default::default()
        })
        .await
        .unwrap();
    check_deletes(&delete_events(&mut hist, KEYS).await, rev);

    // Reads: nothing now, everything at the revision before, the key
    // outside the range untouched.
    assert!(c.range(range("p/", "p0")).await.unwrap().kvs.is_empty());
    let old = c
        .range(w::RangeRequest {
            revision: before_rev,
            ..range("p/", "p0")
        })
        .await
        .unwrap();
    assert_eq!(old.kvs.len(), KEYS);
    assert_eq!(c.get(b"q").await.unwrap().unwrap().value, b"outside");

    // A key put again after the delete starts a new life.
    let again = c
        .put(w::PutRequest {
            prev_kv: true,
            ..put("p/00007", "again")
        })
        .await
        .unwrap();
    assert!(again.prev_kv.is_none());
    let kv = c.get(b"p/00007").await.unwrap().unwrap();
    assert_eq!((kv.version, kv.create_revision), (1, rev + 1));

    // Compaction past the delete: old revisions are gone, the hash is
    // stable while the physical pass runs.
    let h1 = c.hash_kv(w::HashKvRequest { revision: 0 }).await.unwrap();
    c.compact(w::CompactionRequest {
        revision: rev + 1,
        physical: true,
    })
    .await
    .unwrap();
    let h2 = c.hash_kv(w::HashKvRequest { revision: 0 }).await.unwrap();
    assert_eq!(h2.compact_revision, rev + 1);
    assert_ne!(h1.compact_revision, h2.compact_revision);
    let gone = c
        .range(w::RangeRequest {
            revision: before_rev,
            ..range("p/", "p0")
        })
        .await;
    assert!(gone.is_err(), "{gone:?}");
    let now = c.range(range("p/", "p0")).await.unwrap();
    assert_eq!(keys(&now), ["p/00007"]);
}
