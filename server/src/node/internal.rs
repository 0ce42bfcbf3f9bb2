//! Requests a member makes itself (raising an alarm, auto-compaction): they
//! are encoded like a client's and proposed through the same path, so they
//! are replicated and applied exactly like client writes.

use corekv_wire::messages as w;
use corekv_wire::{ApiError, FrameDecoder, OwnedFrame, WireLimits, encode_frame};

use super::Shared;

/// Proposes `req` through this member's Raft core and waits for its
/// applied answer.
pub async fn propose(shared: &Shared, req: &w::Request) -> Result<w::Response, ApiError> {
    super::route::propose(shared, own_frame(req)?).await
}

fn own_frame(req: &w::Request) -> Result<OwnedFrame, ApiError> {
    let mut buf = Vec::new();
    encode_frame(0, req, &mut buf).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut dec = FrameDecoder::new(&WireLimits::default());
    dec.extend(&buf);
    dec.next_owned_frame()
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .ok_or_else(|| ApiError::Internal(format!("{} frame did not decode", req.name())))
}
