//! Follower side of replication: appends, heartbeats and snapshots.

use super::Raft;
use crate::error::RaftError;
use crate::message::{Message, MessageKind};

impl Raft {
    pub(super) fn handle_append(&mut self, m: Message) {
        let mut r = Message::new(MessageKind::AppResp, m.from);
        if m.index < self.log.committed {
            r.index = self.log.committed;
            self.send(r);
            return;
        }
        match self
            .log
            .maybe_append(m.index, m.log_term, m.commit, &m.entries)
        {
            Some(last_new) => r.index = last_new,
            None => {
                // Point the leader at the last entry that can possibly match:
                // skip every entry whose term is above the leader's prev term.
                let (hint, hint_term) = self.log.find_conflict_by_term(m.index, m.log_term);
                r.index = m.index;
                r.reject = true;
                r.reject_hint = hint;
                r.log_term = hint_term;
            }
        }
        self.send(r);
    }

    pub(super) fn handle_heartbeat(&mut self, m: Message) {
        // The leader sends min(match, commit), so this never commits an
        // entry that differs from the leader's.
        self.log.commit_to(m.commit.min(self.log.last_index()));
        let mut r = Message::new(MessageKind::HeartbeatResp, m.from);
        r.context = m.context;
        self.send(r);
    }

    pub(super) fn handle_snapshot(&mut self, m: Message) -> Result<(), RaftError> {
        let Some(meta) = m.snapshot else {
            return Err(RaftError::MalformedMessage {
                kind: "Snapshot",
                from: m.from,
                reason: "no snapshot metadata",
            });
        };
        let mut r = Message::new(MessageKind::AppResp, m.from);
        if meta.index <= self.log.committed {
            r.index = self.log.committed;
        } else if self.log.match_term(meta.index, meta.term) {
            // We already have the snapshot's last entry: only commit moves.
            self.log.commit_to(meta.index);
            r.index = self.log.committed;
        } else {
            let next = meta.index + 1;
            self.tracker.set_conf(&meta.conf_state, next);
            self.log.restore(meta);
            r.index = self.log.last_index();
        }
        self.send(r);
        Ok(())
    }
}
