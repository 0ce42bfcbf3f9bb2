//! Coordination recipes on top of leases, txns and watches: locks and
//! elections, as etcd's `clientv3/concurrency` does them (and as etcd's
//! `v3lock`/`v3election` servers run them on the server side). They speak
//! any [`CoordKv`]: the shard's in-process request layer (`local.rs`, for the
//! gRPC services in `gateway::coord`) or a native-protocol client
//! (`corekv_wire::Client`, for `corekvctl`), so both share one
//! implementation.
//!
//! Layout, shared by both recipes: a contender for `name` owns the key
//! `name/<lease id in hex>`, put with its lease; the owner is the key under
//! `name/` with the lowest create revision. A waiter watches for the delete
//! of the key created just before its own (never all of them: no thundering
//! herd). A lease that expires deletes its keys and so passes ownership on.
//!
//! Fencing: a lock holder that acts on other systems must fence with the
//! lock key's create revision (`LockResponse.header.revision` / the key's
//! `create_revision`): a holder whose lease expired may still believe it
//! holds the lock. Within corekv, guard writes with a txn comparing the lock
//! key's create revision.

pub mod election;
pub mod local;
pub mod lock;

use corekv_wire::messages as w;
use corekv_wire::{ApiError, Client, WireError};

/// What the recipes need from a member.
#[allow(async_fn_in_trait)]
pub trait CoordKv {
    type Events: EventStream;
    async fn txn(&self, t: w::TxnRequest) -> Result<w::TxnResponse>;
    async fn range(&self, r: w::RangeRequest) -> Result<w::RangeResponse>;
    async fn delete(&self, key: &[u8]) -> Result<w::ResponseHeader>;
    /// Starts a watch; its responses (created, events, canceled) follow.
    async fn watch(&self, req: w::WatchCreateRequest) -> Result<Self::Events>;
}

/// The responses of one watch.
#[allow(async_fn_in_trait)]
pub trait EventStream {
    /// The next response; `None` once the watch ended.
    async fn next(&mut self) -> Result<Option<w::WatchResponse>>;
}

impl CoordKv for Client {
    type Events = corekv_wire::WatchStream;

    async fn txn(&self, t: w::TxnRequest) -> Result<w::TxnResponse> {
        Ok(Client::txn(self, t).await?)
    }

    async fn range(&self, r: w::RangeRequest) -> Result<w::RangeResponse> {
        Ok(Client::range(self, r).await?)
    }

    async fn delete(&self, key: &[u8]) -> Result<w::ResponseHeader> {
        let r = self
            .delete_range(w::DeleteRangeRequest {
                key: key.to_vec(),
                ..Default::default()
            })
            .await?;
        Ok(r.header)
    }

    async fn watch(&self, req: w::WatchCreateRequest) -> Result<Self::Events> {
        Ok(Client::watch(self, req).await?)
    }
}

impl EventStream for corekv_wire::WatchStream {
    async fn next(&mut self) -> Result<Option<w::WatchResponse>> {
        match corekv_wire::WatchStream::next(self).await? {
            Some(frame) => Ok(Some(frame.to_owned_watch()?)),
            None => Ok(None),
        }
    }
}

/// Why a recipe failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The in-process request layer refused a request.
    #[error("{}", .0.message())]
    Api(ApiError),
    /// The contender's key vanished while it waited (its lease expired or
    /// was revoked). etcd: `concurrency.ErrSessionExpired`.
    #[error("session expired")]
    SessionExpired,
    /// etcd: `concurrency.ErrElectionNotLeader`.
    #[error("election: not leader")]
    NotLeader,
    /// etcd: `concurrency.ErrElectionNoLeader`.
    #[error("election: no leader")]
    NoLeader,
    /// A watch ended early (compacted, or the server closed it).
    #[error("watch on {key} ended: {reason}")]
    WatchEnded { key: String, reason: String },
    /// A malformed request (etcd's messages for missing fields).
    #[error("{0}")]
    Invalid(&'static str),
}

pub type Result<T> = std::result::Result<T, CoordError>;

/// The end of the range of keys starting with `prefix` (etcd's
/// `GetPrefixRangeEnd`): the prefix with its last byte below 0xFF
/// incremented; `[0]` (everything) if there is none.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `name/` and the contender key `name/<lease hex>`.
pub fn contender_key(name: &[u8], lease: i64) -> (Vec<u8>, Vec<u8>) {
    let mut pfx = name.to_vec();
    pfx.push(b'/');
    let mut key = pfx.clone();
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    (pfx, key)
}

/// Range over `pfx` sorted by create revision, one key: the oldest
/// (`ascend`) or, below `max_create_revision`, the newest.
fn by_create(pfx: &[u8], ascend: bool, max_create_revision: i64) -> w::RangeRequest {
    w::RangeRequest {
        key: pfx.to_vec(),
        range_end: prefix_end(pfx),
        limit: 1,
        sort_target: w::SortTarget::Create,
        sort_order: if ascend {
            w::SortOrder::Ascend
        } else {
            w::SortOrder::Descend
        },
        max_create_revision,
        ..Default::default()
    }
}

/// The oldest key under `pfx` (the owner).
pub fn owner_range(pfx: &[u8]) -> w::RangeRequest {
    by_create(pfx, true, 0)
}

fn key_range(key: &[u8]) -> w::RangeRequest {
    w::RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn create_revision_is(key: &[u8], rev: i64) -> w::Compare {
    w::Compare {
        result: w::CompareResult::Equal,
        target: w::CompareTarget::CreateRevision(rev),
        key: key.to_vec(),
        range_end: Vec::new(),
    }
}

fn range_of(op: Option<&w::ResponseOp>) -> Option<&w::RangeResponse> {
    match op {
        Some(w::ResponseOp::Range(r)) => Some(r),
        _ => None,
    }
}

/// Waits until every key under `pfx` created at or below
/// `max_create_revision` is deleted, one predecessor at a time (etcd's
/// `waitDeletes`). Returns the header of the last range.
pub async fn wait_deletes(
    c: &impl CoordKv,
    pfx: &[u8],
    max_create_revision: i64,
) -> Result<w::ResponseHeader> {
    loop {
        let r = c.range(by_create(pfx, false, max_create_revision)).await?;
        let Some(last) = r.kvs.first() else {
            return Ok(r.header);
        };
        wait_delete(c, &last.key, r.header.revision).await?;
    }
}

/// Waits for a delete of `key` after `revision`.
async fn wait_delete(c: &impl CoordKv, key: &[u8], revision: i64) -> Result<()> {
    let mut ws = c
        .watch(w::WatchCreateRequest {
            key: key.to_vec(),
            start_revision: revision + 1,
            filters: vec![w::WatchFilterType::NoPut],
            ..Default::default()
        })
        .await?;
    let ended = |reason: String| CoordError::WatchEnded {
        key: String::from_utf8_lossy(key).into_owned(),
        reason,
    };
    loop {
        let Some(resp) = ws.next().await? else {
            return Err(ended("stream closed".into()));
        };
        if resp.canceled {
            return Err(ended(resp.cancel_reason));
        }
        if resp
            .events
            .iter()
            .any(|e| e.event_type == w::EventType::Delete)
        {
            return Ok(());
        }
    }
}
