//! `corekvctl endpoint status|health|hashkv [--cluster]`, etcdctl 3.4's
//! output: per endpoint, in the order given; `--cluster` takes every
//! member's native address from MemberList instead of `--endpoints`.

use std::time::{Duration, Instant};

use clap::Subcommand;
use corekv_wire::messages as w;
use serde_json::{Value, json};

use super::fields::Fields;
use super::output::{self, Format};
use super::{Cli, EXIT_ERROR, Failure, connect, connect_any, print_json};

#[derive(Subcommand, Debug)]
pub enum EndpointCmd {
    /// Prints out the status of endpoints specified in `--endpoints` flag.
    Status,
    /// Checks the healthiness of endpoints specified in `--endpoints` flag.
    Health,
    /// Prints the KV history hash for each endpoint in --endpoints.
    Hashkv {
        /// maximum revision to hash (default: all revisions)
        #[arg(long, default_value_t = 0)]
        rev: i64,
    },
}

pub async fn run(cli: &Cli, cluster: bool, cmd: &EndpointCmd) -> Result<(), Failure> {
    let endpoints = endpoints(cli, cluster).await?;
    match cmd {
        EndpointCmd::Status => status(cli, &endpoints).await,
        EndpointCmd::Health => health(cli, &endpoints).await,
        EndpointCmd::Hashkv { rev } => hashkv(cli, &endpoints, *rev).await,
    }
}

/// `--endpoints`, or with `--cluster` the native address of every member
/// (as etcdctl's `--cluster` uses every member's client URLs).
pub async fn endpoints(cli: &Cli, cluster: bool) -> Result<Vec<String>, Failure> {
    if !cluster {
        return Ok(cli.endpoints.clone());
    }
    let client = connect_any(cli).await?;
    let members = client
        .member_list(w::MemberListRequest {
            linearizable: false,
        })
        .await?
        .members;
    Ok(members
        .into_iter()
        .map(|m| m.native_addr)
        .filter(|a| !a.is_empty())
        .collect())
}

/// Runs `f` against every endpoint; prints etcdctl's failure line for the
/// ones that fail. Returns the successes and the last failure.
async fn each<T, F, Fut>(
    cli: &Cli,
    endpoints: &[String],
    what: &str,
    f: F,
) -> (Vec<(String, T)>, Option<Failure>)
where
    F: Fn(corekv_wire::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, corekv_wire::WireError>>,
{
    let mut ok = Vec::new();
    let mut failed = None;
    for ep in endpoints {
        let result = match connect(cli, ep).await {
            Ok(c) => f(c).await.map_err(Failure::from),
            Err(e) => Err(e),
        };
        match result {
            Ok(v) => ok.push((ep.clone(), v)),
            Err(e) => {
                eprintln!("Failed to get the {what} of endpoint {ep} ({})", e.message);
                failed = Some(e);
            }
        }
    }
    (ok, failed)
}

fn finish(ok_count: usize, failed: Option<Failure>) -> Result<(), Failure> {
    match failed {
        Some(e) if ok_count == 0 => Err(e),
        _ => Ok(()),
    }
}

async fn status(cli: &Cli, endpoints: &[String]) -> Result<(), Failure> {
    let (ok, failed) = each(cli, endpoints, "status", |c| async move {
        c.status(w::StatusRequest {}).await
    })
    .await;
    let rows: Vec<Vec<String>> = ok
        .iter()
        .map(|(ep, s)| {
            vec![
                ep.clone(),
                format!("{:x}", s.header.member_id),
                s.version.clone(),
                output::human_bytes(s.db_size),
                (s.leader == s.header.member_id).to_string(),
                s.is_learner.to_string(),
                s.raft_term.to_string(),
                s.raft_index.to_string(),
                s.raft_applied_index.to_string(),
                s.errors.join(", "),
            ]
        })
        .collect();
    match cli.write_out {
        Format::Json => print_json(&Value::Array(
            ok.iter()
                .map(|(ep, s)| output::status_json(ep, s))
                .collect(),
        )),
        Format::Simple => output::print_simple_rows(&rows),
        Format::Table => print!(
            "{}",
            output::table(
                &[
                    "ENDPOINT",
                    "ID",
                    "VERSION",
                    "DB SIZE",
                    "IS LEADER",
                    "IS LEARNER",
                    "RAFT TERM",
                    "RAFT INDEX",
                    "RAFT APPLIED INDEX",
                    "ERRORS"
                ],
                &rows
            )
        ),
        Format::Fields => {
            for (ep, s) in &ok {
                let mut f = Fields::default();
                f.header(&s.header)
                    .quoted("Version", s.version.as_bytes())
                    .line("DBSize", s.db_size)
                    .line("Leader", s.leader)
                    .line("IsLearner", s.is_learner)
                    .line("RaftIndex", s.raft_index)
                    .line("RaftTerm", s.raft_term)
                    .line("RaftAppliedIndex", s.raft_applied_index)
                    .line("Errors", format!("[{}]", s.errors.join(" ")))
                    .quoted("Endpoint", ep.as_bytes())
                    .blank()
                    .print();
            }
        }
    }
    finish(ok.len(), failed)
}

/// etcdctl's health check: a linearizable Get of the key "health"; any
/// answer, even "key not found", proves a working leader and apply loop.
/// etcdctl 3.4 prints the simple lines on stderr.
async fn health(cli: &Cli, endpoints: &[String]) -> Result<(), Failure> {
    let mut results: Vec<(String, Duration, Option<String>)> = Vec::new();
    for ep in endpoints {
        let started = Instant::now();
        let result = async {
            let client = connect(cli, ep).await?;
            client.get(b"health").await?;
            Ok::<_, Failure>(())
        }
        .await;
        results.push((
            ep.clone(),
            started.elapsed(),
            result.err().map(|e| e.message),
        ));
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|(ep, took, err)| {
            vec![
                ep.clone(),
                err.is_none().to_string(),
                format!("{took:?}"),
                err.clone().unwrap_or_default(),
            ]
        })
        .collect();
    match cli.write_out {
        Format::Simple => {
            for (ep, took, err) in &results {
                match err {
                    None => eprintln!(
                        "{ep} is healthy: successfully committed proposal: took = {took:?}"
                    ),
                    Some(e) => eprintln!("{ep} is unhealthy: failed to commit proposal: {e}"),
                }
            }
        }
        Format::Json => print_json(&Value::Array(
            results
                .iter()
                .map(|(ep, took, err)| {
                    let mut v = json!({"endpoint": ep, "health": err.is_none(), "took": format!("{took:?}")});
                    if let Some(e) = err {
                        v["error"] = json!(e);
                    }
                    v
                })
                .collect(),
        )),
        Format::Table => print!(
            "{}",
            output::table(&["ENDPOINT", "HEALTH", "TOOK", "ERROR"], &rows)
        ),
        Format::Fields => {
            for (ep, took, err) in &results {
                let mut f = Fields::default();
                f.quoted("Endpoint", ep.as_bytes())
                    .line("Health", err.is_none())
                    .quoted("Took", format!("{took:?}").as_bytes())
                    .quoted("Error", err.clone().unwrap_or_default().as_bytes())
                    .blank()
                    .print();
            }
        }
    }
    if results.iter().any(|(_, _, e)| e.is_some()) {
        return Err(Failure {
            code: EXIT_ERROR,
            message: "unhealthy cluster".into(),
        });
    }
    Ok(())
}

async fn hashkv(cli: &Cli, endpoints: &[String], rev: i64) -> Result<(), Failure> {
    let (ok, failed) = each(cli, endpoints, "hash", |c| async move {
        c.hash_kv(w::HashKvRequest { revision: rev }).await
    })
    .await;
    let rows: Vec<Vec<String>> = ok
        .iter()
        .map(|(ep, h)| vec![ep.clone(), h.hash.to_string()])
        .collect();
    match cli.write_out {
        Format::Simple => output::print_simple_rows(&rows),
        Format::Json => print_json(&Value::Array(
            ok.iter()
                .map(|(ep, h)| {
                    let mut m = serde_json::Map::new();
                    m.insert("header".into(), output::header_json(&h.header));
                    if h.hash != 0 {
                        m.insert("hash".into(), json!(h.hash));
                    }
                    if h.compact_revision != 0 {
                        m.insert("compact_revision".into(), json!(h.compact_revision));
                    }
                    json!({"Endpoint": ep, "HashKV": Value::Object(m)})
                })
                .collect(),
        )),
        Format::Table => print!("{}", output::table(&["ENDPOINT", "HASH"], &rows)),
        Format::Fields => {
            for (ep, h) in &ok {
                let mut f = Fields::default();
                f.header(&h.header)
                    .quoted("Endpoint", ep.as_bytes())
                    .line("Hash", h.hash)
                    .blank()
                    .print();
            }
        }
    }
    finish(ok.len(), failed)
}
