//! Raft for corekv, as a pure state machine, and the write-ahead log.
//!
//! The state machine ([`RawNode`]) does no IO and reads no clock: time is
//! [`RawNode::tick`], randomness comes from [`Config::seed`], and everything
//! it wants done comes out as a [`Ready`] batch. The design is in
//! `docs/raft.md`; what follows is the contract the application must keep.
//!
//! # The Ready contract
//!
//! 1. After any input (`tick`, `step`, `propose`, `read_index`, ...) call
//!    [`RawNode::ready`] while [`RawNode::has_ready`] is true. Each call
//!    hands out only what is new; several Readys may be in progress at once.
//! 2. If `rd.snapshot` is set, install it: its state-machine image arrived
//!    with the `Snapshot` message (see rule 10), so replace the state machine
//!    with it and persist the metadata before `rd.entries`. The log before it
//!    is gone.
//! 3. Persist `rd.entries` and `rd.hard_state`. An entry at index `i`
//!    replaces any persisted entry at `i` or above. Writes may be
//!    asynchronous and may be grouped into one fsync with later Readys'
//!    writes, but must become durable in the order the Readys were taken.
//! 4. `rd.messages` may be sent at once, before the writes of rule 3 are
//!    durable (the leader replicates while its own fsync runs, Raft thesis
//!    10.2.1).
//! 5. `rd.persisted_messages` (votes, append acknowledgements, a candidate's
//!    vote requests) must be sent only after this Ready's writes are durable.
//! 6. When they are, call [`RawNode::on_persisted`] with
//!    [`Ready::persisted_upto`]. A call for a later Ready covers earlier ones.
//!    The leader counts its own log toward the commit quorum only up to what
//!    was reported here.
//! 7. Apply `rd.committed_entries` in order; they are committed and locally
//!    durable. For an `EntryKind::ConfChange` entry decode the data with
//!    [`ConfChange::decode`] and call [`RawNode::apply_conf_change`]. Then
//!    call [`RawNode::advance`] (or [`RawNode::advance_applied`] when applying
//!    asynchronously). The state machine stores its applied index durably
//!    with the data it covers; that index is `Restored::applied` on restart.
//! 8. A `ReadState { ctx, index }` answers `read_index(ctx)`: the read is
//!    linearizable once the local state machine has applied `index`. Reads
//!    pending when leadership changes get no answer; callers time out.
//! 9. On restart build [`Restored`] from the WAL (hard state, latest
//!    snapshot, entries after it) and the state machine's applied index.
//!    Writes never reported through `on_persisted` may or may not be there.
//! 10. Snapshot data is not carried in [`Message`]: when `rd.messages`
//!     holds a `Snapshot` message, stream the state-machine image at
//!     `msg.snapshot.index` beside it (an image at a later applied index
//!     also works if `msg.snapshot` is rewritten to match it: index, its log
//!     term from [`RawNode::term`], and the membership there). The receiver
//!     steps the message only after the whole image arrived. Tell the sender
//!     how it went with [`RawNode::report_snapshot`].
//! 11. Log compaction: after the state machine made an image at `meta.index`
//!     (at most the applied index) durable, call
//!     [`RawNode::on_snapshot_taken`]; the WAL may then release what is
//!     before it.
//!
//! Membership changes are single-server changes (add/remove one voter, add
//! or promote one learner), one at a time: a new change is refused until the
//! previous one is applied, and a new leader accepts none until its first
//! entry is applied. A change takes effect when applied.
//!
//! ```
//! use corekv_raftcore::{Config, ConfState, Entry, HardState, RawNode, Restored, Role};
//!
//! let voters = ConfState { voters: vec![1], learners: vec![] };
//! let mut node = RawNode::new(Config::new(1), voters, Restored::default())?;
//! node.campaign()?;
//! let (mut wal, mut hard_state) = (Vec::<Entry>::new(), HardState::default());
//! let (mut applied, mut proposed) = (Vec::new(), false);
//! for _ in 0..4 {
//!     if node.status().role == Role::Leader && !proposed {
//!         node.propose(b"x".to_vec())?;
//!         proposed = true;
//!     }
//!     while node.has_ready() {
//!         let rd = node.ready();
//!         // Rule 4: rd.messages go to peers now (a single member has none).
//!         // Rule 3: persist; here a Vec stands in for the WAL.
//!         if let Some(first) = rd.entries.first() {
//!             wal.truncate(first.index as usize - 1);
//!             wal.extend(rd.entries.iter().cloned());
//!         }
//!         hard_state = rd.hard_state.unwrap_or(hard_state);
//!         // Rules 5 and 6: durable now.
//!         if let Some((index, term)) = rd.persisted_upto() {
//!             node.on_persisted(index, term);
//!         }
//!         assert!(rd.persisted_messages.is_empty());
//!         // Rule 7.
//!         applied.extend(rd.committed_entries.iter().filter(|e| !e.data.is_empty()).map(|e| e.data.clone()));
//!         node.advance(rd);
//!     }
//! }
//! assert_eq!(applied, vec![b"x".to_vec()]);
//! assert_eq!((wal.len(), hard_state.commit), (2, 2));
//! # Ok::<(), corekv_raftcore::RaftError>(())
//! ```

pub mod config;
pub mod error;
pub mod failpoint;
mod log;
pub mod message;
pub mod progress;
mod raft;
mod raw_node;
mod read_only;
mod rng;
mod tracker;
pub mod types;
pub mod wal;

pub use config::Config;
pub use error::RaftError;
pub use message::{Message, MessageKind, ReadState};
pub use progress::ProgressState;
pub use raft::Role;
pub use raw_node::{PeerProgress, RawNode, Ready, Restored, Status};
pub use types::{ConfChange, ConfState, Entry, EntryKind, HardState, NodeId, SnapshotMeta};
