//! The lock recipe (etcd's `concurrency.Mutex`, as its `v3lock` server
//! runs it): the holder of lock `name` is the oldest key under `name/`.

use corekv_wire::messages as w;

use super::{
    CoordError, CoordKv, Result, contender_key, create_revision_is, key_range, owner_range,
    range_of,
};

/// A held lock: the key that exists while it is held, and the header of
/// the answer that granted it (its revision fences the holder's writes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    pub key: Vec<u8>,
    pub header: w::ResponseHeader,
}

/// Waits until `lease` holds lock `name`. Locking twice with one lease is
/// one acquisition (the same key). If the wait fails the key is deleted.
pub async fn lock(c: &impl CoordKv, name: &[u8], lease: i64) -> Result<Held> {
    let (pfx, key) = contender_key(name, lease);
    let txn = w::TxnRequest {
        compare: vec![create_revision_is(&key, 0)],
        success: vec![
            w::RequestOp::Put(w::PutRequest {
                key: key.clone(),
                lease,
                ..Default::default()
            }),
            w::RequestOp::Range(owner_range(&pfx)),
        ],
        failure: vec![
            w::RequestOp::Range(key_range(&key)),
            w::RequestOp::Range(owner_range(&pfx)),
        ],
        nested: Vec::new(),
    };
    let resp = c.txn(txn).await?;
    let my_rev = if resp.succeeded {
        resp.header.revision
    } else {
        range_of(resp.responses.first())
            .and_then(|r| r.kvs.first())
            .map(|kv| kv.create_revision)
            .ok_or(CoordError::SessionExpired)?
    };
    let owner = range_of(resp.responses.get(1)).and_then(|r| r.kvs.first());
    if owner.is_none_or(|o| o.create_revision == my_rev) {
        return Ok(Held {
            key,
            header: resp.header,
        });
    }
    let header = match super::wait_deletes(c, &pfx, my_rev - 1).await {
        Ok(h) => h,
        Err(e) => {
            // Give the place in line up; the error is the one to report.
            let _ = unlock(c, &key).await;
            return Err(e);
        }
    };
    // The lease may have expired while waiting: then the key is gone.
    if c.range(key_range(&key)).await?.kvs.is_empty() {
        return Err(CoordError::SessionExpired);
    }
    Ok(Held { key, header })
}

/// Releases a lock by deleting its key.
pub async fn unlock(c: &impl CoordKv, key: &[u8]) -> Result<w::ResponseHeader> {
    c.delete(key).await
}
