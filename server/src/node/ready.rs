//! When a member starts serving clients (etcd's `ReadyNotify`).
//!
//! After a restart the store may be behind what the member acknowledged
//! before it stopped: store commits are not synced (the WAL is the
//! durability point), so the store reopens at its last durable commit and
//! the WAL's tail is applied again once Raft commits it. Answering from the
//! store before that would let a client see the revision go back (a Status,
//! a serializable range or a watch at a revision below one it was already
//! answered with).
//!
//! So a member serves no client request until one read barrier completed
//! after start: a ReadIndex round (the leader's commit index, confirmed by a
//! quorum, at or above every entry acknowledged before the restart) and the
//! local apply up to it. Until then requests wait, at most the request
//! timeout (then `Timeout`, which clients retry). The barrier is retried
//! until it passes; `serving` never goes back to false. A member cut off
//! from a quorum after a restart therefore serves nothing, like etcd.
//! `/health` and `/metrics` are not gated (`/health` runs its own barrier).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use corekv_wire::ApiError;
use tokio::sync::oneshot;

use super::{CoreMsg, Shared};

/// How often a waiting request re-checks `Shared::serving`.
const READY_POLL: Duration = Duration::from_millis(5);
/// Pause before a failed start-up barrier is tried again.
const BARRIER_RETRY: Duration = Duration::from_millis(50);

/// Waits until the member serves clients; `Timeout` after the request
/// timeout, `Stopped` if the member stops meanwhile.
pub async fn wait(shared: &Shared) -> Result<(), ApiError> {
    if shared.serving.load(Ordering::Acquire) {
        return Ok(());
    }
    let deadline = Instant::now() + shared.cfg.request_timeout();
    loop {
        if shared.serving.load(Ordering::Acquire) {
            return Ok(());
        }
        if shared.stopping() {
            return Err(ApiError::Stopped);
        }
        if Instant::now() >= deadline {
            return Err(ApiError::Timeout);
        }
        glommio::timer::sleep(READY_POLL).await;
    }
}

/// Runs the start-up read barrier on the Raft core's executor until it
/// passes, then opens the member to clients.
pub fn spawn_barrier(shared: Arc<Shared>) {
    glommio::spawn_local(async move {
        let started = Instant::now();
        while !shared.stopping() {
            let (reply, rx) = oneshot::channel();
            if shared
                .to_core
                .send(CoreMsg::ReadIndex { reply })
                .await
                .is_err()
            {
                return;
            }
            match rx.await {
                Ok(Ok(())) => {
                    shared.serving.store(true, Ordering::Release);
                    tracing::info!(
                        applied = shared.applied_index.load(Ordering::Relaxed),
                        revision = shared.store().current_revision(),
                        after_ms = started.elapsed().as_millis() as u64,
                        "store caught up: serving clients"
                    );
                    return;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, "start-up read barrier failed; retrying"),
                Err(_) => return,
            }
            glommio::timer::sleep(BARRIER_RETRY).await;
        }
    })
    .detach();
}
