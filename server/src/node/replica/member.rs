//! The replica's side of membership changes (`node/membership` has the
//! rules): a change from a local client is proposed as a Raft conf change
//! when this member leads, or forwarded to the leader; a refusal on the
//! leader goes back to the member whose client waits.

use std::time::Instant;

use corekv_raftcore::{RaftError, Role};
use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame};
use rkyv::util::AlignedVec;

use super::requests::WriteReply;
use super::state::{Outbound, Replica, raft_error};
use crate::node::entry::{self, ENTRY_HEADER_BYTES, Origin};
use crate::node::membership::{Change, plan};

/// Why the leader did not propose a change.
enum Refusal {
    NotLeader(Option<u64>),
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
    pub fn on_forwarded_member(&mut self, data: Vec<u8>) {
        let Ok(origin) = entry::decode(&data).map(|d| d.origin) else {
            tracing::debug!("dropped a malformed forwarded membership change");
            return;
        };
        let error = match self.propose_member_entry(&data) {
            Ok(()) => return,
            Err(Refusal::NotLeader(_)) => ApiError::LeaderChanged,
            Err(Refusal::Api(e)) => e,
        };
        self.outbox.push(Outbound::MemberRefused {
            to: origin.member,
            proposal_id: origin.proposal_id,
            run_nonce: origin.run_nonce,
            error: error.message().to_owned(),
        });
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
            // etcd lets a second change wait until its request times out.
            Err(RaftError::ProposalDropped { reason }) if reason.starts_with("a conf change") => {
                Err(Refusal::Api(ApiError::Timeout))
            }
            Err(RaftError::InvalidConfChange {
                reason: "cannot remove the last voter",
                ..
            }) => Err(Refusal::Api(ApiError::MemberNotEnoughStarted)),
            Err(e) => Err(Refusal::Api(raft_error(e))),
        }
    }
}
