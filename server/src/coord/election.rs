//! The election recipe (etcd's `concurrency.Election`, as its `v3election`
//! server runs it): the leader of election `name` is the oldest key under
//! `name/`; its value is the leader's proclamation.

use corekv_wire::messages as w;
use tokio::sync::mpsc;

use super::{
    CoordError, CoordKv, EventStream, Result, contender_key, create_revision_is, key_range,
    owner_range, prefix_end, range_of,
};

/// Leadership held: etcd's `LeaderKey`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderKey {
    pub name: Vec<u8>,
    pub key: Vec<u8>,
    /// Create revision of `key`: proclaim and resign compare it.
    pub rev: i64,
    pub lease: i64,
}

/// Waits until `lease` leads election `name`, proclaiming `value`.
pub async fn campaign(
    c: &impl CoordKv,
    name: &[u8],
    lease: i64,
    value: &[u8],
) -> Result<(LeaderKey, w::ResponseHeader)> {
    let (pfx, key) = contender_key(name, lease);
    let txn = w::TxnRequest {
        compare: vec![create_revision_is(&key, 0)],
        success: vec![w::RequestOp::Put(w::PutRequest {
            key: key.clone(),
            value: value.to_vec(),
            lease,
            ..Default::default()
        })],
        failure: vec![w::RequestOp::Range(key_range(&key))],
        nested: Vec::new(),
    };
    let resp = c.txn(txn).await?;
    let mut lk = LeaderKey {
        name: name.to_vec(),
        key,
        rev: resp.header.revision,
        lease,
    };
    if !resp.succeeded {
        let kv = range_of(resp.responses.first())
            .and_then(|r| r.kvs.first())
            .ok_or(CoordError::SessionExpired)?;
        lk.rev = kv.create_revision;
        if kv.value != value {
            if let Err(e) = proclaim(c, &lk, value).await {
                let _ = resign(c, &lk).await;
                return Err(e);
            }
        }
    }
    if let Err(e) = super::wait_deletes(c, &pfx, lk.rev - 1).await {
        let _ = resign(c, &lk).await;
        return Err(e);
    }
    Ok((lk, resp.header))
}

/// Replaces the leader's value; `NotLeader` unless `lk` still leads.
pub async fn proclaim(c: &impl CoordKv, lk: &LeaderKey, value: &[u8]) -> Result<w::ResponseHeader> {
    let txn = w::TxnRequest {
        compare: vec![create_revision_is(&lk.key, lk.rev)],
        success: vec![w::RequestOp::Put(w::PutRequest {
            key: lk.key.clone(),
            value: value.to_vec(),
            ignore_lease: true,
            ..Default::default()
        })],
        failure: Vec::new(),
        nested: Vec::new(),
    };
    let resp = c.txn(txn).await?;
    if !resp.succeeded {
        return Err(CoordError::NotLeader);
    }
    Ok(resp.header)
}

/// Gives leadership up (a no-op if `lk` no longer leads).
pub async fn resign(c: &impl CoordKv, lk: &LeaderKey) -> Result<w::ResponseHeader> {
    let txn = w::TxnRequest {
        compare: vec![create_revision_is(&lk.key, lk.rev)],
        success: vec![w::RequestOp::DeleteRange(w::DeleteRangeRequest {
            key: lk.key.clone(),
            ..Default::default()
        })],
        failure: Vec::new(),
        nested: Vec::new(),
    };
    Ok(c.txn(txn).await?.header)
}

/// The current leader's key-value; `NoLeader` when nobody campaigns.
pub async fn leader(c: &impl CoordKv, name: &[u8]) -> Result<(w::KeyValue, w::ResponseHeader)> {
    let (pfx, _) = contender_key(name, 0);
    let r = c.range(owner_range(&pfx)).await?;
    let kv = r.kvs.into_iter().next().ok_or(CoordError::NoLeader)?;
    Ok((kv, r.header))
}

/// Sends every proclamation of election `name` in order: the current
/// leader's value, each new value it proclaims, then its successor's, until
/// `out` is closed or a watch fails (etcd's `Observe`).
pub async fn observe(
    c: &impl CoordKv,
    name: &[u8],
    out: mpsc::Sender<(w::KeyValue, w::ResponseHeader)>,
) -> Result<()> {
    let (pfx, _) = contender_key(name, 0);
    loop {
        let r = c.range(owner_range(&pfx)).await?;
        let (kv, header) = match r.kvs.into_iter().next() {
            Some(kv) => (kv, r.header),
            None => first_put(c, &pfx, r.header.revision).await?,
        };
        let key = kv.key.clone();
        let from = header.revision + 1;
        if out.send((kv, header)).await.is_err() {
            return Ok(());
        }
        // Follow the leader's key until it is deleted.
        let mut ws = c
            .watch(w::WatchCreateRequest {
                key: key.clone(),
                start_revision: from,
                ..Default::default()
            })
            .await?;
        'leader: loop {
            let Some(resp) = ws.next().await? else {
                return Err(ended(&key, "stream closed"));
            };
            if resp.canceled {
                return Err(ended(&key, &resp.cancel_reason));
            }
            for e in resp.events {
                if e.event_type == w::EventType::Delete {
                    break 'leader;
                }
                if out.send((e.kv, resp.header.clone())).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Waits for the first put under `pfx` after `revision` (an election with
/// no candidate yet).
async fn first_put(
    c: &impl CoordKv,
    pfx: &[u8],
    revision: i64,
) -> Result<(w::KeyValue, w::ResponseHeader)> {
    let mut ws = c
        .watch(w::WatchCreateRequest {
            key: pfx.to_vec(),
            range_end: prefix_end(pfx),
            start_revision: revision + 1,
            filters: vec![w::WatchFilterType::NoDelete],
            ..Default::default()
        })
        .await?;
    loop {
        let Some(resp) = ws.next().await? else {
            return Err(ended(pfx, "stream closed"));
        };
        if resp.canceled {
            return Err(ended(pfx, &resp.cancel_reason));
        }
        if let Some(e) = resp.events.into_iter().next() {
            return Ok((e.kv, resp.header));
        }
    }
}

fn ended(key: &[u8], reason: &str) -> CoordError {
    CoordError::WatchEnded {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.to_string(),
    }
}
