//! The replica's request table: every client write and linearizable read
//! waiting on this member, from arrival to answer.
//!
//! One map owns every waiting request (`live`, by ticket); one ordered set
//! holds every deadline (`by_deadline`), so expiry pops the front and costs
//! O(expired · log n) per tick, not a scan; one `fail_all` answers
//! everything. The other structures (`parked`, `queued_reads`, `rounds`,
//! `pending_reads`) only hold tickets in the order the replica needs them;
//! a ticket missing from `live` there was already answered and is skipped.
//!
//! Invariants: a ticket is in `live` iff it is in `by_deadline` (same
//! deadline); every reply is sent at most once (it is moved out of `live`
//! to be sent); `live.len() <= cap`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::Instant;

use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame};
use tokio::sync::oneshot;

use crate::metrics::METRICS;

pub type WriteReply = oneshot::Sender<Result<w::Response, ApiError>>;
pub type ReadReply = oneshot::Sender<Result<(), ApiError>>;

/// A waiting request's id, unique in this run. For a write it is also the
/// proposal id carried in the entry (with the run's nonce).
pub type Ticket = u64;

/// Where a waiting request is.
enum Waiting {
    /// Proposed here or forwarded to the leader: answered when its entry
    /// applies. `taken`: when the core took it (for the stage timings).
    Proposed { reply: WriteReply, taken: Instant },
    /// No leader known: proposed once one is.
    Parked {
        frame: OwnedFrame,
        reply: WriteReply,
        taken: Instant,
    },
    /// Waits for the next read-index round.
    ReadQueued { reply: ReadReply },
    /// In the read-index round `ctx`.
    ReadRound { ctx: u64, reply: ReadReply },
    /// Confirmed; answered once apply reaches the read point.
    ReadPending { reply: ReadReply },
}

struct Live {
    deadline: Instant,
    waiting: Waiting,
}

struct Round {
    started: Instant,
    tickets: Vec<Ticket>,
    /// Tickets of this round still in `live`; the round is dropped at 0.
    live: usize,
}

/// A client write not yet proposed (new, or parked and handed back).
pub struct NewWrite {
    pub ticket: Ticket,
    pub deadline: Instant,
    pub taken: Instant,
    pub frame: OwnedFrame,
    pub reply: WriteReply,
}

/// The table was full: the request is refused with "too many requests".
#[derive(Debug)]
pub struct Full;

pub struct Requests {
    live: HashMap<Ticket, Live>,
    by_deadline: BTreeSet<(Instant, Ticket)>,
    /// Parked writes in arrival order (deadline order too: one timeout).
    parked: VecDeque<Ticket>,
    /// Reads for the next round, in arrival (and deadline) order.
    queued_reads: VecDeque<Ticket>,
    rounds: HashMap<u64, Round>,
    /// Read points waiting for apply, by index.
    pending_reads: BTreeMap<u64, Vec<Ticket>>,
    next_ticket: Ticket,
    next_read_ctx: u64,
    /// Hard cap on `live.len()` (`--max-pending-requests`).
    cap: usize,
}

impl Requests {
    pub fn new(cap: usize) -> Requests {
        Requests {
            live: HashMap::new(),
            by_deadline: BTreeSet::new(),
            parked: VecDeque::new(),
            queued_reads: VecDeque::new(),
            rounds: HashMap::new(),
            pending_reads: BTreeMap::new(),
            next_ticket: 1,
            next_read_ctx: 1,
            cap,
        }
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Takes a ticket for a new request, or refuses it when the table is
    /// full.
    pub fn ticket(&mut self) -> Result<Ticket, Full> {
        if self.live.len() >= self.cap {
            return Err(Full);
        }
        let t = self.next_ticket;
        self.next_ticket += 1;
        Ok(t)
    }

    fn insert(&mut self, ticket: Ticket, deadline: Instant, waiting: Waiting) {
        debug_assert!(self.live.len() < self.cap);
        if matches!(waiting, Waiting::Proposed { .. }) {
            METRICS.proposals_pending.fetch_add(1, Ordering::Relaxed);
        }
        self.by_deadline.insert((deadline, ticket));
        let old = self.live.insert(ticket, Live { deadline, waiting });
        assert!(old.is_none(), "ticket {ticket} reused");
    }

    fn remove(&mut self, ticket: Ticket) -> Option<Waiting> {
        let live = self.live.remove(&ticket)?;
        self.by_deadline.remove(&(live.deadline, ticket));
        match &live.waiting {
            Waiting::Proposed { .. } => {
                METRICS.proposals_pending.fetch_sub(1, Ordering::Relaxed);
            }
            Waiting::ReadRound { ctx, .. } => {
                if let Some(round) = self.rounds.get_mut(ctx) {
                    round.live -= 1;
                    if round.live == 0 {
                        self.rounds.remove(ctx);
                    }
                }
            }
            Waiting::Parked { .. } | Waiting::ReadQueued { .. } | Waiting::ReadPending { .. } => {}
        }
        Some(live.waiting)
    }

    pub fn proposed(
        &mut self,
        ticket: Ticket,
        deadline: Instant,
        taken: Instant,
        reply: WriteReply,
    ) {
        self.insert(ticket, deadline, Waiting::Proposed { reply, taken });
    }

    pub fn park(&mut self, write: NewWrite) {
        let waiting = Waiting::Parked {
            frame: write.frame,
            reply: write.reply,
            taken: write.taken,
        };
        self.insert(write.ticket, write.deadline, waiting);
        self.parked.push_back(write.ticket);
    }

    pub fn has_parked(&self) -> bool {
        !self.parked.is_empty()
    }

    /// Every parked write, oldest first, with its deadline; the caller
    /// proposes (or parks) each again under the same ticket.
    pub fn unpark_all(&mut self) -> Vec<NewWrite> {
        let tickets: Vec<Ticket> = self.parked.drain(..).collect();
        let mut out = Vec::with_capacity(tickets.len());
        for t in tickets {
            let deadline = self.live.get(&t).map(|l| l.deadline);
            if let (
                Some(deadline),
                Some(Waiting::Parked {
                    frame,
                    reply,
                    taken,
                }),
            ) = (deadline, self.remove(t))
            {
                out.push(NewWrite {
                    ticket: t,
                    deadline,
                    taken,
                    frame,
                    reply,
                });
            }
        }
        out
    }

    /// Answers the write proposed under `ticket`, if it still waits.
    pub fn answer_write(
        &mut self,
        ticket: Ticket,
        result: Result<w::Response, ApiError>,
    ) -> Option<Instant> {
        match self.remove(ticket) {
            Some(Waiting::Proposed { reply, taken }) => {
                let _ = reply.send(result);
                Some(taken)
            }
            Some(other) => panic!(
                "answering ticket {ticket} that is not a proposal: {}",
                other.name()
            ),
            None => None,
        }
    }

    pub fn queue_read(&mut self, ticket: Ticket, deadline: Instant, reply: ReadReply) {
        self.insert(ticket, deadline, Waiting::ReadQueued { reply });
        self.queued_reads.push_back(ticket);
    }

    pub fn has_queued_reads(&self) -> bool {
        !self.queued_reads.is_empty()
    }

    pub fn next_read_ctx(&self) -> u64 {
        self.next_read_ctx
    }

    /// The queued reads form the round `next_read_ctx()`, which Raft took.
    pub fn start_round(&mut self, started: Instant) {
        let ctx = self.next_read_ctx;
        self.next_read_ctx += 1;
        let mut tickets = Vec::new();
        for t in std::mem::take(&mut self.queued_reads) {
            let Some(live) = self.live.remove(&t) else {
                continue;
            };
            let Waiting::ReadQueued { reply } = live.waiting else {
                unreachable!("a queued read's ticket is in the ReadQueued state")
            };
            let waiting = Waiting::ReadRound { ctx, reply };
            self.live.insert(t, Live { waiting, ..live });
            tickets.push(t);
        }
        if !tickets.is_empty() {
            let live = tickets.len();
            self.rounds.insert(
                ctx,
                Round {
                    started,
                    tickets,
                    live,
                },
            );
        }
    }

    /// Fails every queued read (Raft refused the round).
    pub fn fail_queued_reads(&mut self, err: &ApiError) {
        for t in std::mem::take(&mut self.queued_reads) {
            if let Some(Waiting::ReadQueued { reply }) = self.remove(t) {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }

    /// Round `ctx` was confirmed at `index`: its reads are answered once
    /// `applied >= index`. Returns when the round started (None: unknown
    /// or already expired round).
    pub fn confirm_round(&mut self, ctx: u64, index: u64, applied: u64) -> Option<Instant> {
        let round = self.rounds.remove(&ctx)?;
        for t in round.tickets {
            let Some(live) = self.live.remove(&t) else {
                continue;
            };
            let Waiting::ReadRound { reply, .. } = live.waiting else {
                unreachable!("a round's ticket is in the ReadRound state")
            };
            if index <= applied {
                self.by_deadline.remove(&(live.deadline, t));
                let _ = reply.send(Ok(()));
            } else {
                let waiting = Waiting::ReadPending { reply };
                self.live.insert(t, Live { waiting, ..live });
                self.pending_reads.entry(index).or_default().push(t);
            }
        }
        Some(round.started)
    }

    /// Answers the reads whose read point `applied` reached.
    pub fn release_reads(&mut self, applied: u64) {
        let later = self.pending_reads.split_off(&(applied + 1));
        for t in std::mem::replace(&mut self.pending_reads, later)
            .into_values()
            .flatten()
        {
            if let Some(Waiting::ReadPending { reply }) = self.remove(t) {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Answers every request whose deadline passed: "no leader" for one
    /// still waiting for a leader when none is known, else "timed out".
    /// Returns how many expired.
    pub fn expire(&mut self, now: Instant, leader_known: bool) -> usize {
        let mut n = 0;
        while let Some(&(deadline, ticket)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            n += 1;
            let waiting_for_leader_err = if leader_known {
                ApiError::Timeout
            } else {
                ApiError::NoLeader
            };
            match self.remove(ticket) {
                Some(Waiting::Proposed { reply, .. }) => {
                    METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(ApiError::Timeout));
                }
                Some(Waiting::Parked { reply, .. }) => {
                    METRICS.proposals_failed.fetch_add(1, Ordering::Relaxed);
                    let _ = reply.send(Err(waiting_for_leader_err));
                }
                Some(Waiting::ReadQueued { reply }) => {
                    let _ = reply.send(Err(waiting_for_leader_err));
                }
                Some(Waiting::ReadRound { reply, .. } | Waiting::ReadPending { reply }) => {
                    let _ = reply.send(Err(ApiError::Timeout));
                }
                None => unreachable!("by_deadline holds only live tickets"),
            }
        }
        // Both FIFOs are in deadline order (one timeout for all), so what
        // expired is at their front: drop it, and they stay bounded by the
        // live requests. O(expired), never a scan.
        for fifo in [&mut self.parked, &mut self.queued_reads] {
            while fifo.front().is_some_and(|t| !self.live.contains_key(t)) {
                fifo.pop_front();
            }
        }
        n
    }

    /// Answers every waiting request with `err` (member stopping).
    pub fn fail_all(&mut self, err: &ApiError) {
        let tickets: Vec<Ticket> = self.live.keys().copied().collect();
        for t in tickets {
            match self.remove(t) {
                Some(Waiting::Proposed { reply, .. } | Waiting::Parked { reply, .. }) => {
                    let _ = reply.send(Err(err.clone()));
                }
                Some(
                    Waiting::ReadQueued { reply }
                    | Waiting::ReadRound { reply, .. }
                    | Waiting::ReadPending { reply },
                ) => {
                    let _ = reply.send(Err(err.clone()));
                }
                None => {}
            }
        }
        self.parked.clear();
        self.queued_reads.clear();
        self.rounds.clear();
        self.pending_reads.clear();
    }
}

impl Waiting {
    fn name(&self) -> &'static str {
        match self {
            Waiting::Proposed { .. } => "proposed",
            Waiting::Parked { .. } => "parked",
            Waiting::ReadQueued { .. } => "read queued",
            Waiting::ReadRound { .. } => "read round",
            Waiting::ReadPending { .. } => "read pending",
        }
    }
}
