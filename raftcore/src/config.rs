//! Raft node configuration.

use crate::error::RaftError;
use crate::types::NodeId;

/// Settings of one Raft node. Times are in ticks; the caller decides how long
/// a tick is (corekv: `--heartbeat-interval`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id; never 0.
    pub id: NodeId,
    /// A follower that hears nothing from a leader for a random number of
    /// ticks in `[election_tick, 2 * election_tick)` starts an election. The
    /// leader also checks its quorum (check-quorum) once per `election_tick`.
    pub election_tick: u32,
    /// The leader sends heartbeats every `heartbeat_tick` ticks.
    /// Must be smaller than `election_tick`.
    pub heartbeat_tick: u32,
    /// Upper bound on the entry bytes in one append message and in one
    /// Ready's `committed_entries` (at least one entry is always sent).
    pub max_size_per_msg_bytes: u64,
    /// Appends in flight per follower in replicate state (pipelining bound).
    /// Also bounds pending ReadIndex requests and tracked storage writes.
    pub max_inflight_msgs: usize,
    /// The leader refuses proposals once its uncommitted entries exceed this
    /// many bytes (one proposal is always accepted on an empty tail).
    pub max_uncommitted_bytes: u64,
    /// Run a pre-vote round before bumping the term (Raft thesis 9.6).
    pub pre_vote: bool,
    /// The leader steps down when it has not heard from a quorum within an
    /// election timeout, and followers ignore vote requests while they have a
    /// live leader (Raft thesis 6.2 / 9.6 leases).
    pub check_quorum: bool,
    /// Seed for the randomized election timeouts. Different members must use
    /// different seeds (corekv uses the member id mixed with a start nonce).
    pub seed: u64,
    /// Entries kept in memory before the newest snapshot when compacting,
    /// so followers lagging by less catch up from the log rather than a
    /// snapshot (etcd: `SnapshotCatchUpEntries`).
    pub snapshot_catch_up_entries: u64,
}

impl Config {
    /// Defaults matching etcd's (100 ms ticks: 1 s election timeout).
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            max_size_per_msg_bytes: 1024 * 1024,
            max_inflight_msgs: 256,
            max_uncommitted_bytes: 64 * 1024 * 1024,
            pre_vote: true,
            check_quorum: true,
            seed: id,
            snapshot_catch_up_entries: 5000,
        }
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), RaftError> {
        let bad = |reason: &str| {
            Err(RaftError::InvalidConfig {
                reason: reason.to_string(),
            })
        };
        if self.id == 0 {
            return bad("id must not be 0");
        }
        if self.heartbeat_tick == 0 {
            return bad("heartbeat_tick must be > 0");
        }
        if self.election_tick <= self.heartbeat_tick {
            return bad("election_tick must be greater than heartbeat_tick");
        }
        if self.max_inflight_msgs == 0 {
            return bad("max_inflight_msgs must be > 0");
        }
        if self.max_size_per_msg_bytes == 0 {
            return bad("max_size_per_msg_bytes must be > 0");
        }
        if self.max_uncommitted_bytes == 0 {
            return bad("max_uncommitted_bytes must be > 0");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        assert_eq!(Config::new(1).validate(), Ok(()));
        assert!(Config::new(0).validate().is_err());
        let mut c = Config::new(1);
        c.election_tick = 1;
        assert!(c.validate().is_err());
        let mut c = Config::new(1);
        c.max_inflight_msgs = 0;
        assert!(c.validate().is_err());
    }
}
