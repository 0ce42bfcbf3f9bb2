//! Messages exchanged between Raft nodes, and read-index results.

use rkyv::{Archive, Deserialize, Serialize};

use crate::types::{Entry, NodeId, SnapshotMeta};

/// What a [`Message`] asks or answers. Field use per kind is listed on each
/// variant; unused fields are zero/empty.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum MessageKind {
    /// Append: `index`/`log_term` = the entry preceding `entries`; `commit`.
    App,
    /// Append answer: `index` = last matching index, or on `reject` the
    /// rejected `index` with `reject_hint`/`log_term` pointing at a probe.
    AppResp,
    /// Vote request: `index`/`log_term` = candidate's last entry;
    /// `context` = 1 for a leader-transfer campaign (ignores leases).
    Vote,
    VoteResp,
    /// Pre-vote request for term `term` (the sender's term is `term - 1`).
    PreVote,
    PreVoteResp,
    /// Heartbeat: `commit`, `context` = read-index round id (0: none).
    Heartbeat,
    /// Heartbeat answer echoing `context`.
    HeartbeatResp,
    /// Install a snapshot: `snapshot` = its metadata. The state-machine image
    /// travels out of band (see the crate docs).
    Snapshot,
    /// A follower's read request forwarded to the leader; `context` = ctx.
    /// Sent with term 0 (local to the cluster, like a proposal).
    ReadIndex,
    /// Leader's answer: `index` = read index, `context` = ctx.
    ReadIndexResp,
    /// Leader transfer: "campaign now, skipping pre-vote and leases".
    TimeoutNow,
    /// A follower forwards a transfer request; `context` = the transferee.
    TransferLeader,
}

impl MessageKind {
    /// A short name for traces and errors.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::App => "App",
            MessageKind::AppResp => "AppResp",
            MessageKind::Vote => "Vote",
            MessageKind::VoteResp => "VoteResp",
            MessageKind::PreVote => "PreVote",
            MessageKind::PreVoteResp => "PreVoteResp",
            MessageKind::Heartbeat => "Heartbeat",
            MessageKind::HeartbeatResp => "HeartbeatResp",
            MessageKind::Snapshot => "Snapshot",
            MessageKind::ReadIndex => "ReadIndex",
            MessageKind::ReadIndexResp => "ReadIndexResp",
            MessageKind::TimeoutNow => "TimeoutNow",
            MessageKind::TransferLeader => "TransferLeader",
        }
    }
}

/// One Raft message. The server serializes it with rkyv for the peer
/// transport.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Message {
    pub kind: MessageKind,
    pub from: NodeId,
    pub to: NodeId,
    pub term: u64,
    pub log_term: u64,
    pub index: u64,
    pub entries: Vec<Entry>,
    pub commit: u64,
    pub reject: bool,
    pub reject_hint: u64,
    pub context: u64,
    pub snapshot: Option<SnapshotMeta>,
}

impl Message {
    /// A message of `kind` to `to` with every other field zero.
    pub fn new(kind: MessageKind, to: NodeId) -> Message {
        Message {
            kind,
            from: 0,
            to,
            term: 0,
            log_term: 0,
            index: 0,
            entries: Vec::new(),
            commit: 0,
            reject: false,
            reject_hint: 0,
            context: 0,
            snapshot: None,
        }
    }
}

/// The answer to a `read_index(ctx)` call: once this node has applied up to
/// `index`, a read of the state machine is linearizable with respect to the
/// moment `read_index` was called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: u64,
    pub index: u64,
}
