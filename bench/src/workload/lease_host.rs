//! The servers the lease-at-scale workloads run against: etcd and/or
//! corekv started here as one member each on free loopback ports (as
//! `compare` starts them), one after the other, or an already running
//! server at --endpoints (with --server-pid for its CPU and memory). Also
//! the helpers both workloads share: the server's /proc figures, many
//! calls on a bounded number of tasks, and progress lines.

use crate::cli::LeaseServerArgs;
use crate::cluster::{self, Cluster, find_binary, start_cluster};
use crate::error::BenchError;
use crate::grpc;
use crate::workload::lease_window::parse_stat_cpu_ticks;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Time a started server gets to elect itself and answer Status.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One server to run a workload against.
pub enum Plan {
    Start {
        label: &'static str,
        bin: PathBuf,
        corekv: bool,
    },
    Running {
        endpoints: Vec<String>,
        pid: Option<u32>,
    },
}

/// The servers `args` asks for: the binaries to start (etcd first), or the
/// running server at `endpoints`.
pub fn plans(args: &LeaseServerArgs, endpoints: &[String]) -> Result<Vec<Plan>, BenchError> {
    let started = [
        ("etcd", &args.etcd_bin, false),
        ("corekv", &args.corekv_bin, true),
    ];
    let mut out = Vec::new();
    for (label, bin, corekv) in started {
        let Some(bin) = bin else { continue };
        let found = find_binary(bin).ok_or_else(|| {
            BenchError::InvalidArgument(format!("{label} binary {} not found", bin.display()))
        })?;
        out.push(Plan::Start {
            label,
            bin: found,
            corekv,
        });
    }
    match (out.is_empty(), args.server_pid) {
        (false, Some(_)) => Err(BenchError::InvalidArgument(
            "--server-pid is for a running server at --endpoints; \
             started servers are measured without it"
                .into(),
        )),
        (false, None) => Ok(out),
        (true, pid) => {
            if endpoints.is_empty() {
                return Err(BenchError::InvalidArgument("no endpoints".into()));
            }
            Ok(vec![Plan::Running {
                endpoints: endpoints.to_vec(),
                pid,
            }])
        }
    }
}

/// A server being measured; a started one is stopped when this drops.
pub struct System {
    pub label: String,
    pub endpoints: Vec<String>,
    pub pid: Option<u32>,
    /// True when this run started the server (and so need not clean up).
    pub started: bool,
    _cluster: Option<Cluster>,
}

impl Plan {
    /// The server's name in reports.
    pub fn label(&self) -> String {
        match self {
            Plan::Start { label, .. } => (*label).to_string(),
            Plan::Running { endpoints, .. } => endpoints.join(","),
        }
    }

    /// Starts the server (or checks the running one answers) and waits
    /// until it has a leader.
    pub async fn open(self, data_root: &Path) -> Result<System, BenchError> {
        match self {
            Plan::Running { endpoints, pid } => {
                grpc::wait_ready(&endpoints[0], START_TIMEOUT)
                    .await
                    .map_err(|e| BenchError::ServerStart {
                        what: endpoints[0].clone(),
                        detail: e,
                    })?;
                Ok(System {
                    label: endpoints.join(","),
                    endpoints,
                    pid,
                    started: false,
                    _cluster: None,
                })
            }
            Plan::Start { label, bin, corekv } => {
                let cluster = start_cluster(&bin, label, data_root, 1, corekv)?;
                let endpoints = cluster.client_endpoints();
                grpc::wait_ready(&endpoints[0], START_TIMEOUT)
                    .await
                    .map_err(|e| BenchError::ServerStart {
                        what: format!("{label} ({})", bin.display()),
                        detail: format!("no gRPC Status with a leader: {e}"),
                    })?;
                let pid = cluster.members.first().map(cluster::Server::pid);
                say(&format!("{label}: serving on {}", endpoints.join(",")));
                Ok(System {
                    label: label.to_string(),
                    endpoints,
                    pid,
                    started: true,
                    _cluster: Some(cluster),
                })
            }
        }
    }
}

impl System {
    /// The server's utime + stime, clock ticks.
    pub fn cpu_ticks(&self) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid?)).ok()?;
        parse_stat_cpu_ticks(&stat)
    }

    /// The server's resident set, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        cluster::rss_kib(self.pid?).map(|(rss, _)| rss)
    }
}

/// Runs `run` against every server `server` asks for, one after the
/// other (a started server is stopped before the next starts), prints each
/// report and then one table of all (also to --markdown-out). A server
/// that fails to start or to finish the workload is named under the table
/// with its error, and the others still run; the call fails only when none
/// finished.
pub async fn each_system<R>(
    server: &LeaseServerArgs,
    endpoints: &[String],
    run: impl AsyncFn(&System) -> Result<R, BenchError>,
    text: fn(&R) -> String,
    table: fn(&[R]) -> String,
) -> Result<(), BenchError> {
    let mut reports = Vec::new();
    let mut failed = Vec::new();
    for plan in plans(server, endpoints)? {
        let label = plan.label();
        let result = match plan.open(&server.data_root).await {
            Ok(sys) => run(&sys).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(report) => {
                print!("{}", text(&report));
                reports.push(report);
            }
            Err(e) => failed.push((label, e)),
        }
    }
    if reports.is_empty()
        && let Some((_, e)) = failed.pop()
    {
        return Err(e);
    }
    let mut t = table(&reports);
    for (label, e) in &failed {
        t.push_str(&format!("\n{label} failed: {e}\n"));
    }
    println!("{t}");
    write_markdown(server.markdown_out.as_deref(), &t)
}

/// Clock ticks per second of /proc CPU times (USER_HZ).
pub fn ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a system constant; no pointers involved.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// A progress line on stderr (silenced by COREKV_BENCH_QUIET like the
/// other workloads' progress).
pub fn say(line: &str) {
    if std::env::var_os("COREKV_BENCH_QUIET").is_none() {
        eprintln!("{line}");
    }
}

/// Runs `call(k)` for every k in `0..count` on `tasks` tasks; task i gets
/// its own caller from `caller(i)`. The first error stops the others
/// (calls already sent finish) and is returned.
pub async fn on_tasks<C, F, Fut>(tasks: usize, count: u64, caller: C) -> Result<(), BenchError>
where
    C: Fn(usize) -> F,
    F: FnMut(u64) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), BenchError>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(tasks);
    for i in 0..tasks.max(1) {
        let mut call = caller(i);
        let (next, failed) = (next.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= count || failed.load(Ordering::Relaxed) {
                    return Ok(());
                }
                if let Err(e) = call(k).await {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
        }));
    }
    let mut first = Ok(());
    for h in handles {
        let r = match h.await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if first.is_ok() {
            first = r;
        }
    }
    first
}

/// Milliseconds with three decimals, for tables.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// A figure or "-" when it is not known.
pub fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

/// Writes `table` to `path` when asked.
fn write_markdown(path: Option<&Path>, table: &str) -> Result<(), BenchError> {
    let Some(path) = path else { return Ok(()) };
    std::fs::write(path, table).map_err(|source| BenchError::Io {
        operation: "write table",
        path: path.to_path_buf(),
        source,
    })
}

/// Server arguments naming no server (tests fill in what they need).
#[cfg(test)]
pub fn no_servers() -> LeaseServerArgs {
    LeaseServerArgs {
        etcd_bin: None,
        corekv_bin: None,
        data_root: PathBuf::from("/var/tmp"),
        server_pid: None,
        markdown_out: None,
    }
}

/// Asserts `good` passes `validate` and each change in `bad` makes it fail.
#[cfg(test)]
pub fn assert_rejected<A: Clone>(
    good: &A,
    validate: fn(&A) -> Result<(), BenchError>,
    bad: &[fn(&mut A)],
) {
    assert!(validate(good).is_ok());
    for (i, f) in bad.iter().enumerate() {
        let mut a = good.clone();
        f(&mut a);
        assert!(validate(&a).is_err(), "case {i} passed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> LeaseServerArgs {
        no_servers()
    }

    #[test]
    fn plans_start_etcd_first_or_use_the_running_server() {
        let eps = vec!["127.0.0.1:2379".to_string()];
        let mut a = args();
        a.server_pid = Some(7);
        match &plans(&a, &eps).unwrap()[..] {
            [Plan::Running { pid: Some(7), .. }] => {}
            _ => panic!("expected the running server"),
        }
        a.server_pid = None;
        a.corekv_bin = Some(PathBuf::from("sh"));
        a.etcd_bin = Some(PathBuf::from("sh"));
        let labels: Vec<&str> = plans(&a, &eps)
            .unwrap()
            .iter()
            .map(|p| match p {
                Plan::Start { label, .. } => *label,
                Plan::Running { .. } => "running",
            })
            .collect();
        assert_eq!(labels, ["etcd", "corekv"]);
        a.server_pid = Some(7);
        assert!(plans(&a, &eps).is_err(), "a pid is not for started servers");
        a.server_pid = None;
        a.etcd_bin = Some(PathBuf::from("/nonexistent/etcd"));
        assert!(plans(&a, &eps).is_err());
        assert!(plans(&args(), &[]).is_err());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn on_tasks_covers_every_index_once_and_stops_on_error() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        on_tasks(4, 50, move |_| {
            let s = s.clone();
            move |k| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(k);
                    Ok(())
                }
            }
        })
        .await
        .unwrap();
        let mut v = seen.lock().unwrap().clone();
        v.sort_unstable();
        assert_eq!(v, (0..50).collect::<Vec<_>>());
        let r = on_tasks(3, 1000, |_| {
            |k| async move {
                if k == 10 {
                    Err(BenchError::InvalidArgument("ten".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(matches!(r, Err(BenchError::InvalidArgument(m)) if m == "ten"));
    }

    #[test]
    fn own_cpu_ticks_and_clock_rate() {
        let me = System {
            label: "self".into(),
            endpoints: Vec::new(),
            pid: Some(std::process::id()),
            started: false,
            _cluster: None,
        };
        assert!(me.cpu_ticks().is_some());
        assert!(me.rss_kib().is_some_and(|k| k > 0));
        assert!(ticks_per_s() > 0.0);
    }
}
