//! Log and state types shared by the Raft state machine, the WAL and the
//! server. They derive rkyv so the server can ship them between members and
//! the WAL can persist them without a second encoding layer.

use rkyv::{Archive, Deserialize, Serialize};

/// A cluster member's id. 0 is never a valid id (it means "none").
pub type NodeId = u64;

/// What an entry carries.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum EntryKind {
    /// Application data, opaque to Raft. An empty `Normal` entry is the
    /// no-op a new leader appends (Raft thesis 6.4).
    Normal,
    /// A membership change; `data` is a serialized [`ConfChange`].
    ConfChange,
}

/// One Raft log entry.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Entry {
    pub term: u64,
    pub index: u64,
    pub kind: EntryKind,
    pub data: Vec<u8>,
}

impl Entry {
    /// Approximate size in bytes, used for byte-bounded batching.
    pub fn size_bytes(&self) -> usize {
        self.data.len() + 24
    }
}

/// The state that must be durable before a member answers any message that
/// depends on it (Raft paper figure 2, "persistent state on all servers").
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HardState {
    pub term: u64,
    /// Who this member voted for in `term`; 0 = nobody.
    pub vote: NodeId,
    /// Highest index known committed. Persisting it is an optimisation
    /// (restart can apply up to here at once), not a safety requirement.
    pub commit: u64,
}

/// Cluster membership.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ConfState {
    /// Members that vote and count toward quorums.
    pub voters: Vec<NodeId>,
    /// Members that receive the log but neither vote nor count.
    pub learners: Vec<NodeId>,
}

/// A membership change request, carried in an `EntryKind::ConfChange` entry.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ConfChange {
    AddVoter {
        id: NodeId,
        context: Vec<u8>,
    },
    AddLearner {
        id: NodeId,
        context: Vec<u8>,
    },
    /// Promote a caught-up learner to voter.
    Promote {
        id: NodeId,
    },
    Remove {
        id: NodeId,
    },
}

/// What a snapshot covers: the log up to `index` (of `term`) is replaced by
/// the state-machine image, and `conf_state` is the membership at `index`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotMeta {
    pub index: u64,
    pub term: u64,
    pub conf_state: ConfState,
}

/// Format version of an encoded [`ConfChange`] (first byte of the entry).
const CONF_CHANGE_VERSION: u8 = 1;

impl ConfChange {
    /// Serializes for an `EntryKind::ConfChange` entry: a version byte, then
    /// the rkyv archive.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![CONF_CHANGE_VERSION];
        match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(bytes) => out.extend_from_slice(&bytes),
            // Serializing an in-memory enum into a growable buffer cannot fail.
            Err(e) => panic!("encoding a conf change failed: {e}"),
        }
        out
    }

    /// Decodes and validates bytes produced by [`ConfChange::encode`].
    pub fn decode(bytes: &[u8]) -> Result<ConfChange, crate::error::RaftError> {
        let err = |reason: String| crate::error::RaftError::Decode {
            what: "conf change",
            reason,
        };
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| err("empty".to_string()))?;
        if version != CONF_CHANGE_VERSION {
            return Err(err(format!("unknown version {version}")));
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        rkyv::from_bytes::<ConfChange, rkyv::rancor::Error>(&aligned)
            .map_err(|e| err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_change_round_trips_and_bad_bytes_are_errors() {
        let cc = ConfChange::AddLearner {
            id: 7,
            context: b"http://x".to_vec(),
        };
        let bytes = cc.encode();
        assert_eq!(ConfChange::decode(&bytes), Ok(cc));
        assert!(ConfChange::decode(&[]).is_err());
        assert!(ConfChange::decode(&[9, 1, 2]).is_err());
        assert!(ConfChange::decode(&bytes[..bytes.len() - 3]).is_err());
        let mut garbage = bytes.clone();
        for b in garbage.iter_mut().skip(1) {
            *b = 0xff;
        }
        assert!(ConfChange::decode(&garbage).is_err());
    }
}
