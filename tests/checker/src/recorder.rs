//! Recording a history from concurrent clients: one clock for everybody,
//! operations appended when they end, watch streams and hashes alongside.

use std::sync::Mutex;
use std::time::Instant;

use crate::history::{History, MemberHash, Operation, Outcome, Request, Watcher};

/// Shared by all client tasks of a run (`Send + Sync`).
#[derive(Debug)]
pub struct Recorder {
    start: Instant,
    history: Mutex<History>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder {
            start: Instant::now(),
            history: Mutex::new(History::default()),
        }
    }

    /// Nanoseconds since the recorder was made; call right before sending.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn with<R>(&self, f: impl FnOnce(&mut History) -> R) -> R {
        // A panicking client task must not hide the rest of the history.
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut h)
    }

    /// Records an operation invoked at `invoke_ns` that ended now.
    pub fn record(&self, client: u32, invoke_ns: u64, request: Request, outcome: Outcome) {
        let complete_ns = self.now_ns();
        self.with(|h| {
            h.operations.push(Operation {
                client,
                invoke_ns,
                complete_ns,
                request,
                outcome,
            })
        });
    }

    pub fn add_watcher(&self, w: Watcher) {
        self.with(|h| h.watchers.push(w));
    }

    pub fn add_hash(&self, m: MemberHash) {
        self.with(|h| h.hashes.push(m));
    }

    /// Notes that a leader change may have happened by now (a new term was
    /// observed); lease expiry bounds allow for it.
    pub fn add_leader_change(&self) {
        let at = self.now_ns();
        self.with(|h| h.leader_changes_ns.push(at));
    }

    /// The cluster's election timeout (lease expiry bounds).
    pub fn set_election_timeout_ms(&self, ms: u64) {
        self.with(|h| h.election_timeout_ms = ms);
    }

    /// The history so far, operations sorted by invocation.
    pub fn snapshot(&self) -> History {
        let mut h = self.with(|h| h.clone());
        h.operations.sort_by_key(|o| o.invoke_ns);
        h
    }
}
