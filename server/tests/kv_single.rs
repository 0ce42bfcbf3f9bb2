//! Every KV operation and error of the native protocol against one real
//! member.

mod common;

use common::*;
use corekv_wire::messages as w;
use corekv_wire::{ApiError, WireError};

fn api_err<T: std::fmt::Debug>(r: Result<T, WireError>) -> ApiError {
    match r {
        Err(WireError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_operations_follow_etcd_semantics() {
    let cluster = Cluster::start(1, &[]).await;
    let c = cluster.client(0).await;

    // Revisions start at 1; the first put makes 2.
    let r = c.put(put("a", "1")).await.unwrap();
    assert_eq!(r.header.revision, 2);
    assert!(r.header.cluster_id != 0 && r.header.member_id != 0 && r.header.raft_term != 0);
    c.put(put("b", "2")).await.unwrap();
    c.put(put("c", "3")).await.unwrap();
    let r = c
        .put(w::PutRequest {
            prev_kv: true,
            ..put("a", "11")
        })
        .await
        .unwrap();
    assert_eq!(r.prev_kv.unwrap().value, b"1");
    assert_eq!(r.header.revision, 5);

    // Single key, with versions and revisions.
    let r = c.range(range("a", "")).await.unwrap();
    let kv = &r.kvs[0];
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 5, 2));
    assert_eq!(r.count, 1);

    // Range, limit, count, keys-only, sort.
    let all = c.range(range("a", "d")).await.unwrap();
    assert_eq!(keys(&all), ["a", "b", "c"]);
    let limited = c
        .range(w::RangeRequest {
            limit: 2,
            ..range("a", "d")
        })
        .await
        .unwrap();
    assert_eq!(keys(&limited), ["a", "b"]);
    assert!(limited.more);
    assert_eq!(limited.count, 3);
    let counted = c
        .range(w::RangeRequest {
            count_only: true,
            ..range("a", "d")
        })
        .await
        .unwrap();
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 3);
    let ko = c
        .range(w::RangeRequest {
            keys_only: true,
            ..range("a", "d")
        })
        .await
        .unwrap();
    assert!(ko.kvs.iter().all(|kv| kv.value.is_empty()));
    let by_mod_desc = c
        .range(w::RangeRequest {
            sort_order: w::SortOrder::Descend,
            sort_target: w::SortTarget::Mod,
            ..range("a", "d")
        })
        .await
        .unwrap();
    assert_eq!(keys(&by_mod_desc), ["a", "c", "b"]);
    let from_key = c.range(range("b", "\0")).await.unwrap();
    assert_eq!(keys(&from_key), ["b", "c"]);
    let serializable = c
        .range(w::RangeRequest {
            serializable: true,
            ..range("a", "")
        })
        .await
        .unwrap();
    assert_eq!(serializable.kvs[0].value, b"11");

    // Past revision.
    let old = c
        .range(w::RangeRequest {
            revision: 2,
            ..range("a", "")
        })
        .await
        .unwrap();
    assert_eq!(old.kvs[0].value, b"1");

    // Delete with prev_kv; deleting nothing does not bump the revision.
    let d = c
        .delete_range(w::DeleteRangeRequest {
            key: b"b".to_vec(),
            range_end: b"d".to_vec(),
            prev_kv: true,
        })
        .await
        .unwrap();
    assert_eq!(d.deleted, 2);
    assert_eq!(d.prev_kvs.len(), 2);
    let rev = d.header.revision;
    let d = c
        .delete_range(w::DeleteRangeRequest {
            key: b"zz".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((d.deleted, d.header.revision), (0, rev));

    // Txn: compare on value, success and failure branches.
    let txn = |expect: &str| {
        w::Txn {
            compare: vec![w::Compare {
                result: w::CompareResult::Equal,
                target: w::CompareTarget::Value(expect.as_bytes().to_vec()),
                key: b"a".to_vec(),
                range_end: Vec::new(),
            }],
            success: vec![w::Op::Put(put("t", "yes")), w::Op::Range(range("a", ""))],
            failure: vec![w::Op::Put(put("t", "no"))],
        }
        .into_request()
    };
    let t = c.txn(txn("11")).await.unwrap();
    assert!(t.succeeded);
    assert_eq!(t.responses.len(), 2);
    let t = c.txn(txn("nope")).await.unwrap();
    assert!(!t.succeeded);
    assert_eq!(c.get(b"t").await.unwrap().unwrap().value, b"no");

    // Nested txn: the inner txn's branch is chosen by its own compare.
    let inner = w::Txn {
        compare: vec![w::Compare {
            result: w::CompareResult::Greater,
            target: w::CompareTarget::Version(0),
            key: b"t".to_vec(),
            range_end: Vec::new(),
        }],
        success: vec![w::Op::Put(put("nested", "inner-success"))],
        failure: vec![w::Op::Put(put("nested", "inner-failure"))],
    };
    let outer = w::Txn {
        success: vec![w::Op::Txn(inner), w::Op::Range(range("t", ""))],
        ..Default::default()
    };
    let t = c.txn(outer.into_request()).await.unwrap();
    assert!(t.succeeded);
    match &t.responses[0] {
        w::ResponseOp::Txn(i) => assert!(t.nested[*i as usize].succeeded),
        other => panic!("expected a nested txn response, got {other:?}"),
    }
    assert_eq!(
        c.get(b"nested").await.unwrap().unwrap().value,
        b"inner-success"
    );

    // Compaction, then compacted and future revisions.
    let current = c.range(range("a", "")).await.unwrap().header.revision;
    c.compact(w::CompactionRequest {
        revision: current,
        physical: true,
    })
    .await
    .unwrap();
    assert_eq!(
        api_err(
            c.range(w::RangeRequest {
                revision: 2,
                ..range("a", "")
            })
            .await
        ),
        ApiError::Compacted
    );
    assert_eq!(
        api_err(
            c.range(w::RangeRequest {
                revision: current + 100,
                ..range("a", "")
            })
            .await
        ),
        ApiError::FutureRev
    );
    assert_eq!(
        api_err(
            c.compact(w::CompactionRequest {
                revision: 2,
                physical: false
            })
            .await
        ),
        ApiError::Compacted
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_etcd_errors() {
    let cluster = Cluster::start(1, &["--max-request-bytes", "4096", "--max-txn-ops", "4"]).await;
    let c = cluster.client(0).await;

    assert_eq!(api_err(c.put(put("", "v")).await), ApiError::EmptyKey);
    assert_eq!(api_err(c.range(range("", "")).await), ApiError::EmptyKey);
    let big = "x".repeat(8192);
    assert_eq!(
        api_err(c.put(put("k", &big)).await),
        ApiError::RequestTooLarge
    );

    let many = w::Txn {
        success: (0..5)
            .map(|i| w::Op::Put(put(&format!("k{i}"), "v")))
            .collect(),
        ..Default::default()
    };
    assert_eq!(
        api_err(c.txn(many.into_request()).await),
        ApiError::TooManyOps
    );
    let dup = w::Txn {
        success: vec![w::Op::Put(put("k", "1")), w::Op::Put(put("k", "2"))],
        ..Default::default()
    };
    assert_eq!(
        api_err(c.txn(dup.into_request()).await),
        ApiError::DuplicateKey
    );
    assert_eq!(
        ApiError::DuplicateKey.message(),
        "etcdserver: duplicate key given in txn request"
    );

    // The connection stays usable after refusals.
    c.put(put("ok", "v")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refuses_puts_but_allows_deletes() {
    let cluster = Cluster::start(1, &["--quota-backend-bytes", "1"]).await;
    let c = cluster.client(0).await;
    assert_eq!(api_err(c.put(put("k", "v")).await), ApiError::NoSpace);
    let d = c
        .delete_range(w::DeleteRangeRequest {
            key: b"k".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.deleted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_acknowledged_writes() {
    let mut cluster = Cluster::start(1, &["--store-sync-entries", "7"]).await;
    let c = cluster.client(0).await;
    for i in 0..50 {
        c.put(put(&format!("k{i:03}"), &i.to_string()))
            .await
            .unwrap();
    }
    drop(c);
    // kill -9: the store has only its last durable checkpoint, the WAL has the rest.
    cluster.members[0].kill();
    cluster.members[0].start();
    cluster
        .wait_leader(std::time::Duration::from_secs(20))
        .await;
    let c = cluster.client(0).await;
    let r = c.range(range("k", "l")).await.unwrap();
    assert_eq!(r.count, 50, "log:\n{}", cluster.members[0].log());
    assert_eq!(r.header.revision, 51);
    // A clean stop exits 0.
    drop(c);
    let status = cluster.members[0].stop().expect("was running");
    assert!(status.success(), "exit status {status:?}");
}

/// Keys far longer than a page (stored as overflow keys) work end to end up
/// to the request limit, as in etcd: put, prev_kv, prefix range, history,
/// delete, and they survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_keys_up_to_the_request_limit() {
    let mut cluster = Cluster::start(1, &[]).await;
    let c = cluster.client(0).await;
    // Five 100 KB keys sharing a 100 KB prefix: separators between them are
    // long too.
    let base = "k".repeat(100_000);
    let long: Vec<String> = (0..5).map(|i| format!("{base}{i}")).collect();
    let mut first_rev = Vec::new();
    for (i, k) in long.iter().enumerate() {
        first_rev.push(
            c.put(put(k, &format!("v{i}")))
                .await
                .unwrap()
                .header
                .revision,
        );
    }
    let r = c
        .put(w::PutRequest {
            prev_kv: true,
            ..put(&long[2], "v2b")
        })
        .await
        .unwrap();
    assert_eq!(r.prev_kv.unwrap().value, b"v2");
    let r = c.range(range(&long[2], "")).await.unwrap();
    assert_eq!(
        (r.kvs[0].value.as_slice(), r.kvs[0].version),
        (&b"v2b"[..], 2)
    );
    let r = c
        .range(w::RangeRequest {
            revision: first_rev[2],
            ..range(&long[2], "")
        })
        .await
        .unwrap();
    assert_eq!(r.kvs[0].value, b"v2", "history of a long key");

    let prefix_end = format!("{}l", "k".repeat(99_999));
    let r = c.range(range(&base, &prefix_end)).await.unwrap();
    assert_eq!(keys(&r), long, "prefix range in key order");
    assert_eq!(r.count, 5);
    let r = c
        .range(w::RangeRequest {
            sort_order: w::SortOrder::Descend,
            ..range(&base, &prefix_end)
        })
        .await
        .unwrap();
    let mut rev_keys = long.clone();
    rev_keys.reverse();
    assert_eq!(keys(&r), rev_keys, "descending");

    c.delete_range(w::DeleteRangeRequest {
        key: long[0].clone().into_bytes(),
        ..Default::default()
    })
    .await
    .unwrap();
    // A 1 MiB key: inside the default 1.5 MiB request limit, like etcd.
    let huge = "h".repeat(1 << 20);
    c.put(put(&huge, "big-key")).await.unwrap();
    drop(c);

    cluster.members[0].stop();
    cluster.members[0].start();
    let c = cluster.client(0).await;
    let r = match c.range(range(&base, &prefix_end)).await {
        Ok(r) => r,
        Err(e) => panic!("{e}\nLOG:\n{}", cluster.members[0].log()),
    };
    assert_eq!(keys(&r), long[1..].to_vec(), "after delete and restart");
    let r = c.range(range(&huge, "")).await.unwrap();
    assert_eq!(r.kvs[0].key.len(), 1 << 20);
    assert_eq!(r.kvs[0].value, b"big-key");
}
