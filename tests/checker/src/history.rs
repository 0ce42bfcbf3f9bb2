//! What a client saw: operations with invoke/complete times and outcomes,
//! watch streams, and per-member hashes. Serialized as JSON by the
//! recorders (chaos runner, tests) and read back by the `corekv-checker`
//! binary.
//!
//! Keys and values are strings: the workloads that feed the checker write
//! unique printable values, which is what lets the checker tell which write
//! an observed value came from.

use serde::{Deserialize, Serialize};

/// A key-value as the store returns it (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareResult {
    Equal,
    NotEqual,
    Greater,
    Less,
}

/// What a txn compare looks at, with the operand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    Value(String),
    Version(i64),
    CreateRevision(i64),
    ModRevision(i64),
    Lease(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: String,
    pub result: CompareResult,
    pub target: CompareTarget,
}

/// One op of a txn branch (single keys: enough for compare-and-swap workloads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOp {
    Put {
        key: String,
        value: String,
        lease: i64,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
}

/// The result of one txn op.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnOpResult {
    Put,
    Delete { deleted: i64 },
    Get { kvs: Vec<Kv> },
}

/// A client request. `range_end` follows etcd: empty = the single key,
/// "\0" = every key from `key` on, otherwise the half-open range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Put {
        key: String,
        value: String,
        lease: i64,
    },
    Delete {
        key: String,
        range_end: String,
    },
    /// `revision == 0 && !serializable` is a linearizable read of the
    /// current state; anything else reads a past or possibly stale state.
    Range {
        key: String,
        range_end: String,
        revision: i64,
        serializable: bool,
    },
    Txn {
        compare: Vec<Compare>,
        success: Vec<TxnOp>,
        failure: Vec<TxnOp>,
    },
    Compact {
        revision: i64,
    },
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// A keep-alive of lease `id` (answered by the leader's lessor, no Raft
    /// round): the lease exists when it is answered with a TTL above 0.
    LeaseKeepAlive {
        id: i64,
    },
}

impl Request {
    /// True if applying it can change the store.
    pub fn is_write(&self) -> bool {
        match self {
            Request::Put { .. }
            | Request::Delete { .. }
            | Request::Txn { .. }
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. } => true,
            Request::Range { .. } | Request::LeaseKeepAlive { .. } => false,
        }
    }

    /// Values this request writes (unique per write in checker workloads).
    pub fn written_values(&self) -> Vec<(&str, &str)> {
        match self {
            Request::Put { key, value, .. } => vec![(key.as_str(), value.as_str())],
            Request::Txn {
                success, failure, ..
            } => success
                .iter()
                .chain(failure)
                .filter_map(|op| match op {
                    TxnOp::Put { key, value, .. } => Some((key.as_str(), value.as_str())),
                    TxnOp::Delete { .. } | TxnOp::Get { .. } => None,
                })
                .collect(),
            Request::Delete { .. }
            | Request::Range { .. }
            | Request::Compact { .. }
            | Request::LeaseGrant { .. }
            | Request::LeaseRevoke { .. }
            | Request::LeaseKeepAlive { .. } => Vec::new(),
        }
    }
}

/// The ops of the branch an answered txn ran, with their results.
pub fn txn_branch<'a>(
    req: &'a Request,
    resp: &'a Response,
) -> Option<(&'a [TxnOp], &'a [TxnOpResult])> {
    match (req, resp) {
        (
            Request::Txn {
                success, failure, ..
            },
            Response::Txn {
                succeeded, results, ..
            },
        ) => Some((if *succeeded { success } else { failure }, results)),
        _ => None,
    }
}

/// A successful answer; `revision` is the response header's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Put {
        revision: i64,
    },
    Delete {
        revision: i64,
        deleted: i64,
    },
    Range {
        revision: i64,
        kvs: Vec<Kv>,
    },
    Txn {
        revision: i64,
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    Compact {
        revision: i64,
    },
    LeaseGrant {
        revision: i64,
    },
    LeaseRevoke {
        revision: i64,
    },
    /// The TTL the lessor answered; 0 = the lease was not found (etcd).
    LeaseKeepAlive {
        ttl: i64,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Ok(Response),
    /// Refused for sure (validation, compacted, lease not found): not applied.
    Failed(String),
    /// Timed out or the connection was lost: may or may not have applied.
    Unknown(String),
}

/// One client operation. Times are nanoseconds from one clock shared by all
/// clients of the run; `complete_ns` of an unknown outcome is ignored (the
/// op may take effect any time after its invocation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub client: u32,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub request: Request,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    pub kind: EventKind,
    pub kv: Kv,
    pub prev_kv: Option<Kv>,
}

/// One watch response as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchResponse {
    pub header_revision: i64,
    pub events: Vec<WatchEvent>,
    pub canceled: bool,
    pub compact_revision: i64,
}

/// One watch stream (one create request) of a watcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchSegment {
    pub key: String,
    pub range_end: String,
    /// Requested start; 0 = from the revision after the created response's.
    pub start_revision: i64,
    pub prev_kv: bool,
    /// Header revision of the `created` response.
    pub created_revision: i64,
    pub responses: Vec<WatchResponse>,
}

/// A watcher: a sequence of streams, each resuming where the last ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watcher {
    pub id: u32,
    pub segments: Vec<WatchSegment>,
}

/// One member's HashKV answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberHash {
    pub member: String,
    pub revision: i64,
    pub compact_revision: i64,
    pub hash: u32,
}

/// Everything the checker looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Revision of the (empty) store before the first operation; etcd's is 1.
    #[serde(default = "first_revision")]
    pub initial_revision: i64,
    pub operations: Vec<Operation>,
    pub watchers: Vec<Watcher>,
    pub hashes: Vec<MemberHash>,
    /// The cluster's election timeout: a new leader's lessor gives every
    /// lease one more election timeout (etcd's `Promote(extend)`), which
    /// the latest allowed expiry of a lease includes.
    #[serde(default = "default_election_timeout_ms")]
    pub election_timeout_ms: u64,
    /// Times (nanoseconds, the operations' clock) at or before which a
    /// leader change may have happened: term changes the recorder observed
    /// and the ends of injected faults. Each restarts the TTL of every live
    /// lease, so each pushes the latest allowed expiry out.
    #[serde(default)]
    pub leader_changes_ns: Vec<u64>,
}

fn first_revision() -> i64 {
    1
}

fn default_election_timeout_ms() -> u64 {
    1000
}

impl Default for History {
    fn default() -> Self {
        History {
            initial_revision: first_revision(),
            operations: Vec::new(),
            watchers: Vec::new(),
            hashes: Vec::new(),
            election_timeout_ms: default_election_timeout_ms(),
            leader_changes_ns: Vec::new(),
        }
    }
}
