//! lease-expiry: a mass expiry under a steady write load. `--leases`
//! leases with the same TTL, each with one key attached (as Kubernetes
//! events are), no keep-alives; from the end of granting, `--put-clients`
//! clients put to other keys at `--put-rate` (latency from each put's
//! intended send time, so a stall counts for every put it delays) while the
//! lease keys are counted every `COUNT_EVERY`. The counts tell when expiry
//! began and when the last key went; the puts are cut into three windows:
//! before expiry, while the leases expire, and `AFTER_WINDOW` after.

use super::lease_host::{System, ms, on_tasks, opt, say, ticks_per_s};
use super::lease_window::{
    ExpiryTimeline, KeyCount, Sample, WindowStats, cpu_in_window, expiry_timeline, window_stats,
};
use crate::cli::LeaseExpiryArgs;
use crate::error::{BenchError, OpError};
use crate::grpc::Conns;
use crate::keys::prefix_end;
use bytes::Bytes;
use corekv_wire::proto::etcdserverpb::{LeaseGrantRequest, PutRequest, RangeRequest};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Prefix of the keys attached to the leases.
const LEASE_PREFIX: &str = "lease-expiry/l/";
/// Prefix of the put load's keys (never attached to a lease).
const PUT_PREFIX: &str = "lease-expiry/p/";
/// Distinct keys the put load cycles through.
const PUT_KEY_SPACE: u64 = 10_000;
const LEASE_VALUE_BYTES: usize = 64;
const PUT_VALUE_BYTES: usize = 256;
/// How often the lease keys are counted.
const COUNT_EVERY: Duration = Duration::from_millis(250);
/// Puts measured after the last lease key went.
const AFTER_WINDOW: Duration = Duration::from_secs(5);
/// Shortest span a CPU figure is computed over.
const MIN_CPU_SPAN: Duration = Duration::from_secs(1);

pub fn validate(a: &LeaseExpiryArgs) -> Result<(), BenchError> {
    let bad = |m: &str| Err(BenchError::InvalidArgument(m.into()));
    if a.leases == 0 {
        return bad("--leases must be > 0");
    }
    if a.ttl <= 0 {
        return bad("--ttl must be > 0");
    }
    if !(a.put_rate.is_finite() && a.put_rate > 0.0) {
        return bad("--put-rate must be positive");
    }
    if a.put_clients == 0 || a.grant_clients == 0 {
        return bad("--put-clients and --grant-clients must be > 0");
    }
    if a.max_wait < Duration::from_secs(1) {
        return bad("--max-wait must be at least 1s");
    }
    Ok(())
}

fn lease_key(k: u64) -> Bytes {
    Bytes::from(format!("{LEASE_PREFIX}{k:08}"))
}

pub struct ExpiryReport {
    pub system: String,
    pub leases: u64,
    pub ttl: i64,
    pub put_rate: f64,
    pub grant_s: f64,
    /// From the first grant to the start of expiry (the last full count).
    pub began_after_s: Option<f64>,
    pub timeline: Option<ExpiryTimeline>,
    pub before: WindowStats,
    pub during: WindowStats,
    pub after: WindowStats,
    pub cpu_before: Option<f64>,
    pub cpu_during: Option<f64>,
    pub put_errors: BTreeMap<String, u64>,
    /// Lease keys left when waiting stopped.
    pub keys_left: u64,
}

fn window_text(w: &WindowStats) -> String {
    format!(
        "{} puts in {:.1} s, p50 {} p99 {} max {} ms",
        w.count,
        w.secs,
        ms(w.p50_us),
        ms(w.p99_us),
        ms(w.max_us)
    )
}

impl ExpiryReport {
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "lease-expiry on {}: {} leases (one key each), TTL {} s, puts {}/s",
            self.system, self.leases, self.ttl, self.put_rate
        );
        let _ = writeln!(t, "  granted and attached in {:.1} s", self.grant_s);
        match &self.timeline {
            Some(tl) => {
                let _ = writeln!(
                    t,
                    "  expiry began {} s after the first grant{}; all keys gone {} s after it began; revokes {:.0}/s mean, {:.0}/s peak",
                    opt(self.began_after_s, 1),
                    if tl.began_unseen {
                        " (before counting began: the window before expiry is empty)"
                    } else {
                        ""
                    },
                    opt(
                        tl.all_gone
                            .map(|g| g.saturating_sub(tl.start).as_secs_f64()),
                        1
                    ),
                    tl.mean_per_s,
                    tl.peak_per_s
                );
            }
            None => {
                let _ = writeln!(t, "  no lease key went");
            }
        }
        if self.keys_left > 0 {
            let _ = writeln!(t, "  {} lease keys still there at the end", self.keys_left);
        }
        let _ = writeln!(
            t,
            "  puts before expiry: {} (server CPU {}%)",
            window_text(&self.before),
            opt(self.cpu_before, 1)
        );
        let _ = writeln!(
            t,
            "  puts during expiry: {} (server CPU {}%)",
            window_text(&self.during),
            opt(self.cpu_during, 1)
        );
        let _ = writeln!(t, "  puts after: {}", window_text(&self.after));
        for (k, n) in &self.put_errors {
            let _ = writeln!(t, "  put error x{n}: {k}");
        }
        t
    }
}

/// One Markdown table of the reports.
pub fn table(reports: &[ExpiryReport]) -> String {
    let mut t = String::from(
        "| system | leases, TTL | expiry began s | keys gone after s | revokes /s mean / peak | puts before: p50 / p99 / max ms | puts during: p50 / p99 / max ms | puts after: p99 ms | put errors | server CPU % before / during |\n\
         |---|---|---:|---:|---|---|---|---:|---:|---|\n",
    );
    for r in reports {
        let tl = r.timeline.as_ref();
        let gone = tl.and_then(|tl| {
            tl.all_gone
                .map(|g| g.saturating_sub(tl.start).as_secs_f64())
        });
        let w3 =
            |w: &WindowStats| format!("{} / {} / {}", ms(w.p50_us), ms(w.p99_us), ms(w.max_us));
        let _ = writeln!(
            t,
            "| {} | {}, {} s | {} | {} | {} / {} | {} | {} | {} | {} | {} / {} |",
            r.system,
            r.leases,
            r.ttl,
            opt(r.began_after_s, 1),
            gone.map(|g| format!("{g:.1}"))
                .unwrap_or_else(|| format!("{} left", r.keys_left)),
            opt(tl.map(|t| t.mean_per_s), 0),
            opt(tl.map(|t| t.peak_per_s), 0),
            w3(&r.before),
            w3(&r.during),
            ms(r.after.p99_us),
            r.put_errors.values().sum::<u64>(),
            opt(r.cpu_before, 1),
            opt(r.cpu_during, 1),
        );
    }
    t
}

/// Grants the leases and attaches one key to each, on `grant_clients` tasks.
async fn grant_and_attach(conns: &Arc<Conns>, a: &LeaseExpiryArgs) -> Result<(), BenchError> {
    let ttl = a.ttl;
    let value = Bytes::from(vec![b'l'; LEASE_VALUE_BYTES]);
    on_tasks(a.grant_clients, a.leases, move |i| {
        let (lease, kv, value) = (conns.lease(i), conns.kv(i), value.clone());
        move |k| {
            let (mut lease, mut kv, value) = (lease.clone(), kv.clone(), value.clone());
            async move {
                let g = lease
                    .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                    .await
                    .map_err(|s| BenchError::setup("LeaseGrant", s))?
                    .into_inner();
                kv.put(PutRequest {
                    key: lease_key(k),
                    value,
                    lease: g.id,
                    ..Default::default()
                })
                .await
                .map_err(|s| BenchError::setup("Put with a lease", s))?;
                Ok(())
            }
        }
    })
    .await
}

/// Counts the lease keys every `COUNT_EVERY` until none is left or
/// `deadline`; each count carries the server's CPU ticks.
async fn count_keys(
    sys: &System,
    conns: &Conns,
    t0: Instant,
    deadline: Instant,
) -> Result<Vec<KeyCount>, BenchError> {
    let mut kv = conns.kv(0);
    let req = RangeRequest {
        key: Bytes::from(LEASE_PREFIX),
        range_end: Bytes::from(prefix_end(LEASE_PREFIX.as_bytes())),
        count_only: true,
        serializable: true,
        ..Default::default()
    };
    let mut counts = Vec::new();
    let mut tick = tokio::time::interval(COUNT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let r = kv
            .range(req.clone())
            .await
            .map_err(|s| BenchError::setup("count the lease keys", s))?
            .into_inner();
        let keys = u64::try_from(r.count).unwrap_or(0);
        counts.push(KeyCount {
            at: t0.elapsed(),
            keys,
            cpu_ticks: sys.cpu_ticks(),
        });
        if keys == 0 || Instant::now() >= deadline {
            return Ok(counts);
        }
    }
}

/// Puts at `rate` from `clients` tasks until `stop`; put i is intended at
/// `start + i / rate`.
async fn put_load(
    conns: &Conns,
    clients: usize,
    rate: f64,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> (Vec<Sample>, BTreeMap<String, u64>) {
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let value = Bytes::from(vec![b'p'; PUT_VALUE_BYTES]);
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let (mut kv, next, stop, value) = (conns.kv(i), next.clone(), stop.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let op = next.fetch_add(1, Ordering::Relaxed);
                let intended = start + Duration::from_secs_f64(op as f64 / rate);
                tokio::time::sleep_until(intended.into()).await;
                if stop.load(Ordering::Relaxed) {
                    return (samples, errors);
                }
                let key = Bytes::from(format!("{PUT_PREFIX}{:05}", op % PUT_KEY_SPACE));
                let r = kv
                    .put(PutRequest {
                        key,
                        value: value.clone(),
                        ..Default::default()
                    })
                    .await;
                match r {
                    Ok(_) => samples.push(Sample {
                        intended: intended.saturating_duration_since(t0),
                        latency_us: u64::try_from(intended.elapsed().as_micros())
                            .unwrap_or(u64::MAX),
                    }),
                    Err(s) => *errors.entry(OpError::from(s).kind).or_default() += 1,
                }
            }
        }));
    }
    let mut samples = Vec::new();
    let mut errors = BTreeMap::new();
    for t in tasks {
        let (s, e) = match t.await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        samples.extend(s);
        for (k, n) in e {
            *errors.entry(k).or_default() += n;
        }
    }
    (samples, errors)
}

/// Runs the workload against one server.
pub async fn run(
    sys: &System,
    a: &LeaseExpiryArgs,
    conns: usize,
) -> Result<ExpiryReport, BenchError> {
    validate(a)?;
    // The put load and the counter get connections of their own, apart
    // from the granting ones.
    let conns = Arc::new(Conns::open(&sys.endpoints, conns).await?);
    let load_conns = Arc::new(Conns::open(&sys.endpoints, a.put_clients.min(16)).await?);
    let t0 = Instant::now();
    say(&format!(
        "{}: granting {} leases (TTL {} s) with one key each",
        sys.label, a.leases, a.ttl
    ));
    grant_and_attach(&conns, a).await?;
    let grant_s = t0.elapsed().as_secs_f64();
    say(&format!(
        "{}: granted in {grant_s:.1} s; puts at {}/s until the lease keys are gone",
        sys.label, a.put_rate
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, stop) = (load_conns.clone(), stop.clone());
        let (clients, rate) = (a.put_clients, a.put_rate);
        tokio::spawn(async move { put_load(&c, clients, rate, t0, stop).await })
    };
    let counted = count_keys(sys, &load_conns, t0, Instant::now() + a.max_wait).await;
    if counted.is_ok() {
        tokio::time::sleep(AFTER_WINDOW).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, put_errors) = match load.await {
        Ok(r) => r,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    let counts = counted?;
    let timeline = expiry_timeline(&counts, a.leases);
    let load_from = Duration::from_secs_f64(grant_s);
    let last = counts.last().map_or(load_from, |c| c.at);
    let (start, end) = match &timeline {
        Some(tl) => (tl.start, tl.all_gone.unwrap_or(last)),
        None => (last, last),
    };
    let tps = ticks_per_s();
    Ok(ExpiryReport {
        system: sys.label.clone(),
        leases: a.leases,
        ttl: a.ttl,
        put_rate: a.put_rate,
        grant_s,
        began_after_s: timeline.map(|tl| tl.start.as_secs_f64()),
        timeline,
        before: window_stats(&samples, load_from, start),
        during: window_stats(&samples, start, end),
        after: window_stats(&samples, end, end + AFTER_WINDOW),
        cpu_before: cpu_in_window(&counts, load_from, start, tps, MIN_CPU_SPAN),
        cpu_during: cpu_in_window(&counts, start, end, tps, MIN_CPU_SPAN),
        put_errors,
        keys_left: counts.last().map_or(a.leases, |c| c.keys),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LeaseExpiryArgs {
        LeaseExpiryArgs {
            leases: 100_000,
            ttl: 60,
            put_rate: 500.0,
            put_clients: 16,
            grant_clients: 100,
            max_wait: Duration::from_secs(600),
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
                |a| a.ttl = 0,
                |a| a.put_rate = 0.0,
                |a| a.put_rate = f64::NAN,
                |a| a.put_clients = 0,
                |a| a.grant_clients = 0,
                |a| a.max_wait = Duration::ZERO,
            ],
        );
    }

    #[test]
    fn lease_keys_sort_in_grant_order_under_their_prefix() {
        let (a, b) = (lease_key(9), lease_key(10));
        assert!(a < b);
        assert!(a.starts_with(LEASE_PREFIX.as_bytes()));
        assert!(b.as_ref() < prefix_end(LEASE_PREFIX.as_bytes()).as_slice());
        assert!(!PUT_PREFIX.starts_with(LEASE_PREFIX));
    }

    #[test]
    fn table_row_without_a_finished_expiry_says_what_is_left() {
        let r = ExpiryReport {
            system: "corekv".into(),
            leases: 10,
            ttl: 20,
            put_rate: 500.0,
            grant_s: 1.0,
            began_after_s: None,
            timeline: None,
            before: WindowStats::default(),
            during: WindowStats::default(),
            after: WindowStats::default(),
            cpu_before: None,
            cpu_during: None,
            put_errors: BTreeMap::from([("Unavailable: x".to_string(), 3)]),
            keys_left: 10,
        };
        let t = table(&[r]);
        let row = t.lines().nth(2).unwrap();
        assert!(row.contains("| 10 left |"), "{row}");
        assert!(row.contains("| - / - |"), "{row}");
        assert!(row.contains("| 3 |"), "{row}");
    }
}
