//! The write batch: every mutating op gets its own main revision, all ops
//! land in one tree commit.

use super::keys::{self, Record};
use super::range;
use super::read;
use super::store::StoreInner;
use super::types::*;
use crate::error::{Result, StorageError};
use crate::page::PAGE_SIZE;
use crate::tree;
use crate::txn::TreeTxn;
use crate::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

/// The exclusive write batch (see [`super::Store::write`]).
///
/// Validation errors (`KeyNotProvided`, `KeyTooLarge`, `ValueTooLarge`,
/// `NoSpace`, `KeyNotFound`, `Compacted`, `FutureRevision`) are returned
/// before the op changes anything, so the batch can go on. After any other
/// error (IO, `Corrupted`) drop the batch: dropping rolls it back.
pub struct WriteBatch<'a> {
    pub(crate) txn: TreeTxn<'a>,
    pub(crate) store: &'a StoreInner,
    pub(crate) rev: i64,
    pub(crate) compacted: i64,
    pub(crate) compact_done: i64,
    pub(crate) events: Vec<Event>,
    /// Compaction sweep state (see `compact.rs`), stored back into the
    /// store only when this batch commits.
    pub(crate) sweep: Option<super::compact::Sweep>,
    /// First error of an infallible-signature call (`put_meta`), returned by `commit`.
    pub(crate) deferred_err: Option<StorageError>,
}

/// Revision allocation inside one op (or one txn): main revision plus sub counter.
struct OpRev {
    main: i64,
    sub: i64,
}

impl OpRev {
    /// Revision reads inside this op observe: the op's own writes once it made any.
    fn read_rev(&self) -> i64 {
        if self.sub > 0 {
            self.main
        } else {
            self.main - 1
        }
    }
}

fn check_key(key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(StorageError::KeyNotProvided);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::KeyTooLarge {
            len: key.len(),
            max: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

impl<'a> WriteBatch<'a> {
    /// Current main revision inside the batch.
    pub fn revision(&self) -> i64 {
        self.rev
    }

    pub fn compacted_revision(&self) -> i64 {
        self.compacted
    }

    fn check_quota(&self) -> Result<()> {
        let size_bytes = self.txn.w.page_count * PAGE_SIZE as u64;
        let quota_bytes = self.store.opts.quota_bytes;
        if size_bytes >= quota_bytes {
            return Err(StorageError::NoSpace {
                size_bytes,
                quota_bytes,
            });
        }
        Ok(())
    }

    fn validate_put(&self, req: &PutRequest) -> Result<()> {
        check_key(&req.key)?;
        if req.value.len() > MAX_VALUE_BYTES {
            return Err(StorageError::ValueTooLarge {
                len: req.value.len(),
                max: MAX_VALUE_BYTES,
            });
        }
        self.check_quota()?;
        self.check_lease(req)
    }

    pub fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        self.validate_put(req)?;
        let mut r = OpRev {
            main: self.rev + 1,
            sub: 0,
        };
        let resp = self.apply_put(req, &mut r)?;
        self.rev = r.main;
        Ok(resp)
    }

    fn apply_put(&mut self, req: &PutRequest, r: &mut OpRev) -> Result<PutResponse> {
        let prev = read::get_kv(&self.txn, &req.key, i64::MAX)?;
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(StorageError::KeyNotFound);
        }
        let value: &[u8] = match (&prev, req.ignore_value) {
            (Some(p), true) => &p.value,
            _ => &req.value,
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let (create, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (r.main, 1),
        };
        let rec = Record {
            tombstone: false,
            create,
            version,
            lease,
        };
        let value = value.to_vec();
        self.write_version(&req.key, r.main, r.sub, &rec, &value)?;
        self.reattach(&req.key, prev.as_ref().map_or(0, |p| p.lease), lease)?;
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: create,
            mod_revision: r.main,
            version,
            value,
            lease,
        };
        r.sub += 1;
        // The event owns the previous version; the response gets a copy
        // only when asked for it.
        let prev_kv = if req.prev_kv { prev.clone() } else { None };
        self.events.push(Event {
            kind: EventKind::Put,
            kv,
            prev_kv: prev,
        });
        Ok(PutResponse {
            prev_kv,
            revision: r.main,
        })
    }

    fn write_version(
        &mut self,
        key: &[u8],
        main: i64,
        sub: i64,
        rec: &Record,
        value: &[u8],
    ) -> Result<()> {
        let entry = keys::key_entry(key, main, sub);
        self.txn
            .put(&entry, &keys::encode_record(rec, main, value))?;
        self.txn
            .put(&keys::rev_entry(main, sub), keys::enc_of_entry(&entry))
    }

    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        check_key(&req.key)?;
        let mut r = OpRev {
            main: self.rev + 1,
            sub: 0,
        };
        let resp = self.apply_delete(req, &mut r, true)?;
        if r.sub > 0 {
            self.rev = r.main;
        }
        Ok(DeleteRangeResponse {
            revision: self.rev,
            ..resp
        })
    }

    /// `standalone`: the delete is the only op of its revision, so it may
    /// be stored as one range tombstone (`range_del.rs`) when it deletes at
    /// least `StoreOptions::range_delete_min_keys` keys and the state holds
    /// fewer than `StoreOptions::max_range_tombstones`.
    fn apply_delete(
        &mut self,
        req: &DeleteRangeRequest,
        r: &mut OpRev,
        standalone: bool,
    ) -> Result<DeleteRangeResponse> {
        let mut victims = Vec::new();
        read::for_each_live_in(&self.txn, &req.key, &req.range_end, i64::MAX, |f| {
            victims.push(f.to_kv(&self.txn, true)?.1);
            Ok(true)
        })?;
        let deleted = victims.len() as i64;
        let rec = Record {
            tombstone: true,
            create: 0,
            version: 0,
            lease: 0,
        };
        // One tombstone per victim, in key order (each touched leaf is
        // copied once). The victims move into the events unless the caller
        // wants them back too (a prefix delete of 250k keys of 1 KiB would
        // otherwise copy every value once more).
        self.events.reserve(victims.len());
        let mut prev_kvs = Vec::new();
        let opts = &self.store.opts;
        let as_range = standalone
            && !req.range_end.is_empty()
            && !victims.is_empty()
            && victims.len() >= opts.range_delete_min_keys
            && self.txn.range_tombs < opts.max_range_tombstones as u64;
        if as_range {
            let (start, end) = read::key_bounds(&req.key, &req.range_end);
            let end = end.unwrap_or_else(|| vec![keys::T_KEY + 1]);
            super::range_del::put(&mut self.txn, r.main, start, end)?;
        }
        for prev in victims {
            if !as_range {
                self.write_version(&prev.key, r.main, r.sub, &rec, &[])?;
            }
            self.reattach(&prev.key, prev.lease, 0)?;
            r.sub += 1;
            let kv = KeyValue {
                key: prev.key.clone(),
                mod_revision: r.main,
                ..KeyValue::default()
            };
            if req.prev_kv {
                prev_kvs.push(prev.clone());
            }
            self.events.push(Event {
                kind: EventKind::Delete,
                kv,
                prev_kv: Some(prev),
            });
        }
        let revision = if r.sub > 0 { r.main } else { r.main - 1 };
        Ok(DeleteRangeResponse {
            deleted,
            prev_kvs,
            revision,
        })
    }

    /// Applies a txn atomically under one main revision. As in etcd, every
    /// compare (nested txns included) is evaluated against the state before
    /// the txn, and the chosen branches are validated before anything is
    /// written: a validation error leaves the batch unchanged.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse> {
        let mut path = Vec::new();
        self.txn_path(req, &mut path)?;
        let mut choices = path.iter().copied();
        self.validate_txn(req, &mut choices)?;
        let mut r = OpRev {
            main: self.rev + 1,
            sub: 0,
        };
        let mut choices = path.iter().copied();
        let resp = self.apply_txn(req, &mut r, &mut choices)?;
        if r.sub > 0 {
            self.rev = r.main;
        }
        Ok(TxnResponse {
            revision: self.rev,
            ..resp
        })
    }

    /// Pre-order list of "succeeded" for this txn and the nested txns of
    /// the branches taken, all evaluated at the pre-txn revision.
    fn txn_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut succeeded = true;
        for c in &req.compare {
            if !read::compare(&self.txn, c, self.rev)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            if let RequestOp::Txn(t) = op {
                self.txn_path(t, path)?;
            }
        }
        Ok(())
    }

    fn validate_txn(&self, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> Result<()> {
        let succeeded = path.next().unwrap_or(false);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        for op in ops {
            match op {
                RequestOp::Range(q) => {
                    check_key(&q.key)?;
                    if q.revision > self.rev {
                        return Err(StorageError::FutureRevision {
                            requested: q.revision,
                            current: self.rev,
                        });
                    }
                    if q.revision > 0 && q.revision < self.compacted {
                        return Err(StorageError::Compacted {
                            requested: q.revision,
                            compacted: self.compacted,
                        });
                    }
                }
                RequestOp::Put(p) => {
                    self.validate_put(p)?;
                    if (p.ignore_value || p.ignore_lease)
                        && read::get_kv(&self.txn, &p.key, self.rev)?.is_none()
                    {
                        return Err(StorageError::KeyNotFound);
                    }
                }
                RequestOp::DeleteRange(d) => check_key(&d.key)?,
                RequestOp::Txn(t) => self.validate_txn(t, path)?,
            }
        }
        Ok(())
    }

    fn apply_txn(
        &mut self,
        req: &TxnRequest,
        r: &mut OpRev,
        path: &mut impl Iterator<Item = bool>,
    ) -> Result<TxnResponse> {
        let succeeded = path.next().unwrap_or(false);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                RequestOp::Range(q) => {
                    let at = if q.revision > 0 {
                        q.revision
                    } else {
                        r.read_rev()
                    };
                    ResponseOp::Range(range::range(&self.txn, q, at)?)
                }
                RequestOp::Put(p) => ResponseOp::Put(self.apply_put(p, r)?),
                RequestOp::DeleteRange(d) => {
                    ResponseOp::DeleteRange(self.apply_delete(d, r, false)?)
                }
                RequestOp::Txn(t) => ResponseOp::Txn(self.apply_txn(t, r, path)?),
            });
        }
        Ok(TxnResponse {
            succeeded,
            responses,
            revision: r.read_rev(),
        })
    }

    /// Range over the batch's own state (sees its writes).
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let rev = read::resolve_rev(req.revision, self.rev, self.compacted)?;
        range::range(&self.txn, req, rev)
    }

    /// Records a compaction target; old versions are removed a bounded
    /// number per commit (`StoreOptions::compaction_commit_entries`) and by
    /// [`super::Store::compact_step`].
    pub fn compact(&mut self, revision: i64) -> Result<()> {
        if revision <= self.compacted {
            return Err(StorageError::Compacted {
                requested: revision,
                compacted: self.compacted,
            });
        }
        if revision > self.rev {
            return Err(StorageError::FutureRevision {
                requested: revision,
                current: self.rev,
            });
        }
        self.compacted = revision;
        // A pass in progress continues from `compact_done` (see
        // docs/storage-format.md, "MVCC encoding": every key with a version
        // the new target obsoletes has a revision entry above it).
        Ok(())
    }

    /// One bounded step of physical compaction (see `compact.rs`).
    /// Returns true when work remains.
    pub(crate) fn compact_step(&mut self, budget: usize) -> Result<bool> {
        if self.compact_done < self.compacted && budget > 0 {
            self.compact_done = super::compact::step(
                &mut self.txn,
                self.compact_done,
                self.compacted,
                budget,
                self.store.opts.compaction_sweep_ratio,
                &mut self.sweep,
            )?;
        }
        Ok(self.compact_done < self.compacted)
    }

    /// Stores server metadata in this commit. An error is reported by `commit`.
    pub fn put_meta(&mut self, name: &[u8], value: &[u8]) {
        if self.deferred_err.is_none()
            && let Err(e) = self.txn.put(&keys::meta_entry(name), value)
        {
            self.deferred_err = Some(e);
        }
    }

    /// Removes server metadata. An error is reported by `commit`.
    pub fn delete_meta(&mut self, name: &[u8]) {
        if self.deferred_err.is_none()
            && let Err(e) = self.txn.delete(&keys::meta_entry(name))
        {
            self.deferred_err = Some(e);
        }
    }

    pub fn get_meta(&self, name: &[u8]) -> Option<Vec<u8>> {
        let k = keys::meta_entry(name);
        let v = tree::get(&self.txn, &k).ok()??;
        tree::load_value(&self.txn, v).ok().map(|c| c.into_owned())
    }

    /// Commits every op of the batch as one transaction, together with the
    /// Raft `applied_index`. `durable` syncs it; otherwise it becomes durable
    /// with the next durable commit or [`super::Store::sync`].
    pub fn commit(mut self, applied_index: u64, durable: bool) -> Result<CommitInfo> {
        if let Some(e) = self.deferred_err.take() {
            return Err(e);
        }
        let budget = self.store.opts.compaction_commit_entries;
        self.compact_step(budget)?;
        let WriteBatch {
            txn,
            store,
            rev,
            compacted,
            compact_done,
            events,
            sweep,
            ..
        } = self;
        let range_tombs = txn.range_tombs;
        store.db.commit(
            txn,
            |m| {
                m.range_tombs = range_tombs;
                m.current_revision = rev;
                m.compacted_revision = compacted;
                m.compact_done_revision = compact_done;
                m.applied_index = applied_index;
            },
            durable,
        )?;
        store.set_sweep(sweep);
        if durable {
            store
                .durable_applied
                .store(applied_index, std::sync::atomic::Ordering::Release);
        }
        Ok(CommitInfo {
            revision: rev,
            events,
        })
    }
}
