//! The lease table: persisted leases and which keys each one holds.
//!
//! Both live in the meta table (`m`), so they are committed with the data
//! they cover (the same commit as the applied index), travel in snapshot
//! streams (which copy every meta entry) and are never hashed (HashKV covers
//! the key table only, as etcd's covers its key bucket only):
//!
//! ```text
//! m "lease/" id (i64 BE)           -> version u8 = 1 | ttl i64 LE | remaining_ttl i64 LE
//! m "lkey/"  id (i64 BE) user key  -> (empty)   one per live key attached to the lease
//! ```
//! `remaining_ttl` is the last checkpointed remaining TTL in seconds (0: none,
//! the full TTL applies).
//!
//! Invariant: a live key whose latest version carries lease `L != 0` has
//! exactly one `lkey/L/key` entry, and no other `lkey` entry names it. Puts
//! and deletes keep it (`reattach`), so opening a store never scans keys to
//! rebuild attachments, and revoking a lease reads only its own keys.
//! A put naming a lease that is not in the table is refused
//! (`LeaseNotFound`) before anything is written.

use super::store::ReadView;
use super::types::*;
use super::write::WriteBatch;
use crate::error::{Result, StorageError};
use crate::tree::{self, TreeRead};

const LEASE_PREFIX: &[u8] = b"mlease/";
const ATTACH_PREFIX: &[u8] = b"mlkey/";
const RECORD_VERSION: u8 = 1;
const RECORD_BYTES: usize = 17;

/// One persisted lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    pub id: i64,
    /// Granted TTL, seconds.
    pub ttl: i64,
    /// Last checkpointed remaining TTL, seconds; 0 when none.
    pub remaining_ttl: i64,
}

/// What revoking a lease did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRevokeResult {
    /// Keys deleted (all under one revision).
    pub deleted: i64,
    /// The store's revision after the revoke.
    pub revision: i64,
}

fn lease_key(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(LEASE_PREFIX.len() + 8);
    k.extend_from_slice(LEASE_PREFIX);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn attach_prefix(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(ATTACH_PREFIX.len() + 8);
    k.extend_from_slice(ATTACH_PREFIX);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn attach_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = attach_prefix(id);
    k.extend_from_slice(key);
    k
}

/// End bound of every tree key starting with `prefix` (`prefix` never ends
/// in 0xFF here: it ends in an id byte or `/`; carries handle the rest).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

fn encode(r: &LeaseRecord) -> [u8; RECORD_BYTES] {
    let mut b = [0u8; RECORD_BYTES];
    b[0] = RECORD_VERSION;
    b[1..9].copy_from_slice(&r.ttl.to_le_bytes());
    b[9..17].copy_from_slice(&r.remaining_ttl.to_le_bytes());
    b
}

fn decode(id: i64, b: &[u8]) -> Result<LeaseRecord> {
    if b.len() != RECORD_BYTES || b[0] != RECORD_VERSION {
        return Err(StorageError::corrupted(
            0,
            format!(
                "lease {id:x}: record of {} bytes, version {:?}",
                b.len(),
                b.first()
            ),
        ));
    }
    let at = |i: usize| {
        let mut x = [0u8; 8];
        x.copy_from_slice(&b[i..i + 8]);
        i64::from_le_bytes(x)
    };
    Ok(LeaseRecord {
        id,
        ttl: at(1),
        remaining_ttl: at(9),
    })
}

fn get_lease<T: TreeRead + ?Sized>(t: &T, id: i64) -> Result<Option<LeaseRecord>> {
    let Some(v) = tree::get(t, &lease_key(id))? else {
        return Ok(None);
    };
    Ok(Some(decode(id, &tree::load_value(t, v)?)?))
}

fn all_leases<T: TreeRead + ?Sized>(t: &T) -> Result<Vec<LeaseRecord>> {
    let mut out = Vec::new();
    let end = prefix_end(LEASE_PREFIX);
    tree::scan(t, LEASE_PREFIX, Some(&end), false, |k, v| {
        let id_bytes: [u8; 8] = k
            .get(LEASE_PREFIX.len()..)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| StorageError::corrupted(0, "lease table key length"))?;
        let id = i64::from_be_bytes(id_bytes);
        out.push(decode(id, &tree::load_value(t, v)?)?);
        Ok(true)
    })?;
    Ok(out)
}

/// Keys attached to `id`, in key order, at most `max` of them.
fn attached_keys<T: TreeRead + ?Sized>(t: &T, id: i64, max: usize) -> Result<Vec<Vec<u8>>> {
    let prefix = attach_prefix(id);
    let end = prefix_end(&prefix);
    let mut out = Vec::new();
    tree::scan_keys(t, &prefix, Some(&end), false, |k, _| {
        if out.len() >= max {
            return Ok(false);
        }
        let k = k.parts();
        out.push(k.slice(prefix.len(), k.len()).to_vec());
        Ok(true)
    })?;
    Ok(out)
}

impl WriteBatch<'_> {
    /// The lease `id` as of this batch (sees its own writes).
    pub fn lease(&self, id: i64) -> Result<Option<LeaseRecord>> {
        get_lease(&self.txn, id)
    }

    /// Records a new lease. `LeaseExists` when `id` is taken.
    pub fn lease_grant(&mut self, id: i64, ttl: i64) -> Result<LeaseRecord> {
        if get_lease(&self.txn, id)?.is_some() {
            return Err(StorageError::LeaseExists { id });
        }
        let rec = LeaseRecord {
            id,
            ttl,
            remaining_ttl: 0,
        };
        self.txn.put(&lease_key(id), &encode(&rec))?;
        Ok(rec)
    }

    /// Stores a checkpointed remaining TTL; false (nothing written) when
    /// the lease is gone (a checkpoint may race with its revoke).
    pub fn lease_checkpoint(&mut self, id: i64, remaining_ttl: i64) -> Result<bool> {
        let Some(mut rec) = get_lease(&self.txn, id)? else {
            return Ok(false);
        };
        rec.remaining_ttl = remaining_ttl;
        self.txn.put(&lease_key(id), &encode(&rec))?;
        Ok(true)
    }

    /// Deletes every key attached to `id` under one revision (one txn:
    /// watchers see all the deletes in one response), then the lease.
    /// `LeaseNotFound` when there is no such lease.
    pub fn lease_revoke(&mut self, id: i64) -> Result<LeaseRevokeResult> {
        if get_lease(&self.txn, id)?.is_none() {
            return Err(StorageError::LeaseNotFound { id });
        }
        let keys = attached_keys(&self.txn, id, usize::MAX)?;
        let deleted = keys.len() as i64;
        if !keys.is_empty() {
            let success = keys
                .into_iter()
                .map(|key| {
                    RequestOp::DeleteRange(DeleteRangeRequest {
                        key,
                        range_end: Vec::new(),
                        prev_kv: false,
                    })
                })
                .collect();
            self.txn(&TxnRequest {
                compare: Vec::new(),
                success,
                failure: Vec::new(),
            })?;
        }
        self.txn.delete(&lease_key(id))?;
        Ok(LeaseRevokeResult {
            deleted,
            revision: self.revision(),
        })
    }

    /// Keys attached to lease `id` as of this batch, in key order, at most
    /// `max` (what a revoke of it would delete now).
    pub fn lease_keys(&self, id: i64, max: usize) -> Result<Vec<Vec<u8>>> {
        attached_keys(&self.txn, id, max)
    }

    /// Refuses a put naming a lease the table does not hold.
    pub(crate) fn check_lease(&self, req: &PutRequest) -> Result<()> {
        if req.lease != 0 && !req.ignore_lease && get_lease(&self.txn, req.lease)?.is_none() {
            return Err(StorageError::LeaseNotFound { id: req.lease });
        }
        Ok(())
    }

    /// Moves `key`'s attachment from lease `old` to lease `new` (0: none).
    pub(crate) fn reattach(&mut self, key: &[u8], old: i64, new: i64) -> Result<()> {
        if old == new {
            return Ok(());
        }
        if old != 0 {
            self.txn.delete(&attach_key(old, key))?;
        }
        if new != 0 {
            self.txn.put(&attach_key(new, key), &[])?;
        }
        Ok(())
    }
}

impl ReadView {
    pub fn lease(&self, id: i64) -> Result<Option<LeaseRecord>> {
        get_lease(self.snapshot(), id)
    }

    /// Every lease, in id order (byte order of the big-endian id).
    pub fn leases(&self) -> Result<Vec<LeaseRecord>> {
        all_leases(self.snapshot())
    }

    /// Keys attached to lease `id`, in key order, at most `max`.
    pub fn lease_keys(&self, id: i64, max: usize) -> Result<Vec<Vec<u8>>> {
        attached_keys(self.snapshot(), id, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemBackend, Store, StoreOptions};
    use std::sync::Arc;

    fn store() -> Store {
        Store::open_with_backend(Arc::new(MemBackend::new()), StoreOptions::default()).unwrap()
    }

    fn put(b: &mut WriteBatch<'_>, key: &str, lease: i64) -> Result<PutResponse> {
        b.put(&PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })
    }

    #[test]
    fn unknown_lease_is_refused_and_nothing_written() {
        let s = store();
        let mut b = s.write().unwrap();
        let rev0 = b.revision();
        assert!(matches!(
            put(&mut b, "a", 7),
            Err(StorageError::LeaseNotFound { id: 7 })
        ));
        assert_eq!(b.revision(), rev0);
        b.lease_grant(7, 10).unwrap();
        assert!(matches!(
            b.lease_grant(7, 10),
            Err(StorageError::LeaseExists { id: 7 })
        ));
        put(&mut b, "a", 7).unwrap();
        b.commit(1, false).unwrap();
        let r = s.read().unwrap();
        assert_eq!(r.lease_keys(7, 10).unwrap(), vec![b"a".to_vec()]);
    }

    #[test]
    fn attachments_follow_puts_and_deletes() {
        let s = store();
        let mut b = s.write().unwrap();
        b.lease_grant(1, 10).unwrap();
        b.lease_grant(2, 10).unwrap();
        put(&mut b, "a", 1).unwrap();
        put(&mut b, "b", 1).unwrap();
        put(&mut b, "c", 1).unwrap();
        put(&mut b, "a", 2).unwrap(); // moves
        put(&mut b, "b", 0).unwrap(); // detaches
        b.put(&PutRequest {
            key: b"c".to_vec(),
            value: b"w".to_vec(),
            ignore_lease: true,
            ..Default::default()
        })
        .unwrap(); // keeps lease 1
        b.commit(1, false).unwrap();
        let r = s.read().unwrap();
        assert_eq!(r.lease_keys(1, 10).unwrap(), vec![b"c".to_vec()]);
        assert_eq!(r.lease_keys(2, 10).unwrap(), vec![b"a".to_vec()]);
        drop(r);
        let mut b = s.write().unwrap();
        b.delete_range(&DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: b"z".to_vec(),
            prev_kv: false,
        })
        .unwrap();
        b.commit(2, false).unwrap();
        let r = s.read().unwrap();
        assert!(r.lease_keys(1, 10).unwrap().is_empty());
        assert!(r.lease_keys(2, 10).unwrap().is_empty());
    }

    #[test]
    fn revoke_deletes_keys_in_one_revision() {
        let s = store();
        let mut b = s.write().unwrap();
        b.lease_grant(5, 10).unwrap();
        b.lease_grant(6, 10).unwrap();
        for k in ["x", "y", "z"] {
            put(&mut b, k, 5).unwrap();
        }
        put(&mut b, "other", 6).unwrap();
        b.commit(1, false).unwrap();
        let before = s.current_revision();
        let mut b = s.write().unwrap();
        let r = b.lease_revoke(5).unwrap();
        assert_eq!(r.deleted, 3);
        assert_eq!(r.revision, before + 1);
        assert!(matches!(
            b.lease_revoke(5),
            Err(StorageError::LeaseNotFound { id: 5 })
        ));
        let info = b.commit(2, false).unwrap();
        assert_eq!(info.events.len(), 3);
        assert!(info.events.iter().all(|e| e.kv.mod_revision == before + 1));
        let view = s.read().unwrap();
        assert_eq!(view.leases().unwrap().len(), 1);
        let all = view
            .range(&RangeRequest {
                key: vec![0],
                range_end: vec![0],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.kvs.len(), 1);
        assert_eq!(all.kvs[0].lease, 6);
    }

    #[test]
    fn snapshot_images_carry_leases_and_attachments() {
        let s = store();
        let mut b = s.write().unwrap();
        b.lease_grant(9, 30).unwrap();
        b.lease_checkpoint(9, 12).unwrap();
        put(&mut b, "a", 9).unwrap();
        b.commit(1, false).unwrap();
        let mut image = Vec::new();
        s.write_snapshot(&mut image).unwrap();
        let restored = Store::restore_snapshot_with_backend(
            Arc::new(MemBackend::new()),
            &mut image.as_slice(),
            StoreOptions::default(),
        )
        .unwrap();
        let view = restored.read().unwrap();
        assert_eq!(
            view.leases().unwrap(),
            vec![LeaseRecord {
                id: 9,
                ttl: 30,
                remaining_ttl: 12
            }]
        );
        assert_eq!(view.lease_keys(9, 10).unwrap(), vec![b"a".to_vec()]);
        assert_eq!(
            view.hash_kv(0).unwrap(),
            s.read().unwrap().hash_kv(0).unwrap()
        );
    }

    #[test]
    fn checkpoints_persist_and_leases_list_in_order() {
        let s = store();
        let mut b = s.write().unwrap();
        for id in [3, 1, 300, 2] {
            b.lease_grant(id, 60).unwrap();
        }
        assert!(b.lease_checkpoint(300, 17).unwrap());
        assert!(!b.lease_checkpoint(4, 17).unwrap());
        b.commit(1, false).unwrap();
        let got = s.read().unwrap().leases().unwrap();
        let ids: Vec<i64> = got.iter().map(|l| l.id).collect();
        assert_eq!(ids, vec![1, 2, 3, 300]);
        assert_eq!(got[3].remaining_ttl, 17);
        assert_eq!(s.read().unwrap().lease(2).unwrap().unwrap().ttl, 60);
    }
}
