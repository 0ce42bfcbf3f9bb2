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

/// Format version of an encoded [`ConfChange`] (first byte of the entry):
/// 1 is `[1][archive]`; 2 is `[2][archive length, u32 LE][archive][context]`,
/// where the context is the application's own bytes (etcd's
/// `ConfChange.Context`), opaque to Raft.
const CONF_CHANGE_VERSION: u8 = 1;
const CONF_CHANGE_VERSION_CONTEXT: u8 = 2;

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

    /// Serializes with an application context (version 2); an empty
    /// context gives the version-1 form.
    pub fn encode_with_context(&self, context: &[u8]) -> Vec<u8> {
        let plain = self.encode();
        if context.is_empty() {
            return plain;
        }
        let archive = &plain[1..];
        let len = u32::try_from(archive.len()).expect("a conf change archive fits u32");
        let mut out = Vec::with_capacity(5 + archive.len() + context.len());
        out.push(CONF_CHANGE_VERSION_CONTEXT);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(archive);
        out.extend_from_slice(context);
        out
    }

    /// Decodes and validates bytes produced by [`ConfChange::encode`] or
    /// [`ConfChange::encode_with_context`] (the context is dropped).
    pub fn decode(bytes: &[u8]) -> Result<ConfChange, crate::error::RaftError> {
        Self::decode_with_context(bytes).map(|(cc, _)| cc)
    }

    /// Decodes either version; the context is empty for version 1.
    pub fn decode_with_context(
        bytes: &[u8],
    ) -> Result<(ConfChange, &[u8]), crate::error::RaftError> {
        let err = |reason: String| crate::error::RaftError::Decode {
            what: "conf change",
            reason,
        };
        let (&version, body) = bytes
            .split_first()
            .ok_or_else(|| err("empty".to_string()))?;
        let (body, context) = match version {
            CONF_CHANGE_VERSION => (body, &[][..]),
            CONF_CHANGE_VERSION_CONTEXT => {
                let (len, rest) = body
                    .split_first_chunk::<4>()
                    .ok_or_else(|| err("truncated length".to_string()))?;
                let len = u32::from_le_bytes(*len) as usize;
                if rest.len() < len {
                    return Err(err(format!("archive of {len} bytes is truncated")));
                }
                rest.split_at(len)
            }
            _ => return Err(err(format!("unknown version {version}"))),
        };
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        let cc = rkyv::from_bytes::<ConfChange, rkyv::rancor::Error>(&aligned)
            .map_err(|e| err(e.to_string()))?;
        Ok((cc, context))
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

    #[test]
    fn conf_change_context_round_trips() {
        let cc = ConfChange::Remove { id: 3 };
        let bytes = cc.encode_with_context(b"ctx");
        assert_eq!(
            ConfChange::decode_with_context(&bytes),
            Ok((cc.clone(), &b"ctx"[..]))
        );
        assert_eq!(ConfChange::decode(&bytes), Ok(cc.clone()));
        assert_eq!(cc.encode_with_context(b""), cc.encode());
        assert!(ConfChange::decode(&bytes[..4]).is_err());
        assert!(ConfChange::decode(&bytes[..bytes.len() - 4]).is_err());
    }
}
