//! The crate's error type: everything that can go wrong framing, validating or
//! transporting native-protocol messages.

use crate::api_error::ApiError;

/// Errors of the native protocol layer. Bad bytes from the network always end
/// up here, never in a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The frame header announces more bytes than `WireLimits::max_frame_bytes`.
    /// Raised as soon as the 16-byte header is read, before any allocation.
    #[error(
        "frame too large: {frame_bytes} bytes announced, limit {max_frame_bytes} (request id {request_id})"
    )]
    FrameTooLarge {
        request_id: u64,
        frame_bytes: u64,
        max_frame_bytes: usize,
    },
    /// The frame header is not well formed (length not a multiple of 16, bad
    /// padding count, reserved bits set, non-zero padding bytes).
    #[error("malformed frame header: {reason} (request id {request_id})")]
    BadHeader {
        request_id: u64,
        reason: &'static str,
    },
    /// The peer speaks another protocol version.
    #[error(
        "unsupported protocol version {got} (this build speaks {expected}, request id {request_id})"
    )]
    UnsupportedVersion {
        request_id: u64,
        got: u8,
        expected: u8,
    },
    /// The input ended in the middle of a frame.
    #[error("truncated frame: {have} of {need} bytes")]
    Truncated { have: usize, need: usize },
    /// The payload failed rkyv/bytecheck validation for the expected type.
    #[error("invalid payload for {type_name} in frame {request_id}: {reason}")]
    Validation {
        request_id: u64,
        type_name: &'static str,
        reason: String,
    },
    /// A message could not be serialized (e.g. payload over 4 GiB).
    #[error("encoding {type_name} for request {request_id}: {reason}")]
    Encode {
        request_id: u64,
        type_name: &'static str,
        reason: String,
    },
    /// A previous framing error left the byte stream unsynchronised; the
    /// connection must be closed.
    #[error("frame decoder poisoned by an earlier framing error")]
    Poisoned,
    /// The server answered with an etcd API error.
    #[error("{0}")]
    Api(ApiError),
    /// The server answered with a response of the wrong kind.
    #[error("unexpected response to {operation}: got {got}")]
    UnexpectedResponse {
        operation: &'static str,
        got: &'static str,
    },
    /// I/O on the connection failed.
    #[error("{operation} {addr}: {source}")]
    Io {
        operation: &'static str,
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Dial did not complete within `ClientOptions::dial_timeout`.
    #[error("connect to {addr} timed out after {timeout_ms} ms")]
    DialTimeout { addr: String, timeout_ms: u64 },
    /// No response within `ClientOptions::request_timeout`.
    #[error("request {request_id} ({operation}) timed out after {timeout_ms} ms")]
    Timeout {
        request_id: u64,
        operation: &'static str,
        timeout_ms: u64,
    },
    /// The connection is gone; every pending request fails with this.
    #[error("connection to {addr} closed: {reason}")]
    ConnectionClosed { addr: String, reason: String },
}

impl From<ApiError> for WireError {
    fn from(e: ApiError) -> Self {
        WireError::Api(e)
    }
}
