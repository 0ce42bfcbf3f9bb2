//! Applying lease entries: client grants and revokes, and the internal
//! revoke/checkpoint entries. Each call changes the store batch and the
//! lessor together; both are the same on every member because both are a
//! function of the log (the server-chosen id included: it is derived from
//! the entry index).

use std::time::Instant;

use corekv_storage::{StorageError, WriteBatch};
use corekv_wire::messages as w;

use super::internal::Internal;
use super::lessor::Lessor;
use crate::kv;
use crate::node::auth::Auth;
use crate::node::auth::check::{admin_permitted, lease_keys_permitted};
use crate::node::auth::token::AuthInfo;
use crate::node::replica::apply::Applied;

/// Grant: `id` 0 means the server picks one. The TTL is raised to the
/// minimum TTL. `LeaseExists` when the id is taken.
pub fn grant(
    lessor: &mut Lessor,
    batch: &mut WriteBatch<'_>,
    req: &w::ArchivedLeaseGrantRequest,
    index: u64,
    now: Instant,
    header: w::ResponseHeader,
) -> Result<w::Response, StorageError> {
    let id = match req.id.to_native() {
        0 => lessor.choose_id(index),
        id => id,
    };
    let ttl = lessor.effective_ttl(req.ttl.to_native());
    batch.lease_grant(id, ttl)?;
    lessor.on_grant(id, ttl, now);
    Ok(w::Response::LeaseGrant(w::LeaseGrantResponse {
        header: w::ResponseHeader {
            revision: batch.revision(),
            ..header
        },
        id,
        ttl,
        error: String::new(),
    }))
}

/// Revoke: the lease's keys go in one revision. `LeaseNotFound` when the
/// lease does not exist.
pub fn revoke(
    lessor: &mut Lessor,
    batch: &mut WriteBatch<'_>,
    id: i64,
    header: w::ResponseHeader,
) -> Result<w::Response, StorageError> {
    let r = batch.lease_revoke(id)?;
    lessor.on_revoke(id);
    Ok(w::Response::LeaseRevoke(w::LeaseRevokeResponse {
        header: w::ResponseHeader {
            revision: r.revision,
            ..header
        },
    }))
}

/// A revoke under auth (`LeaseRevokeAs`): etcd's `checkLeasePuts` at
/// apply, where the attached keys are the ones the revoke deletes: an admin
/// may revoke any lease; anyone else needs write access to every key
/// attached to it (a lease without keys needs none, not even a user). An
/// unknown lease is `LeaseNotFound`, as without auth.
pub fn revoke_as(
    lessor: &mut Lessor,
    batch: &mut WriteBatch<'_>,
    auth: &Auth,
    req: &w::ArchivedLeaseRevokeAsRequest,
    header: w::ResponseHeader,
) -> Result<w::Response, Applied> {
    let id = req.id.to_native();
    keys_permitted(batch, auth, id, &req.user, req.auth_revision.to_native())?;
    Ok(revoke(lessor, batch, id, header)?)
}

/// A put naming a lease under auth (`PutAs`): etcd's `checkLeasePuts` in
/// its Put, against the keys already on the lease (as many as a revoke by
/// this caller would have to be allowed to delete), then the put.
pub fn put_as(
    batch: &mut WriteBatch<'_>,
    auth: &Auth,
    req: &w::ArchivedPutAsRequest,
    header: w::ResponseHeader,
) -> Result<w::Response, Applied> {
    let lease = req.put.lease.to_native();
    keys_permitted(batch, auth, lease, &req.user, req.auth_revision.to_native())?;
    let r = batch.put(&kv::put_request(&req.put))?;
    let header = w::ResponseHeader {
        revision: r.revision,
        ..header
    };
    Ok(w::Response::Put(kv::put_response(header, r)))
}

/// `user` (empty: no credentials) at `auth_revision` may write every key
/// attached to lease `id` now; an admin always. An unknown lease has no
/// keys, so nothing to check (the caller's own error follows).
fn keys_permitted(
    batch: &WriteBatch<'_>,
    auth: &Auth,
    id: i64,
    user: &str,
    auth_revision: u64,
) -> Result<(), Applied> {
    let who = (!user.is_empty()).then(|| AuthInfo {
        user: user.to_owned(),
        revision: auth_revision,
    });
    let view = auth.view();
    // Most calls under auth are an admin's: no key listing for them.
    if admin_permitted(&view, who.as_ref()).is_ok() {
        return Ok(());
    }
    let keys = batch.lease_keys(id, usize::MAX)?;
    lease_keys_permitted(&view, who.as_ref(), keys.iter().map(Vec::as_slice))
        .map_err(Applied::Refused)
}

/// An internal entry. Revokes of leases that are already gone and
/// checkpoints of such leases are no-ops (a client revoke may have won the
/// race). A body that does not parse is an error (the entry is refused).
pub fn internal(
    lessor: &mut Lessor,
    batch: &mut WriteBatch<'_>,
    body: &[u8],
    now: Instant,
) -> Result<(), InternalError> {
    match Internal::decode(body).map_err(InternalError::Malformed)? {
        Internal::RevokeExpired(ids) => {
            for id in ids {
                match batch.lease_revoke(id) {
                    Ok(_) => lessor.on_revoke(id),
                    Err(StorageError::LeaseNotFound { .. }) => {}
                    Err(e) => return Err(InternalError::Store(e)),
                }
            }
        }
        Internal::Checkpoint(cps) => {
            for (id, remaining) in cps {
                if batch
                    .lease_checkpoint(id, remaining)
                    .map_err(InternalError::Store)?
                {
                    lessor.on_checkpoint(id, remaining, now);
                }
            }
        }
    }
    Ok(())
}

#[derive(Debug)]
pub enum InternalError {
    /// The entry body does not parse: refused, the member goes on.
    Malformed(String),
    /// The store failed.
    Store(StorageError),
}

#[cfg(test)]
mod tests {
    use super::super::lessor::LessorConfig;
    use super::*;
    use corekv_storage::{MemBackend, PutRequest, Store, StoreOptions};
    use std::sync::Arc;

    fn archived_grant(ttl: i64, id: i64) -> rkyv::util::AlignedVec {
        let req = w::LeaseGrantRequest { ttl, id };
        rkyv::to_bytes::<rkyv::rancor::Error>(&req).unwrap()
    }

    fn grant_bytes(
        l: &mut Lessor,
        b: &mut WriteBatch<'_>,
        ttl: i64,
        id: i64,
        index: u64,
    ) -> Result<w::LeaseGrantResponse, StorageError> {
        let bytes = archived_grant(ttl, id);
        let req =
            rkyv::access::<w::ArchivedLeaseGrantRequest, rkyv::rancor::Error>(&bytes).unwrap();
        match grant(
            l,
            b,
            req,
            index,
            Instant::now(),
            w::ResponseHeader::default(),
        )? {
            w::Response::LeaseGrant(g) => Ok(g),
            other => panic!("unexpected {}", other.name()),
        }
    }

    #[test]
    fn grant_revoke_and_internal_entries() {
        let store =
            Store::open_with_backend(Arc::new(MemBackend::new()), StoreOptions::default()).unwrap();
        let mut l = Lessor::new(LessorConfig::default());
        let mut b = store.write().unwrap();
        let g = grant_bytes(&mut l, &mut b, 1, 0, 10).unwrap();
        assert!(g.id > 0);
        assert_eq!(g.ttl, 2, "raised to the minimum TTL");
        assert!(matches!(
            grant_bytes(&mut l, &mut b, 5, g.id, 11),
            Err(StorageError::LeaseExists { .. })
        ));
        grant_bytes(&mut l, &mut b, 30, 77, 12).unwrap();
        b.put(&PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 77,
            ..Default::default()
        })
        .unwrap();
        let now = Instant::now();
        internal(
            &mut l,
            &mut b,
            &Internal::Checkpoint(vec![(77, 9), (12345, 1)]).encode(),
            now,
        )
        .unwrap();
        assert_eq!(b.lease(77).unwrap().unwrap().remaining_ttl, 9);
        assert_eq!(l.time_to_live(77, now), Some((9, 30)));
        internal(
            &mut l,
            &mut b,
            &Internal::RevokeExpired(vec![77, 999]).encode(),
            now,
        )
        .unwrap();
        assert!(!l.contains(77));
        assert!(b.lease(77).unwrap().is_none());
        assert!(matches!(
            revoke(&mut l, &mut b, 77, w::ResponseHeader::default()),
            Err(StorageError::LeaseNotFound { .. })
        ));
        revoke(&mut l, &mut b, g.id, w::ResponseHeader::default()).unwrap();
        assert!(l.is_empty());
        assert!(matches!(
            internal(&mut l, &mut b, b"\x07", now),
            Err(InternalError::Malformed(_))
        ));
    }
}
