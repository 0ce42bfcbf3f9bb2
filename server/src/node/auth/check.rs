//! Which request needs which permission, as etcd 3.4 decides it
//! (`etcdserver/apply_auth.go`, `v3_server.go`, `v3rpc/maintenance.go`,
//! `server.go`'s membership checks), checked against one auth view.
//!
//! Checked with etcd 3.4.23 and etcdctl: Compact, LeaseGrant, LeaseKeepAlive,
//! LeaseTimeToLive, LeaseLeases, Status, Alarm, MoveLeader and MemberList
//! need nothing (not even a user); HashKV, Defragment and Snapshot are
//! admin-only and fail with the auth package's own text (`auth: ...`, gRPC
//! code Unknown); membership changes and auth management are admin-only
//! with `etcdserver: ...` errors.

use corekv_wire::ApiError;
use corekv_wire::messages as w;

use super::AuthView;
use super::perm::Access;
use super::token::AuthInfo;

/// etcd's isOpPermitted.
pub fn key_permitted(
    view: &AuthView,
    who: Option<&AuthInfo>,
    access: Access,
    key: &[u8],
    range_end: &[u8],
) -> Result<(), ApiError> {
    if !view.state.enabled {
        return Ok(());
    }
    let who = who.ok_or(ApiError::UserEmpty)?;
    if who.revision < view.state.revision {
        return Err(ApiError::AuthOldRevision);
    }
    match view.user_perms(&who.user) {
        Some(p) if p.permits(access, key, range_end) => Ok(()),
        _ => Err(ApiError::PermissionDenied),
    }
}

/// etcd's IsAdminPermitted.
pub fn admin_permitted(view: &AuthView, who: Option<&AuthInfo>) -> Result<(), ApiError> {
    if !view.state.enabled {
        return Ok(());
    }
    let who = who
        .filter(|w| !w.user.is_empty())
        .ok_or(ApiError::UserEmpty)?;
    match view.state.users.get(&who.user) {
        None => Err(ApiError::UserNotFound),
        Some(u) if !u.has_root_role() => Err(ApiError::PermissionDenied),
        Some(_) => Ok(()),
    }
}

/// The maintenance service's admin check answers the auth package's own
/// error (etcd 3.4 does not convert it to an `etcdserver:` status).
fn maintenance_admin(view: &AuthView, who: Option<&AuthInfo>) -> Result<(), ApiError> {
    admin_permitted(view, who).map_err(|e| match e {
        ApiError::UserEmpty => ApiError::AuthRawUserEmpty,
        ApiError::UserNotFound => ApiError::AuthRawUserNotFound,
        _ => ApiError::AuthRawPermissionDenied,
    })
}

pub fn range_op(
    view: &AuthView,
    who: Option<&AuthInfo>,
    key: &[u8],
    end: &[u8],
) -> Result<(), ApiError> {
    key_permitted(view, who, Access::Read, key, end)
}

fn put_op(
    view: &AuthView,
    who: Option<&AuthInfo>,
    p: &w::ArchivedPutRequest,
) -> Result<(), ApiError> {
    key_permitted(view, who, Access::Write, &p.key, &[])?;
    // Attaching a lease whose keys the user cannot write is refused at
    // apply (`PutAs`, `lease::apply::put_as`), where the keys are known;
    // not inside a txn (etcd 3.4 checks only a plain Put).
    if p.prev_kv {
        key_permitted(view, who, Access::Read, &p.key, &[])?;
    }
    Ok(())
}

fn delete_op(
    view: &AuthView,
    who: Option<&AuthInfo>,
    d: &w::ArchivedDeleteRangeRequest,
) -> Result<(), ApiError> {
    if d.prev_kv {
        key_permitted(view, who, Access::Read, &d.key, &d.range_end)?;
    }
    key_permitted(view, who, Access::Write, &d.key, &d.range_end)
}

fn txn_level(
    view: &AuthView,
    who: Option<&AuthInfo>,
    txn: &w::ArchivedTxnRequest,
    compare: &[w::ArchivedCompare],
    branches: [&[w::ArchivedRequestOp]; 2],
) -> Result<(), ApiError> {
    for c in compare {
        range_op(view, who, &c.key, &c.range_end)?;
    }
    for op in branches.into_iter().flatten() {
        match op {
            w::ArchivedRequestOp::Range(r) => range_op(view, who, &r.key, &r.range_end)?,
            w::ArchivedRequestOp::Put(p) => put_op(view, who, p)?,
            w::ArchivedRequestOp::DeleteRange(d) => delete_op(view, who, d)?,
            w::ArchivedRequestOp::Txn(i) => {
                // Validation guarantees the index is in range; a bad one is
                // refused rather than skipped.
                let n = txn
                    .nested
                    .get(i.to_native() as usize)
                    .ok_or_else(|| ApiError::MalformedRequest("nested txn index".into()))?;
                txn_level(view, who, txn, &n.compare, [&n.success, &n.failure])?;
            }
        }
    }
    Ok(())
}

/// etcd's checkTxnAuth: every compare needs read, every op its own access,
/// nested txns included.
pub fn txn_permitted(
    view: &AuthView,
    who: Option<&AuthInfo>,
    t: &w::ArchivedTxnRequest,
) -> Result<(), ApiError> {
    if !view.state.enabled {
        return Ok(());
    }
    txn_level(view, who, t, &t.compare, [&t.success, &t.failure])
}

/// Auth management: admin, except that a user may get itself and the roles
/// it holds; Authenticate needs nothing; `AssignToken` is internal.
fn auth_permitted(
    view: &AuthView,
    who: Option<&AuthInfo>,
    a: &w::ArchivedAuthRequest,
) -> Result<(), ApiError> {
    use w::ArchivedAuthRequest as A;
    match a {
        A::Authenticate(_) => Ok(()),
        A::UserGet { name } => match admin_permitted(view, who) {
            Err(_) if who.is_some_and(|w| w.user == name.as_str()) => Ok(()),
            other => other,
        },
        A::RoleGet { role } => match admin_permitted(view, who) {
            Err(_) if who.is_some_and(|w| view.state.has_role(&w.user, role)) => Ok(()),
            other => other,
        },
        A::Enable
        | A::Disable
        | A::Status
        | A::UserAdd(_)
        | A::UserList
        | A::UserDelete { .. }
        | A::UserChangePassword(_)
        | A::UserGrantRole(_)
        | A::UserRevokeRole(_)
        | A::RoleAdd { .. }
        | A::RoleList
        | A::RoleDelete { .. }
        | A::RoleGrantPermission(_)
        | A::RoleRevokePermission(_) => admin_permitted(view, who),
        A::AssignToken(_) => Err(internal("AssignToken")),
    }
}

/// Checks one client request against `view` for the caller `who` (None:
/// no credentials). Entries that carry an unchanged auth revision to apply
/// need no second check there (`stamp`).
pub fn request_permitted(
    view: &AuthView,
    who: Option<&AuthInfo>,
    req: &w::ArchivedRequest,
) -> Result<(), ApiError> {
    use w::ArchivedRequest as R;
    if !view.state.enabled {
        return match req {
            // Internal requests are refused from clients whatever the state.
            R::Auth(a @ w::ArchivedAuthRequest::AssignToken(_)) => auth_permitted(view, who, a),
            R::LeaseRevokeAs(_) => Err(internal("LeaseRevokeAs")),
            R::PutAs(_) => Err(internal("PutAs")),
            _ => Ok(()),
        };
    }
    match req {
        R::Range(r) => range_op(view, who, &r.key, &r.range_end),
        R::Put(p) => put_op(view, who, p),
        R::DeleteRange(d) => delete_op(view, who, d),
        R::Txn(t) => txn_permitted(view, who, t),
        R::WatchCreate(c) => range_op(view, who, &c.key, &c.range_end),
        // A revoke's attached keys are checked at apply (`LeaseRevokeAs`,
        // `lease::apply::revoke_as`); time-to-live's keys once the leader
        // answered (`calls::Admitted::check_answer`).
        R::Compact(_)
        | R::WatchCancel(_)
        | R::WatchProgress(_)
        | R::LeaseGrant(_)
        | R::LeaseRevoke(_)
        | R::LeaseKeepAlive(_)
        | R::LeaseTimeToLive(_)
        | R::LeaseLeases(_)
        | R::MemberList(_)
        | R::Status(_)
        | R::Alarm(_)
        | R::MoveLeader(_) => Ok(()),
        R::MemberAdd(_) | R::MemberRemove(_) | R::MemberUpdate(_) | R::MemberPromote(_) => {
            admin_permitted(view, who)
        }
        R::HashKv(_) | R::Defragment(_) | R::Snapshot(_) => maintenance_admin(view, who),
        R::Auth(a) => auth_permitted(view, who, a),
        R::LeaseRevokeAs(_) => Err(internal("LeaseRevokeAs")),
        R::PutAs(_) => Err(internal("PutAs")),
    }
}

fn internal(what: &str) -> ApiError {
    ApiError::MalformedRequest(format!("{what} is internal to the cluster"))
}

/// etcd's checkLeasePuts, for the lease module: revoking a lease (or
/// attaching it to a new key) needs write access to every key on it;
/// admins skip the per-key check.
pub fn lease_keys_permitted<'k>(
    view: &AuthView,
    who: Option<&AuthInfo>,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<(), ApiError> {
    if admin_permitted(view, who).is_ok() {
        return Ok(());
    }
    for k in keys {
        key_permitted(view, who, Access::Write, k, &[])?;
    }
    Ok(())
}

/// etcd's checkLeaseTimeToLive (3.4.26+, 3.5.9+; a TimeToLive with
/// `keys`): with auth enabled the caller must be known and may read every
/// key attached to the lease. An unknown lease (no keys) still needs a user.
pub fn lease_ttl_keys_permitted<'k>(
    view: &AuthView,
    who: Option<&AuthInfo>,
    keys: impl IntoIterator<Item = &'k [u8]>,
) -> Result<(), ApiError> {
    if !view.state.enabled {
        return Ok(());
    }
    let who = who.ok_or(ApiError::UserEmpty)?;
    for k in keys {
        key_permitted(view, Some(who), Access::Read, k, &[])?;
    }
    Ok(())
}
