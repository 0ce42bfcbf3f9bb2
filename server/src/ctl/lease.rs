//! `corekvctl lease grant|revoke|timetolive|list|keep-alive`, `lock` and
//! `elect`, with etcdctl 3.4's output (simple format). `lock` and `elect`
//! run the recipes of `crate::coord` client-side over the native protocol,
//! in a session (a lease of `--ttl` seconds kept alive), as etcdctl does.

use std::time::Duration;

use clap::Subcommand;
use corekv_wire::Client;
use corekv_wire::messages as w;

use super::{Cli, EXIT_BAD_CONNECTION, Failure, bad_args, connect_any};
use crate::coord::{self, CoordError, election};

#[derive(Subcommand, Debug)]
pub enum LeaseCmd {
    /// Creates leases.
    Grant { ttl: i64 },
    /// Revokes leases.
    Revoke { id: String },
    /// Get lease information.
    Timetolive {
        id: String,
        /// Get keys attached to this lease.
        #[arg(long)]
        keys: bool,
    },
    /// List all active leases.
    List,
    /// Keeps leases alive (renew).
    KeepAlive {
        id: String,
        /// Resets the keep-alive time to its original value and exits immediately.
        #[arg(long)]
        once: bool,
    },
}

fn lease_id(s: &str) -> Result<i64, Failure> {
    u64::from_str_radix(s, 16)
        .map(|v| v as i64)
        .map_err(|_| bad_args(format!("bad lease ID ({s}), expecting ID in Hex")))
}

fn coord_failure(e: CoordError) -> Failure {
    match e {
        CoordError::Wire(w) => w.into(),
        other => Failure {
            code: super::EXIT_ERROR,
            message: other.to_string(),
        },
    }
}

/// etcdctl's simple printer for time-to-live.
pub fn time_to_live_text(r: &w::LeaseTimeToLiveResponse, keys: bool) -> String {
    if r.granted_ttl == 0 && r.ttl == -1 {
        return format!("lease {:016x} already expired", r.id);
    }
    let mut txt = format!(
        "lease {:016x} granted with TTL({}s), remaining({}s)",
        r.id, r.granted_ttl, r.ttl
    );
    if keys {
        let ks: Vec<String> = r
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        txt += &format!(", attached keys([{}])", ks.join(" "));
    }
    txt
}

pub async fn run_lease(cli: &Cli, cmd: &LeaseCmd) -> Result<(), Failure> {
    let c = connect_any(cli).await?;
    match cmd {
        LeaseCmd::Grant { ttl } => {
            let r = c
                .lease_grant(w::LeaseGrantRequest { ttl: *ttl, id: 0 })
                .await?;
            println!("lease {:016x} granted with TTL({}s)", r.id, r.ttl);
        }
        LeaseCmd::Revoke { id } => {
            let id = lease_id(id)?;
            c.lease_revoke(w::LeaseRevokeRequest { id }).await?;
            println!("lease {id:016x} revoked");
        }
        LeaseCmd::Timetolive { id, keys } => {
            let id = lease_id(id)?;
            let r = c
                .lease_time_to_live(w::LeaseTimeToLiveRequest { id, keys: *keys })
                .await?;
            println!("{}", time_to_live_text(&r, *keys));
        }
        LeaseCmd::List => {
            let r = c.lease_leases(w::LeaseLeasesRequest {}).await?;
            println!("found {} leases", r.leases.len());
            for l in &r.leases {
                println!("{:016x}", l.id);
            }
        }
        LeaseCmd::KeepAlive { id, once } => {
            let id = lease_id(id)?;
            loop {
                let r = c.lease_keep_alive(w::LeaseKeepAliveRequest { id }).await?;
                if r.ttl <= 0 {
                    if *once {
                        // etcdctl: KeepAliveOnce's ErrLeaseNotFound, as a
                        // connection-class exit.
                        return Err(Failure {
                            code: EXIT_BAD_CONNECTION,
                            message: corekv_wire::ApiError::LeaseNotFound.message().into(),
                        });
                    }
                    println!("lease {id:016x} expired or revoked.");
                    return Ok(());
                }
                println!("lease {id:016x} keepalived with TTL({})", r.ttl);
                if *once {
                    return Ok(());
                }
                let every = u64::try_from(r.ttl).unwrap_or(1).max(3) / 3;
                tokio::time::sleep(Duration::from_secs(every)).await;
            }
        }
    }
    Ok(())
}

/// A session: a lease kept alive every TTL/3 until dropped.
struct Session {
    lease: i64,
    keeper: tokio::task::JoinHandle<()>,
}

impl Session {
    async fn start(c: &Client, ttl: i64) -> Result<Session, Failure> {
        let g = c.lease_grant(w::LeaseGrantRequest { ttl, id: 0 }).await?;
        let (lease, client) = (g.id, c.clone());
        let every = Duration::from_secs(u64::try_from(g.ttl).unwrap_or(1).max(3) / 3);
        let keeper = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let renewed = client
                    .lease_keep_alive(w::LeaseKeepAliveRequest { id: lease })
                    .await;
                if renewed.is_ok_and(|r| r.ttl <= 0) {
                    return;
                }
            }
        });
        Ok(Session { lease, keeper })
    }

    /// Stops keeping the lease alive and revokes it (its keys go with it).
    async fn close(self, c: &Client) {
        self.keeper.abort();
        let _ = c
            .lease_revoke(w::LeaseRevokeRequest { id: self.lease })
            .await;
    }
}

fn print_kv(kv: &w::KeyValue) {
    println!("{}", String::from_utf8_lossy(&kv.key));
    println!("{}", String::from_utf8_lossy(&kv.value));
}

async fn until_interrupted() {
    // No signal handler (tests): wait forever, the process is killed.
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// `lock <name> [command args...]`: with a command, runs it while the lock
/// is held (ETCD_LOCK_KEY and ETCD_LOCK_REV set) and releases the lock
/// after; otherwise prints the lock key and holds it until interrupted.
pub async fn run_lock(cli: &Cli, name: &str, ttl: i64, command: &[String]) -> Result<(), Failure> {
    let c = connect_any(cli).await?;
    let session = Session::start(&c, ttl).await?;
    let held = match coord::lock::lock(&c, name.as_bytes(), session.lease).await {
        Ok(h) => h,
        Err(e) => {
            session.close(&c).await;
            return Err(coord_failure(e));
        }
    };
    let key = String::from_utf8_lossy(&held.key).into_owned();
    let result = if let Some((prog, args)) = command.split_first() {
        let mut cmd = std::process::Command::new(prog);
        cmd.args(args)
            .env("ETCD_LOCK_KEY", &key)
            .env("ETCD_LOCK_REV", held.header.revision.to_string());
        let status = tokio::task::spawn_blocking(move || cmd.status())
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => Err(Failure {
                code: super::EXIT_ERROR,
                message: format!("{prog}: {s}"),
            }),
            Err(e) => Err(Failure {
                code: super::EXIT_ERROR,
                message: format!("{prog}: {e}"),
            }),
        }
    } else {
        match c.get(&held.key).await? {
            Some(kv) => print_kv(&kv),
            None => {
                session.close(&c).await;
                return Err(Failure {
                    code: super::EXIT_ERROR,
                    message: "lock lost on init".into(),
                });
            }
        }
        until_interrupted().await;
        Ok(())
    };
    let _ = coord::lock::unlock(&c, &held.key).await;
    session.close(&c).await;
    result
}

/// `elect <name> <proposal>` campaigns and prints the leader key and value
/// once elected, holding leadership until interrupted; `elect -l <name>`
/// prints every leader proclamation.
pub async fn run_elect(
    cli: &Cli,
    name: &str,
    proposal: Option<&str>,
    listen: bool,
    ttl: i64,
) -> Result<(), Failure> {
    let c = connect_any(cli).await?;
    if listen {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let printer = async move {
            while let Some((kv, _)) = rx.recv().await {
                print_kv(&kv);
            }
        };
        let (result, ()) = tokio::join!(election::observe(&c, name.as_bytes(), tx), printer);
        return result.map_err(coord_failure);
    }
    let Some(proposal) = proposal else {
        return Err(bad_args("no proposal argument but -l not set"));
    };
    let session = Session::start(&c, ttl).await?;
    let (lk, _) =
        match election::campaign(&c, name.as_bytes(), session.lease, proposal.as_bytes()).await {
            Ok(v) => v,
            Err(e) => {
                session.close(&c).await;
                return Err(coord_failure(e));
            }
        };
    if let Some(kv) = c.get(&lk.key).await? {
        print_kv(&kv);
    }
    until_interrupted().await;
    let _ = election::resign(&c, &lk).await;
    session.close(&c).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_to_live_prints_like_etcdctl() {
        let mut r = w::LeaseTimeToLiveResponse {
            id: 0x1a,
            ttl: 7,
            granted_ttl: 10,
            keys: vec![b"a".to_vec(), b"b".to_vec()],
            ..Default::default()
        };
        assert_eq!(
            time_to_live_text(&r, true),
            "lease 000000000000001a granted with TTL(10s), remaining(7s), attached keys([a b])"
        );
        r.ttl = -1;
        r.granted_ttl = 0;
        assert_eq!(
            time_to_live_text(&r, false),
            "lease 000000000000001a already expired"
        );
    }
}
