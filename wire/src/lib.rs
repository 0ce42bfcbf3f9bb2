//! corekv's native protocol and the etcd v3 protobuf API.
//!
//! * `frame`: `[u32 len][u64 request id][version, flags, pad, 0][rkyv payload][pad]`
//!   framing, validated in place (see docs/wire-protocol.md).
//! * `messages`: `Request`/`Response` and everything inside them.
//! * `validate`: etcd's request validation on archived requests.
//! * `client`: a pipelined tokio client.

pub mod api_error;
pub mod client;
pub mod error;
pub mod frame;
pub mod limits;
pub mod messages;
pub mod proto;
pub mod validate;

pub use api_error::{ApiError, ArchivedApiError};
pub use client::{
    Client, ClientOptions, ClientTls, ResponseFrame, ResponseStream, WatchFrame, WatchStream,
};
pub use error::WireError;
pub use frame::{
    Decode, Encode, Frame, FrameDecoder, FrameFlags, FrameHeader, MAX_TOKEN_BYTES, OwnedFrame,
    PROTOCOL_VERSION, encode_frame, encode_frame_flags, encode_frame_token,
};
pub use limits::WireLimits;
pub use messages::*;
pub use validate::{
    WATCH_DUPLICATE_ID, WATCH_EMPTY_RANGE, validate_owned_frame, validate_request,
    validate_request_frame, watch_range_is_empty,
};
