//! watch (fan-out: watcher creation time, events delivered per second) and
//! watch-latency (put-to-event latency), over gRPC or native.
//!
//! Every put value starts with its intended send time (ns since the run's
//! base instant), so an event's latency is computed from the event alone.

use super::Outcome;
use crate::cli::EventArgs;
use crate::driver::{Schedule, Worker, drive};
use crate::error::{BenchError, OpError};
use crate::grpc::AuthChannel;
use crate::keys::{read_stamp, stamped_value};
use crate::recorder::Recorder;
use crate::target::{KvHandle, Target, native_kind};
use bytes::Bytes;
use corekv_wire::proto::etcdserverpb::watch_client::WatchClient;
use corekv_wire::proto::etcdserverpb::watch_request::RequestUnion;
use corekv_wire::proto::etcdserverpb::{WatchCreateRequest, WatchRequest};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

/// Outgoing request queue of one watch stream (creates are sent one at a time).
const WATCH_REQUEST_QUEUE: usize = 4;
/// How many streams create their watchers at the same time.
const MAX_CONCURRENT_STREAM_SETUP: usize = 64;
/// Put clients used to drive the puts of the watch workloads.
const PUT_CLIENTS: usize = 16;

pub fn watch_key(k: u64, key_size: usize) -> Bytes {
    let width = key_size.saturating_sub(2).max(1);
    Bytes::from(format!("wk{k:0width$}"))
}

struct StreamPlan {
    conn: usize,
    keys: Vec<Bytes>,
    prev_kv: bool,
}

struct StreamResult {
    recorder: Recorder,
}

enum StreamConn {
    Grpc(WatchClient<AuthChannel>),
    Native(corekv_wire::Client),
}

impl StreamConn {
    fn of(target: &Target, conn: usize) -> StreamConn {
        match target {
            Target::Grpc(c) => StreamConn::Grpc(c.watch(conn)),
            Target::Native(n) => StreamConn::Native(n.client(conn)),
        }
    }
}

fn record_event(rec: &mut Recorder, base: Instant, value: Option<&[u8]>, now: Instant) {
    match value.and_then(read_stamp) {
        Some(ns) => {
            let intended = base + Duration::from_nanos(ns);
            rec.record(1, now.saturating_duration_since(intended), now);
        }
        None => rec.error("event without a timestamped value"),
    }
}

/// Native counterpart of `run_stream`: the "stream" is one connection whose
/// watchers are created one after another; each watcher is then read by its
/// own task.
async fn run_native_stream(
    client: corekv_wire::Client,
    plan: StreamPlan,
    base: Instant,
    events: Arc<AtomicU64>,
    ready: mpsc::Sender<Result<(), String>>,
    stop: watch::Receiver<bool>,
) -> StreamResult {
    let mut rec = Recorder::new(base, &["watch-create", "put-to-event"]);
    let mut streams = Vec::with_capacity(plan.keys.len());
    for key in &plan.keys {
        let t = Instant::now();
        let req = corekv_wire::WatchCreateRequest {
            key: key.to_vec(),
            prev_kv: plan.prev_kv,
            ..Default::default()
        };
        match client.watch(req).await {
            Ok(ws) => {
                let now = Instant::now();
                rec.record(0, now - t, now);
                streams.push(ws);
            }
            Err(e) => {
                let _ = ready.send(Err(format!("watch create: {e}"))).await;
                return StreamResult { recorder: rec };
            }
        }
    }
    let _ = ready.send(Ok(())).await;
    let mut readers = Vec::with_capacity(streams.len());
    for mut ws in streams {
        let events = events.clone();
        let mut stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut rec = Recorder::new(base, &["watch-create", "put-to-event"]);
            loop {
                tokio::select! {
                    next = ws.next() => match next {
                        Ok(Some(frame)) => {
                            let resp = frame.get();
                            if resp.canceled {
                                rec.error(&format!("watch canceled: {}", resp.cancel_reason.as_str()));
                                break;
                            }
                            let now = Instant::now();
                            for ev in resp.events.iter() {
                                record_event(&mut rec, base, Some(ev.kv.value.as_slice()), now);
                            }
                            events.fetch_add(resp.events.len() as u64, Ordering::Relaxed);
                        }
                        Ok(None) => {
                            rec.error("watch stream closed by server");
                            break;
                        }
                        Err(e) => {
                            rec.error(&native_kind(&e).kind);
                            break;
                        }
                    },
                    _ = stop.changed() => break,
                }
            }
            rec
        }));
    }
    for r in readers {
        match r.await {
            Ok(r) => rec.merge(&r),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    StreamResult { recorder: rec }
}

/// Opens one watch stream, creates its watchers (recording each creation
/// round trip as "watch-create"), reports readiness, then records every
/// event's latency as "put-to-event" until `stop` fires.
async fn run_stream(
    mut client: WatchClient<AuthChannel>,
    plan: StreamPlan,
    base: Instant,
    events: Arc<AtomicU64>,
    ready: mpsc::Sender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> StreamResult {
    let mut rec = Recorder::new(base, &["watch-create", "put-to-event"]);
    let (tx, rx) = mpsc::channel(WATCH_REQUEST_QUEUE);
    let create = |key: &Bytes| WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.clone(),
            prev_kv: plan.prev_kv,
            ..Default::default()
        })),
    };
    let Some(first) = plan.keys.first() else {
        let _ = ready.send(Ok(())).await;
        return StreamResult { recorder: rec };
    };
    // grpc-go servers send response headers only with the first message, so
    // the first create must be queued before the call is opened.
    let mut sent_at = Instant::now();
    if tx.send(create(first)).await.is_err() {
        let _ = ready.send(Err("watch request queue closed".into())).await;
        return StreamResult { recorder: rec };
    }
    let mut inbound = match client.watch(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            let _ = ready.send(Err(format!("open watch stream: {s}"))).await;
            return StreamResult { recorder: rec };
        }
    };
    let mut created = 0usize;
    while created < plan.keys.len() {
        match inbound.message().await {
            Ok(Some(resp)) if resp.created => {
                let now = Instant::now();
                rec.record(0, now - sent_at, now);
                created += 1;
                if let Some(k) = plan.keys.get(created) {
                    sent_at = Instant::now();
                    if tx.send(create(k)).await.is_err() {
                        let _ = ready.send(Err("watch request queue closed".into())).await;
                        return StreamResult { recorder: rec };
                    }
                }
            }
            Ok(Some(resp)) if resp.canceled => {
                let _ = ready
                    .send(Err(format!(
                        "watch create canceled: {}",
                        resp.cancel_reason
                    )))
                    .await;
                return StreamResult { recorder: rec };
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                let _ = ready
                    .send(Err("watch stream closed by server".into()))
                    .await;
                return StreamResult { recorder: rec };
            }
            Err(s) => {
                let _ = ready.send(Err(format!("watch create: {s}"))).await;
                return StreamResult { recorder: rec };
            }
        }
    }
    let _ = ready.send(Ok(())).await;
    loop {
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(resp)) => {
                    if resp.canceled {
                        rec.error(&format!("watch canceled: {}", resp.cancel_reason));
                        break;
                    }
                    let now = Instant::now();
                    for ev in &resp.events {
                        record_event(&mut rec, base, ev.kv.as_ref().map(|kv| &kv.value[..]), now);
                    }
                    events.fetch_add(resp.events.len() as u64, Ordering::Relaxed);
                }
                Ok(None) => {
                    rec.error("watch stream closed by server");
                    break;
                }
                Err(s) => {
                    rec.error(&OpError::from(s).kind);
                    break;
                }
            },
            _ = stop.changed() => break,
        }
    }
    // Keep the request sender alive until here: dropping it half-closes the
    // stream, which etcd answers by ending the call.
    drop(tx);
    StreamResult { recorder: rec }
}

struct StampedPutWorker {
    kv: KvHandle,
    keys: Arc<Vec<Bytes>>,
    /// Watchers on each key (index-aligned with `keys`).
    watchers_per_key: Arc<Vec<u64>>,
    val_size: usize,
    base: Instant,
    expected_events: Arc<AtomicU64>,
}

impl Worker for StampedPutWorker {
    async fn run_one(&mut self, op: u64, intended: Instant) -> Result<usize, OpError> {
        let k = (op % self.keys.len() as u64) as usize;
        let stamp = u64::try_from(intended.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(u64::MAX);
        self.kv
            .put(self.keys[k].clone(), stamped_value(stamp, self.val_size))
            .await?;
        self.expected_events
            .fetch_add(self.watchers_per_key[k], Ordering::Relaxed);
        Ok(0)
    }
}

pub struct WatchPlan {
    pub streams: usize,
    pub watchers_per_stream: usize,
    /// Distinct keys; watcher w (over all streams) watches key w % key_total.
    pub key_total: u64,
    pub put_total: u64,
    pub put_rate: f64,
    pub prev_kv: bool,
}

/// Shared engine of `watch` and `watch-latency`.
pub async fn run(
    target: &Target,
    plan: &WatchPlan,
    ev: &EventArgs,
    label: &str,
) -> Result<Outcome, BenchError> {
    if plan.streams == 0 || plan.watchers_per_stream == 0 || plan.key_total == 0 {
        return Err(BenchError::InvalidArgument(
            "streams, watchers per stream and watched keys must be > 0".into(),
        ));
    }
    if !(plan.put_rate.is_finite() && plan.put_rate > 0.0) {
        return Err(BenchError::InvalidArgument("--put-rate must be > 0".into()));
    }
    let keys: Vec<Bytes> = (0..plan.key_total)
        .map(|k| watch_key(k, ev.key_size))
        .collect();
    let mut watchers_per_key = vec![0u64; keys.len()];
    let base = Instant::now();
    let events = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(plan.streams);
    let setup = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_STREAM_SETUP));
    let mut tasks = Vec::with_capacity(plan.streams);
    for s in 0..plan.streams {
        let stream_keys: Vec<Bytes> = (0..plan.watchers_per_stream)
            .map(|j| {
                let w = (s * plan.watchers_per_stream + j) as u64;
                let k = (w % plan.key_total) as usize;
                watchers_per_key[k] += 1;
                keys[k].clone()
            })
            .collect();
        let sp = StreamPlan {
            conn: s,
            keys: stream_keys,
            prev_kv: plan.prev_kv,
        };
        let conn = StreamConn::of(target, sp.conn);
        let events = events.clone();
        let ready = ready_tx.clone();
        let stop = stop_rx.clone();
        let setup = setup.clone();
        tasks.push(tokio::spawn(async move {
            // Holding a permit only bounds concurrent setup; closed never happens.
            let permit = setup.acquire_owned().await.ok();
            let (inner_ready_tx, mut inner_ready_rx) = mpsc::channel(1);
            let task = match conn {
                StreamConn::Grpc(client) => {
                    tokio::spawn(run_stream(client, sp, base, events, inner_ready_tx, stop))
                }
                StreamConn::Native(client) => tokio::spawn(run_native_stream(
                    client,
                    sp,
                    base,
                    events,
                    inner_ready_tx,
                    stop,
                )),
            };
            let r = inner_ready_rx
                .recv()
                .await
                .unwrap_or_else(|| Err("watch stream task ended".into()));
            drop(permit);
            let _ = ready.send(r).await;
            task.await
        }));
    }
    drop(ready_tx);
    let create_start = Instant::now();
    let mut failures = Vec::new();
    for _ in 0..plan.streams {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => failures.push(e),
            None => break,
        }
    }
    let create_elapsed = create_start.elapsed();
    if !failures.is_empty() {
        let _ = stop_tx.send(true);
        return Err(BenchError::Protocol {
            operation: "create watchers",
            detail: format!("{} streams failed, first: {}", failures.len(), failures[0]),
        });
    }

    let expected = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(keys);
    let wpk = Arc::new(watchers_per_key);
    let put_clients = PUT_CLIENTS.min(plan.put_total.max(1) as usize);
    let workers = (0..put_clients)
        .map(|i| StampedPutWorker {
            kv: target.kv(i),
            keys: keys.clone(),
            watchers_per_key: wpk.clone(),
            val_size: ev.val_size,
            base,
            expected_events: expected.clone(),
        })
        .collect();
    let sched = Schedule {
        total: Some(plan.put_total),
        duration: None,
        rate: Some(plan.put_rate),
    };
    let put_start = Instant::now();
    let puts = drive(workers, &["put"], sched, label).await;
    let deadline = Instant::now() + ev.event_timeout;
    let want = expected.load(Ordering::Relaxed);
    while events.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let events_window = put_start.elapsed();
    let _ = stop_tx.send(true);
    let mut rec = puts.recorder;
    for t in tasks {
        match t.await {
            Ok(Ok(sr)) => rec.merge(&sr.recorder),
            Ok(Err(e)) | Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    let got = events.load(Ordering::Relaxed);
    if got < want {
        rec.error(&format!(
            "{} events not delivered within the event timeout",
            want - got
        ));
    }
    let mut out = Outcome::new(rec, put_start.elapsed());
    out.windows.push(("put-to-event", events_window));
    out.windows.push(("put", puts.elapsed));
    out.windows.push(("watch-create", create_elapsed));
    out.extra.insert(
        "watchers".into(),
        (plan.streams * plan.watchers_per_stream) as f64,
    );
    out.extra.insert(
        "watchers_create_total_s".into(),
        create_elapsed.as_secs_f64(),
    );
    out.extra.insert("events_expected".into(), want as f64);
    out.extra.insert("events_received".into(), got as f64);
    out.extra.insert(
        "events_per_s".into(),
        got as f64 / events_window.as_secs_f64().max(1e-9),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_keys_are_sized_and_distinct() {
        assert_eq!(&watch_key(7, 8)[..], b"wk000007");
        assert_ne!(watch_key(1, 8), watch_key(2, 8));
        assert_eq!(&watch_key(3, 1)[..], b"wk3");
    }
}
