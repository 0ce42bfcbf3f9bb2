//! lease-scale: keep-alive at scale. `--leases` leases on one member, each
//! kept alive every TTL/3 on one of `--streams` LeaseKeepAlive streams
//! (lease i on stream i % streams, as etcd clients multiplex many leases
//! on few streams), sent at their schedule whatever the answers do.
//!
//! Timeline: grant every lease; lease k (of n) is kept alive at the times
//! `k/n` of a period past a period boundary, starting with the first such
//! time after its grant (within one period, so well inside its TTL): the
//! keep-alives are spread evenly over each period however fast the grants
//! went. The measured window opens one period after the last grant, when
//! every lease is in its cadence, and lasts `--duration`.
//! In the window: keep-alives answered per second, round trip from each
//! keep-alive's *intended* send time (a late sender counts against the
//! server), server CPU. RSS before granting, after granting and at the
//! window's end. After the window, while keep-alives still run, every
//! lease's TTL is asked (LeaseTimeToLive): none may have expired.

use super::lease_host::{System, ms, on_tasks, opt, say, ticks_per_s};
use super::lease_window::{Sample, WindowStats, bytes_per_lease, cpu_percent, window_stats};
use crate::cli::LeaseScaleArgs;
use crate::error::{BenchError, OpError};
use crate::grpc::AuthChannel;
use crate::grpc::Conns;
use corekv_wire::proto::etcdserverpb::lease_client::LeaseClient;
use corekv_wire::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Keep-alives queued on one stream before its sender waits.
const STREAM_QUEUE: usize = 1024;
/// How long a stream's answers may still arrive after its sender stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the arguments cannot make a run.
pub fn validate(a: &LeaseScaleArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::InvalidArgument(m.into()));
    if a.leases == 0 {
        return bad("--leases must be > 0");
    }
    if a.ttl < 3 {
        return bad("--ttl must be at least 3 s (keep-alives go every TTL/3)");
    }
    if a.streams == 0 || a.grant_clients == 0 {
        return bad("--streams and --grant-clients must be > 0");
    }
    if a.streams as u64 > a.leases {
        return bad("--streams must not exceed --leases");
    }
    if a.duration < Duration::from_secs(1) {
        return bad("--duration must be at least 1s");
    }
    Ok(())
}

/// Keep-alive period of a TTL: TTL/3, as etcd's client.
pub fn period(ttl_s: i64) -> Duration {
    Duration::from_millis(u64::try_from(ttl_s).unwrap_or(0) * 1000 / 3)
}

/// Phase of lease `k` of `n` in each period: `k/n` of it.
pub fn phase(k: u64, n: u64, period: Duration) -> Duration {
    period.mul_f64(k as f64 / n.max(1) as f64)
}

/// The first keep-alive time (since the run's start) of a lease with
/// `phase`, granted at `granted`: the first `phase + i * period` after
/// the grant, so within one period of it.
pub fn first_due(granted: Duration, phase: Duration, period: Duration) -> Duration {
    if granted < phase || period.is_zero() {
        return phase;
    }
    let periods = ((granted - phase).as_nanos() / period.as_nanos()) as u32 + 1;
    phase + period * periods
}

/// What one system did.
pub struct ScaleReport {
    pub system: String,
    pub leases: u64,
    pub streams: usize,
    pub ttl: i64,
    pub grant_s: f64,
    /// Keep-alives the schedule sends per second (leases / period).
    pub offered_per_s: f64,
    pub window: WindowStats,
    /// Keep-alives answered with TTL <= 0 over the whole run.
    pub ttl0_answers: u64,
    /// Keep-alives sent and never answered (streams ended or drained out).
    pub unanswered: u64,
    /// A lease's next keep-alive was due while its previous one was unanswered.
    pub overlapped: u64,
    pub errors: BTreeMap<String, u64>,
    pub cpu_pct: Option<f64>,
    pub rss_before_kib: Option<u64>,
    pub rss_granted_kib: Option<u64>,
    pub rss_end_kib: Option<u64>,
    /// LeaseTimeToLive after the window: leases with TTL > 0, and not.
    pub alive_at_end: u64,
    pub dead_at_end: u64,
}

impl ScaleReport {
    pub fn to_text(&self) -> String {
        let w = &self.window;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "lease-scale on {}: {} leases, TTL {} s, {} streams",
            self.system, self.leases, self.ttl, self.streams
        );
        let _ = writeln!(
            t,
            "  granted in {:.1} s ({:.0}/s)",
            self.grant_s,
            self.leases as f64 / self.grant_s.max(1e-9)
        );
        let _ = writeln!(
            t,
            "  window {:.1} s: offered {:.0}/s, answered {:.0}/s ({}), round trip p50 {} p99 {} max {} ms",
            w.secs,
            self.offered_per_s,
            w.per_s,
            w.count,
            ms(w.p50_us),
            ms(w.p99_us),
            ms(w.max_us)
        );
        let _ = writeln!(
            t,
            "  server CPU {}% of a core; RSS MiB before {} / granted {} / end {}; {} B per lease",
            opt(self.cpu_pct, 1),
            mib(self.rss_before_kib),
            mib(self.rss_granted_kib),
            mib(self.rss_end_kib),
            opt(
                bytes_per_lease(self.rss_before_kib, self.rss_end_kib, self.leases),
                0
            )
        );
        let _ = writeln!(
            t,
            "  TTL-0 answers {}, unanswered {}, overlapped {}; at the end {} alive, {} not",
            self.ttl0_answers,
            self.unanswered,
            self.overlapped,
            self.alive_at_end,
            self.dead_at_end
        );
        for (k, n) in &self.errors {
            let _ = writeln!(t, "  error x{n}: {k}");
        }
        t
    }
}

fn mib(kib: Option<u64>) -> String {
    opt(kib.map(|k| k as f64 / 1024.0), 0)
}

/// One Markdown table of the reports.
pub fn table(reports: &[ScaleReport]) -> String {
    let mut t = String::from(
        "| system | leases / streams | offered /s | answered /s | p50 ms | p99 ms | max ms | TTL-0 answers | alive at end | server CPU % | RSS MiB before / granted / end | bytes per lease | grants /s |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for r in reports {
        let w = &r.window;
        let _ = writeln!(
            t,
            "| {} | {} / {} | {:.0} | {:.0} | {} | {} | {} | {} | {} of {} | {} | {} / {} / {} | {} | {:.0} |",
            r.system,
            r.leases,
            r.streams,
            r.offered_per_s,
            w.per_s,
            ms(w.p50_us),
            ms(w.p99_us),
            ms(w.max_us),
            r.ttl0_answers,
            r.alive_at_end,
            r.leases,
            opt(r.cpu_pct, 1),
            mib(r.rss_before_kib),
            mib(r.rss_granted_kib),
            mib(r.rss_end_kib),
            opt(
                bytes_per_lease(r.rss_before_kib, r.rss_end_kib, r.leases),
                0
            ),
            r.leases as f64 / r.grant_s.max(1e-9),
        );
    }
    t
}

/// What one stream saw.
#[derive(Default)]
struct StreamOut {
    samples: Vec<Sample>,
    ttl0: u64,
    unanswered: u64,
    overlapped: u64,
    errors: BTreeMap<String, u64>,
}

/// Keep-alives sent and not yet answered: lease id -> intended send times,
/// oldest first (a stream answers in order, so a lease whose next
/// keep-alive went out before the last was answered has two).
type Pending = Arc<Mutex<HashMap<i64, VecDeque<Instant>>>>;

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<i64, VecDeque<Instant>>> {
    // A panicking receiver already ends the run; the map stays usable.
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One stream: takes its leases (id, phase) as they are granted, sends
/// each one's keep-alive every `period` at its phase, until `stop`.
async fn stream(
    mut lease: LeaseClient<AuthChannel>,
    mut granted: mpsc::Receiver<(i64, Duration)>,
    period: Duration,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) -> StreamOut {
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    let mut rx = Some(rx);
    let mut receiver: Option<JoinHandle<StreamOut>> = None;
    let mut out = StreamOut::default();
    let mut due: BinaryHeap<Reverse<(Instant, i64)>> = BinaryHeap::new();
    let mut granting = true;
    'run: loop {
        let next = due.peek().map(|Reverse((at, _))| *at);
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            g = granted.recv(), if granting => match g {
                Some((id, phase)) => {
                    let at = first_due(t0.elapsed(), phase, period);
                    due.push(Reverse((t0 + at, id)));
                }
                None => granting = false,
            },
            _ = tokio::time::sleep_until(next.unwrap_or(t0).into()), if next.is_some() => {
                let now = Instant::now();
                while let Some(&Reverse((at, id))) = due.peek() {
                    if at > now {
                        break;
                    }
                    due.pop();
                    {
                        let mut p = lock(&pending);
                        let waiting = p.entry(id).or_default();
                        if !waiting.is_empty() {
                            out.overlapped += 1;
                        }
                        waiting.push_back(at);
                    }
                    if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
                        *out.errors.entry("keep-alive stream closed".into()).or_default() += 1;
                        break 'run;
                    }
                    if let Some(rx) = rx.take() {
                        // Opened with its first keep-alive queued: grpc-go
                        // servers send the response headers with the first
                        // answer.
                        match lease.lease_keep_alive(ReceiverStream::new(rx)).await {
                            Ok(r) => {
                                receiver = Some(tokio::spawn(receive(
                                    r.into_inner(),
                                    pending.clone(),
                                    t0,
                                )));
                            }
                            Err(s) => {
                                *out.errors.entry(OpError::from(s).kind).or_default() += 1;
                                break 'run;
                            }
                        }
                    }
                    due.push(Reverse((at + period, id)));
                }
            }
        }
    }
    // Half-close: the server answers what it has, then ends the stream.
    drop(tx);
    if let Some(h) = receiver {
        match tokio::time::timeout(DRAIN_TIMEOUT, h).await {
            Ok(Ok(r)) => {
                out.samples = r.samples;
                out.ttl0 = r.ttl0;
                for (k, n) in r.errors {
                    *out.errors.entry(k).or_default() += n;
                }
            }
            Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {
                *out.errors
                    .entry("answers still missing after the drain timeout".into())
                    .or_default() += 1;
            }
        }
    }
    out.unanswered = lock(&pending).values().map(|q| q.len() as u64).sum();
    out
}

/// The oldest unanswered keep-alive of lease `id`.
fn take_oldest(pending: &Pending, id: i64) -> Option<Instant> {
    let mut p = lock(pending);
    let q = p.get_mut(&id)?;
    let at = q.pop_front();
    if q.is_empty() {
        p.remove(&id);
    }
    at
}

/// Reads one stream's answers until the server ends it.
async fn receive(
    mut inbound: Streaming<LeaseKeepAliveResponse>,
    pending: Pending,
    t0: Instant,
) -> StreamOut {
    let mut out = StreamOut::default();
    loop {
        match inbound.message().await {
            Ok(Some(r)) => {
                let now = Instant::now();
                let Some(at) = take_oldest(&pending, r.id) else {
                    *out.errors
                        .entry("answer for a lease not asked".into())
                        .or_default() += 1;
                    continue;
                };
                if r.ttl <= 0 {
                    out.ttl0 += 1;
                    continue;
                }
                out.samples.push(Sample {
                    intended: at.saturating_duration_since(t0),
                    latency_us: u64::try_from(now.saturating_duration_since(at).as_micros())
                        .unwrap_or(u64::MAX),
                });
            }
            Ok(None) => return out,
            Err(s) => {
                *out.errors.entry(OpError::from(s).kind).or_default() += 1;
                return out;
            }
        }
    }
}

/// Grants every lease on `clients` tasks; lease k goes to stream k % n
/// with its phase.
/// Returns the ids, lease k at index k.
async fn grant_all(
    conns: &Arc<Conns>,
    a: &LeaseScaleArgs,
    to_streams: Vec<mpsc::Sender<(i64, Duration)>>,
) -> Result<Vec<i64>, BenchError> {
    let ids: Arc<Vec<AtomicU64>> = Arc::new((0..a.leases).map(|_| AtomicU64::new(0)).collect());
    let to_streams = Arc::new(to_streams);
    let (ttl, n, every) = (a.ttl, a.leases, period(a.ttl));
    let ids2 = ids.clone();
    on_tasks(a.grant_clients, a.leases, move |i| {
        let (lease, ids, to) = (conns.lease(i), ids2.clone(), to_streams.clone());
        move |k| {
            let (mut lease, ids, to) = (lease.clone(), ids.clone(), to.clone());
            async move {
                let g = lease
                    .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                    .await
                    .map_err(|s| BenchError::setup("LeaseGrant", s))?
                    .into_inner();
                if !g.error.is_empty() || g.id <= 0 {
                    return Err(BenchError::Protocol {
                        operation: "LeaseGrant",
                        detail: format!("id {} error {:?}", g.id, g.error),
                    });
                }
                ids[k as usize].store(g.id as u64, Ordering::Relaxed);
                let stream = &to[k as usize % to.len()];
                // Each stream's queue holds all its leases: never full.
                stream
                    .send((g.id, phase(k, n, every)))
                    .await
                    .map_err(|_| BenchError::Protocol {
                        operation: "LeaseGrant",
                        detail: "keep-alive stream task ended".into(),
                    })
            }
        }
    })
    .await?;
    Ok(ids
        .iter()
        .map(|v| v.load(Ordering::Relaxed) as i64)
        .collect())
}

/// LeaseTimeToLive of every lease: (TTL > 0, not).
async fn check_alive(
    conns: &Arc<Conns>,
    ids: &Arc<Vec<i64>>,
    clients: usize,
) -> Result<(u64, u64), BenchError> {
    let alive = Arc::new(AtomicU64::new(0));
    let a2 = alive.clone();
    let ids2 = ids.clone();
    on_tasks(clients, ids.len() as u64, move |i| {
        let (lease, ids, alive) = (conns.lease(i), ids2.clone(), a2.clone());
        move |k| {
            let (mut lease, id, alive) = (lease.clone(), ids[k as usize], alive.clone());
            async move {
                let r = lease
                    .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: false })
                    .await
                    .map_err(|s| BenchError::setup("LeaseTimeToLive", s))?
                    .into_inner();
                if r.ttl > 0 {
                    alive.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
        }
    })
    .await?;
    let n = alive.load(Ordering::Relaxed);
    Ok((n, ids.len() as u64 - n))
}

/// Revokes every lease (a server this run did not start keeps no leftovers).
async fn revoke_all(conns: &Arc<Conns>, ids: &Arc<Vec<i64>>, clients: usize) {
    let ids2 = ids.clone();
    let r = on_tasks(clients, ids.len() as u64, move |i| {
        let (lease, ids) = (conns.lease(i), ids2.clone());
        move |k| {
            let (mut lease, id) = (lease.clone(), ids[k as usize]);
            async move {
                // A lease that is already gone needs no revoke.
                let _ = lease.lease_revoke(LeaseRevokeRequest { id }).await;
                Ok(())
            }
        }
    })
    .await;
    if let Err(e) = r {
        say(&format!("revoking the leases: {e}"));
    }
}

/// Runs the workload against one server.
pub async fn run(
    sys: &System,
    a: &LeaseScaleArgs,
    conns: usize,
) -> Result<ScaleReport, BenchError> {
    validate(a)?;
    let conns = Arc::new(Conns::open(&sys.endpoints, conns).await?);
    let period = period(a.ttl);
    let t0 = Instant::now();
    let rss_before_kib = sys.rss_kib();
    let (stop_tx, stop_rx) = watch::channel(false);
    let per_stream = (a.leases as usize).div_ceil(a.streams);
    let mut senders = Vec::with_capacity(a.streams);
    let mut streams = Vec::with_capacity(a.streams);
    for j in 0..a.streams {
        let (tx, rx) = mpsc::channel(per_stream + 1);
        senders.push(tx);
        streams.push(tokio::spawn(stream(
            conns.lease(j),
            rx,
            period,
            t0,
            stop_rx.clone(),
        )));
    }
    say(&format!("{}: granting {} leases", sys.label, a.leases));
    let granted = grant_all(&conns, a, senders).await;
    let grant_s = t0.elapsed().as_secs_f64();
    let ids = match granted {
        Ok(ids) => Arc::new(ids),
        Err(e) => {
            let _ = stop_tx.send(true);
            return Err(e);
        }
    };
    let rss_granted_kib = sys.rss_kib();
    let open = Instant::now() + period;
    say(&format!(
        "{}: granted in {grant_s:.1} s; window opens in {:.0} s, lasts {:.0} s",
        sys.label,
        period.as_secs_f64(),
        a.duration.as_secs_f64()
    ));
    tokio::time::sleep_until(open.into()).await;
    let cpu_before = sys.cpu_ticks();
    tokio::time::sleep_until((open + a.duration).into()).await;
    let cpu_after = sys.cpu_ticks();
    let rss_end_kib = sys.rss_kib();
    let cpu_pct = match (cpu_before, cpu_after) {
        (Some(b), Some(e)) => cpu_percent(b, e, a.duration, ticks_per_s()),
        _ => None,
    };
    say(&format!(
        "{}: window closed; asking every lease's TTL",
        sys.label
    ));
    let alive = check_alive(&conns, &ids, a.grant_clients).await;
    let _ = stop_tx.send(true);
    let mut all = StreamOut::default();
    for s in streams {
        let o = match s.await {
            Ok(o) => o,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        all.samples.extend(o.samples);
        all.ttl0 += o.ttl0;
        all.unanswered += o.unanswered;
        all.overlapped += o.overlapped;
        for (k, n) in o.errors {
            *all.errors.entry(k).or_default() += n;
        }
    }
    let (alive_at_end, dead_at_end) = alive?;
    if !sys.started {
        revoke_all(&conns, &ids, a.grant_clients).await;
    }
    let from = open.saturating_duration_since(t0);
    Ok(ScaleReport {
        system: sys.label.clone(),
        leases: a.leases,
        streams: a.streams,
        ttl: a.ttl,
        grant_s,
        offered_per_s: a.leases as f64 / period.as_secs_f64(),
        window: window_stats(&all.samples, from, from + a.duration),
        ttl0_answers: all.ttl0,
        unanswered: all.unanswered,
        overlapped: all.overlapped,
        errors: all.errors,
        cpu_pct,
        rss_before_kib,
        rss_granted_kib,
        rss_end_kib,
        alive_at_end,
        dead_at_end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LeaseScaleArgs {
        LeaseScaleArgs {
            leases: 100_000,
            ttl: 30,
            streams: 100,
            duration: Duration::from_secs(60),
            grant_clients: 100,
            server: crate::workload::lease_host::no_servers(),
        }
    }

    #[test]
    fn arguments_are_checked() {
        crate::workload::lease_host::assert_rejected(
            &args(),
            validate,
            &[
                |a| a.leases = 0,
                |a| a.ttl = 2,
                |a| a.streams = 0,
                |a| a.grant_clients = 0,
                |a| a.streams = 100_001,
                |a| a.duration = Duration::from_millis(500),
            ],
        );
    }

    #[test]
    fn keep_alive_period_is_a_third_of_the_ttl() {
        assert_eq!(period(30), Duration::from_secs(10));
        assert_eq!(period(10), Duration::from_millis(3333));
    }

    #[test]
    fn overlapping_keep_alives_are_matched_oldest_first() {
        let p: Pending = Arc::default();
        let t = Instant::now();
        let later = t + Duration::from_secs(1);
        lock(&p).entry(1).or_default().extend([t, later]);
        assert_eq!(take_oldest(&p, 1), Some(t));
        assert_eq!(take_oldest(&p, 1), Some(later));
        assert_eq!(take_oldest(&p, 1), None);
        assert_eq!(take_oldest(&p, 2), None);
        assert!(lock(&p).is_empty());
    }

    #[test]
    fn keep_alives_spread_over_the_period_and_start_within_one() {
        let p = Duration::from_secs(10);
        let s = Duration::from_secs;
        assert_eq!(phase(0, 4, p), s(0));
        assert_eq!(phase(3, 4, p), Duration::from_millis(7500));
        // Granted before its phase came: the phase itself.
        assert_eq!(first_due(s(2), s(5), p), s(5));
        // Granted later: the next phase + i * period, within one period.
        assert_eq!(first_due(s(5), s(5), p), s(15));
        assert_eq!(first_due(s(27), s(5), p), s(35));
        for g in 0..100 {
            let g = Duration::from_millis(g * 370);
            let d = first_due(g, s(3), p);
            assert!(d > g && d <= g + p, "granted {g:?}, due {d:?}");
        }
    }

    #[test]
    fn table_row_shows_per_lease_memory_and_liveness() {
        let r = ScaleReport {
            system: "etcd".into(),
            leases: 1024,
            streams: 4,
            ttl: 30,
            grant_s: 2.0,
            offered_per_s: 102.4,
            window: WindowStats {
                secs: 10.0,
                count: 1000,
                per_s: 100.0,
                p50_us: 1500,
                p99_us: 9000,
                max_us: 12000,
            },
            ttl0_answers: 0,
            unanswered: 0,
            overlapped: 0,
            errors: BTreeMap::new(),
            cpu_pct: Some(12.34),
            rss_before_kib: Some(10 * 1024),
            rss_granted_kib: Some(11 * 1024),
            rss_end_kib: Some(12 * 1024),
            alive_at_end: 1024,
            dead_at_end: 0,
        };
        let t = table(&[r]);
        let row = t.lines().nth(2).unwrap();
        assert!(row.contains("| 1.500 | 9.000 | 12.000 |"), "{row}");
        assert!(row.contains("| 1024 of 1024 |"), "{row}");
        assert!(row.contains("| 12.3 |"), "{row}");
        assert!(row.contains("| 10 / 11 / 12 | 2048 | 512 |"), "{row}");
    }
}
