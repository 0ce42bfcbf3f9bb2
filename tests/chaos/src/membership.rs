//! The membership fault: a member (a follower, sometimes the leader) is
//! removed through the Cluster API while the workload runs; once it has
//! stopped by itself (a removed member does, about a second after it
//! applies its removal) its data dir is wiped and it is added back as a new
//! member (a learner then promoted, or a voter), on its old peer address or
//! a new one, started with `--initial-cluster-state existing`, and given
//! time to catch up. Clients of the removed member see their connections
//! fail (unknown outcomes) and a learner's refusals (failed for sure);
//! watchers on it resume on another member. `restore` (the heal) re-adds
//! whatever a fault left out and promotes any learner, so every run ends
//! with the three members as voters.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use corekv_wire::messages as w;
use corekv_wire::{ApiError, WireError};
use tokio::sync::Mutex;

use crate::cluster::{Cluster, MEMBERS};
use crate::nemesis::leader;
use crate::workload::native_client;

/// How long one step (remove, add, promote, catch up) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a removed member gets to stop by itself.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between two attempts of a step.
const RETRY: Duration = Duration::from_millis(200);
/// Deadline of one Cluster API call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How a removed member comes back.
#[derive(Debug, Clone, Copy)]
pub struct Rejoin {
    /// Added as a learner, then promoted once in sync (else as a voter).
    pub learner: bool,
    /// On a new peer address (else on the one it had).
    pub new_address: bool,
}

/// Native addresses of the members (index = slot).
async fn addrs(cluster: &Mutex<Cluster>) -> Vec<String> {
    let c = cluster.lock().await;
    c.members.iter().map(|m| m.native.clone()).collect()
}

/// Why a call got no answer: etcd's error, or none (connection, timeout).
#[derive(Debug)]
struct Refused {
    api: Option<ApiError>,
    text: String,
}

impl Refused {
    fn is(&self, e: &ApiError) -> bool {
        self.api.as_ref() == Some(e)
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Asks the member at `addr` for `call` (a Cluster API request) within
/// `CALL_TIMEOUT`; a connection failure or timeout is a refusal too.
async fn ask<T, F, Fut>(addr: &str, call: F) -> Result<T, Refused>
where
    F: FnOnce(corekv_wire::Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, WireError>>,
{
    let other = |text: String| Refused { api: None, text };
    let client = native_client(addr)
        .await
        .map_err(|e| other(e.to_string()))?;
    match tokio::time::timeout(CALL_TIMEOUT, call(client)).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(WireError::Api(e))) => Err(Refused {
            text: e.message().to_owned(),
            api: Some(e),
        }),
        Ok(Err(e)) => Err(other(e.to_string())),
        Err(_) => Err(other("timed out".into())),
    }
}

/// The membership as the leader applied it (any member's if no leader
/// answers), skipping slot `except`.
async fn members(cluster: &Mutex<Cluster>, except: Option<usize>) -> Option<Vec<w::Member>> {
    let addrs = addrs(cluster).await;
    let lead = leader(cluster).await.filter(|&l| Some(l) != except);
    let order = lead
        .into_iter()
        .chain((0..MEMBERS).filter(|&i| Some(i) != except && Some(i) != lead));
    for i in order {
        let list = ask(&addrs[i], |c| async move {
            c.member_list(w::MemberListRequest::default()).await
        })
        .await;
        if let Ok(l) = list {
            return Some(l.members);
        }
    }
    None
}

fn find_url<'a>(list: &'a [w::Member], url: &str) -> Option<&'a w::Member> {
    list.iter().find(|m| m.peer_urls.iter().any(|u| u == url))
}

/// Removes slot `victim` (asking the victim itself first, then the
/// others), waits for it to stop, wipes its data dir and adds it back.
/// `Ok(true)` if it stopped by itself, `Ok(false)` if it had to be killed.
pub async fn remove_and_readd(
    cluster: &Mutex<Cluster>,
    victim: usize,
    how: Rejoin,
) -> Result<bool> {
    let url = cluster.lock().await.members[victim].peer_url.clone();
    let list = members(cluster, None).await;
    let Some(id) = list
        .as_deref()
        .and_then(|l| find_url(l, &url))
        .map(|m| m.id)
    else {
        bail!("m{victim} ({url}) not in the member list");
    };
    remove(cluster, victim, id).await?;
    cluster.lock().await.members[victim].out = true;
    let stopped = wait_stopped(cluster, victim).await;
    readd(cluster, victim, how, Some(id)).await?;
    Ok(stopped)
}

async fn remove(cluster: &Mutex<Cluster>, victim: usize, id: u64) -> Result<()> {
    let addrs = addrs(cluster).await;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = String::new();
    for attempt in 0.. {
        if Instant::now() > deadline {
            bail!("removing m{victim} ({id:x}): {last}");
        }
        let asker = (victim + attempt) % MEMBERS;
        let r = ask(&addrs[asker], |c| async move {
            c.member_remove(w::MemberRemoveRequest { id }).await
        })
        .await;
        match r {
            Ok(_) => return Ok(()),
            // An earlier attempt whose answer was lost did it.
            Err(e) if e.is(&ApiError::MemberNotFound) => return Ok(()),
            Err(e) => last = format!("asked m{asker}: {e}"),
        }
        let list = members(cluster, Some(victim)).await;
        if list.is_some_and(|l| l.iter().all(|m| m.id != id)) {
            return Ok(());
        }
        tokio::time::sleep(RETRY).await;
    }
    unreachable!("the attempts loop ends by its deadline")
}

/// Waits for removed slot `victim` to exit by itself; kills it after
/// `STOP_TIMEOUT`. True if it stopped by itself.
async fn wait_stopped(cluster: &Mutex<Cluster>, victim: usize) -> bool {
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        {
            let mut c = cluster.lock().await;
            if c.members[victim].child.is_none() {
                return true;
            }
            if let Some(status) = c.exited(victim) {
                if status.success() {
                    eprintln!("chaos: removed m{victim} exited with success: {status}");
                }
                return true;
            }
            if Instant::now() > deadline {
                eprintln!("chaos: removed m{victim} still runs after {STOP_TIMEOUT:?}: killed");
                c.kill(victim);
                return false;
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Adds slot `i` (down, `out`) back as a new member with an empty data
/// dir, starts it with `existing`, promotes it if it joined as a learner,
/// and waits until it has applied what the leader had. `old` is the id it
/// was removed under, if known: a lagging member may still list it.
async fn readd(cluster: &Mutex<Cluster>, i: usize, how: Rejoin, old: Option<u64>) -> Result<()> {
    let url = {
        let mut c = cluster.lock().await;
        // The heal restarts every slot: one it re-adds (one that a fault
        // left removed) is stopped again first.
        c.kill(i);
        c.wipe(i)?;
        if how.new_address {
            c.readdress(i)?
        } else {
            c.members[i].peer_url.clone()
        }
    };
    let (id, list) = add(cluster, i, &url, how.learner, old).await?;
    {
        let mut c = cluster.lock().await;
        let initial = initial_cluster(&c, &list);
        c.set_joining(i, &initial);
        c.members[i].out = false;
        c.start(i, None)?;
    }
    if how.learner {
        promote(cluster, i, id).await?;
    }
    caught_up(cluster, i).await
}

/// MemberAdd of `url` through any member but `i`: the new member's id and
/// the membership after it. `old`: an id `url` had before, never taken for
/// the new one.
async fn add(
    cluster: &Mutex<Cluster>,
    i: usize,
    url: &str,
    learner: bool,
    old: Option<u64>,
) -> Result<(u64, Vec<w::Member>)> {
    let addrs = addrs(cluster).await;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = String::new();
    for attempt in 0.. {
        if Instant::now() > deadline {
            bail!("adding m{i} ({url}): {last}");
        }
        let asker = (i + 1 + attempt % (MEMBERS - 1)) % MEMBERS;
        let req = w::MemberAddRequest {
            peer_urls: vec![url.to_owned()],
            is_learner: learner,
        };
        match ask(&addrs[asker], |c| async move { c.member_add(req).await }).await {
            Ok(r) => match r.member {
                Some(m) => return Ok((m.id, r.members)),
                None => last = format!("asked m{asker}: MemberAdd answered without the member"),
            },
            Err(e) => last = format!("asked m{asker}: {e}"),
        }
        // An earlier attempt whose answer was lost may have done it
        // (then this one was refused with "Peer URLs already exists"); a
        // member that has not applied the removal yet lists `old` instead.
        if let Some(list) = members(cluster, Some(i)).await {
            if let Some(m) = find_url(&list, url).filter(|m| Some(m.id) != old) {
                return Ok((m.id, list));
            }
        }
        tokio::time::sleep(RETRY).await;
    }
    unreachable!("the attempts loop ends by its deadline")
}

/// `--initial-cluster` for a joining member: every listed member under its
/// slot's name (found by peer URL).
fn initial_cluster(c: &Cluster, list: &[w::Member]) -> String {
    list.iter()
        .map(|m| {
            let url = m.peer_urls.first().cloned().unwrap_or_default();
            let name = c
                .members
                .iter()
                .position(|s| s.peer_url == url)
                .map_or_else(|| format!("x{:x}", m.id), |s| format!("m{s}"));
            format!("{name}={url}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Promotes learner `id` (slot `i`) once it is in sync.
async fn promote(cluster: &Mutex<Cluster>, i: usize, id: u64) -> Result<()> {
    let addrs = addrs(cluster).await;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = String::new();
    for attempt in 0.. {
        if Instant::now() > deadline {
            bail!("promoting m{i} ({id:x}): {last}");
        }
        let asker = (i + 1 + attempt % (MEMBERS - 1)) % MEMBERS;
        let r = ask(&addrs[asker], |c| async move {
            c.member_promote(w::MemberPromoteRequest { id }).await
        })
        .await;
        match r {
            Ok(_) => return Ok(()),
            // An earlier attempt whose answer was lost did it.
            Err(e) if e.is(&ApiError::MemberNotLearner) => return Ok(()),
            Err(e) => last = format!("asked m{asker}: {e}"),
        }
        tokio::time::sleep(RETRY).await;
    }
    unreachable!("the attempts loop ends by its deadline")
}

/// Waits until slot `i` answers Status at the revision the leader had.
async fn caught_up(cluster: &Mutex<Cluster>, i: usize) -> Result<()> {
    let addrs = addrs(cluster).await;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut target = None;
    loop {
        if Instant::now() > deadline {
            bail!("m{i} did not catch up to revision {target:?}");
        }
        if target.is_none() {
            if let Some(l) = leader(cluster).await {
                let s = ask(
                    &addrs[l],
                    |c| async move { c.status(w::StatusRequest {}).await },
                );
                target = s.await.ok().map(|s| s.header.revision);
            }
        }
        if let Some(t) = target {
            let s = ask(
                &addrs[i],
                |c| async move { c.status(w::StatusRequest {}).await },
            );
            if s.await.is_ok_and(|s| s.header.revision >= t) {
                return Ok(());
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// The heal: every slot a member again (re-added if a fault left it out
/// or the member list does not have it), every learner promoted; fails
/// unless the cluster then lists exactly the three slots, all voters.
pub async fn restore(cluster: &Mutex<Cluster>) -> Result<()> {
    let Some(list) = members(cluster, None).await else {
        bail!("heal: no member answers MemberList");
    };
    for i in 0..MEMBERS {
        let (out, url) = {
            let c = cluster.lock().await;
            (c.members[i].out, c.members[i].peer_url.clone())
        };
        let listed = find_url(&list, &url).is_some();
        if out || !listed {
            eprintln!(
                "chaos: heal: m{i} was left out of the cluster (out {out}, listed {listed}): adding it back"
            );
            let how = Rejoin {
                learner: false,
                new_address: false,
            };
            readd(cluster, i, how, None).await?;
        }
    }
    let Some(list) = members(cluster, None).await else {
        bail!("heal: no member answers MemberList");
    };
    for m in list.iter().filter(|m| m.is_learner) {
        let url = m.peer_urls.first().cloned().unwrap_or_default();
        let slot = cluster
            .lock()
            .await
            .members
            .iter()
            .position(|s| s.peer_url == url);
        let Some(i) = slot else {
            bail!("heal: learner {:x} ({url}) is no slot of the run", m.id);
        };
        promote(cluster, i, m.id).await?;
        caught_up(cluster, i).await?;
    }
    // The member that answered a promotion may have applied it before
    // the one answering MemberList: look again for a while.
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let list = members(cluster, None).await.unwrap_or_default();
        let expected: Vec<String> = {
            let c = cluster.lock().await;
            c.members.iter().map(|m| m.peer_url.clone()).collect()
        };
        let voters = list
            .iter()
            .filter(|m| !m.is_learner && m.peer_urls.iter().any(|u| expected.contains(u)))
            .count();
        if list.len() == MEMBERS && voters == MEMBERS {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("heal: the cluster is not the run's {MEMBERS} voters: {list:?}");
        }
        tokio::time::sleep(RETRY).await;
    }
}
