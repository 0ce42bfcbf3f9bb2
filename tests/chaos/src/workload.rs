//! The clients: half speak the native protocol, half gRPC; each runs a
//! mixed workload on 16 keys (puts with unique values, linearizable and
//! serializable gets, prefix ranges, deletes, compare-and-swap txns,
//! two-key txns, and leases: grants, puts with a lease, keep-alives,
//! revokes, expiries; `leases.rs`) and records every operation. A client that hits a
//! connection error, an ambiguous error or a learner's refusal moves to the
//! next member.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use corekv_checker::history::{
    Compare, CompareResult, CompareTarget, Kv, Outcome, Request, Response, TxnOp, TxnOpResult,
};
use corekv_checker::recorder::Recorder;
use corekv_wire::messages as w;
use corekv_wire::proto::{etcdserverpb as pb, mvccpb};
use corekv_wire::{ApiError, Client, ClientOptions, WireError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

use crate::leases;

pub const KEYS: usize = 16;
/// Keys only lease puts write ("kl00".."kl07", inside the watched prefix).
const LEASE_KEYS: usize = 8;
/// Every workload key is in ["k", "l").
pub const PREFIX: &str = "k";
pub const PREFIX_END: &str = "l";
/// Share of a client's operations (besides due keep-alives) that are lease
/// grants, puts with a lease and revokes.
const LEASE_PERCENT: u32 = 12;
/// Client-side deadline of one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub native: String,
    pub client_url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Native,
    Grpc,
}

enum Conn {
    Native(Client),
    Grpc(Box<GrpcConn>),
}

struct GrpcConn {
    kv: pb::kv_client::KvClient<Channel>,
    lease: pb::lease_client::LeaseClient<Channel>,
}

pub async fn native_client(addr: &str) -> Result<Client, WireError> {
    let opts = ClientOptions {
        dial_timeout: Duration::from_millis(500),
        request_timeout: REQUEST_TIMEOUT,
        ..ClientOptions::default()
    };
    Client::connect(addr, opts).await
}

async fn connect(proto: Proto, e: &Endpoint) -> Option<Conn> {
    match proto {
        Proto::Native => native_client(&e.native).await.ok().map(Conn::Native),
        Proto::Grpc => {
            let ch = Channel::from_shared(e.client_url.clone())
                .ok()?
                .connect_timeout(Duration::from_millis(500))
                .timeout(REQUEST_TIMEOUT)
                .connect()
                .await
                .ok()?;
            Some(Conn::Grpc(Box::new(GrpcConn {
                kv: pb::kv_client::KvClient::new(ch.clone()),
                lease: pb::lease_client::LeaseClient::new(ch),
            })))
        }
    }
}

/// Refusals that mean "not applied" for sure; everything else (timeouts,
/// leader changes, a stopped member, lost connections) is ambiguous.
fn native_outcome(e: &WireError) -> Outcome {
    match e {
        WireError::Api(
            a @ (ApiError::EmptyKey
            | ApiError::TooManyOps
            | ApiError::DuplicateKey
            | ApiError::InvalidSortOption
            | ApiError::RequestTooLarge
            | ApiError::Compacted
            | ApiError::FutureRev
            | ApiError::LeaseNotFound
            | ApiError::NotCapable
            | ApiError::NotSupportedForLearner),
        ) => Outcome::Failed(a.message().to_owned()),
        other => Outcome::Unknown(other.to_string()),
    }
}

/// A learner refuses what it may not serve before anything happens
/// (etcd answers Unavailable, a code that is otherwise ambiguous).
fn learner_refusal(o: &Outcome) -> bool {
    matches!(o, Outcome::Failed(m) if m == ApiError::NotSupportedForLearner.message())
}

fn grpc_outcome(s: &tonic::Status) -> Outcome {
    use tonic::Code;
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange | Code::NotFound | Code::Unimplemented => {
            Outcome::Failed(s.message().to_owned())
        }
        Code::Unavailable if s.message() == ApiError::NotSupportedForLearner.message() => {
            Outcome::Failed(s.message().to_owned())
        }
        _ => Outcome::Unknown(format!("{:?}: {}", s.code(), s.message())),
    }
}

fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn kv_of(kv: &w::KeyValue) -> Kv {
    Kv {
        key: s(&kv.key),
        value: s(&kv.value),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn kv_of_pb(kv: &mvccpb::KeyValue) -> Kv {
    Kv {
        key: s(&kv.key),
        value: s(&kv.value),
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

fn b(x: &str) -> bytes::Bytes {
    bytes::Bytes::copy_from_slice(x.as_bytes())
}

fn rev_pb(h: &Option<pb::ResponseHeader>) -> i64 {
    h.as_ref().map_or(0, |h| h.revision)
}

/// Executes `req` on a native connection.
async fn run_native(c: &Client, req: &Request) -> Outcome {
    let r: Result<Response, WireError> = async {
        Ok(match req {
            Request::Put { key, value, lease } => Response::Put {
                revision: c
                    .put(w::PutRequest {
                        key: key.clone().into_bytes(),
                        value: value.clone().into_bytes(),
                        lease: *lease,
                        ..Default::default()
                    })
                    .await?
                    .header
                    .revision,
            },
            Request::Delete { key, range_end } => {
                let r = c
                    .delete_range(w::DeleteRangeRequest {
                        key: key.clone().into_bytes(),
                        range_end: range_end.clone().into_bytes(),
                        prev_kv: false,
                    })
                    .await?;
                Response::Delete {
                    revision: r.header.revision,
                    deleted: r.deleted,
                }
            }
            Request::Range {
                key,
                range_end,
                revision,
                serializable,
            } => {
                let r = c
                    .range(w::RangeRequest {
                        key: key.clone().into_bytes(),
                        range_end: range_end.clone().into_bytes(),
                        revision: *revision,
                        serializable: *serializable,
                        ..Default::default()
                    })
                    .await?;
                Response::Range {
                    revision: r.header.revision,
                    kvs: r.kvs.iter().map(kv_of).collect(),
                }
            }
            Request::Txn {
                compare,
                success,
                failure,
            } => {
                let op = |o: &TxnOp| match o {
                    TxnOp::Put { key, value, lease } => w::RequestOp::Put(w::PutRequest {
                        key: key.clone().into_bytes(),
                        value: value.clone().into_bytes(),
                        lease: *lease,
                        ..Default::default()
                    }),
                    TxnOp::Delete { key } => w::RequestOp::DeleteRange(w::DeleteRangeRequest {
                        key: key.clone().into_bytes(),
                        ..Default::default()
                    }),
                    TxnOp::Get { key } => w::RequestOp::Range(w::RangeRequest {
                        key: key.clone().into_bytes(),
                        ..Default::default()
                    }),
                };
                let r = c
                    .txn(w::TxnRequest {
                        compare: compare.iter().map(native_compare).collect(),
                        success: success.iter().map(op).collect(),
                        failure: failure.iter().map(op).collect(),
                        nested: Vec::new(),
                    })
                    .await?;
                let results = r
                    .responses
                    .iter()
                    .map(|x| match x {
                        w::ResponseOp::Put(_) => TxnOpResult::Put,
                        w::ResponseOp::DeleteRange(d) => TxnOpResult::Delete { deleted: d.deleted },
                        w::ResponseOp::Range(g) => TxnOpResult::Get {
                            kvs: g.kvs.iter().map(kv_of).collect(),
                        },
                        w::ResponseOp::Txn(_) => TxnOpResult::Put,
                    })
                    .collect();
                Response::Txn {
                    revision: r.header.revision,
                    succeeded: r.succeeded,
                    results,
                }
            }
            Request::Compact { revision } => Response::Compact {
                revision: c
                    .compact(w::CompactionRequest {
                        revision: *revision,
                        physical: false,
                    })
                    .await?
                    .header
                    .revision,
            },
            Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseKeepAlive { .. } => leases::run_native(c, req).await?,
        })
    }
    .await;
    match r {
        Ok(resp) => Outcome::Ok(resp),
        Err(e) => native_outcome(&e),
    }
}

fn native_compare(c: &Compare) -> w::Compare {
    w::Compare {
        result: match c.result {
            CompareResult::Equal => w::CompareResult::Equal,
            CompareResult::NotEqual => w::CompareResult::NotEqual,
            CompareResult::Greater => w::CompareResult::Greater,
            CompareResult::Less => w::CompareResult::Less,
        },
        target: match &c.target {
            CompareTarget::Value(v) => w::CompareTarget::Value(v.clone().into_bytes()),
            CompareTarget::Version(v) => w::CompareTarget::Version(*v),
            CompareTarget::CreateRevision(v) => w::CompareTarget::CreateRevision(*v),
            CompareTarget::ModRevision(v) => w::CompareTarget::ModRevision(*v),
            CompareTarget::Lease(v) => w::CompareTarget::Lease(*v),
        },
        key: c.key.clone().into_bytes(),
        range_end: Vec::new(),
    }
}

fn grpc_compare(c: &Compare) -> pb::Compare {
    use pb::compare::TargetUnion as U;
    let (target, u) = match &c.target {
        CompareTarget::Version(v) => (0, U::Version(*v)),
        CompareTarget::CreateRevision(v) => (1, U::CreateRevision(*v)),
        CompareTarget::ModRevision(v) => (2, U::ModRevision(*v)),
        CompareTarget::Value(v) => (3, U::Value(b(v))),
        CompareTarget::Lease(v) => (4, U::Lease(*v)),
    };
    pb::Compare {
        result: match c.result {
            CompareResult::Equal => 0,
            CompareResult::Greater => 1,
            CompareResult::Less => 2,
            CompareResult::NotEqual => 3,
        },
        target,
        key: b(&c.key),
        range_end: bytes::Bytes::new(),
        target_union: Some(u),
    }
}

fn grpc_op(o: &TxnOp) -> pb::RequestOp {
    use pb::request_op::Request as R;
    pb::RequestOp {
        request: Some(match o {
            TxnOp::Put { key, value, lease } => R::RequestPut(pb::PutRequest {
                key: b(key),
                value: b(value),
                lease: *lease,
                ..Default::default()
            }),
            TxnOp::Delete { key } => R::RequestDeleteRange(pb::DeleteRangeRequest {
                key: b(key),
                ..Default::default()
            }),
            TxnOp::Get { key } => R::RequestRange(pb::RangeRequest {
                key: b(key),
                ..Default::default()
            }),
        }),
    }
}

/// Executes `req` over gRPC.
async fn run_grpc(
    c: &mut pb::kv_client::KvClient<Channel>,
    l: &mut pb::lease_client::LeaseClient<Channel>,
    req: &Request,
) -> Outcome {
    let r: Result<Response, tonic::Status> = async {
        Ok(match req {
            Request::Put { key, value, lease } => {
                let r = c
                    .put(pb::PutRequest {
                        key: b(key),
                        value: b(value),
                        lease: *lease,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Response::Put {
                    revision: rev_pb(&r.header),
                }
            }
            Request::Delete { key, range_end } => {
                let r = c
                    .delete_range(pb::DeleteRangeRequest {
                        key: b(key),
                        range_end: b(range_end),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Response::Delete {
                    revision: rev_pb(&r.header),
                    deleted: r.deleted,
                }
            }
            Request::Range {
                key,
                range_end,
                revision,
                serializable,
            } => {
                let r = c
                    .range(pb::RangeRequest {
                        key: b(key),
                        range_end: b(range_end),
                        revision: *revision,
                        serializable: *serializable,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Response::Range {
                    revision: rev_pb(&r.header),
                    kvs: r.kvs.iter().map(kv_of_pb).collect(),
                }
            }
            Request::Txn {
                compare,
                success,
                failure,
            } => {
                use pb::response_op::Response as R;
                let r = c
                    .txn(pb::TxnRequest {
                        compare: compare.iter().map(grpc_compare).collect(),
                        success: success.iter().map(grpc_op).collect(),
                        failure: failure.iter().map(grpc_op).collect(),
                    })
                    .await?
                    .into_inner();
                let results = r
                    .responses
                    .iter()
                    .map(|x| match &x.response {
                        Some(R::ResponseRange(g)) => TxnOpResult::Get {
                            kvs: g.kvs.iter().map(kv_of_pb).collect(),
                        },
                        Some(R::ResponseDeleteRange(d)) => {
                            TxnOpResult::Delete { deleted: d.deleted }
                        }
                        Some(R::ResponsePut(_)) | Some(R::ResponseTxn(_)) | None => {
                            TxnOpResult::Put
                        }
                    })
                    .collect();
                Response::Txn {
                    revision: rev_pb(&r.header),
                    succeeded: r.succeeded,
                    results,
                }
            }
            Request::Compact { revision } => {
                let r = c
                    .compact(pb::CompactionRequest {
                        revision: *revision,
                        physical: false,
                    })
                    .await?
                    .into_inner();
                Response::Compact {
                    revision: rev_pb(&r.header),
                }
            }
            Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseKeepAlive { .. } => leases::run_grpc(l, req).await?,
        })
    }
    .await;
    match r {
        Ok(resp) => Outcome::Ok(resp),
        Err(e) => grpc_outcome(&e),
    }
}

/// One workload client.
pub struct Worker {
    pub id: u32,
    pub proto: Proto,
    pub endpoints: Vec<Endpoint>,
    pub rec: Arc<Recorder>,
    pub stop: Arc<AtomicBool>,
    pub seed: u64,
}

fn key(i: usize) -> String {
    format!("{PREFIX}{i:02}")
}

impl Worker {
    fn next_request(&self, rng: &mut StdRng, seq: u64, last_mod: &[i64]) -> Request {
        let k = rng.random_range(0..KEYS);
        let value = format!("c{}-{seq}", self.id);
        match rng.random_range(0..100) {
            0..35 => Request::Put {
                key: key(k),
                value,
                lease: 0,
            },
            35..60 => Request::Range {
                key: key(k),
                range_end: String::new(),
                revision: 0,
                serializable: false,
            },
            60..68 => Request::Range {
                key: key(k),
                range_end: String::new(),
                revision: 0,
                serializable: true,
            },
            68..73 => Request::Range {
                key: PREFIX.into(),
                range_end: PREFIX_END.into(),
                revision: 0,
                serializable: false,
            },
            73..80 => Request::Delete {
                key: key(k),
                range_end: String::new(),
            },
            80..94 => Request::Txn {
                compare: vec![Compare {
                    key: key(k),
                    result: CompareResult::Equal,
                    target: CompareTarget::ModRevision(last_mod[k]),
                }],
                success: vec![TxnOp::Put {
                    key: key(k),
                    value,
                    lease: 0,
                }],
                failure: vec![TxnOp::Get { key: key(k) }],
            },
            _ => {
                let k2 = (k + 1 + rng.random_range(0..KEYS - 1)) % KEYS;
                Request::Txn {
                    compare: Vec::new(),
                    success: vec![
                        TxnOp::Put {
                            key: key(k),
                            value: value.clone(),
                            lease: 0,
                        },
                        TxnOp::Put {
                            key: key(k2),
                            value: format!("{value}b"),
                            lease: 0,
                        },
                    ],
                    failure: Vec::new(),
                }
            }
        }
    }

    /// Runs until `stop`; returns the number of operations issued.
    pub async fn run(self) -> u64 {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut target = self.id as usize % self.endpoints.len();
        let mut conn: Option<Conn> = None;
        let mut last_mod = vec![0i64; KEYS];
        let mut seq = 0u64;
        let mut book = leases::Book::new(self.id);
        while !self.stop.load(Ordering::Relaxed) {
            let Some(c) = conn.as_mut() else {
                conn = connect(self.proto, &self.endpoints[target]).await;
                if conn.is_none() {
                    target = (target + 1) % self.endpoints.len();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            };
            seq += 1;
            let req = match book.due_keep_alive(Instant::now()) {
                Some(keep_alive) => keep_alive,
                None if rng.random_range(0..100) < LEASE_PERCENT => {
                    // Mostly keys only lease puts write (so keys live until
                    // their lease ends), sometimes the shared ones.
                    let k = if rng.random_bool(0.75) {
                        format!("{PREFIX}l{:02}", rng.random_range(0..LEASE_KEYS))
                    } else {
                        key(rng.random_range(0..KEYS))
                    };
                    book.next_request(&mut rng, k, format!("c{}-{seq}", self.id))
                }
                None => self.next_request(&mut rng, seq, &last_mod),
            };
            let invoke = self.rec.now_ns();
            let outcome = match c {
                Conn::Native(n) => run_native(n, &req).await,
                Conn::Grpc(g) => run_grpc(&mut g.kv, &mut g.lease, &req).await,
            };
            if let Outcome::Ok(resp) = &outcome {
                learn(resp, &mut last_mod);
            }
            book.learn(&req, &outcome, &mut rng);
            // A member that failed or is a learner (re-added by a
            // membership fault): go to the next one.
            let drop_conn = matches!(outcome, Outcome::Unknown(_)) || learner_refusal(&outcome);
            self.rec.record(self.id, invoke, req, outcome);
            if drop_conn {
                conn = None;
                target = (target + 1) % self.endpoints.len();
            }
        }
        seq
    }
}

/// Remembers mod revisions seen, so CAS txns compare against real ones.
fn learn(resp: &Response, last_mod: &mut [i64]) {
    let mut note = |kvs: &[Kv]| {
        for kv in kvs {
            if let Some(i) = kv
                .key
                .strip_prefix(PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|i| *i < KEYS)
            {
                last_mod[i] = kv.mod_revision;
            }
        }
    };
    match resp {
        Response::Range { kvs, .. } => note(kvs),
        Response::Txn { results, .. } => {
            for r in results {
                if let TxnOpResult::Get { kvs } = r {
                    note(kvs);
                }
            }
        }
        _ => {}
    }
}

/// Records a request through a native client (admin and final operations).
pub async fn record_native(rec: &Recorder, client_id: u32, c: &Client, req: Request) -> Outcome {
    let invoke = rec.now_ns();
    let outcome = run_native(c, &req).await;
    rec.record(client_id, invoke, req, outcome.clone());
    outcome
}
