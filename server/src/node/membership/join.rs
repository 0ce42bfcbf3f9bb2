//! A member added with MemberAdd starts with `--initial-cluster-state
//! existing` and an empty data dir: it asks the members listed in
//! `--initial-cluster` for the membership record and finds itself in it by
//! its peer URLs (the leader chose its id). Then it starts as a follower
//! (or learner) and catches up from the leader: a snapshot image when the
//! leader's log no longer reaches back far enough, then the log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use glommio::{LocalExecutorBuilder, Placement};

use crate::cluster::ClusterInfo;
use crate::config::{Config, url_to_addr};

/// How long a joining member keeps asking its peers for the membership.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
const JOIN_RETRY: Duration = Duration::from_millis(200);

/// The cluster's membership and this member's id in it.
pub fn fetch_identity(
    cfg: &Config,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<(ClusterInfo, u64)> {
    let spec = cfg.initial_cluster_spec();
    let listed =
        ClusterInfo::bootstrap(&spec, &cfg.initial_cluster_token).map_err(|e| anyhow!(e))?;
    let mut mine = cfg.initial_advertise_peer_urls.clone();
    mine.sort();
    let mut peers: Vec<SocketAddr> = Vec::new();
    for m in listed.members.values() {
        if m.peer_urls.iter().any(|u| mine.contains(u)) {
            continue;
        }
        for url in &m.peer_urls {
            peers.push(url_to_addr(url).map_err(|e| anyhow!(e))?);
        }
    }
    if peers.is_empty() {
        bail!("--initial-cluster-state=existing: --initial-cluster lists no other member to join");
    }
    let json = LocalExecutorBuilder::new(Placement::Unbound)
        .name("corekv-join")
        .io_memory(cfg.io_memory_bytes)
        .spawn(move || async move { ask(&peers, tls).await })
        .map_err(|e| anyhow!("start the join executor: {e}"))?
        .join()
        .map_err(|e| anyhow!("join executor: {e}"))?
        .map_err(|e| anyhow!(e))?;
    let cluster: ClusterInfo =
        serde_json::from_slice(&json).map_err(|e| anyhow!("membership from the cluster: {e}"))?;
    let me = cluster
        .members
        .values()
        .find(|m| {
            let mut urls = m.peer_urls.clone();
            urls.sort();
            urls == mine
        })
        .ok_or_else(|| {
            anyhow!(
                "no member of cluster {:x} has peer URLs {:?}: add it first (member add)",
                cluster.cluster_id,
                cfg.initial_advertise_peer_urls
            )
        })?;
    let id = me.id;
    tracing::info!(
        member = format_args!("{id:x}"),
        cluster = format_args!("{:x}", cluster.cluster_id),
        learner = me.is_learner,
        "joining an existing cluster"
    );
    Ok((cluster, id))
}

/// Asks each peer in turn until one answers, for up to `JOIN_TIMEOUT`.
async fn ask(
    peers: &[SocketAddr],
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        for &addr in peers {
            match crate::node::peer::fetch_cluster(tls.as_ref(), addr).await {
                Ok(json) => return Ok(json),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        glommio::timer::sleep(JOIN_RETRY).await;
    }
    Err(format!(
        "no member of --initial-cluster answered within {JOIN_TIMEOUT:?} (last: {last})"
    ))
}
