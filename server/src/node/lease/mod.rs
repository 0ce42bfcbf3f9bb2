//! Leases: the lessor (sans-IO), applying lease entries, and the driver
//! that shard 0's loop calls for keep-alives, time-to-live queries, expiry
//! and checkpoints.
//!
//! Where each operation runs (see docs/leases.md):
//! - grant, revoke: client requests through Raft (`apply::grant/revoke`);
//! - expiry: the leader's lessor finds expired leases (rate-bounded) and
//!   proposes internal revoke entries; followers never expire anything;
//! - checkpoints: the leader proposes remaining TTLs (internal entries)
//!   every `--lease-checkpoint-interval-ms`; every member stores them with
//!   the lease, so a new leader and a full restart resume from them;
//! - keep-alive, time-to-live: answered by the leader's lessor without a
//!   Raft round (a keep-alive of a checkpointed lease also proposes a
//!   checkpoint of 0); a follower forwards them to the leader over the peer
//!   transport (`LeaseMsg`);
//! - leases list: read from the local store; a time-to-live's attached
//!   keys: from the local store after a read barrier (the leader's commit
//!   index at the time of the call).

pub mod apply;
pub mod internal;
pub mod lessor;
pub mod serve;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use corekv_storage::Store;
use corekv_wire::ApiError;
use rkyv::{Archive, Deserialize, Serialize};
use tokio::sync::oneshot;

use internal::Internal;
use lessor::{Lessor, LessorConfig, Renewed};

/// What a client asked shard 0 about a lease.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AskKind {
    KeepAlive,
    TimeToLive,
}

/// The leader's answer.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Keep-alive: `ttl` is the granted TTL. Time-to-live: `ttl` is the
    /// remaining TTL (seconds), `granted` the granted TTL.
    Found {
        ttl: i64,
        granted: i64,
    },
    NotFound,
}

/// A client's lease question on its way to shard 0.
pub struct Ask {
    pub kind: AskKind,
    pub id: i64,
    pub reply: oneshot::Sender<Result<Answer, ApiError>>,
}

/// Lease traffic between members (carried by `PeerMsg::Lease`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum LeaseMsg {
    /// Follower -> leader.
    Ask { ask: u64, kind: AskKind, id: i64 },
    /// Leader -> follower.
    Answer {
        ask: u64,
        result: Result<Answer, ApiError>,
    },
}

/// What the driver asks shard 0's loop to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send to a peer.
    Send { to: u64, msg: LeaseMsg },
    /// Propose an internal entry with this body (`entry::KIND_INTERNAL`).
    Propose(Vec<u8>),
}

/// Settings of the lease subsystem (from `Config`).
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub lessor: LessorConfig,
    /// Added to every lease's remaining TTL when this member becomes
    /// leader (the election timeout).
    pub promote_extension: Duration,
    /// Forwarded asks waiting for the leader at once (more are refused
    /// with "too many requests").
    pub max_forwarded_asks: usize,
    /// A forwarded ask not answered within this is answered "request timed
    /// out".
    pub ask_timeout: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            lessor: LessorConfig::default(),
            promote_extension: Duration::from_secs(1),
            max_forwarded_asks: MAX_FORWARDED_ASKS,
            ask_timeout: Duration::from_secs(7),
        }
    }
}

impl LeaseConfig {
    pub fn from_config(cfg: &crate::config::Config) -> LeaseConfig {
        let election = Duration::from_millis(cfg.election_timeout);
        // etcd's minLeaseTTL: 1.5 election timeouts, rounded up to seconds.
        let min_ttl_ms = cfg.election_timeout.saturating_mul(3) / 2;
        let min_ttl_s = i64::try_from(min_ttl_ms.div_ceil(1000)).unwrap_or(i64::MAX);
        LeaseConfig {
            lessor: LessorConfig {
                min_ttl_s: min_ttl_s.max(1),
                revokes_per_sec: cfg.lease_revoke_rate,
                checkpoint_interval: match cfg.lease_checkpoint_interval_ms {
                    0 => None,
                    ms => Some(Duration::from_millis(ms)),
                },
                ..LessorConfig::default()
            },
            promote_extension: election,
            max_forwarded_asks: MAX_FORWARDED_ASKS,
            ask_timeout: cfg.request_timeout(),
        }
    }
}

/// Default bound of forwarded asks in flight (keep-alives and time-to-live
/// queries a follower forwards to the leader).
pub const MAX_FORWARDED_ASKS: usize = 65_536;

struct Forwarded {
    deadline: Instant,
    to: u64,
    reply: oneshot::Sender<Result<Answer, ApiError>>,
}

/// Shard 0's lease state: the lessor plus forwarded asks in flight.
pub struct LeaseDriver {
    pub lessor: Lessor,
    cfg: LeaseConfig,
    leader: bool,
    next_ask: u64,
    /// Asks forwarded to the leader, by ask id: (deadline, leader asked,
    /// reply). Bounded by `max_forwarded_asks`.
    forwarded: HashMap<u64, Forwarded>,
}

impl LeaseDriver {
    /// No leases yet (a replica without a store to load from).
    pub fn empty() -> LeaseDriver {
        let cfg = LeaseConfig::default();
        LeaseDriver {
            lessor: Lessor::new(cfg.lessor.clone()),
            cfg,
            leader: false,
            next_ask: 1,
            forwarded: HashMap::new(),
        }
    }

    /// Loads every lease from the store: O(leases), no key scan.
    pub fn open(cfg: LeaseConfig, store: &Store) -> Result<LeaseDriver, String> {
        let mut d = LeaseDriver {
            lessor: Lessor::new(cfg.lessor.clone()),
            cfg,
            ..LeaseDriver::empty()
        };
        d.reload(store)?;
        Ok(d)
    }

    /// Reloads the leases after the store was replaced (snapshot image).
    pub fn reload(&mut self, store: &Store) -> Result<(), String> {
        let view = store.read().map_err(|e| format!("lease load: {e}"))?;
        let leases = view.leases().map_err(|e| format!("lease load: {e}"))?;
        self.lessor
            .load(leases.into_iter().map(|l| (l.id, l.ttl, l.remaining_ttl)));
        self.leader = false;
        Ok(())
    }

    /// Follows this member's role: promote on becoming leader, demote on
    /// losing it.
    pub fn set_leader(&mut self, leader: bool, now: Instant) {
        if leader == self.leader {
            return;
        }
        self.leader = leader;
        if leader {
            self.lessor.promote(now, self.cfg.promote_extension);
            tracing::info!(leases = self.lessor.len(), "lessor promoted");
        } else {
            self.lessor.demote();
        }
    }

    /// Every tick: expired leases and due checkpoints become internal
    /// proposals (leader only); forwarded asks past their deadline time out,
    /// and asks sent to a member that is no longer `leader` are answered
    /// "leader changed" at once (the client retries on the new leader
    /// instead of waiting out its timeout while its lease runs down).
    pub fn on_tick(&mut self, now: Instant, leader: Option<u64>) -> Vec<Action> {
        let mut out = Vec::new();
        let expired = self.lessor.expired(now);
        for ids in expired.chunks(internal::MAX_ITEMS) {
            out.push(Action::Propose(
                Internal::RevokeExpired(ids.to_vec()).encode(),
            ));
        }
        for batch in self.lessor.due_checkpoints(now) {
            for cps in batch.chunks(internal::MAX_ITEMS) {
                out.push(Action::Propose(Internal::Checkpoint(cps.to_vec()).encode()));
            }
        }
        let done: Vec<(u64, ApiError)> = self
            .forwarded
            .iter()
            .filter_map(|(ask, f)| {
                if f.deadline <= now {
                    Some((*ask, ApiError::Timeout))
                } else if leader != Some(f.to) {
                    Some((*ask, ApiError::LeaderChanged))
                } else {
                    None
                }
            })
            .collect();
        for (ask, err) in done {
            if let Some(f) = self.forwarded.remove(&ask) {
                let _ = f.reply.send(Err(err));
            }
        }
        out
    }

    /// The leader answers; a follower forwards to `leader`.
    pub fn on_ask(&mut self, ask: Ask, leader: Option<u64>, now: Instant) -> Vec<Action> {
        if self.leader {
            let (result, actions) = self.answer(ask.kind, ask.id, now);
            let _ = ask.reply.send(result);
            return actions;
        }
        let Some(to) = leader else {
            let _ = ask.reply.send(Err(ApiError::NoLeader));
            return Vec::new();
        };
        if self.forwarded.len() >= self.cfg.max_forwarded_asks {
            let _ = ask.reply.send(Err(ApiError::TooManyRequests));
            return Vec::new();
        }
        let id = self.next_ask;
        self.next_ask += 1;
        let f = Forwarded {
            deadline: now + self.cfg.ask_timeout,
            to,
            reply: ask.reply,
        };
        self.forwarded.insert(id, f);
        vec![Action::Send {
            to,
            msg: LeaseMsg::Ask {
                ask: id,
                kind: ask.kind,
                id: ask.id,
            },
        }]
    }

    /// A lease message from peer `from`.
    pub fn on_peer(&mut self, from: u64, msg: LeaseMsg, now: Instant) -> Vec<Action> {
        match msg {
            LeaseMsg::Ask { ask, kind, id } => {
                let (result, mut actions) = if self.leader {
                    self.answer(kind, id, now)
                } else {
                    (Err(ApiError::NoLeader), Vec::new())
                };
                actions.push(Action::Send {
                    to: from,
                    msg: LeaseMsg::Answer { ask, result },
                });
                actions
            }
            LeaseMsg::Answer { ask, result } => {
                if let Some(f) = self.forwarded.remove(&ask) {
                    let _ = f.reply.send(result);
                }
                Vec::new()
            }
        }
    }

    fn answer(
        &mut self,
        kind: AskKind,
        id: i64,
        now: Instant,
    ) -> (Result<Answer, ApiError>, Vec<Action>) {
        match kind {
            AskKind::KeepAlive => match self.lessor.renew(id, now) {
                Renewed::Ttl(ttl) => (Ok(Answer::Found { ttl, granted: ttl }), Vec::new()),
                Renewed::ClearCheckpoint(ttl) => (
                    Ok(Answer::Found { ttl, granted: ttl }),
                    vec![Action::Propose(
                        Internal::Checkpoint(vec![(id, 0)]).encode(),
                    )],
                ),
                Renewed::NotFound => (Ok(Answer::NotFound), Vec::new()),
                Renewed::NotPrimary => (Err(ApiError::NoLeader), Vec::new()),
            },
            AskKind::TimeToLive => {
                let result = match self.lessor.time_to_live(id, now) {
                    Some((ttl, granted)) => Answer::Found { ttl, granted },
                    None => Answer::NotFound,
                };
                (Ok(result), Vec::new())
            }
        }
    }

    /// Answers every forwarded ask (the member is stopping).
    pub fn fail_all(&mut self, err: &ApiError) {
        for (_, f) in self.forwarded.drain() {
            let _ = f.reply.send(Err(err.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corekv_storage::{MemBackend, StoreOptions};
    use std::sync::Arc;

    fn driver() -> LeaseDriver {
        let store =
            Store::open_with_backend(Arc::new(MemBackend::new()), StoreOptions::default()).unwrap();
        LeaseDriver::open(
            LeaseConfig {
                lessor: LessorConfig::default(),
                promote_extension: Duration::from_secs(1),
                max_forwarded_asks: 2,
                ask_timeout: Duration::from_secs(5),
            },
            &store,
        )
        .unwrap()
    }

    fn ask(kind: AskKind, id: i64) -> (Ask, oneshot::Receiver<Result<Answer, ApiError>>) {
        let (reply, rx) = oneshot::channel();
        (Ask { kind, id, reply }, rx)
    }

    #[test]
    fn follower_forwards_and_leader_answers() {
        let now = Instant::now();
        let (mut follower, mut leader) = (driver(), driver());
        leader.set_leader(true, now);
        for d in [&mut follower, &mut leader] {
            d.lessor.on_grant(5, 10, now);
        }
        let (a, mut rx) = ask(AskKind::KeepAlive, 5);
        let actions = follower.on_ask(a, Some(2), now);
        let [Action::Send { to: 2, msg }] = &actions[..] else {
            panic!("expected one send, got {actions:?}");
        };
        let back = leader.on_peer(1, msg.clone(), now);
        let [Action::Send { to: 1, msg }] = &back[..] else {
            panic!("expected one answer, got {back:?}");
        };
        assert!(follower.on_peer(2, msg.clone(), now).is_empty());
        assert_eq!(
            rx.try_recv().unwrap(),
            Ok(Answer::Found {
                ttl: 10,
                granted: 10
            })
        );
    }

    #[test]
    fn forwarded_asks_are_bounded_and_time_out() {
        let now = Instant::now();
        let mut d = driver();
        let (a1, mut r1) = ask(AskKind::TimeToLive, 1);
        let (a2, _r2) = ask(AskKind::TimeToLive, 1);
        let (a3, mut r3) = ask(AskKind::TimeToLive, 1);
        d.on_ask(a1, Some(2), now);
        d.on_ask(a2, Some(2), now);
        d.on_ask(a3, Some(2), now);
        assert_eq!(r3.try_recv().unwrap(), Err(ApiError::TooManyRequests));
        d.on_tick(now + Duration::from_secs(6), Some(2));
        assert_eq!(r1.try_recv().unwrap(), Err(ApiError::Timeout));
        let (a5, mut r5) = ask(AskKind::TimeToLive, 1);
        d.on_ask(a5, Some(2), now);
        d.on_tick(now, Some(3));
        assert_eq!(r5.try_recv().unwrap(), Err(ApiError::LeaderChanged));
        let (a4, mut r4) = ask(AskKind::KeepAlive, 1);
        d.on_ask(a4, None, now);
        assert_eq!(r4.try_recv().unwrap(), Err(ApiError::NoLeader));
    }

    #[test]
    fn leader_proposes_revokes_for_expired_leases() {
        let now = Instant::now();
        let mut d = driver();
        d.lessor.on_grant(5, 2, now);
        d.set_leader(true, now);
        assert!(d.on_tick(now + Duration::from_secs(2), None).is_empty());
        let actions = d.on_tick(now + Duration::from_secs(3), None);
        assert_eq!(
            actions,
            vec![Action::Propose(Internal::RevokeExpired(vec![5]).encode())]
        );
        d.set_leader(false, now);
        assert!(d.on_tick(now + Duration::from_secs(30), None).is_empty());
    }
}
