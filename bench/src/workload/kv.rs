//! put, range, get, txn-put, txn-mixed (gRPC or native).

use super::{Outcome, schedule};
use crate::cli::{Consistency, KeyArgs, LoadArgs};
use crate::driver::{Worker, drive};
use crate::error::{BenchError, OpError};
use crate::keys::{KeyPicker, key_bytes, prefix_end};
use crate::recorder::Recorder;
use crate::target::{KvHandle, Target, TxnOp};
use bytes::Bytes;
use corekv_wire::proto::etcdserverpb::RangeRequest;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

pub struct Common<'a> {
    pub target: &'a Target,
    pub clients: usize,
    pub seed: u64,
}

fn check_keys(keys: &KeyArgs) -> Result<(), BenchError> {
    if keys.key_size == 0 {
        return Err(BenchError::InvalidArgument("--key-size must be > 0".into()));
    }
    if keys.key_space_size == 0 {
        return Err(BenchError::InvalidArgument(
            "--key-space-size must be > 0".into(),
        ));
    }
    Ok(())
}

struct PutWorker {
    kv: KvHandle,
    picker: KeyPicker,
    key_size: usize,
    value: Bytes,
    latest_rev: Arc<AtomicI64>,
}

impl Worker for PutWorker {
    async fn run_one(&mut self, op: u64, _intended: Instant) -> Result<usize, OpError> {
        let key = key_bytes(self.picker.pick(op), self.key_size);
        let rev = self.kv.put(key, self.value.clone()).await?;
        self.latest_rev.fetch_max(rev, Ordering::Relaxed);
        Ok(0)
    }
}

pub async fn put(
    c: &Common<'_>,
    load: &LoadArgs,
    keys: &KeyArgs,
    compact_interval: Option<Duration>,
    compact_index_delta: i64,
) -> Result<Outcome, BenchError> {
    check_keys(keys)?;
    let sched = schedule(load)?;
    let value = Bytes::from(vec![b'v'; keys.val_size]);
    let latest_rev = Arc::new(AtomicI64::new(0));
    let workers = (0..c.clients)
        .map(|i| PutWorker {
            kv: c.target.kv(i),
            picker: KeyPicker::for_keys(c.seed, i, keys),
            key_size: keys.key_size,
            value: value.clone(),
            latest_rev: latest_rev.clone(),
        })
        .collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let compactor = compact_interval.map(|every| {
        let kv = c.target.kv(0);
        let latest = latest_rev.clone();
        tokio::spawn(compact_loop(
            kv,
            latest,
            every,
            compact_index_delta,
            stop_rx,
        ))
    });
    let r = drive(workers, &["put"], sched, "put").await;
    let mut rec = r.recorder;
    if let Some(task) = compactor {
        // A send error means the loop already ended, which is fine.
        let _ = stop_tx.send(true);
        match task.await {
            Ok(compact_rec) => rec.merge(&compact_rec),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    Ok(Outcome::new(rec, r.elapsed))
}

/// Compacts to (latest revision - delta) every `every` until `stop` fires;
/// its latencies are the "compact" series.
async fn compact_loop(
    mut kv: KvHandle,
    latest: Arc<AtomicI64>,
    every: Duration,
    delta: i64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Recorder {
    let mut rec = Recorder::new(Instant::now(), &["compact"]);
    let mut compacted = 0i64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return rec,
        }
        let target = latest.load(Ordering::Relaxed) - delta;
        if target <= compacted {
            continue;
        }
        let t = Instant::now();
        match kv.compact(target).await {
            Ok(()) => {
                compacted = target;
                rec.record(0, t.elapsed(), Instant::now());
            }
            Err(e) => rec.error(&e.kind),
        }
    }
}

struct RangeWorker {
    kv: KvHandle,
    req: RangeRequest,
}

impl Worker for RangeWorker {
    async fn run_one(&mut self, _op: u64, _intended: Instant) -> Result<usize, OpError> {
        self.kv.range(&self.req).await?;
        Ok(0)
    }
}

pub struct RangeSpec<'a> {
    pub key: &'a str,
    pub end: Option<&'a str>,
    pub prefix: bool,
    pub consistency: Consistency,
    pub limit: i64,
    pub keys_only: bool,
    pub count_only: bool,
}

pub fn range_request(spec: &RangeSpec<'_>) -> Result<RangeRequest, BenchError> {
    if spec.prefix && spec.end.is_some() {
        return Err(BenchError::InvalidArgument(
            "give either END or --prefix, not both".into(),
        ));
    }
    let range_end = if spec.prefix {
        Bytes::from(prefix_end(spec.key.as_bytes()))
    } else {
        spec.end
            .map(|e| Bytes::copy_from_slice(e.as_bytes()))
            .unwrap_or_default()
    };
    Ok(RangeRequest {
        key: Bytes::copy_from_slice(spec.key.as_bytes()),
        range_end,
        limit: spec.limit,
        serializable: spec.consistency == Consistency::S,
        keys_only: spec.keys_only,
        count_only: spec.count_only,
        ..Default::default()
    })
}

pub async fn range(
    c: &Common<'_>,
    spec: &RangeSpec<'_>,
    load: &LoadArgs,
) -> Result<Outcome, BenchError> {
    let sched = schedule(load)?;
    let req = range_request(spec)?;
    let workers = (0..c.clients)
        .map(|i| RangeWorker {
            kv: c.target.kv(i),
            req: req.clone(),
        })
        .collect();
    let r = drive(workers, &["range"], sched, "range").await;
    Ok(Outcome::new(r.recorder, r.elapsed))
}

struct GetWorker {
    kv: KvHandle,
    picker: KeyPicker,
    key_size: usize,
    span: u64,
    space: u64,
    serializable: bool,
}

impl Worker for GetWorker {
    async fn run_one(&mut self, op: u64, _intended: Instant) -> Result<usize, OpError> {
        let first = self.picker.pick(op);
        // Key order is index order (`key_bytes`); a span past the end of
        // the space is cut there.
        let range_end = if self.span > 1 {
            match first.checked_add(self.span).filter(|e| *e < self.space) {
                Some(e) => key_bytes(e, self.key_size),
                None => Bytes::from(prefix_end(&key_bytes(self.space - 1, self.key_size))),
            }
        } else {
            Bytes::new()
        };
        let req = RangeRequest {
            key: key_bytes(first, self.key_size),
            range_end,
            serializable: self.serializable,
            ..Default::default()
        };
        self.kv.range(&req).await?;
        Ok(0)
    }
}

/// Random single-key gets, or ranges of `span` consecutive keys.
pub async fn get(
    c: &Common<'_>,
    span: u64,
    consistency: Consistency,
    keys: &KeyArgs,
    load: &LoadArgs,
) -> Result<Outcome, BenchError> {
    check_keys(keys)?;
    if span == 0 {
        return Err(BenchError::InvalidArgument("--span must be > 0".into()));
    }
    let sched = schedule(load)?;
    let workers = (0..c.clients)
        .map(|i| GetWorker {
            kv: c.target.kv(i),
            picker: KeyPicker::for_keys(c.seed, i, keys),
            key_size: keys.key_size,
            span,
            space: keys.key_space_size,
            serializable: consistency == Consistency::S,
        })
        .collect();
    let r = drive(workers, &["get"], sched, "get").await;
    Ok(Outcome::new(r.recorder, r.elapsed))
}

struct TxnPutWorker {
    kv: KvHandle,
    picker: KeyPicker,
    key_size: usize,
    space: u64,
    ops: usize,
    value: Bytes,
}

impl Worker for TxnPutWorker {
    async fn run_one(&mut self, op: u64, _intended: Instant) -> Result<usize, OpError> {
        // Consecutive indexes from a picked base: distinct keys within one txn
        // (etcd rejects duplicates) as long as ops <= key space.
        let base = self.picker.pick(op);
        let ops = (0..self.ops as u64)
            .map(|j| TxnOp::Put {
                key: key_bytes((base + j) % self.space, self.key_size),
                value: self.value.clone(),
            })
            .collect();
        self.kv.txn(ops).await?;
        Ok(0)
    }
}

pub async fn txn_put(
    c: &Common<'_>,
    txn_ops: usize,
    keys: &KeyArgs,
    load: &LoadArgs,
) -> Result<Outcome, BenchError> {
    check_keys(keys)?;
    if txn_ops == 0 || txn_ops as u64 > keys.key_space_size {
        return Err(BenchError::InvalidArgument(format!(
            "--txn-ops must be in 1..=--key-space-size ({}), got {txn_ops}",
            keys.key_space_size
        )));
    }
    let sched = schedule(load)?;
    let value = Bytes::from(vec![b'v'; keys.val_size]);
    let workers = (0..c.clients)
        .map(|i| TxnPutWorker {
            kv: c.target.kv(i),
            picker: KeyPicker::for_keys(c.seed, i, keys),
            key_size: keys.key_size,
            space: keys.key_space_size,
            ops: txn_ops,
            value: value.clone(),
        })
        .collect();
    let r = drive(workers, &["txn-put"], sched, "txn-put").await;
    Ok(Outcome::new(r.recorder, r.elapsed))
}

struct TxnMixedWorker {
    kv: KvHandle,
    picker: KeyPicker,
    key_size: usize,
    read_chance: f64,
    serializable: bool,
    value: Bytes,
}

impl Worker for TxnMixedWorker {
    async fn run_one(&mut self, op: u64, _intended: Instant) -> Result<usize, OpError> {
        let key = key_bytes(self.picker.pick(op), self.key_size);
        let read = self.picker.chance(self.read_chance);
        let op = if read {
            TxnOp::Range(RangeRequest {
                key,
                serializable: self.serializable,
                ..Default::default()
            })
        } else {
            TxnOp::Put {
                key,
                value: self.value.clone(),
            }
        };
        self.kv.txn(vec![op]).await?;
        Ok(if read { 0 } else { 1 })
    }
}

pub async fn txn_mixed(
    c: &Common<'_>,
    rw_ratio: f64,
    consistency: Consistency,
    keys: &KeyArgs,
    load: &LoadArgs,
) -> Result<Outcome, BenchError> {
    check_keys(keys)?;
    if !(rw_ratio.is_finite() && rw_ratio >= 0.0) {
        return Err(BenchError::InvalidArgument(format!(
            "--rw-ratio must be >= 0, got {rw_ratio}"
        )));
    }
    let sched = schedule(load)?;
    let value = Bytes::from(vec![b'v'; keys.val_size]);
    let read_chance = rw_ratio / (rw_ratio + 1.0);
    let workers = (0..c.clients)
        .map(|i| TxnMixedWorker {
            kv: c.target.kv(i),
            picker: KeyPicker::for_keys(c.seed, i, keys),
            key_size: keys.key_size,
            read_chance,
            serializable: consistency == Consistency::S,
            value: value.clone(),
        })
        .collect();
    let r = drive(workers, &["read", "write"], sched, "txn-mixed").await;
    Ok(Outcome::new(r.recorder, r.elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_request_prefix_and_consistency() {
        let req = range_request(&RangeSpec {
            key: "foo",
            end: None,
            prefix: true,
            consistency: Consistency::S,
            limit: 5,
            keys_only: true,
            count_only: false,
        })
        .unwrap();
        assert_eq!(&req.range_end[..], b"fop");
        assert!(req.serializable);
        assert_eq!(req.limit, 5);
        assert!(
            range_request(&RangeSpec {
                key: "a",
                end: Some("b"),
                prefix: true,
                consistency: Consistency::L,
                limit: 0,
                keys_only: false,
                count_only: false,
            })
            .is_err()
        );
    }
}
