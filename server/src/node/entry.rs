//! The payload of a Raft log entry proposed by corekv.
//!
//! ```text
//!  0     1        8               16              24              32
//!  +-----+--------+---------------+---------------+---------------+------------------+
//!  |kind |ver|auth| origin member | proposal id   | run nonce     | body (aligned 16)|
//!  +-----+--------+---------------+---------------+---------------+------------------+
//! ```
//! Integers little endian. `kind` 1: the body is a validated native-protocol
//! `Request` archive, exactly as the client sent it (no re-encoding on the
//! write path). `origin`/`proposal id`/`run nonce` let the member that
//! accepted the request answer it when it applies the entry, whichever
//! member led. Proposal ids restart at 1 in every process, so the origin
//! matches an entry to a waiting client only if the nonce is the one drawn
//! at its own start (never 0): an entry proposed before a restart can never
//! answer a client of the new run. Entries written before the nonce existed
//! carry 0 there (the field was reserved and zero), which matches no run.
//! `kind` 2: an internal request a member proposes itself (lease revokes by
//! expiry, lease checkpoints; body format in `lease/internal.rs`); no client
//! waits for it (proposal id 0).
//! Unknown kinds are refused at apply time with a clear error, never guessed.
//!
//! `auth` (bytes 2..8, u48): the auth stamp of the check the accepting
//! member made (`node::auth::Auth::stamp`): 0 when auth was disabled, else
//! the auth revision checked + 1. Apply refuses the entry when auth is
//! enabled and the revision moved since (etcd's `revision of auth store is
//! old`). Entries from before auth existed carry 0 there, which is true.

pub const ENTRY_HEADER_BYTES: usize = 32;
pub const KIND_CLIENT_REQUEST: u8 = 1;
pub const KIND_INTERNAL: u8 = 2;
/// Entry format version, bumped with any layout change (kept in byte 1).
pub const ENTRY_FORMAT_VERSION: u8 = 1;

/// Who proposed an entry: the member, its run and the request's id in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub member: u64,
    /// Drawn at process start, never 0.
    pub run_nonce: u64,
    pub proposal_id: u64,
}

/// Largest auth stamp the header holds (48 bits).
pub const MAX_AUTH_STAMP: u64 = (1 << 48) - 1;

pub fn encode(origin: Origin, auth_stamp: u64, body: &[u8]) -> Vec<u8> {
    encode_kind(KIND_CLIENT_REQUEST, origin, auth_stamp, body)
}

/// An internal entry (`KIND_INTERNAL`); `origin.proposal_id` is 0.
pub fn encode_internal(origin: Origin, body: &[u8]) -> Vec<u8> {
    encode_kind(KIND_INTERNAL, origin, 0, body)
}

fn encode_kind(kind: u8, origin: Origin, auth_stamp: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER_BYTES + body.len());
    out.push(kind);
    out.push(ENTRY_FORMAT_VERSION);
    // A stamp beyond 48 bits saturates: apply then sees a revision that is
    // never old, which cannot happen before 2^48 auth changes.
    out.extend_from_slice(&auth_stamp.min(MAX_AUTH_STAMP).to_le_bytes()[..6]);
    out.extend_from_slice(&origin.member.to_le_bytes());
    out.extend_from_slice(&origin.proposal_id.to_le_bytes());
    out.extend_from_slice(&origin.run_nonce.to_le_bytes());
    out.extend_from_slice(body);
    out
}

#[derive(Debug, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// `KIND_CLIENT_REQUEST` or `KIND_INTERNAL`.
    pub kind: u8,
    pub origin: Origin,
    pub auth_stamp: u64,
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
        origin: Origin {
            member: u64_at(8),
            proposal_id: u64_at(16),
            run_nonce: u64_at(24),
        },
        auth_stamp: {
            let mut b = [0u8; 8];
            b[..6].copy_from_slice(&data[2..8]);
            u64::from_le_bytes(b)
        },
        body: &data[ENTRY_HEADER_BYTES..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let origin = Origin {
            member: 7,
            run_nonce: 9,
            proposal_id: 42,
        };
        let data = encode(origin, 5, b"body");
        assert_eq!(
            decode(&data).unwrap(),
            Decoded {
                kind: KIND_CLIENT_REQUEST,
                origin,
                auth_stamp: 5,
                body: b"body"
            }
        );
        let data = encode(origin, u64::MAX, b"");
        assert_eq!(decode(&data).unwrap().auth_stamp, MAX_AUTH_STAMP);
        let bytes = encode_internal(origin, b"x");
        let internal = decode(&bytes).unwrap();
        assert_eq!((internal.kind, internal.body), (KIND_INTERNAL, &b"x"[..]));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(decode(b"short").is_err());
        let origin = Origin {
            member: 1,
            run_nonce: 1,
            proposal_id: 1,
        };
        let mut data = encode(origin, 0, b"");
        data[0] = 9;
        assert!(decode(&data).is_err());
    }
}
