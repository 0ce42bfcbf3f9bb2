//! A member added with MemberAdd starts with `--initial-cluster-state
//! existing` and an empty data dir: it asks the members listed in
//! `--initial-cluster` for the membership record and finds itself in it by
//! its peer URLs (the leader chose its id). Then it starts as a follower
//! (or learner) and catches up from the leader: a snapshot image when the
//! leader's log no longer reaches back far enough, then the log.
//!
//! A member that lags (cut off, say) may still list a removed member that
//! had the same peer URLs, under its old id: joining with that id would
//! get the new member refused as removed. So every peer that answers is
//! asked, the freshest record is used, and an id any answer lists as
//! removed is never taken: the join waits for a peer that has applied the
//! MemberAdd.

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
    let urls = cfg.initial_advertise_peer_urls.clone();
    let (cluster, id) = LocalExecutorBuilder::new(Placement::Unbound)
        .name("corekv-join")
        .io_memory(cfg.io_memory_bytes)
        .spawn(move || async move { ask(&peers, tls, &mine).await })
        .map_err(|e| anyhow!("start the join executor: {e}"))?
        .join()
        .map_err(|e| anyhow!("join executor: {e}"))?
        .map_err(|e| anyhow!("{e} (peer URLs {urls:?}: add the member first, member add)"))?;
    tracing::info!(
        member = format_args!("{id:x}"),
        cluster = format_args!("{:x}", cluster.cluster_id),
        learner = cluster.members.get(&id).is_some_and(|m| m.is_learner),
        "joining an existing cluster"
    );
    Ok((cluster, id))
}

/// Asks every peer each round, for up to `JOIN_TIMEOUT`, until the answers
/// give this member an id (see `identify`).
async fn ask(
    peers: &[SocketAddr],
    tls: Option<Arc<rustls::ClientConfig>>,
    mine: &[String],
) -> Result<(ClusterInfo, u64), String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut answers = Vec::new();
        for &addr in peers {
            match crate::node::peer::fetch_cluster(tls.as_ref(), addr).await {
                Ok(json) => match serde_json::from_slice::<ClusterInfo>(&json) {
                    Ok(c) => answers.push(c),
                    Err(e) => last = format!("{addr}: membership from the cluster: {e}"),
                },
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        match identify(answers, mine) {
            Ok(found) => return Ok(found),
            Err(Some(why)) => last = why,
            Err(None) => {}
        }
        glommio::timer::sleep(JOIN_RETRY).await;
    }
    Err(format!(
        "no member of --initial-cluster gave this member an id within {JOIN_TIMEOUT:?} (last: {last})"
    ))
}

/// This member's id from the peers' membership records: the freshest
/// record (the most removals, then the most members: both only grow along
/// the log) names it by its peer URLs (`mine`, sorted), under an id no
/// record lists as removed. `Err(None)` if nobody answered.
fn identify(
    answers: Vec<ClusterInfo>,
    mine: &[String],
) -> Result<(ClusterInfo, u64), Option<String>> {
    let removed: std::collections::BTreeSet<u64> = answers
        .iter()
        .flat_map(|c| c.removed.iter().copied())
        .collect();
    let freshest = answers
        .into_iter()
        .max_by_key(|c| (c.removed.len(), c.members.len()))
        .ok_or(None)?;
    let me = freshest.members.values().find(|m| {
        let mut urls = m.peer_urls.clone();
        urls.sort();
        urls == mine
    });
    match me {
        Some(m) if removed.contains(&m.id) => Err(Some(format!(
            "the peers' membership lists these peer URLs only under removed member {:x} (a peer that applied the member add did not answer)",
            m.id
        ))),
        Some(m) => {
            let id = m.id;
            Ok((freshest, id))
        }
        None => Err(Some(format!(
            "no member of cluster {:x} has these peer URLs",
            freshest.cluster_id
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Member;

    fn member(id: u64, url: &str) -> Member {
        Member {
            id,
            name: String::new(),
            peer_urls: vec![url.to_owned()],
            client_urls: Vec::new(),
            native_addr: None,
            is_learner: false,
        }
    }

    fn record(members: &[(u64, &str)], removed: &[u64]) -> ClusterInfo {
        ClusterInfo {
            cluster_id: 7,
            members: members.iter().map(|&(id, u)| (id, member(id, u))).collect(),
            bootstrap_voters: Vec::new(),
            removed: removed.iter().copied().collect(),
        }
    }

    const A: &str = "http://10.0.0.1:2380";
    const B: &str = "http://10.0.0.2:2380";
    const C: &str = "http://10.0.0.3:2380";

    #[test]
    fn a_lagging_peer_does_not_hand_out_a_removed_id() {
        let mine = vec![A.to_owned()];
        // The laggard still lists A under its old id 1; the fresh peer
        // removed 1 and added A again as 9.
        let stale = record(&[(1, A), (2, B), (3, C)], &[]);
        let fresh = record(&[(9, A), (2, B), (3, C)], &[1]);
        let (_, id) = identify(vec![stale.clone(), fresh], &mine).unwrap();
        assert_eq!(id, 9);
        // The laggard alone cannot know 1 was removed: its record is used
        // (the member is then refused as removed and stops, as in etcd).
        let (_, id) = identify(vec![stale.clone()], &mine).unwrap();
        assert_eq!(id, 1);
        // A peer that applied the removal but not yet the add: keep waiting.
        let between = record(&[(2, B), (3, C)], &[1]);
        assert!(matches!(
            identify(vec![stale, between], &mine),
            Err(Some(_))
        ));
        assert!(matches!(identify(Vec::new(), &mine), Err(None)));
    }
}
