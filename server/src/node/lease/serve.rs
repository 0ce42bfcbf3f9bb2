//! Answering the lease requests that do not go through Raft, for any front
//! end (native or gRPC): keep-alive and time-to-live ask shard 0 (which
//! asks the leader), the leases list reads the local store.

use corekv_wire::ApiError;
use corekv_wire::messages as w;
use tokio::sync::oneshot;

use super::{Answer, Ask, AskKind};
use crate::kv;
use crate::node::{CoreMsg, Shared};

/// Most keys a time-to-live answer lists (etcd lists all; a bound keeps an
/// answer within the frame limit).
pub const MAX_TTL_KEYS: usize = 100_000;

async fn ask(shared: &Shared, kind: AskKind, id: i64) -> Result<Answer, ApiError> {
    let (reply, rx) = oneshot::channel();
    shared
        .to_core
        .send(CoreMsg::Lease(Ask { kind, id, reply }))
        .await
        .map_err(|_| ApiError::Stopped)?;
    rx.await.map_err(|_| ApiError::Stopped)?
}

/// etcd: the granted TTL, or TTL 0 when the lease does not exist.
pub async fn keep_alive(shared: &Shared, id: i64) -> Result<w::Response, ApiError> {
    let ttl = match ask(shared, AskKind::KeepAlive, id).await? {
        Answer::Found { ttl, .. } => ttl,
        Answer::NotFound => 0,
    };
    Ok(w::Response::LeaseKeepAlive(w::LeaseKeepAliveResponse {
        header: shared.header(shared.store().current_revision()),
        id,
        ttl,
    }))
}

/// Waits until this member's store holds every write committed before the
/// call (ReadIndex in the Raft core).
async fn read_barrier(shared: &Shared) -> Result<(), ApiError> {
    let (reply, rx) = oneshot::channel();
    shared
        .to_core
        .send(CoreMsg::ReadIndex { reply })
        .await
        .map_err(|_| ApiError::Stopped)?;
    rx.await.map_err(|_| ApiError::Stopped)?
}

/// etcd: remaining and granted TTL, and the attached keys when asked;
/// TTL -1 when the lease does not exist. The remaining TTL comes from the
/// leader's lessor. The keys are the leader's too: with `keys` this member
/// first passes a read barrier (ReadIndex: the leader's commit index at the
/// time of the call, applied here), so a lagging follower does not answer
/// an older key set (etcd's leader answers from its lessor after
/// `waitAppliedIndex`).
pub async fn time_to_live(shared: &Shared, id: i64, keys: bool) -> Result<w::Response, ApiError> {
    let answer = ask(shared, AskKind::TimeToLive, id).await?;
    if keys && matches!(answer, Answer::Found { .. }) {
        read_barrier(shared).await?;
    }
    let view = shared.store().read().map_err(kv::storage_error)?;
    let header = shared.header(view.revision());
    let resp = match answer {
        Answer::Found { ttl, granted } => w::LeaseTimeToLiveResponse {
            header,
            id,
            ttl,
            granted_ttl: granted,
            keys: if keys {
                view.lease_keys(id, MAX_TTL_KEYS)
                    .map_err(kv::storage_error)?
            } else {
                Vec::new()
            },
        },
        Answer::NotFound => w::LeaseTimeToLiveResponse {
            header,
            id,
            ttl: -1,
            granted_ttl: 0,
            keys: Vec::new(),
        },
    };
    Ok(w::Response::LeaseTimeToLive(resp))
}

/// Every lease this member's store holds.
pub fn leases(shared: &Shared) -> Result<w::Response, ApiError> {
    let view = shared.store().read().map_err(kv::storage_error)?;
    let leases = view
        .leases()
        .map_err(kv::storage_error)?
        .into_iter()
        .map(|l| w::LeaseStatus { id: l.id })
        .collect();
    Ok(w::Response::LeaseLeases(w::LeaseLeasesResponse {
        header: shared.header(view.revision()),
        leases,
    }))
}
