//! Applying committed entries to the store: the one place where a
//! replicated request kind is turned into a store change.
//!
//! `replicated` is the one exhaustive match over request kinds (a new kind
//! fails to compile until someone decides whether it goes through Raft);
//! `apply_request` is the dispatch with one arm per replicated kind. Lease, alarm and auth logic live in their own modules and add
//! one arm (or one call) here.
//!
//! A batch of committed entries becomes one store commit that carries the
//! last entry's index (and term), so the store's applied index always
//! covers exactly the data it holds.

use corekv_raftcore::{ConfChange, Entry, EntryKind};
use corekv_storage::{CommitInfo, Store, WriteBatch};
use corekv_wire::ApiError;
use corekv_wire::messages as w;
use rkyv::util::AlignedVec;

use super::super::entry::{self, Origin};
use crate::kv;
use crate::node::alarm::{self, Alarms};
use crate::node::auth::{self, Auth};
use crate::node::lease::{self, lessor::Lessor};
use crate::node::membership;

/// How applying one request failed: the request is refused (the client gets
/// the error, the member goes on), or the store failed (the member stops).
pub enum Applied {
    Refused(ApiError),
    Fatal(String),
}

impl From<corekv_storage::StorageError> for Applied {
    fn from(e: corekv_storage::StorageError) -> Applied {
        if kv::is_fatal(&e) {
            Applied::Fatal(e.to_string())
        } else {
            Applied::Refused(kv::storage_error(e))
        }
    }
}

/// What applying one request may use besides the request itself.
pub struct ApplyCtx<'a, 'b> {
    pub batch: &'a mut WriteBatch<'b>,
    /// Header fields of every answer; `revision` is set per answer.
    pub header: w::ResponseHeader,
    pub lessor: &'a mut Lessor,
    /// Raft index of the entry (server-chosen lease ids derive from it).
    pub index: u64,
    pub now: std::time::Instant,
    /// Active alarms: decide refusals, changed by Alarm entries.
    pub alarms: &'a Alarms,
    pub auth: &'a Auth,
    /// The auth stamp the entry's request was checked with.
    pub auth_stamp: u64,
    /// Set when the request changed the membership record (MemberUpdate).
    pub membership: Option<crate::cluster::ClusterInfo>,
}

/// The lease state applying a batch changes along with the store.
pub struct LeaseCtx<'a> {
    pub lessor: &'a mut Lessor,
    /// Wall time of the apply (lease deadlines on the leader start here).
    pub now: std::time::Instant,
}

impl ApplyCtx<'_, '_> {
    fn header(&self, revision: i64) -> w::ResponseHeader {
        w::ResponseHeader {
            revision,
            ..self.header.clone()
        }
    }
}

/// A replicated request kind, borrowed from the archived request.
pub enum Replicated<'a> {
    Put(&'a w::ArchivedPutRequest),
    DeleteRange(&'a w::ArchivedDeleteRangeRequest),
    Txn(&'a w::ArchivedTxnRequest),
    Compact(&'a w::ArchivedCompactionRequest),
    /// Activate or deactivate (a GET is answered by the member).
    Alarm(&'a w::ArchivedAlarmRequest),
    LeaseGrant(&'a w::ArchivedLeaseGrantRequest),
    LeaseRevoke(&'a w::ArchivedLeaseRevokeRequest),
    /// A revoke under auth, with its caller (`auth::calls::Admitted`).
    LeaseRevokeAs(&'a w::ArchivedLeaseRevokeAsRequest),
    /// A put with a lease under auth, with its caller.
    PutAs(&'a w::ArchivedPutAsRequest),
    Auth(&'a w::ArchivedAuthRequest),
    /// New peer URLs (the other membership changes are Raft conf changes).
    MemberUpdate(&'a w::ArchivedMemberUpdateRequest),
}

/// Which request kinds go through Raft: the one exhaustive match over
/// request kinds on the write path (a new kind fails to compile here until
/// someone decides whether it is replicated).
pub fn replicated(req: &w::ArchivedRequest) -> Option<Replicated<'_>> {
    use w::ArchivedRequest as R;
    match req {
        R::Put(p) => Some(Replicated::Put(p)),
        R::DeleteRange(d) => Some(Replicated::DeleteRange(d)),
        R::Txn(t) => Some(Replicated::Txn(t)),
        R::Compact(c) => Some(Replicated::Compact(c)),
        R::Alarm(a) if alarm::is_replicated_action(a) => Some(Replicated::Alarm(a)),
        R::LeaseGrant(g) => Some(Replicated::LeaseGrant(g)),
        R::LeaseRevoke(r) => Some(Replicated::LeaseRevoke(r)),
        R::LeaseRevokeAs(r) => Some(Replicated::LeaseRevokeAs(r)),
        R::PutAs(p) => Some(Replicated::PutAs(p)),
        R::Auth(a) => auth::replicated(a).then_some(Replicated::Auth(a)),
        R::MemberUpdate(u) => Some(Replicated::MemberUpdate(u)),
        R::Range(_)
        | R::WatchCreate(_)
        | R::WatchCancel(_)
        | R::WatchProgress(_)
        | R::LeaseKeepAlive(_)
        | R::LeaseTimeToLive(_)
        | R::LeaseLeases(_)
        | R::MemberList(_)
        | R::MemberAdd(_)
        | R::MemberRemove(_)
        | R::MemberPromote(_)
        | R::Status(_)
        | R::HashKv(_)
        | R::Defragment(_)
        | R::Alarm(_)
        | R::MoveLeader(_)
        | R::Snapshot(_) => None,
    }
}

/// Whether a request goes through Raft.
pub fn is_replicated(req: &w::ArchivedRequest) -> bool {
    replicated(req).is_some()
}

/// Executes one replicated client request on the write batch: the apply
/// dispatch, one arm per replicated kind.
pub fn apply_request(
    ctx: &mut ApplyCtx<'_, '_>,
    req: &w::ArchivedRequest,
) -> Result<w::Response, Applied> {
    let Some(kind) = replicated(req) else {
        let reason = format!("{} is not a replicated request", req.name());
        return Err(Applied::Refused(ApiError::MalformedRequest(reason)));
    };
    ctx.auth
        .admit(req, ctx.auth_stamp)
        .map_err(Applied::Refused)?;
    alarm::check_apply(ctx.alarms, req).map_err(Applied::Refused)?;
    Ok(match kind {
        Replicated::Put(p) => {
            let r = ctx.batch.put(&kv::put_request(p))?;
            w::Response::Put(kv::put_response(ctx.header(r.revision), r))
        }
        Replicated::DeleteRange(d) => {
            let r = ctx.batch.delete_range(&kv::delete_request(d))?;
            w::Response::DeleteRange(kv::delete_response(ctx.header(r.revision), r))
        }
        Replicated::Txn(t) => {
            let r = ctx
                .batch
                .txn(&kv::txn_request(t).map_err(Applied::Refused)?)?;
            w::Response::Txn(kv::txn_response(ctx.header(r.revision), r))
        }
        Replicated::Compact(c) => {
            ctx.batch.compact(c.revision.to_native())?;
            w::Response::Compact(w::CompactionResponse {
                header: ctx.header(ctx.batch.revision()),
            })
        }
        Replicated::Alarm(a) => {
            let header = ctx.header(ctx.batch.revision());
            alarm::apply(ctx.alarms, ctx.batch, header, a).map_err(Applied::Refused)?
        }
        Replicated::LeaseGrant(g) => {
            let header = ctx.header.clone();
            lease::apply::grant(ctx.lessor, ctx.batch, g, ctx.index, ctx.now, header)?
        }
        Replicated::LeaseRevoke(r) => {
            let header = ctx.header.clone();
            lease::apply::revoke(ctx.lessor, ctx.batch, r.id.to_native(), header)?
        }
        Replicated::LeaseRevokeAs(r) => {
            let header = ctx.header.clone();
            lease::apply::revoke_as(ctx.lessor, ctx.batch, ctx.auth, r, header)?
        }
        Replicated::PutAs(p) => lease::apply::put_as(ctx.batch, ctx.auth, p, ctx.header.clone())?,
        Replicated::Auth(a) => {
            let header = ctx.header(ctx.batch.revision());
            let r = ctx.auth.apply(ctx.batch, a, ctx.index, header);
            w::Response::Auth(r.map_err(Applied::Refused)?)
        }
        Replicated::MemberUpdate(u) => {
            let header = ctx.header(0);
            let (resp, cluster) =
                membership::apply::update(ctx.batch, u, header).map_err(Applied::Refused)?;
            ctx.membership = Some(cluster);
            resp
        }
    })
}

/// The result of applying one batch of committed entries.
pub struct BatchApplied {
    /// Last entry index of the batch (the store's applied index now).
    pub last_index: u64,
    /// The answer of each client request, by who proposed it, with the
    /// entry's index.
    pub answers: Vec<(Origin, u64, Result<w::Response, ApiError>)>,
    /// Membership changes, in log order, for Raft to take.
    pub conf_changes: Vec<ConfChange>,
    /// The membership record after the batch, if the batch changed it.
    pub membership: Option<crate::cluster::ClusterInfo>,
    /// Client requests applied (refused ones included).
    pub requests: u64,
    pub commit: CommitInfo,
}

/// Applies `entries` (committed, in order, non-empty) to `store` in one
/// commit carrying the last index and term. Entries the store already holds
/// (a restart, or a newer snapshot image) are skipped. An error is fatal.
pub fn apply_batch(
    store: &Store,
    entries: &[Entry],
    header: &w::ResponseHeader,
    applied_term_key: &[u8],
    alarms: &Alarms,
    lease: LeaseCtx<'_>,
    auth: &Auth,
) -> Result<BatchApplied, String> {
    let Some(last) = entries.last() else {
        unreachable!("apply_batch is called with at least one entry")
    };
    let store_applied = store.applied_index();
    let mut batch = store.write().map_err(|e| format!("store: {e}"))?;
    let mut answers = Vec::new();
    let mut conf_changes = Vec::new();
    let mut membership = None;
    let mut requests = 0;
    let mut aligned = AlignedVec::<16>::new();
    // A leader's store image can be ahead of the Raft snapshot that came
    // with it: the store already holds the membership changes in between,
    // but Raft's configuration still needs them.
    for e in entries.iter().filter(|e| e.index <= store_applied) {
        if e.kind == EntryKind::ConfChange {
            let cc = ConfChange::decode(&e.data)
                .map_err(|err| format!("conf change entry {}: {err}", e.index))?;
            conf_changes.push(cc);
        }
    }
    for e in entries.iter().filter(|e| e.index > store_applied) {
        match e.kind {
            EntryKind::Normal if e.data.is_empty() => {}
            EntryKind::Normal => {
                let decoded = entry::decode(&e.data)
                    .map_err(|reason| format!("entry {}: {reason}", e.index))?;
                if decoded.kind == entry::KIND_INTERNAL {
                    let applied = lease::apply::internal(
                        &mut *lease.lessor,
                        &mut batch,
                        decoded.body,
                        lease.now,
                    );
                    match applied {
                        Ok(()) => {}
                        Err(lease::apply::InternalError::Malformed(reason)) => {
                            tracing::warn!(index = e.index, %reason, "internal entry refused");
                        }
                        Err(lease::apply::InternalError::Store(err)) => {
                            return Err(format!("apply of entry {}: {err}", e.index));
                        }
                    }
                    continue;
                }
                aligned.clear();
                aligned.extend_from_slice(decoded.body);
                let mut ctx = ApplyCtx {
                    batch: &mut batch,
                    header: header.clone(),
                    alarms,
                    lessor: &mut *lease.lessor,
                    index: e.index,
                    now: lease.now,
                    auth,
                    auth_stamp: decoded.auth_stamp,
                    membership: None,
                };
                let result = match rkyv::access::<w::ArchivedRequest, rkyv::rancor::Error>(&aligned)
                {
                    Ok(req) => apply_request(&mut ctx, req),
                    Err(e) => Err(Applied::Refused(ApiError::MalformedRequest(e.to_string()))),
                };
                if let Some(changed) = ctx.membership.take() {
                    membership = Some(changed);
                }
                let result = match result {
                    Ok(resp) => Ok(resp),
                    Err(Applied::Refused(api)) => Err(api),
                    Err(Applied::Fatal(reason)) => {
                        return Err(format!("apply of entry {}: {reason}", e.index));
                    }
                };
                requests += 1;
                answers.push((decoded.origin, e.index, result));
            }
            EntryKind::ConfChange => {
                let (cc, context) = ConfChange::decode_with_context(&e.data)
                    .map_err(|err| format!("conf change entry {}: {err}", e.index))?;
                let done = membership::apply::conf_change(&mut batch, &cc, context, header.clone())
                    .map_err(|err| format!("conf change entry {}: {err}", e.index))?;
                if let Some((origin, result)) = done.answer {
                    requests += 1;
                    answers.push((origin, e.index, result));
                }
                membership = Some(done.cluster);
                conf_changes.push(cc);
            }
        }
    }
    let last_index = last.index.max(store_applied);
    if last.index > store_applied {
        batch.put_meta(applied_term_key, &last.term.to_le_bytes());
    }
    let commit = batch
        .commit(last_index, false)
        .map_err(|e| format!("store commit: {e}"))?;
    Ok(BatchApplied {
        last_index,
        answers,
        conf_changes,
        membership,
        requests,
        commit,
    })
}
