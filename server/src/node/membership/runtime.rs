//! What a membership change means for the running member (shard 0): the
//! in-memory record (with what peers told us: names, client URLs), the peer
//! connections, and stopping when this member was removed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use corekv_raftcore::NodeId;

use crate::cluster::ClusterInfo;
use crate::config::url_to_addr;
use crate::node::Shared;
use crate::node::peer::{Hello, Peers};

/// How long a removed member keeps running before it stops (etcd: ten
/// ticks), so the answer to the change that removed it gets out.
pub const REMOVED_STOP_DELAY: Duration = Duration::from_secs(1);
/// The reason a removed member stops with (etcd's text).
pub const REMOVED_REASON: &str = "the member has been permanently removed from the cluster";

/// Peer address of every other member (the first peer URL of each).
pub fn peer_addrs(cluster: &ClusterInfo, me: u64) -> HashMap<NodeId, SocketAddr> {
    let mut addrs = HashMap::new();
    for m in cluster.members.values().filter(|m| m.id != me) {
        match m.peer_urls.first().map(|u| url_to_addr(u)) {
            Some(Ok(addr)) => {
                addrs.insert(m.id, addr);
            }
            Some(Err(e)) => {
                tracing::warn!(member = format_args!("{:x}", m.id), error = %e, "no peer address")
            }
            None => tracing::warn!(
                member = format_args!("{:x}", m.id),
                "member has no peer URL"
            ),
        }
    }
    addrs
}

/// The applied record with the run-time facts kept from `old`: names and
/// client addresses peers told us, and this member's own.
fn merge(old: &ClusterInfo, mut applied: ClusterInfo, shared: &Shared) -> ClusterInfo {
    for m in applied.members.values_mut() {
        if m.id == shared.member_id {
            m.name = shared.cfg.name.clone();
            m.client_urls = shared.cfg.advertise_client_urls.clone();
            m.native_addr = Some(shared.cfg.native_advertise().to_string());
            continue;
        }
        if let Some(o) = old.members.get(&m.id) {
            if m.name.is_empty() {
                m.name = o.name.clone();
            }
            if m.client_urls.is_empty() {
                m.client_urls = o.client_urls.clone();
            }
            if m.native_addr.is_none() {
                m.native_addr = o.native_addr.clone();
            }
        }
    }
    applied
}

/// The store's membership changed (an applied change, or a leader's image
/// installed): update the shared record, open connections to new peers and
/// close those to removed ones; stop if this member is no longer in it.
pub fn on_changed(shared: &Arc<Shared>, peers: &mut Peers, applied: ClusterInfo) {
    let merged = {
        let mut cluster = shared.cluster.write().unwrap_or_else(|e| e.into_inner());
        *cluster = merge(&cluster, applied, shared);
        cluster.clone()
    };
    peers.set_members(peer_addrs(&merged, shared.member_id));
    if !merged.members.contains_key(&shared.member_id) {
        removed(shared);
    }
}

/// The marker a removed member leaves in its data dir, so a later start
/// refuses even when it applied no removal (it learnt it from a peer).
pub fn removed_marker(data_dir: &std::path::Path) -> std::path::PathBuf {
    data_dir.join("member").join("removed")
}

/// This member was removed: log it, leave the marker, and stop after
/// `REMOVED_STOP_DELAY`. It refuses to start again with this data.
pub fn removed(shared: &Arc<Shared>) {
    if shared.stopping() {
        return;
    }
    tracing::error!(
        member = format_args!("{:x}", shared.member_id),
        "{REMOVED_REASON}: stopping"
    );
    let shared = shared.clone();
    glommio::spawn_local(async move {
        let marker = removed_marker(&shared.cfg.data_dir());
        let written = glommio::executor()
            .spawn_blocking(move || std::fs::write(&marker, REMOVED_REASON))
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not leave the removed-member marker");
        }
        glommio::timer::sleep(REMOVED_STOP_DELAY).await;
        shared.fail(REMOVED_REASON.to_string());
    })
    .detach();
}

/// What a peer's hello means here.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Member,
    /// Removed from the cluster: told so, and never served again.
    Removed,
    /// Not (yet) a member here: the connection is closed; it retries.
    Unknown,
}

/// Records what a peer said about itself (name, client addresses) and
/// says whether it may talk to us.
pub fn note_hello(shared: &Shared, h: &Hello) -> Verdict {
    let mut cluster = shared.cluster.write().unwrap_or_else(|e| e.into_inner());
    if cluster.removed.contains(&h.from) {
        return Verdict::Removed;
    }
    let Some(m) = cluster.members.get_mut(&h.from) else {
        return Verdict::Unknown;
    };
    if m.name.is_empty() {
        m.name = h.name.clone();
    }
    m.client_urls = h.client_urls.clone();
    m.native_addr = Some(h.native_addr.clone());
    Verdict::Member
}

/// Whether `id` is a member now (inbound connections of removed members
/// are closed).
pub fn is_member(shared: &Shared, id: NodeId) -> bool {
    shared
        .cluster
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .members
        .contains_key(&id)
}
