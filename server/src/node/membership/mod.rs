//! Run-time membership changes (etcd's Cluster service: MemberAdd,
//! MemberRemove, MemberUpdate, MemberPromote, MemberList).
//!
//! How a change travels, and which part decides what:
//!
//! 1. `admit` (the member that received the request, like etcd's
//!    `mayAddMember`/`mayRemoveMember`): URL syntax and etcd's strict
//!    reconfiguration check (enough *started* voters, i.e. members whose
//!    name is known, to keep a quorum).
//! 2. `plan` (the Raft leader only, in the replica): the change against
//!    the applied membership and Raft's progress (a learner is promoted
//!    only when in sync with the leader), giving the single-server Raft
//!    `ConfChange`. A follower forwards the request to the leader; a
//!    refusal there comes back to it as a peer message. Raft keeps one
//!    change in flight: a change that arrives before the previous one is
//!    applied waits on the leader (`replica/member.rs`), and times out
//!    (`etcdserver: request timed out`, etcd's answer) if it cannot go.
//! 3. `apply` (every member, in log order): the committed change updates
//!    the membership record in the store (`CLUSTER_META_KEY`, replicated:
//!    same value at the same index everywhere) and answers the waiting
//!    client. A committed change is never refused here: Raft has applied
//!    it to its configuration too, and a restart replays it.
//! 4. `runtime` (shard 0 after each apply): peer connections to added
//!    members are opened, to removed ones closed; a member that finds
//!    itself removed stops, and refuses to start again with its data.
//!
//! MemberUpdate changes only peer URLs, not Raft's configuration: it is an
//! ordinary replicated request (checked and applied in `apply::update`).
//! A member added at run time starts with `--initial-cluster-state
//! existing` and gets its identity from a peer (`join`).

pub mod api;
pub mod apply;
pub mod join;
pub mod plan;
pub mod runtime;

use corekv_wire::messages as w;

use crate::cluster::ClusterInfo;

/// Store meta key holding the cluster's identity and membership (JSON).
pub const CLUSTER_META_KEY: &[u8] = b"corekv/cluster";
/// etcd 3.4's limit on learners in a cluster.
pub const MAX_LEARNERS: usize = 1;
/// A learner is in sync when its log matches at least this share of the
/// leader's (etcd's `readyPercent`).
pub const LEARNER_READY_PERCENT: f64 = 0.9;

/// A request that changes Raft's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Add {
        peer_urls: Vec<String>,
        is_learner: bool,
    },
    Remove {
        id: u64,
    },
    Promote {
        id: u64,
    },
}

impl Change {
    /// The change a request asks for; None for every other request kind
    /// (MemberUpdate included: it does not change Raft's configuration).
    pub fn of(req: &w::ArchivedRequest) -> Option<Change> {
        use w::ArchivedRequest as R;
        match req {
            R::MemberAdd(a) => Some(Change::Add {
                peer_urls: a.peer_urls.iter().map(|u| u.as_str().to_owned()).collect(),
                is_learner: a.is_learner,
            }),
            R::MemberRemove(r) => Some(Change::Remove {
                id: r.id.to_native(),
            }),
            R::MemberPromote(p) => Some(Change::Promote {
                id: p.id.to_native(),
            }),
            R::Range(_)
            | R::Put(_)
            | R::DeleteRange(_)
            | R::Txn(_)
            | R::Compact(_)
            | R::WatchCreate(_)
            | R::WatchCancel(_)
            | R::WatchProgress(_)
            | R::LeaseGrant(_)
            | R::LeaseRevoke(_)
            | R::LeaseKeepAlive(_)
            | R::LeaseTimeToLive(_)
            | R::LeaseLeases(_)
            | R::MemberList(_)
            | R::MemberUpdate(_)
            | R::Status(_)
            | R::HashKv(_)
            | R::Defragment(_)
            | R::Alarm(_)
            | R::MoveLeader(_)
            | R::Snapshot(_)
            | R::Auth(_)
            | R::LeaseRevokeAs(_)
            | R::PutAs(_) => None,
        }
    }
}

/// The membership record of a store (None before the first start wrote it).
pub fn load(view_meta: Option<Vec<u8>>) -> Result<Option<ClusterInfo>, String> {
    view_meta
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| format!("stored cluster info is corrupt: {e}"))
        })
        .transpose()
}

/// A member as the Cluster service shows it.
pub fn to_wire(m: &crate::cluster::Member) -> w::Member {
    w::Member {
        id: m.id,
        name: m.name.clone(),
        peer_urls: m.peer_urls.clone(),
        client_urls: m.client_urls.clone(),
        is_learner: m.is_learner,
        native_addr: m.native_addr.clone().unwrap_or_default(),
    }
}

/// Every member, in id order.
pub fn members_to_wire(cluster: &ClusterInfo) -> Vec<w::Member> {
    cluster.members.values().map(to_wire).collect()
}
