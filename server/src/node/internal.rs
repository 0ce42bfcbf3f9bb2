//! Requests a member makes itself (raising an alarm, auto-compaction): they
//! are encoded like a client's and proposed through the same path, so they
//! are replicated and applied exactly like client writes.

use corekv_wire::messages as w;
use corekv_wire::{ApiError, OwnedFrame};

use super::Shared;

/// Proposes `req` through this member's Raft core and waits for its
/// applied answer.
pub async fn propose(shared: &Shared, req: &w::Request) -> Result<w::Response, ApiError> {
    super::route::propose(shared, own_frame(req)?).await
}

fn own_frame(req: &w::Request) -> Result<OwnedFrame, ApiError> {
    OwnedFrame::encode_request(0, req).map_err(|e| ApiError::Internal(e.to_string()))
}
