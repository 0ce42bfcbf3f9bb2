//! Hard limits of the native protocol. Every bound is a named field here.

/// etcd's default `--max-request-bytes` (1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
/// etcd's gRPC receive limit is max-request-bytes + 512 KiB; we use the same
/// headroom for whole frames.
pub const DEFAULT_FRAME_HEADROOM_BYTES: usize = 512 * 1024;
/// etcd's default `--max-txn-ops`.
pub const DEFAULT_MAX_TXN_OPS: usize = 128;

/// Limits applied to frames and requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireLimits {
    /// Largest frame (header + payload + padding) a decoder accepts. A larger
    /// announced length is refused from the header alone, before allocation.
    pub max_frame_bytes: usize,
    /// Largest request payload; a larger one gets `ApiError::RequestTooLarge`
    /// (a request between this and `max_frame_bytes` is answered, above
    /// `max_frame_bytes` the connection is dropped, like etcd's gRPC limit).
    pub max_request_bytes: usize,
    /// Maximum of |compare|, |success| and |failure| in any one txn level.
    pub max_txn_ops: usize,
    /// Largest key (and range_end) accepted in a request.
    pub max_key_bytes: usize,
    /// Largest value accepted in a put.
    pub max_value_bytes: usize,
    /// Most nested txn bodies in one txn request (all levels together).
    pub max_nested_txns: usize,
}

impl Default for WireLimits {
    fn default() -> Self {
        WireLimits {
            max_frame_bytes: DEFAULT_MAX_REQUEST_BYTES + DEFAULT_FRAME_HEADROOM_BYTES,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            max_key_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_value_bytes: DEFAULT_MAX_REQUEST_BYTES,
            max_nested_txns: DEFAULT_MAX_TXN_OPS,
        }
    }
}
