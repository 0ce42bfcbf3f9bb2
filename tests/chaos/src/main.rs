//! `corekv-chaos --bin target/release/corekv [--runs N] [--seed S]
//! [--seconds T] [--clients C] [--out DIR] [--net auto|netns|proxy|alternate]`:
//! N runs of a 3-member cluster
//! under a mixed native+gRPC workload with faults, each ending with heal,
//! recovery, a sentinel write every watcher must reach, final reads through
//! every member, HashKV on every member at one revision, and the history
//! checker's verdict. The last line is
//! `runs=N ops=... faults=... kills=... members=... leases=... expired=...
//! inconclusive=I violations=V lost=L`. Exit status 1 if any run had a
//! violation or a lost write, or the checker ran out of search budget.

mod cluster;
mod leases;
mod membership;
mod nemesis;
mod proxy;
mod watchers;
mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use corekv_checker::history::{MemberHash, Outcome, Request, Response};
use corekv_checker::recorder::Recorder;
use corekv_checker::{Options, Report, check};
use corekv_wire::messages as w;
use tokio::sync::Mutex;

use cluster::{Cluster, MEMBERS, Network};
use nemesis::Faults;
use workload::{Endpoint, PREFIX, PREFIX_END, Proto, Worker, native_client, record_native};

struct Args {
    bin: PathBuf,
    runs: u32,
    seed: u64,
    seconds: u64,
    clients: u32,
    out: PathBuf,
    net: NetMode,
}

/// How the members of a run are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetMode {
    /// Network namespaces where the host allows them, else proxies.
    Auto,
    /// Network namespaces or fail.
    Netns,
    /// In-process TCP proxies on loopback.
    Proxy,
    /// Even runs `Auto`, odd runs `Proxy` (the default suite covers both).
    Alternate,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        bin: PathBuf::from("target/release/corekv"),
        runs: 1,
        seed: 1,
        seconds: 60,
        clients: 6,
        out: PathBuf::from(format!("/var/tmp/corekv-chaos-{}", std::process::id())),
        net: NetMode::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--bin" => a.bin = v.into(),
            "--runs" => a.runs = v.parse()?,
            "--seed" => a.seed = v.parse()?,
            "--seconds" => a.seconds = v.parse()?,
            "--clients" => a.clients = v.parse()?,
            "--out" => a.out = v.into(),
            "--net" => {
                a.net = match v.as_str() {
                    "auto" => NetMode::Auto,
                    "netns" => NetMode::Netns,
                    "proxy" => NetMode::Proxy,
                    "alternate" => NetMode::Alternate,
                    _ => bail!("--net must be auto, netns, proxy or alternate"),
                }
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    Ok(a)
}

struct RunResult {
    ops: usize,
    faults: Faults,
    report: Report,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse()?;
    std::fs::create_dir_all(&args.out)?;
    let (mut ops, mut faults, mut kills, mut violations, mut lost) = (0, 0, 0, 0, 0);
    let (mut leases, mut expired, mut inconclusive, mut members) = (0, 0, 0, 0);
    for run in 0..args.runs {
        let seed = args.seed.wrapping_add(u64::from(run));
        let r = one_run(&args, run, seed).await?;
        ops += r.ops;
        faults += r.faults.total();
        kills += r.faults.kills();
        members += r.faults.member;
        violations += r.report.violations.len() + r.faults.unexpected_exits.len();
        lost += r.report.lost;
        leases += r.report.leases;
        expired += r.report.expired;
        inconclusive += usize::from(r.report.inconclusive.is_some());
    }
    println!(
        "runs={} ops={ops} faults={faults} kills={kills} members={members} leases={leases} expired={expired} inconclusive={inconclusive} violations={violations} lost={lost}",
        args.runs
    );
    // A run the checker could not decide is not a pass.
    if violations > 0 || lost > 0 || inconclusive > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn one_run(args: &Args, run: u32, seed: u64) -> Result<RunResult> {
    let dir = args.out.join(format!("run-{run}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let net = network(args.net, run)?;
    println!("chaos: run {run}: {}", net.describe());
    let mut c = Cluster::new(&args.bin, &dir, net)?;
    for i in 0..MEMBERS {
        c.start(i, None)?;
    }
    let endpoints: Vec<Endpoint> = c
        .members
        .iter()
        .map(|m| Endpoint {
            native: m.native.clone(),
            client_url: m.client_url.clone(),
        })
        .collect();
    let cluster = Arc::new(Mutex::new(c));
    let result = drive(args, seed, &cluster, &endpoints, &dir).await;
    {
        let mut c = cluster.lock().await;
        c.shutdown();
        match &c.net {
            Network::Namespaces(n) => cluster::teardown_net(n),
            Network::Proxy(p) => println!("chaos: run {run}: proxies {}", p.stats()),
        }
    }
    let r = result?;
    println!(
        "run {run} seed {seed}: ops={} acknowledged={} unknown={} failed={} watch_events={} leases={} expired={} final_revision={} faults={} {:?} members={} (leader {}, learner {}, new address {}, killed {}, gave up {}) violations={} lost={}{}",
        r.ops,
        r.report.acknowledged,
        r.report.unknown,
        r.report.failed,
        r.report.watch_events,
        r.report.leases,
        r.report.expired,
        r.report.final_revision,
        r.faults.total(),
        (
            r.faults.kill_leader,
            r.faults.kill_follower,
            r.faults.kill_all,
            r.faults.pause,
            r.faults.partition,
            r.faults.slow_disk
        ),
        r.faults.member,
        r.faults.member_leader,
        r.faults.member_learner,
        r.faults.member_new_address,
        r.faults.member_killed,
        r.faults.member_gave_up.len(),
        r.report.violations.len(),
        r.report.lost,
        r.report
            .inconclusive
            .as_deref()
            .map(|s| format!(" INCONCLUSIVE: {s}"))
            .unwrap_or_default(),
    );
    for v in r.report.violations.iter().take(10) {
        println!("  VIOLATION {:?}: {}", v.kind, v.detail);
    }
    for e in &r.faults.member_gave_up {
        println!("  NOTE membership fault gave up (the heal finished it): {e}");
    }
    for e in &r.faults.unexpected_exits {
        println!("  VIOLATION member exited by itself: {e}");
    }
    Ok(r)
}

/// The network of run `run`; namespaces fall back to proxies under `auto`.
fn network(mode: NetMode, run: u32) -> Result<Network> {
    let netns = match mode {
        NetMode::Auto | NetMode::Netns => true,
        NetMode::Proxy => false,
        NetMode::Alternate => run % 2 == 0,
    };
    if netns {
        let id = 20 + ((std::process::id() + run * 7) % 200) as u8;
        match cluster::setup_net(id) {
            Ok(n) => return Ok(Network::Namespaces(n)),
            Err(e) if mode == NetMode::Netns => return Err(e.context("--net netns")),
            Err(e) => eprintln!("chaos: network namespaces unavailable ({e}); using proxies"),
        }
    }
    Ok(Network::Proxy(proxy::Proxy::start(MEMBERS)?))
}

async fn wait_leader(cluster: &Mutex<Cluster>, within: Duration) -> Result<usize> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = nemesis::leader(cluster).await {
            return Ok(l);
        }
        if Instant::now() > deadline {
            bail!("no leader within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drive(
    args: &Args,
    seed: u64,
    cluster: &Arc<Mutex<Cluster>>,
    endpoints: &[Endpoint],
    dir: &std::path::Path,
) -> Result<RunResult> {
    wait_leader(cluster, cluster::START_TIMEOUT).await?;
    let rec = Arc::new(Recorder::new());
    rec.set_election_timeout_ms(cluster::ELECTION_TIMEOUT_MS);
    let stop_clients = Arc::new(AtomicBool::new(false));
    let stop_faults = Arc::new(AtomicBool::new(false));
    let done_at = Arc::new(AtomicI64::new(0));
    let workers: Vec<_> = (0..args.clients)
        .map(|id| {
            tokio::spawn(
                Worker {
                    id,
                    proto: if id % 2 == 0 {
                        Proto::Native
                    } else {
                        Proto::Grpc
                    },
                    endpoints: endpoints.to_vec(),
                    rec: rec.clone(),
                    stop: stop_clients.clone(),
                    seed: seed.wrapping_mul(1000).wrapping_add(u64::from(id)),
                }
                .run(),
            )
        })
        .collect();
    let watchers: Vec<_> = (0..2)
        .map(|id| {
            tokio::spawn(watchers::run(
                id,
                endpoints.to_vec(),
                rec.clone(),
                done_at.clone(),
            ))
        })
        .collect();
    let admin = tokio::spawn(admin(
        endpoints.to_vec(),
        rec.clone(),
        stop_clients.clone(),
        args.clients,
    ));
    let stop_terms = Arc::new(AtomicBool::new(false));
    let terms = tokio::spawn(watch_terms(
        endpoints.to_vec(),
        rec.clone(),
        stop_terms.clone(),
    ));
    let nemesis = tokio::spawn(nemesis::run(cluster.clone(), seed, stop_faults.clone()));
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;

    // Heal and recover, then stop the clients.
    stop_faults.store(true, Ordering::Relaxed);
    let faults = nemesis.await?;
    {
        let mut c = cluster.lock().await;
        c.heal();
        for i in 0..MEMBERS {
            if c.members[i].paused {
                c.resume(i);
            }
            c.start(i, None)?;
        }
    }
    wait_leader(cluster, Duration::from_secs(30)).await?;
    // Three voters again: a member a membership fault left out is added
    // back, a learner promoted.
    membership::restore(cluster).await?;
    // A quiet spell with the clients still running: leases granted before
    // it that nobody keeps alive pass their latest allowed expiry in it.
    tokio::time::sleep(QUIET).await;
    stop_clients.store(true, Ordering::Relaxed);
    let mut ops = 0u64;
    for w in workers {
        ops += w.await?;
    }
    admin.await?;

    // A sentinel write every watcher must reach; final reads; hashes.
    let sentinel = finish(endpoints, &rec, args.clients + 1).await?;
    done_at.store(sentinel, Ordering::Relaxed);
    stop_terms.store(true, Ordering::Relaxed);
    terms.await?;
    for w in watchers {
        if tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .is_err()
        {
            bail!("a watcher did not reach revision {sentinel} within 30 s");
        }
    }
    hashes(endpoints, &rec).await?;
    let history = rec.snapshot();
    std::fs::write(dir.join("history.json"), serde_json::to_vec(&history)?)?;
    let report = check(&history, &Options::default());
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    Ok(RunResult {
        ops: history.operations.len().max(ops as usize),
        faults,
        report,
    })
}

/// Records when a new Raft term is first seen on any member: a leader
/// change may have happened by then, and the checker's lease bounds allow
/// a new leader to restart every lease's TTL.
async fn watch_terms(endpoints: Vec<Endpoint>, rec: Arc<Recorder>, stop: Arc<AtomicBool>) {
    let mut clients: Vec<Option<corekv_wire::Client>> = vec![None; endpoints.len()];
    let mut term = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for (e, c) in endpoints.iter().zip(clients.iter_mut()) {
            if c.is_none() {
                *c = native_client(&e.native).await.ok();
            }
            let Some(client) = c.as_ref() else {
                continue;
            };
            let asked = tokio::time::timeout(TERM_POLL, client.status(w::StatusRequest {})).await;
            match asked {
                Ok(Ok(s)) if s.raft_term > term => {
                    term = s.raft_term;
                    rec.add_leader_change();
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => *c = None,
            }
        }
        tokio::time::sleep(TERM_POLL).await;
    }
}

/// Workload without faults after the heal: longer than the short lease
/// TTLs plus two election timeouts plus the checker's lease slack.
const QUIET: Duration = Duration::from_secs(10);

/// How often (and how long at most) the term watcher asks each member.
const TERM_POLL: Duration = Duration::from_millis(200);

/// Compaction (recorded) and defragmentation now and then.
async fn admin(endpoints: Vec<Endpoint>, rec: Arc<Recorder>, stop: Arc<AtomicBool>, id: u32) {
    let mut round = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_secs(4)).await;
        round += 1;
        let e = &endpoints[round % endpoints.len()];
        let Ok(c) = native_client(&e.native).await else {
            continue;
        };
        let Ok(s) = c.status(w::StatusRequest {}).await else {
            continue;
        };
        // Keep 500 revisions of history so resuming watchers rarely hit it.
        let target = s.header.revision - 500;
        if target > 1 {
            record_native(&rec, id, &c, Request::Compact { revision: target }).await;
        }
        if round % 3 == 0 {
            let _ = c.defragment(w::DefragmentRequest {}).await;
        }
    }
}

/// Sentinel put plus one linearizable read of the whole prefix through
/// every member; returns the sentinel's revision.
async fn finish(endpoints: &[Endpoint], rec: &Recorder, id: u32) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut sentinel = None;
    let mut i = 0;
    while sentinel.is_none() {
        if Instant::now() > deadline {
            bail!("sentinel write not acknowledged within 30 s");
        }
        i += 1;
        let Ok(c) = native_client(&endpoints[i % endpoints.len()].native).await else {
            continue;
        };
        let req = Request::Put {
            key: format!("{PREFIX}zz-end"),
            value: format!("sentinel-{i}"),
            lease: 0,
        };
        if let Outcome::Ok(Response::Put { revision }) = record_native(rec, id, &c, req).await {
            sentinel = Some(revision);
        }
    }
    for e in endpoints {
        let c = native_client(&e.native).await?;
        let req = Request::Range {
            key: PREFIX.into(),
            range_end: PREFIX_END.into(),
            revision: 0,
            serializable: false,
        };
        record_native(rec, id, &c, req).await;
    }
    sentinel.context("sentinel")
}

/// HashKV of every member at the current revision, once all applied it.
async fn hashes(endpoints: &[Endpoint], rec: &Recorder) -> Result<()> {
    let first = native_client(&endpoints[0].native).await?;
    let rev = first.status(w::StatusRequest {}).await?.header.revision;
    for (i, e) in endpoints.iter().enumerate() {
        let c = native_client(&e.native).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.status(w::StatusRequest {}).await?.header.revision < rev {
            if Instant::now() > deadline {
                bail!("m{i} did not apply revision {rev} within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let h = c.hash_kv(w::HashKvRequest { revision: rev }).await?;
        rec.add_hash(MemberHash {
            member: format!("m{i}"),
            revision: rev,
            compact_revision: h.compact_revision,
            hash: h.hash,
        });
    }
    Ok(())
}
