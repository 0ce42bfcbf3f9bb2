//! Periodic corruption check (etcd's `--experimental-corrupt-check-time`).
//!
//! Every interval the leader computes HashKV of its store at its current
//! revision and asks every other member (over the native protocol, at the
//! address the member announced in its peer hello) for HashKV at the same
//! revision. A member with the same compact revision and a different hash
//! holds different data for the same history: the leader raises CORRUPT for
//! it through Raft, after which the cluster refuses writes
//! (`etcdserver: corrupt cluster`) until an operator disarms the alarm.
//! A member that has not reached the revision yet (future revision) or has
//! compacted differently is skipped this round, as etcd does.
//!
//! The check runs on a thread of its own with a small tokio runtime (the
//! wire client is tokio-based); it never blocks the Raft core.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use corekv_wire::messages as w;
use corekv_wire::{Client, ClientOptions};

use super::Shared;
use super::alarm;

/// Time a peer has to answer one HashKV.
const PEER_HASH_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts the checker when `interval` is non-zero.
pub fn spawn(shared: Arc<Shared>, interval: Duration) -> std::io::Result<()> {
    if interval.is_zero() {
        return Ok(());
    }
    std::thread::Builder::new()
        .name("corekv-corrupt-check".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "corruption checker not started");
                    return;
                }
            };
            rt.block_on(run(shared, interval));
        })
        .map(|_| ())
}

async fn run(shared: Arc<Shared>, interval: Duration) {
    let mut clients: HashMap<u64, Client> = HashMap::new();
    let mut next = tokio::time::Instant::now() + interval;
    while !shared.stopping() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tokio::time::Instant::now() < next {
            continue;
        }
        next += interval;
        if shared.leader() != Some(shared.member_id) {
            continue;
        }
        for id in check_once(&shared, &mut clients).await {
            if shared.alarms.has(id, alarm::Kind::Corrupt) {
                continue;
            }
            tracing::error!(
                member = format_args!("{id:x}"),
                "HashKV mismatch: raising CORRUPT"
            );
            let raised =
                alarm::propose(&shared, w::AlarmAction::Activate, id, w::AlarmType::Corrupt);
            if let Err(e) = raised.await {
                tracing::warn!(error = %e, "raising CORRUPT failed");
            }
        }
    }
}

/// One round: the ids of members whose hash differs from ours.
async fn check_once(shared: &Shared, clients: &mut HashMap<u64, Client>) -> Vec<u64> {
    let Ok(view) = shared.store().read_scan() else {
        return Vec::new();
    };
    let rev = view.revision();
    let Ok((hash, compacted)) = view.hash_kv(rev) else {
        return Vec::new();
    };
    drop(view);
    let peers: Vec<(u64, String)> = {
        let cluster = shared.cluster.read().unwrap_or_else(|e| e.into_inner());
        cluster
            .members
            .values()
            .filter(|m| m.id != shared.member_id)
            .filter_map(|m| m.native_addr.clone().map(|a| (m.id, a)))
            .collect()
    };
    let mut compared = Vec::new();
    for (id, addr) in peers {
        let client = match clients.get(&id) {
            Some(c) => c.clone(),
            None => {
                let opts = ClientOptions {
                    dial_timeout: PEER_HASH_TIMEOUT,
                    request_timeout: PEER_HASH_TIMEOUT,
                    ..Default::default()
                };
                match Client::connect(&addr, opts).await {
                    Ok(c) => {
                        clients.insert(id, c.clone());
                        c
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, %addr, "corruption check: peer unreachable");
                        continue;
                    }
                }
            }
        };
        match client.hash_kv(w::HashKvRequest { revision: rev }).await {
            Ok(r) if r.compact_revision == compacted => compared.push((id, r.hash)),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, %addr, "corruption check: no HashKV from peer");
                clients.remove(&id);
            }
        }
    }
    suspects(shared.member_id, hash, &compared)
}

/// Who holds the odd data: the peers whose hash differs from the leader's;
/// but when every peer differs from the leader and at least two peers
/// agree with each other, the leader itself is the odd one.
fn suspects(me: u64, mine: u32, peers: &[(u64, u32)]) -> Vec<u64> {
    let differing: Vec<u64> = peers
        .iter()
        .filter(|(_, h)| *h != mine)
        .map(|(id, _)| *id)
        .collect();
    let peers_agree = peers.len() >= 2 && peers.iter().all(|(_, h)| *h == peers[0].1);
    if !peers.is_empty() && differing.len() == peers.len() && peers_agree {
        return vec![me];
    }
    differing
}

#[cfg(test)]
mod tests {
    use super::suspects;

    #[test]
    fn the_odd_member_is_blamed() {
        assert_eq!(suspects(1, 7, &[(2, 7), (3, 9)]), vec![3]);
        assert_eq!(
            suspects(1, 7, &[(2, 9), (3, 9)]),
            vec![1],
            "the leader is odd"
        );
        assert_eq!(suspects(1, 7, &[(2, 8), (3, 9)]), vec![2, 3]);
        assert_eq!(
            suspects(1, 7, &[(2, 9)]),
            vec![2],
            "two members: blame the peer"
        );
        assert!(suspects(1, 7, &[(2, 7), (3, 7)]).is_empty());
        assert!(suspects(1, 7, &[]).is_empty());
    }
}
