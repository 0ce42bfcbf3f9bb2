//! The replica's side of membership changes (`node/membership` has the
//! rules): a change from a local client is proposed as a Raft conf change
//! when this member leads, or forwarded to the leader; a refusal on the
//! leader goes back to the member whose client waits. Raft takes one change
//! at a time: a change that arrives while another is not yet applied waits
//! (retried every tick) until it can go, or until its deadline, when its
//! client gets `etcdserver: request timed out` (etcd's answer too).

use std::time::Instant;

use corekv_raftcore::{RaftError, Role};
use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame};
use rkyv::util::AlignedVec;

use super::requests::{Ticket, WriteReply};
use super::state::{Outbound, Replica, raft_error};
use crate::node::entry::{self, ENTRY_HEADER_BYTES, Origin};
use crate::node::membership::{Change, plan};

/// Most membership changes waiting for the one in flight; beyond it a
/// change is refused at once (`etcdserver: request timed out`).
pub const MAX_WAITING_MEMBER_CHANGES: usize = 64;

/// A change waiting for the change in flight to be applied.
pub struct Retry {
    /// The encoded entry (origin and the client's request).
    data: Vec<u8>,
    deadline: Instant,
    /// The local client's ticket; None for a change another member
    /// forwarded (refused back to it when it cannot go).
    local: Option<Ticket>,
}

/// Why the leader did not propose a change.
enum Refusal {
    NotLeader(Option<u64>),
    /// Another change is not applied yet.
    Pending,
    Api(ApiError),
}

impl Replica {
    /// A membership change from a client of this member (MemberAdd,
    /// MemberRemove, MemberPromote), answered when its entry is applied.
    pub(super) fn on_member_change(&mut self, now: Instant, frame: OwnedFrame, reply: WriteReply) {
        let deadline = now + self.cfg.request_timeout;
        let Ok(ticket) = self.requests.ticket() else {
            let _ = reply.send(Err(ApiError::TooManyRequests));
            return;
        };
        let origin = Origin {
            member: self.cfg.member_id,
            run_nonce: self.cfg.run_nonce,
            proposal_id: ticket,
        };
        let data = entry::encode(origin, frame.tag(), frame.payload());
        match self.propose_member_entry(&data) {
            Ok(()) => self.requests.proposed(ticket, deadline, now, reply),
            Err(Refusal::Pending) if self.member_retry.len() < MAX_WAITING_MEMBER_CHANGES => {
                self.member_retry.push(Retry {
                    data,
                    deadline,
                    local: Some(ticket),
                });
                // Answered when applied, or `Timeout` at the deadline.
                self.requests.proposed(ticket, deadline, now, reply);
            }
            Err(Refusal::Pending) => {
                let _ = reply.send(Err(ApiError::Timeout));
            }
            Err(Refusal::NotLeader(Some(leader))) => {
                self.outbox.push(Outbound::ForwardMember {
                    to: leader,
                    ticket,
                    data,
                });
                self.requests.proposed(ticket, deadline, now, reply);
            }
            Err(Refusal::NotLeader(None)) => {
                let _ = reply.send(Err(ApiError::NoLeader));
            }
            Err(Refusal::Api(e)) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// A change another member forwarded to this one (as its leader).
    pub fn on_forwarded_member(&mut self, now: Instant, data: Vec<u8>) {
        match self.propose_member_entry(&data) {
            Ok(()) => {}
            Err(Refusal::Pending) if self.member_retry.len() < MAX_WAITING_MEMBER_CHANGES => {
                self.member_retry.push(Retry {
                    data,
                    deadline: now + self.cfg.request_timeout,
                    local: None,
                });
            }
            Err(refusal) => self.refuse_forwarded(&data, refusal),
        }
    }

    /// Tells the member that forwarded `data` why it did not go.
    fn refuse_forwarded(&mut self, data: &[u8], refusal: Refusal) {
        let Ok(origin) = entry::decode(data).map(|d| d.origin) else {
            tracing::debug!("dropped a malformed forwarded membership change");
            return;
        };
        let error = match refusal {
            Refusal::NotLeader(_) => ApiError::LeaderChanged,
            Refusal::Pending => ApiError::Timeout,
            Refusal::Api(e) => e,
        };
        self.outbox.push(Outbound::MemberRefused {
            to: origin.member,
            proposal_id: origin.proposal_id,
            run_nonce: origin.run_nonce,
            error: error.message().to_owned(),
        });
    }

    /// Proposes the waiting changes that can go now (each tick); the ones
    /// past their deadline are dropped (a local client's request times out
    /// in the request table).
    pub(super) fn retry_member_changes(&mut self, now: Instant) {
        for retry in std::mem::take(&mut self.member_retry) {
            if now >= retry.deadline {
                if retry.local.is_none() {
                    self.refuse_forwarded(&retry.data, Refusal::Pending);
                }
                continue;
            }
            let refusal = match self.propose_member_entry(&retry.data) {
                Ok(()) => continue,
                Err(Refusal::Pending) => {
                    self.member_retry.push(retry);
                    continue;
                }
                Err(refusal) => refusal,
            };
            match (retry.local, refusal) {
                (None, refusal) => self.refuse_forwarded(&retry.data, refusal),
                (Some(ticket), Refusal::NotLeader(Some(leader))) => {
                    self.outbox.push(Outbound::ForwardMember {
                        to: leader,
                        ticket,
                        data: retry.data,
                    });
                }
                (Some(ticket), Refusal::NotLeader(None)) => {
                    self.requests.answer_write(ticket, Err(ApiError::NoLeader));
                }
                (Some(ticket), Refusal::Pending) => {
                    self.requests.answer_write(ticket, Err(ApiError::Timeout));
                }
                (Some(ticket), Refusal::Api(e)) => {
                    self.requests.answer_write(ticket, Err(e));
                }
            }
        }
    }

    /// The leader refused a change this member forwarded.
    pub fn on_member_refused(&mut self, proposal_id: u64, run_nonce: u64, error: &str) {
        if run_nonce == self.cfg.run_nonce {
            self.requests
                .answer_write(proposal_id, Err(ApiError::from_message(error)));
        }
    }

    /// On the leader: checks the change in the entry `data` and proposes
    /// it as a Raft conf change carrying `data` as its context.
    fn propose_member_entry(&mut self, data: &[u8]) -> Result<(), Refusal> {
        let status = self.raw.status();
        if status.role != Role::Leader {
            return Err(Refusal::NotLeader(status.leader));
        }
        let malformed = |reason: String| Refusal::Api(ApiError::MalformedRequest(reason));
        let decoded = entry::decode(data).map_err(malformed)?;
        let mut aligned = AlignedVec::<16>::new();
        aligned.extend_from_slice(decoded.body);
        let req = rkyv::access::<w::ArchivedRequest, rkyv::rancor::Error>(&aligned)
            .map_err(|e| malformed(e.to_string()))?;
        let change = Change::of(req)
            .ok_or_else(|| malformed(format!("{} is not a membership change", req.name())))?;
        let cc = {
            let cluster = self.cfg.cluster.read().unwrap_or_else(|e| e.into_inner());
            // The origin makes a new member's id unique.
            let unique = &data[8..ENTRY_HEADER_BYTES];
            plan::plan(&change, &cluster, &status, unique).map_err(Refusal::Api)?
        };
        match self.raw.propose_conf_change_with_context(cc, data) {
            Ok(_) => Ok(()),
            Err(RaftError::NotLeader { leader }) => Err(Refusal::NotLeader(leader)),
            Err(RaftError::ProposalDropped { reason }) if reason.starts_with("a conf change") => {
                Err(Refusal::Pending)
            }
            Err(RaftError::InvalidConfChange {
                reason: "cannot remove the last voter",
                ..
            }) => Err(Refusal::Api(ApiError::MemberNotEnoughStarted)),
            Err(e) => Err(Refusal::Api(raft_error(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, RwLock};
    use std::time::Instant;

    use corekv_raftcore::{Config, RawNode, Restored};
    use corekv_storage::Store;
    use corekv_wire::messages as w;
    use corekv_wire::{ApiError, FrameDecoder, OwnedFrame, WireLimits, encode_frame};
    use tokio::sync::oneshot;

    use super::super::Replica;
    use super::super::tests::{Disk, WriteRx, drive, elect, mem_store, replica_config, voters};
    use crate::cluster::ClusterInfo;
    use crate::node::CoreMsg;
    use crate::node::membership::{self, CLUSTER_META_KEY};

    fn frame(req: w::Request) -> OwnedFrame {
        let mut buf = Vec::new();
        encode_frame(1, &req, &mut buf).expect("encode");
        let limits = WireLimits::default();
        let mut dec = FrameDecoder::new(&limits);
        dec.extend(&buf);
        dec.next_owned_frame().expect("frame").expect("one frame")
    }

    fn change(r: &mut Replica, now: Instant, req: w::Request) -> WriteRx {
        let (reply, rx) = oneshot::channel();
        r.on_client(
            now,
            CoreMsg::MemberChange {
                frame: frame(req),
                reply,
            },
        );
        rx
    }

    fn add_learner(url: &str) -> w::Request {
        w::Request::MemberAdd(w::MemberAddRequest {
            peer_urls: vec![url.into()],
            is_learner: true,
        })
    }

    /// What the core does after an apply: the shared record follows the store.
    fn follow(store: &Store, shared: &RwLock<ClusterInfo>) -> ClusterInfo {
        let view = store.read().expect("read");
        let record = membership::load(view.get_meta(CLUSTER_META_KEY))
            .expect("record")
            .expect("present");
        *shared.write().unwrap() = record.clone();
        record
    }

    /// One member leading alone, its membership record in the store.
    fn single(disk: &mut Disk, store: &Store, now: Instant) -> (Replica, Arc<RwLock<ClusterInfo>>) {
        let cluster = ClusterInfo::bootstrap("m1=http://127.0.0.1:1", "t").unwrap();
        let id = *cluster.members.keys().next().unwrap();
        let mut batch = store.write().unwrap();
        batch.put_meta(CLUSTER_META_KEY, &serde_json::to_vec(&cluster).unwrap());
        batch.commit(0, true).unwrap();
        let shared = Arc::new(RwLock::new(cluster));
        let mut cfg = replica_config(id, 9, 1024);
        cfg.cluster = shared.clone();
        let mut rc = Config::new(id);
        rc.seed = 1;
        let raw = RawNode::new(rc, voters(&[id]), Restored::default()).unwrap();
        let mut r = Replica::new(cfg, raw, 0, disk.hs);
        elect(&mut r, disk, store, now);
        (r, shared)
    }

    #[test]
    fn one_change_at_a_time_and_each_answered_when_applied() {
        let (mut disk, store, t0) = (Disk::default(), mem_store(), Instant::now());
        let (mut r, shared) = single(&mut disk, &store, t0);
        let mut first = change(&mut r, t0, add_learner("http://127.0.0.1:2"));
        // Waits for the first (a second learner is then refused).
        let mut second = change(&mut r, t0, add_learner("http://127.0.0.1:3"));
        assert!(
            second.try_recv().is_err(),
            "answered before the first applied"
        );
        drive(&mut r, &mut disk, &store, t0);
        let added = match first.try_recv() {
            Ok(Ok(w::Response::MemberAdd(a))) => a,
            other => panic!("expected the add's answer, got {other:?}"),
        };
        let learner = added.member.expect("new member");
        assert!(learner.is_learner);
        assert_eq!(added.members.len(), 2);
        assert_eq!(r.status().conf_state.learners, [learner.id]);
        assert!(follow(&store, &shared).members[&learner.id].is_learner);
        r.tick(t0);
        assert_eq!(second.try_recv().unwrap(), Err(ApiError::TooManyLearners));

        // It has none of the log: promotion is refused.
        let promote = w::Request::MemberPromote(w::MemberPromoteRequest { id: learner.id });
        let mut early = change(&mut r, t0, promote);
        assert_eq!(early.try_recv().unwrap(), Err(ApiError::LearnerNotReady));

        let remove = w::Request::MemberRemove(w::MemberRemoveRequest { id: learner.id });
        let mut removed = change(&mut r, t0, remove);
        drive(&mut r, &mut disk, &store, t0);
        assert!(matches!(
            removed.try_recv(),
            Ok(Ok(w::Response::MemberRemove(ref m))) if m.members.len() == 1
        ));
        assert!(r.status().conf_state.learners.is_empty());
        let record = follow(&store, &shared);
        assert!(record.removed.contains(&learner.id));
        assert!(!record.members.contains_key(&learner.id));

        // A change still waiting at its deadline times out, and is never
        // proposed (the one in flight is applied, its client gone too).
        let _third = change(&mut r, t0, add_learner("http://127.0.0.1:4"));
        let mut fourth = change(&mut r, t0, add_learner("http://127.0.0.1:5"));
        let late = t0 + super::super::tests::TIMEOUT + std::time::Duration::from_secs(1);
        r.tick(late);
        assert_eq!(fourth.try_recv().unwrap(), Err(ApiError::Timeout));
        drive(&mut r, &mut disk, &store, late);
        r.tick(late);
        drive(&mut r, &mut disk, &store, late);
        let urls: Vec<String> = follow(&store, &shared)
            .members
            .values()
            .flat_map(|m| m.peer_urls.clone())
            .collect();
        assert!(urls.contains(&"http://127.0.0.1:4".to_string()), "{urls:?}");
        assert!(
            !urls.contains(&"http://127.0.0.1:5".to_string()),
            "{urls:?}"
        );
    }
}
