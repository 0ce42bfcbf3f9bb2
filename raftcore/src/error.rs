//! The Raft state machine's error type.

use crate::types::{ConfChange, NodeId};

/// Everything the Raft state machine can refuse. Each variant says which
/// operation failed and why; none of them leaves the node in a bad state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RaftError {
    /// A leader-only operation was called on a non-leader. `leader` is the
    /// leader this node currently knows of, if any (a hint for redirecting).
    #[error("not the leader (known leader: {leader:?})")]
    NotLeader { leader: Option<NodeId> },
    /// The leader refused the proposal; the caller may retry later.
    #[error("proposal dropped: {reason}")]
    ProposalDropped { reason: &'static str },
    /// `Config::validate` failed.
    #[error("invalid raft config: {reason}")]
    InvalidConfig { reason: String },
    /// The persisted state handed to `RawNode::new` is inconsistent.
    #[error("invalid restored raft state: {reason}")]
    InvalidRestore { reason: String },
    /// A membership change that cannot apply to the current configuration.
    #[error("invalid conf change {change:?}: {reason}")]
    InvalidConfChange {
        change: ConfChange,
        reason: &'static str,
    },
    /// `campaign` was called on a node that may not become leader.
    #[error("campaign refused: {reason}")]
    CampaignRefused { reason: &'static str },
    /// A message addressed to another node was stepped into this one.
    #[error("message for node {to} stepped into node {id}")]
    Misdirected { id: NodeId, to: NodeId },
    /// A message lacks a field its kind requires.
    #[error("malformed {kind} message from {from}: {reason}")]
    MalformedMessage {
        kind: &'static str,
        from: NodeId,
        reason: &'static str,
    },
    /// Bytes (a conf change entry) that do not decode.
    #[error("decoding {what} failed: {reason}")]
    Decode { what: &'static str, reason: String },
}
