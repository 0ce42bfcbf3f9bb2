//! Hostile requests against a real member, over both protocols: every bad
//! request gets etcd's gRPC code and exact text (the same text on the native
//! protocol) and the member keeps serving. Connection-level abuse
//! (malformed bytes, idle floods, slowloris, stuck watchers) is in
//! hostile_conn.rs.
//!
//! Written against observable behaviour only (codes, texts, sockets), not
//! the gRPC front-end's internals, so it holds across front-end rewrites.

mod common;
#[path = "hostile/env.rs"]
mod env;

use std::time::Duration;

use common::put;
use corekv_wire::messages as w;
use corekv_wire::proto::etcdserverpb as pb;
use corekv_wire::{ApiError, WireError};
use env::*;
use pb::kv_client::KvClient;
use tonic::transport::Channel;

/// One bad request in both protocols' shapes.
struct Case {
    name: &'static str,
    native: Option<w::Request>,
    grpc: Option<Grpc>,
    want: ApiError,
}

enum Grpc {
    Put(pb::PutRequest),
    Range(pb::RangeRequest),
    Txn(pb::TxnRequest),
    Compact(pb::CompactionRequest),
    LeaseGrant(pb::LeaseGrantRequest),
}

async fn call_grpc(ch: &Channel, req: &Grpc) -> Result<(), tonic::Status> {
    let mut kv = KvClient::new(ch.clone());
    match req {
        Grpc::Put(r) => kv.put(r.clone()).await.map(drop),
        Grpc::Range(r) => kv.range(r.clone()).await.map(drop),
        Grpc::Txn(r) => kv.txn(r.clone()).await.map(drop),
        Grpc::Compact(r) => kv.compact(*r).await.map(drop),
        Grpc::LeaseGrant(r) => pb::lease_client::LeaseClient::new(ch.clone())
            .lease_grant(*r)
            .await
            .map(drop),
    }
}

fn n_txn_puts(keys: &[Vec<u8>]) -> w::Request {
    w::Request::Txn(w::TxnRequest {
        success: keys
            .iter()
            .map(|k| w::RequestOp::Put(n_put(k, b"v", 0)))
            .collect(),
        ..Default::default()
    })
}

fn g_txn_puts(keys: &[Vec<u8>]) -> Grpc {
    Grpc::Txn(pb::TxnRequest {
        success: keys
            .iter()
            .map(|k| pb::RequestOp {
                request: Some(pb::request_op::Request::RequestPut(g_put(k, b"v", 0))),
            })
            .collect(),
        ..Default::default()
    })
}

fn n_range_at(rev: i64) -> w::Request {
    w::Request::Range(w::RangeRequest {
        key: b"a".to_vec(),
        revision: rev,
        ..Default::default()
    })
}

fn g_range_at(rev: i64) -> Grpc {
    Grpc::Range(pb::RangeRequest {
        key: b(b"a"),
        revision: rev,
        ..Default::default()
    })
}

/// The request table. `current` is the store's revision, `compacted` the
/// compaction point set up by the caller.
fn cases(current: i64, compacted: i64) -> Vec<Case> {
    let big = vec![b'x'; 1_600_000];
    let many: Vec<Vec<u8>> = (0..129).map(|i| format!("k{i}").into_bytes()).collect();
    let dup = vec![b"d".to_vec(), b"d".to_vec()];
    vec![
        Case {
            name: "put with empty key",
            native: Some(w::Request::Put(n_put(b"", b"v", 0))),
            grpc: Some(Grpc::Put(g_put(b"", b"v", 0))),
            want: ApiError::EmptyKey,
        },
        Case {
            name: "range with empty key",
            native: Some(w::Request::Range(w::RangeRequest::default())),
            grpc: Some(Grpc::Range(pb::RangeRequest::default())),
            want: ApiError::EmptyKey,
        },
        Case {
            name: "value over max-request-bytes",
            native: Some(w::Request::Put(n_put(b"big", &big, 0))),
            grpc: Some(Grpc::Put(g_put(b"big", &big, 0))),
            want: ApiError::RequestTooLarge,
        },
        Case {
            name: "key over max-request-bytes",
            native: Some(w::Request::Put(n_put(&big, b"v", 0))),
            grpc: Some(Grpc::Put(g_put(&big, b"v", 0))),
            want: ApiError::RequestTooLarge,
        },
        Case {
            name: "txn with 129 ops",
            native: Some(n_txn_puts(&many)),
            grpc: Some(g_txn_puts(&many)),
            want: ApiError::TooManyOps,
        },
        Case {
            name: "txn putting one key twice",
            native: Some(n_txn_puts(&dup)),
            grpc: Some(g_txn_puts(&dup)),
            want: ApiError::DuplicateKey,
        },
        Case {
            name: "range with an unknown sort order",
            native: None,
            grpc: Some(Grpc::Range(pb::RangeRequest {
                key: b(b"a"),
                sort_order: 99,
                ..Default::default()
            })),
            want: ApiError::InvalidSortOption,
        },
        Case {
            name: "range with an unknown sort target",
            native: None,
            grpc: Some(Grpc::Range(pb::RangeRequest {
                key: b(b"a"),
                sort_order: 1,
                sort_target: 42,
                ..Default::default()
            })),
            want: ApiError::InvalidSortOption,
        },
        Case {
            name: "range at a future revision",
            native: Some(n_range_at(current + 1000)),
            grpc: Some(g_range_at(current + 1000)),
            want: ApiError::FutureRev,
        },
        Case {
            name: "range at a compacted revision",
            native: Some(n_range_at(compacted - 1)),
            grpc: Some(g_range_at(compacted - 1)),
            want: ApiError::Compacted,
        },
        Case {
            name: "compact at a future revision",
            native: Some(w::Request::Compact(w::CompactionRequest {
                revision: current + 1000,
                physical: false,
            })),
            grpc: Some(Grpc::Compact(pb::CompactionRequest {
                revision: current + 1000,
                physical: false,
            })),
            want: ApiError::FutureRev,
        },
        Case {
            name: "compact at the compacted revision",
            native: Some(w::Request::Compact(w::CompactionRequest {
                revision: compacted,
                physical: false,
            })),
            grpc: Some(Grpc::Compact(pb::CompactionRequest {
                revision: compacted,
                physical: false,
            })),
            want: ApiError::Compacted,
        },
        Case {
            name: "put with an unknown lease",
            native: Some(w::Request::Put(n_put(b"l", b"v", 0x1234_5678))),
            grpc: Some(Grpc::Put(g_put(b"l", b"v", 0x1234_5678))),
            want: ApiError::LeaseNotFound,
        },
        Case {
            name: "lease grant with a huge TTL",
            native: Some(w::Request::LeaseGrant(w::LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0,
            })),
            grpc: Some(Grpc::LeaseGrant(pb::LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0,
            })),
            want: ApiError::LeaseTtlTooLarge,
        },
    ]
}

/// Revision after a few writes and a compaction (current, compacted).
async fn history(env: &Env) -> (i64, i64) {
    for i in 0..6 {
        env.native.put(put("a", &i.to_string())).await.expect("put");
    }
    let current = env
        .native
        .status(w::StatusRequest {})
        .await
        .expect("status")
        .header
        .revision;
    let compacted = current - 2;
    env.native
        .compact(w::CompactionRequest {
            revision: compacted,
            physical: true,
        })
        .await
        .expect("compact");
    (current, compacted)
}

fn select(names: &[&str], env_cases: Vec<Case>) -> Vec<Case> {
    env_cases
        .into_iter()
        .filter(|c| names.contains(&c.name))
        .collect()
}

async fn run_cases(env: &Env, cases: Vec<Case>) {
    let native = unlimited_client(&env.native_addr()).await;
    let mut failures = Vec::new();
    for c in cases {
        if let Some(req) = &c.native {
            match native.request(req).await {
                Err(WireError::Api(e)) if e.message() == c.want.message() => {}
                other => failures.push(format!(
                    "native {}: want {:?}, got {:?}",
                    c.name,
                    c.want.message(),
                    other.map(|f| f.get().to_owned_response().map(|r| r.name()))
                )),
            }
        }
        if let Some(req) = &c.grpc {
            match call_grpc(&env.grpc, req).await {
                Err(s) if s.code() == c.want.grpc_code() && s.message() == c.want.message() => {}
                other => failures.push(format!(
                    "gRPC {}: want {:?} {:?}, got {:?}",
                    c.name,
                    c.want.grpc_code(),
                    c.want.message(),
                    other.map_err(|s| (s.code(), s.message().to_owned()))
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    env.assert_serving("bad requests").await;
}

const KV_CASES: &[&str] = &[
    "put with empty key",
    "range with empty key",
    "value over max-request-bytes",
    "key over max-request-bytes",
    "txn with 129 ops",
    "txn putting one key twice",
    "range with an unknown sort order",
    "range with an unknown sort target",
    "range at a future revision",
    "range at a compacted revision",
    "compact at a future revision",
    "compact at the compacted revision",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_kv_requests_get_etcd_errors_on_both_protocols() {
    let env = Env::start().await;
    let (current, compacted) = history(&env).await;
    run_cases(&env, select(KV_CASES, cases(current, compacted))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lease_requests_get_etcd_errors_on_both_protocols() {
    let env = Env::start().await;
    let (current, compacted) = history(&env).await;
    run_cases(
        &env,
        select(
            &["put with an unknown lease", "lease grant with a huge TTL"],
            cases(current, compacted),
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_revision_reads_the_current_state() {
    let env = Env::start().await;
    env.native.put(put("a", "1")).await.expect("put");
    let r = env
        .native
        .range(w::RangeRequest {
            key: b"a".to_vec(),
            revision: -5,
            ..Default::default()
        })
        .await
        .expect("native range at -5");
    assert_eq!(r.kvs.len(), 1);
    let mut kv = KvClient::new(env.grpc.clone());
    let r = kv
        .range(pb::RangeRequest {
            key: b(b"a"),
            revision: -5,
            ..Default::default()
        })
        .await
        .expect("gRPC range at -5")
        .into_inner();
    assert_eq!(r.kvs.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let env = Env::start().await;
    let (_, compacted) = history(&env).await;
    // Native.
    let mut ws = env
        .native
        .watch(w::WatchCreateRequest {
            key: b"a".to_vec(),
            start_revision: compacted - 1,
            ..Default::default()
        })
        .await
        .expect("native watch");
    let deadline = Duration::from_secs(10);
    let (compact_revision, reason) = loop {
        let f = tokio::time::timeout(deadline, ws.next())
            .await
            .expect("native watch answer")
            .expect("native watch frame")
            .expect("not ended");
        let r = f.get();
        if r.canceled {
            break (
                r.compact_revision.to_native(),
                r.cancel_reason.as_str().to_owned(),
            );
        }
    };
    assert_eq!(compact_revision, compacted);
    assert_eq!(reason, ApiError::Compacted.message());
    // gRPC.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b(b"a"),
                start_revision: compacted - 1,
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = pb::watch_client::WatchClient::new(env.grpc.clone())
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("gRPC watch")
        .into_inner();
    let r = loop {
        let r = tokio::time::timeout(deadline, stream.message())
            .await
            .expect("gRPC watch answer")
            .expect("gRPC watch message")
            .expect("not ended");
        if r.canceled {
            break r;
        }
    };
    assert_eq!(r.compact_revision, compacted);
    assert_eq!(r.cancel_reason, ApiError::Compacted.message());
    drop(tx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_message_over_the_receive_limit_is_resource_exhausted() {
    let env = Env::start().await;
    // Over max-request-bytes + 512 KiB: refused by gRPC itself.
    let mut kv = KvClient::new(env.grpc.clone()).max_encoding_message_size(64 << 20);
    match kv.put(g_put(b"huge", &vec![b'x'; 3 << 20], 0)).await {
        // grpc-go's text, as etcd answers it.
        Err(s)
            if s.code() == tonic::Code::ResourceExhausted
                && s.message()
                    .starts_with("grpc: received message larger than max (")
                && s.message().contains(" vs. ") => {}
        other => panic!("3 MiB put: want ResourceExhausted, got {other:?}"),
    }
    // On a Watch stream: the stream ends with the same status (etcd's
    // watch server returns the receive error).
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: vec![b'k'; 3 << 20].into(),
                ..Default::default()
            },
        )),
    })
    .await
    .unwrap();
    let mut stream = pb::watch_client::WatchClient::new(env.grpc.clone())
        .max_encoding_message_size(64 << 20)
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("gRPC watch")
        .into_inner();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch stream answers");
    match end {
        Err(s) if s.code() == tonic::Code::ResourceExhausted => {}
        other => panic!("3 MiB watch request: want ResourceExhausted, got {other:?}"),
    }
    drop(tx);
    env.assert_serving("oversized gRPC message").await;
}
