//! The replica: Raft, the request table and the apply decisions of one
//! member, as a sans-IO state machine (`state.rs`), driven by the thin
//! glommio loop in `node/core.rs`.
//!
//! - `state.rs`: [`Replica`], inputs (client requests, peer messages,
//!   ticks) in, [`Work`] (one Raft Ready split for the driver) out.
//! - `requests.rs`: every waiting client request, one deadline order, one
//!   fail-all, a hard cap.
//! - `apply.rs`: committed entries -> store commit; `apply_request` is the
//!   single dispatch over request kinds.
//! - `member.rs`: membership changes proposed as Raft conf changes (or
//!   forwarded to the leader); the rules are in `node/membership`.
//! - `snapshot.rs`: installing a leader's image (blocking, off the Raft
//!   executor).

pub mod apply;
mod member;
pub mod requests;
pub mod snapshot;
pub mod state;

pub use state::{Outbound, Persist, Replica, ReplicaConfig, Work};

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
