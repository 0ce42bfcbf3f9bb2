//! The payload of a Raft log entry proposed by corekv.
//!
//! ```text
//!  0     1        8               16              24              32
//!  +-----+--------+---------------+---------------+---------------+------------------+
//!  |kind | 0 x 7  | origin member | proposal id   | 0 (reserved)  | body (aligned 16)|
//!  +-----+--------+---------------+---------------+---------------+------------------+
//! ```
//! Integers little endian. `kind` 1: the body is a validated native-protocol
//! `Request` archive, exactly as the client sent it (no re-encoding on the
//! write path). `origin`/`proposal id` let the member that accepted the
//! request answer it when it applies the entry, whichever member led.
//! `kind` 2: an internal request a member proposes itself (lease revokes by
//! expiry, lease checkpoints; body format in `lease/internal.rs`); no client
//! waits for it (proposal id 0).
//! Unknown kinds are refused at apply time with a clear error, never guessed.

pub const ENTRY_HEADER_BYTES: usize = 32;
pub const KIND_CLIENT_REQUEST: u8 = 1;
pub const KIND_INTERNAL: u8 = 2;
/// Entry format version, bumped with any layout change (kept in byte 1).
pub const ENTRY_FORMAT_VERSION: u8 = 1;

pub fn encode(origin: u64, proposal_id: u64, body: &[u8]) -> Vec<u8> {
    encode_kind(KIND_CLIENT_REQUEST, origin, proposal_id, body)
}

/// An internal entry proposed by member `origin`.
pub fn encode_internal(origin: u64, body: &[u8]) -> Vec<u8> {
    encode_kind(KIND_INTERNAL, origin, 0, body)
}

fn encode_kind(kind: u8, origin: u64, proposal_id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + body.len());
    out.push(kind);
    out.push(ENTRY_FORMAT_VERSION);
    out.extend_from_slice(&[0u8; 6]);
    out.extend_from_slice(&origin.to_le_bytes());
    out.extend_from_slice(&proposal_id.to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(body);
    out
}

#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// `KIND_CLIENT_REQUEST` or `KIND_INTERNAL`.
    pub kind: u8,
    pub origin: u64,
    pub proposal_id: u64,
    pub body: &'a [u8],
}

pub fn decode(data: &[u8]) -> Result<Decoded<'_>, String> {
    if data.len() < ENTRY_HEADER_BYTES {
        return Err(format!(
            "entry of {} bytes is shorter than its header",
            data.len()
        ));
    }
    let known = data[0] == KIND_CLIENT_REQUEST || data[0] == KIND_INTERNAL;
    if !known || data[1] != ENTRY_FORMAT_VERSION {
        return Err(format!(
            "unknown entry kind {} version {}",
            data[0], data[1]
        ));
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&data[at..at + 8]);
        u64::from_le_bytes(b)
    };
    Ok(Decoded {
        kind: data[0],
        origin: u64_at(8),
        proposal_id: u64_at(16),
        body: &data[ENTRY_HEADER_BYTES..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let data = encode(7, 42, b"body");
        assert_eq!(
            decode(&data).unwrap(),
            Decoded {
                kind: KIND_CLIENT_REQUEST,
                origin: 7,
                proposal_id: 42,
                body: b"body"
            }
        );
    }

    #[test]
    fn internal_round_trip() {
        let d = encode_internal(3, b"x");
        let got = decode(&d).unwrap();
        assert_eq!(
            (got.kind, got.origin, got.proposal_id, got.body),
            (KIND_INTERNAL, 3, 0, &b"x"[..])
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"short").is_err());
        let mut data = encode(1, 1, b"");
        data[0] = 9;
        assert!(decode(&data).is_err());
    }
}
