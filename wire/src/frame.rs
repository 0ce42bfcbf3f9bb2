//! Framing of the native protocol.
//!
//! ```text
//!  0        4                 12   13    14    15   16            16+P      4+L
//!  +--------+-----------------+----+-----+-----+----+-------------+--------+
//!  | len u32| request id  u64 |ver |flags| pad | 0  | rkyv payload| 0 x pad|
//!  +--------+-----------------+----+-----+-----+----+-------------+--------+
//! ```
//! All integers little endian. `len` counts the bytes after the length field,
//! so a frame is `4 + len` bytes, always a multiple of 16; `P = len - 12 - pad`.
//! Because every frame is a multiple of 16 long and the decoder's buffer is
//! 16-byte aligned, every payload starts 16-byte aligned in the receive
//! buffer and is validated and read in place (rkyv's default aligned format).
//!
//! Version 2 adds the `TOKEN` flag: the payload area then starts with the
//! caller's auth token, `[u16 token_len][token][0 x pad to 16]`, and the rkyv
//! payload follows it, still 16-byte aligned. Decoders accept versions 1 and
//! 2 (a version-1 frame cannot carry a token).

use rkyv::api::high::HighSerializer;
use rkyv::api::low::LowValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::{Positional, Writer};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Portable, Serialize};

use crate::error::WireError;
use crate::limits::WireLimits;

/// Protocol version written in every frame header.
pub const PROTOCOL_VERSION: u8 = 2;
/// Oldest version a decoder accepts (version 1 has no `TOKEN` flag).
pub const MIN_PROTOCOL_VERSION: u8 = 1;
/// Longest auth token a frame may carry.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Size of the fixed frame header.
pub const HEADER_BYTES: usize = 16;
/// Frames are padded to multiples of this; payloads start aligned to it.
pub const FRAME_ALIGN: usize = 16;
/// Default number of bytes a decoder asks to read at a time.
pub const DEFAULT_READ_CHUNK_BYTES: usize = 64 * 1024;
/// First read size of a new decoder. The read size doubles each time a read
/// fills it, up to the read chunk, so an idle connection holds 1 KiB instead
/// of a zero-filled read chunk (10,000 idle connections cost 640 MiB of RSS
/// with 64 KiB each; server/tests/hostile.rs).
pub const INITIAL_READ_CHUNK_BYTES: usize = 1024;

/// Per-frame flags (header byte 13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameFlags(u8);

impl FrameFlags {
    /// No flags: the frame is the last (or only) one for its request id.
    pub const NONE: FrameFlags = FrameFlags(0);
    /// More frames follow for the same request id (watch events, snapshot
    /// chunks). Lets a client route frames without reading payloads.
    pub const MORE: FrameFlags = FrameFlags(1);
    /// The payload area starts with an auth token (version 2).
    pub const TOKEN: FrameFlags = FrameFlags(2);
    const KNOWN_BITS: u8 = 3;

    pub fn more(self) -> bool {
        self.0 & Self::MORE.0 != 0
    }
    pub fn token(self) -> bool {
        self.0 & Self::TOKEN.0 != 0
    }
    #[must_use]
    pub fn with(self, other: FrameFlags) -> FrameFlags {
        FrameFlags(self.0 | other.0)
    }
    pub fn bits(self) -> u8 {
        self.0
    }
}

/// The writer rkyv serializes into: appends to a `Vec<u8>` and reports
/// positions relative to the payload start, so alignment padding inside the
/// archive is computed as if the payload began at address 0 mod 16, which is
/// where the receiver's decoder places it.
pub struct PayloadWriter<'w> {
    out: &'w mut Vec<u8>,
    base: usize,
}

impl Positional for PayloadWriter<'_> {
    fn pos(&self) -> usize {
        self.out.len() - self.base
    }
}

impl<E> Writer<E> for PayloadWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

/// A type that can be framed (`encode_frame`). Blanket-implemented for every
/// rkyv-serializable type, including raftcore's messages.
pub trait Encode:
    for<'a, 'w> Serialize<HighSerializer<PayloadWriter<'w>, ArenaHandle<'a>, rancor::Error>>
{
}
impl<T> Encode for T where
    T: for<'a, 'w> Serialize<HighSerializer<PayloadWriter<'w>, ArenaHandle<'a>, rancor::Error>>
{
}

/// A type whose archive can be validated in place (`Frame::access`).
/// Blanket-implemented for every rkyv type deriving with bytecheck.
pub trait Decode: Archive<Archived = <Self as Decode>::Checked> {
    type Checked: Portable + for<'a> CheckBytes<LowValidator<'a, rancor::Error>>;
}
impl<T> Decode for T
where
    T: Archive,
    T::Archived: Portable + for<'a> CheckBytes<LowValidator<'a, rancor::Error>>,
{
    type Checked = T::Archived;
}

/// Appends one frame carrying `msg` to `out` (flags `NONE`).
pub fn encode_frame<T: Encode>(
    request_id: u64,
    msg: &T,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    encode_frame_flags(request_id, FrameFlags::NONE, msg, out)
}

/// Appends one frame carrying `msg` to `out`. On error `out` is left as it was.
pub fn encode_frame_flags<T: Encode>(
    request_id: u64,
    flags: FrameFlags,
    msg: &T,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    encode_frame_with(request_id, flags, None, msg, out)
}

/// Appends one frame carrying `msg` and the caller's auth `token` (flag
/// `TOKEN`). On error `out` is left as it was.
pub fn encode_frame_token<T: Encode>(
    request_id: u64,
    flags: FrameFlags,
    token: &[u8],
    msg: &T,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    encode_frame_with(request_id, flags, Some(token), msg, out)
}

fn encode_frame_with<T: Encode>(
    request_id: u64,
    mut flags: FrameFlags,
    token: Option<&[u8]>,
    msg: &T,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    if let Some(token) = token {
        if token.len() > MAX_TOKEN_BYTES {
            out.truncate(start);
            return Err(WireError::Encode {
                request_id,
                type_name: "token",
                reason: format!("token of {} bytes exceeds {MAX_TOKEN_BYTES}", token.len()),
            });
        }
        flags = flags.with(FrameFlags::TOKEN);
        // token.len() <= MAX_TOKEN_BYTES fits a u16.
        out.extend_from_slice(&(token.len() as u16).to_le_bytes());
        out.extend_from_slice(token);
        out.resize(start + HEADER_BYTES + token_area_bytes(token.len()), 0);
    }
    let base = out.len();
    let writer = PayloadWriter {
        out: &mut *out,
        base,
    };
    if let Err(e) = rkyv::api::high::to_bytes_in::<_, rancor::Error>(msg, writer) {
        out.truncate(start);
        return Err(WireError::Encode {
            request_id,
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        });
    }
    let payload_len = out.len() - base;
    let pad = (FRAME_ALIGN - payload_len % FRAME_ALIGN) % FRAME_ALIGN;
    out.resize(out.len() + pad, 0);
    let frame_bytes = out.len() - start;
    let Ok(len) = u32::try_from(frame_bytes - 4) else {
        out.truncate(start);
        return Err(WireError::Encode {
            request_id,
            type_name: std::any::type_name::<T>(),
            reason: format!("frame of {frame_bytes} bytes exceeds the u32 length field"),
        });
    };
    let header = &mut out[start..start + HEADER_BYTES];
    header[0..4].copy_from_slice(&len.to_le_bytes());
    header[4..12].copy_from_slice(&request_id.to_le_bytes());
    header[12] = PROTOCOL_VERSION;
    header[13] = flags.bits();
    // pad < FRAME_ALIGN (16) always fits a byte.
    header[14] = pad as u8;
    header[15] = 0;
    Ok(())
}

/// Bytes the token area takes: length prefix + token, padded to 16.
fn token_area_bytes(token_len: usize) -> usize {
    (2 + token_len).div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// A parsed, length-checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub request_id: u64,
    pub flags: FrameFlags,
    /// Whole frame size including header and padding.
    pub frame_bytes: usize,
    pub payload_bytes: usize,
}

/// Parses and checks a 16-byte header against the limits. Never allocates.
pub fn parse_header(
    h: &[u8; HEADER_BYTES],
    max_frame_bytes: usize,
) -> Result<FrameHeader, WireError> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
    let request_id = u64::from_le_bytes([h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11]]);
    let frame_bytes = len + 4;
    if frame_bytes > max_frame_bytes as u64 {
        return Err(WireError::FrameTooLarge {
            request_id,
            frame_bytes,
            max_frame_bytes,
        });
    }
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&h[12]) {
        return Err(WireError::UnsupportedVersion {
            request_id,
            got: h[12],
            expected: PROTOCOL_VERSION,
        });
    }
    let bad = |reason| Err(WireError::BadHeader { request_id, reason });
    if frame_bytes < HEADER_BYTES as u64 || frame_bytes % FRAME_ALIGN as u64 != 0 {
        return bad("frame length is not a positive multiple of 16");
    }
    if h[13] & !FrameFlags::KNOWN_BITS != 0 {
        return bad("unknown flag bits set");
    }
    if FrameFlags(h[13]).token() && h[12] < 2 {
        return bad("token flag in a version-1 frame");
    }
    if h[15] != 0 {
        return bad("reserved header byte is not zero");
    }
    let pad = h[14] as usize;
    // frame_bytes <= max_frame_bytes (a usize), so the cast is lossless.
    let frame_bytes = frame_bytes as usize;
    if pad >= FRAME_ALIGN || pad > frame_bytes - HEADER_BYTES {
        return bad("padding count out of range");
    }
    Ok(FrameHeader {
        request_id,
        flags: FrameFlags(h[13]),
        frame_bytes,
        payload_bytes: frame_bytes - HEADER_BYTES - pad,
    })
}

fn validate<T: Decode>(request_id: u64, payload: &[u8]) -> Result<&T::Archived, WireError> {
    rkyv::api::low::access::<T::Archived, rancor::Error>(payload).map_err(|e| {
        WireError::Validation {
            request_id,
            type_name: std::any::type_name::<T>(),
            reason: e.to_string(),
        }
    })
}

/// A complete frame borrowed from a decoder's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    header: FrameHeader,
    payload: &'a [u8],
    /// The auth token (flag `TOKEN`), empty when the frame has none.
    token: &'a [u8],
}

impl<'a> Frame<'a> {
    pub fn request_id(&self) -> u64 {
        self.header.request_id
    }
    pub fn flags(&self) -> FrameFlags {
        self.header.flags
    }
    pub fn header(&self) -> FrameHeader {
        self.header
    }
    /// The raw payload (16-byte aligned).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }
    /// The caller's auth token, when the frame carries one.
    pub fn token(&self) -> Option<&'a [u8]> {
        self.header.flags.token().then_some(self.token)
    }
    /// Validates the payload as an archived `T` and returns it in place.
    pub fn access<T: Decode>(&self) -> Result<&'a T::Archived, WireError> {
        validate::<T>(self.header.request_id, self.payload)
    }
    /// Copies the payload into an owned, aligned buffer that can be moved to
    /// another task or thread. The token is not copied (it is resolved to a
    /// user before a request leaves the connection, and never replicated).
    pub fn to_owned_frame(&self) -> OwnedFrame {
        let mut buf = AlignedVec::<FRAME_ALIGN>::with_capacity(self.payload.len());
        buf.extend_from_slice(self.payload);
        OwnedFrame {
            header: self.header,
            payload: buf,
            tag: 0,
        }
    }
}

/// A frame owning its (aligned) payload bytes; `Send + 'static`.
#[derive(Debug)]
pub struct OwnedFrame {
    header: FrameHeader,
    payload: AlignedVec<FRAME_ALIGN>,
    /// An opaque value the receiving server attaches to the frame it passes
    /// on (corekv: the auth stamp of the request's check); never on the wire.
    tag: u64,
}

impl OwnedFrame {
    pub fn request_id(&self) -> u64 {
        self.header.request_id
    }
    pub fn flags(&self) -> FrameFlags {
        self.header.flags
    }
    pub fn header(&self) -> FrameHeader {
        self.header
    }
    pub fn payload(&self) -> &[u8] {
        self.payload.as_slice()
    }
    pub fn tag(&self) -> u64 {
        self.tag
    }
    #[must_use]
    pub fn with_tag(mut self, tag: u64) -> OwnedFrame {
        self.tag = tag;
        self
    }
    /// Validates the payload as an archived `T` and returns it in place.
    pub fn access<T: Decode>(&self) -> Result<&T::Archived, WireError> {
        validate::<T>(self.header.request_id, self.payload.as_slice())
    }

    /// Archives `msg` as the payload of an in-process frame (no bytes on a
    /// socket): the form a front-end that does not speak the native protocol
    /// (gRPC, HTTP/JSON) hands to the request layer, so a write's Raft entry
    /// body is the same archive whichever front-end accepted it.
    pub fn encode_request(
        request_id: u64,
        req: &crate::messages::Request,
    ) -> Result<OwnedFrame, WireError> {
        // Archived straight into an aligned buffer: the same bytes (and
        // alignment) as a frame's payload, without the header.
        let payload =
            rkyv::api::high::to_bytes_in::<_, rancor::Error>(req, AlignedVec::<FRAME_ALIGN>::new())
                .map_err(|e| WireError::Encode {
                    request_id,
                    type_name: "Request",
                    reason: e.to_string(),
                })?;
        let payload_bytes = payload.len();
        let header = FrameHeader {
            request_id,
            flags: FrameFlags::NONE,
            frame_bytes: (HEADER_BYTES + payload_bytes).div_ceil(FRAME_ALIGN) * FRAME_ALIGN,
            payload_bytes,
        };
        Ok(OwnedFrame {
            header,
            payload,
            tag: 0,
        })
    }
}

/// Splits a `TOKEN` frame's payload area into (token, rkyv payload); the
/// token area's padding must be zero.
fn split_token(header: FrameHeader, area: &[u8]) -> Result<(&[u8], &[u8]), WireError> {
    if !header.flags.token() {
        return Ok((&[], area));
    }
    let bad = |reason| {
        Err(WireError::BadHeader {
            request_id: header.request_id,
            reason,
        })
    };
    let Some(len) = area.get(..2) else {
        return bad("token length missing");
    };
    let len = u16::from_le_bytes([len[0], len[1]]) as usize;
    let area_bytes = token_area_bytes(len);
    if len > MAX_TOKEN_BYTES || area_bytes > area.len() {
        return bad("token length out of range");
    }
    if area[2 + len..area_bytes].iter().any(|&b| b != 0) {
        return bad("non-zero token padding bytes");
    }
    Ok((&area[2..2 + len], &area[area_bytes..]))
}

/// Incremental frame decoder. Feed it bytes (`buf_mut` + `advance`, or
/// `extend`), then pull complete frames with `next_frame`.
///
/// Invariants: `start <= filled <= buf.len()`; `start` is a multiple of 16
/// (every frame length is), so frames start 16-byte aligned; `buf.len()` never
/// exceeds `max_frame_bytes + read_chunk_bytes` rounded up to 16.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: AlignedVec<FRAME_ALIGN>,
    start: usize,
    filled: usize,
    max_frame_bytes: usize,
    read_chunk_bytes: usize,
    /// Size asked for by the next `buf_mut` (grows up to `read_chunk_bytes`).
    next_read_bytes: usize,
    poisoned: bool,
}

impl FrameDecoder {
    pub fn new(limits: &WireLimits) -> Self {
        Self::with_read_chunk(limits, DEFAULT_READ_CHUNK_BYTES)
    }

    pub fn with_read_chunk(limits: &WireLimits, read_chunk_bytes: usize) -> Self {
        FrameDecoder {
            buf: AlignedVec::new(),
            start: 0,
            filled: 0,
            max_frame_bytes: limits.max_frame_bytes,
            read_chunk_bytes: read_chunk_bytes.max(HEADER_BYTES),
            next_read_bytes: INITIAL_READ_CHUNK_BYTES
                .clamp(HEADER_BYTES, read_chunk_bytes.max(HEADER_BYTES)),
            poisoned: false,
        }
    }

    /// Bytes received but not yet returned as frames.
    pub fn buffered_bytes(&self) -> usize {
        self.filled - self.start
    }

    /// Moves unconsumed bytes to the front (keeps 16-byte alignment because
    /// `start` is a multiple of 16) and makes room for `spare` more bytes.
    fn make_room(&mut self, spare: usize) {
        if self.start > 0 && (self.start == self.filled || self.buf.len() - self.filled < spare) {
            self.buf
                .as_mut_slice()
                .copy_within(self.start..self.filled, 0);
            self.filled -= self.start;
            self.start = 0;
        }
        let want = self.filled + spare;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
    }

    /// Writable space for the next socket read (at least the current read
    /// size, which grows from `INITIAL_READ_CHUNK_BYTES` to the read chunk, or
    /// the rest of a frame whose header is known). Call `advance(n)` after
    /// writing `n` bytes into it.
    pub fn buf_mut(&mut self) -> &mut [u8] {
        let mut spare = self.next_read_bytes;
        if let Some(h) = self.peek_header() {
            // Header already checked against max_frame_bytes, so this is bounded.
            spare = spare.max(h.frame_bytes.saturating_sub(self.buffered_bytes()));
        }
        self.make_room(spare);
        &mut self.buf.as_mut_slice()[self.filled..]
    }

    /// Marks `n` bytes of `buf_mut()` as filled.
    pub fn advance(&mut self, n: usize) {
        assert!(self.filled + n <= self.buf.len(), "advance past buf_mut");
        if n >= self.next_read_bytes {
            self.next_read_bytes = (self.next_read_bytes * 2).min(self.read_chunk_bytes);
        }
        self.filled += n;
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.make_room(bytes.len());
        self.buf.as_mut_slice()[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
        self.filled += bytes.len();
    }

    fn peek_header(&self) -> Option<FrameHeader> {
        let avail = &self.buf.as_slice()[self.start..self.filled];
        let h: &[u8; HEADER_BYTES] = avail.get(..HEADER_BYTES)?.try_into().ok()?;
        parse_header(h, self.max_frame_bytes).ok()
    }

    /// Returns the next complete frame, `None` if more bytes are needed.
    /// A framing error poisons the decoder (the stream cannot be resynced).
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, WireError> {
        if self.poisoned {
            return Err(WireError::Poisoned);
        }
        let avail = self.filled - self.start;
        if avail < HEADER_BYTES {
            return Ok(None);
        }
        let mut h = [0u8; HEADER_BYTES];
        h.copy_from_slice(&self.buf.as_slice()[self.start..self.start + HEADER_BYTES]);
        let header = match parse_header(&h, self.max_frame_bytes) {
            Ok(hd) => hd,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        if avail < header.frame_bytes {
            return Ok(None);
        }
        let begin = self.start + HEADER_BYTES;
        self.start += header.frame_bytes;
        let buf = self.buf.as_slice();
        if buf[begin + header.payload_bytes..self.start]
            .iter()
            .any(|&b| b != 0)
        {
            self.poisoned = true;
            return Err(WireError::BadHeader {
                request_id: header.request_id,
                reason: "non-zero padding bytes",
            });
        }
        let (token, payload) = match split_token(header, &buf[begin..begin + header.payload_bytes])
        {
            Ok(parts) => parts,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        Ok(Some(Frame {
            header,
            payload,
            token,
        }))
    }

    /// Like `next_frame`, but copies the frame out so it can be sent elsewhere.
    pub fn next_owned_frame(&mut self) -> Result<Option<OwnedFrame>, WireError> {
        Ok(self.next_frame()?.map(|f| f.to_owned_frame()))
    }

    /// Call at end of input: errors if a partial frame is left over.
    pub fn finish(&self) -> Result<(), WireError> {
        let have = self.buffered_bytes();
        if have == 0 {
            return Ok(());
        }
        let need = self.peek_header().map_or(HEADER_BYTES, |h| h.frame_bytes);
        Err(WireError::Truncated { have, need })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{PutRequest, Request};

    fn put(key: &[u8]) -> Request {
        Request::Put(PutRequest {
            key: key.to_vec(),
            value: b"v".repeat(37),
            ..Default::default()
        })
    }

    fn decode_all(bytes: &[u8], limits: &WireLimits) -> Result<Vec<(u64, Request)>, WireError> {
        let mut d = FrameDecoder::new(limits);
        d.extend(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.next_frame()? {
            assert_eq!(f.payload().as_ptr() as usize % FRAME_ALIGN, 0);
            let r = f.access::<Request>()?.to_owned_request()?;
            out.push((f.request_id(), r));
        }
        d.finish()?;
        Ok(out)
    }

    #[test]
    fn frames_round_trip_and_are_aligned() {
        let mut out = Vec::new();
        for i in 0..5u64 {
            encode_frame(i * 7, &put(format!("k{i}").as_bytes()), &mut out).unwrap();
            assert_eq!(out.len() % FRAME_ALIGN, 0);
        }
        let got = decode_all(&out, &WireLimits::default()).unwrap();
        assert_eq!(got.len(), 5);
        for (i, (id, r)) in got.into_iter().enumerate() {
            assert_eq!(id, i as u64 * 7);
            assert_eq!(r, put(format!("k{i}").as_bytes()));
        }
    }

    #[test]
    fn encoding_after_unaligned_prefix_still_decodes() {
        let mut out = vec![0xAA; 3];
        encode_frame(9, &put(b"x"), &mut out).unwrap();
        let got = decode_all(&out[3..], &WireLimits::default()).unwrap();
        assert_eq!(got, vec![(9, put(b"x"))]);
    }

    #[test]
    fn byte_at_a_time_feeding_yields_same_frames() {
        let mut out = Vec::new();
        encode_frame(1, &put(b"a"), &mut out).unwrap();
        encode_frame_flags(2, FrameFlags::MORE, &put(b"b"), &mut out).unwrap();
        let mut d = FrameDecoder::with_read_chunk(&WireLimits::default(), 16);
        let mut seen = Vec::new();
        for b in &out {
            let spare = d.buf_mut();
            spare[0] = *b;
            d.advance(1);
            while let Some(f) = d.next_frame().unwrap() {
                seen.push((f.request_id(), f.flags().more()));
            }
        }
        assert_eq!(seen, vec![(1, false), (2, true)]);
        d.finish().unwrap();
    }

    #[test]
    fn oversized_frame_rejected_from_header_without_allocating() {
        let limits = WireLimits {
            max_frame_bytes: 1024,
            ..Default::default()
        };
        let mut h = [0u8; HEADER_BYTES];
        h[0..4].copy_from_slice(&(u32::MAX - 3).to_le_bytes());
        h[12] = PROTOCOL_VERSION;
        let mut d = FrameDecoder::with_read_chunk(&limits, 64);
        d.extend(&h);
        assert!(matches!(
            d.next_frame(),
            Err(WireError::FrameTooLarge { .. })
        ));
        assert!(
            d.buf_mut().len() <= 64,
            "decoder grew for an oversized frame"
        );
        assert!(matches!(d.next_frame(), Err(WireError::Poisoned)));
    }

    #[test]
    fn truncated_frame_is_reported() {
        let mut out = Vec::new();
        encode_frame(3, &put(b"k"), &mut out).unwrap();
        for cut in [1, HEADER_BYTES - 1, HEADER_BYTES, out.len() - 1] {
            let mut d = FrameDecoder::new(&WireLimits::default());
            d.extend(&out[..cut]);
            assert!(d.next_frame().unwrap().is_none());
            assert!(
                matches!(d.finish(), Err(WireError::Truncated { .. })),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn malformed_headers_are_typed_errors() {
        let mut good = Vec::new();
        encode_frame(3, &put(b"k"), &mut good).unwrap();
        type Case = (usize, u8, fn(&WireError) -> bool);
        let cases: [Case; 5] = [
            (12, 3, |e| {
                matches!(e, WireError::UnsupportedVersion { got: 3, .. })
            }),
            (13, 0x80, |e| matches!(e, WireError::BadHeader { .. })),
            (15, 1, |e| matches!(e, WireError::BadHeader { .. })),
            (14, 16, |e| matches!(e, WireError::BadHeader { .. })),
            (0, good[0].wrapping_add(1), |e| {
                matches!(e, WireError::BadHeader { .. })
            }),
        ];
        for (at, val, check) in cases {
            let mut bad = good.clone();
            bad[at] = val;
            let mut d = FrameDecoder::new(&WireLimits::default());
            d.extend(&bad);
            let err = d.next_frame().unwrap_err();
            assert!(check(&err), "byte {at}={val}: {err}");
        }
    }

    #[test]
    fn garbage_payload_fails_validation_not_panics() {
        let mut out = Vec::new();
        encode_frame(4, &put(b"key"), &mut out).unwrap();
        // Point the enum tag at an impossible variant.
        let payload_end = out.len() - out[14] as usize;
        for b in &mut out[HEADER_BYTES..payload_end] {
            *b = 0xFF;
        }
        let mut d = FrameDecoder::new(&WireLimits::default());
        d.extend(&out);
        let f = d.next_frame().unwrap().unwrap();
        assert!(matches!(
            f.access::<Request>(),
            Err(WireError::Validation { request_id: 4, .. })
        ));
    }

    #[test]
    fn token_frames_round_trip_aligned() {
        let mut out = Vec::new();
        for (i, token) in [&b""[..], b"t", &[b'x'; 14], &[b'y'; 30], &[7u8; 300]]
            .into_iter()
            .enumerate()
        {
            out.clear();
            encode_frame_token(i as u64, FrameFlags::NONE, token, &put(b"k"), &mut out).unwrap();
            let mut d = FrameDecoder::new(&WireLimits::default());
            d.extend(&out);
            let f = d.next_frame().unwrap().unwrap();
            assert_eq!(f.payload().as_ptr() as usize % FRAME_ALIGN, 0);
            assert_eq!(f.token(), Some(token));
            assert!(f.flags().token() && !f.flags().more());
            let r = f.access::<Request>().unwrap().to_owned_request().unwrap();
            assert_eq!(r, put(b"k"));
        }
        out.clear();
        encode_frame(1, &put(b"k"), &mut out).unwrap();
        let mut d = FrameDecoder::new(&WireLimits::default());
        d.extend(&out);
        assert_eq!(d.next_frame().unwrap().unwrap().token(), None);
    }

    #[test]
    fn bad_token_areas_are_typed_errors() {
        let mut good = Vec::new();
        encode_frame_token(3, FrameFlags::NONE, b"tok", &put(b"k"), &mut good).unwrap();
        let too_long = (MAX_TOKEN_BYTES as u16 + 1).to_le_bytes();
        let cases: [(usize, u8); 4] = [
            (HEADER_BYTES, too_long[0]),
            (HEADER_BYTES + 1, too_long[1]),
            (HEADER_BYTES + 2 + 3, 1), // token padding
            (12, 1),                   // token flag in a version-1 frame
        ];
        for (at, val) in cases {
            let mut bad = good.clone();
            bad[at] = val;
            let mut d = FrameDecoder::new(&WireLimits::default());
            d.extend(&bad);
            let err = d.next_frame().unwrap_err();
            assert!(
                matches!(err, WireError::BadHeader { .. }),
                "byte {at}: {err}"
            );
        }
        assert!(
            encode_frame_token(
                1,
                FrameFlags::NONE,
                &[0; MAX_TOKEN_BYTES + 1],
                &put(b"k"),
                &mut good
            )
            .is_err()
        );
    }

    #[test]
    fn owned_frame_is_send_and_accessible() {
        fn assert_send<T: Send + 'static>(_: &T) {}
        let mut out = Vec::new();
        encode_frame(5, &put(b"o"), &mut out).unwrap();
        let mut d = FrameDecoder::new(&WireLimits::default());
        d.extend(&out);
        let owned = d.next_owned_frame().unwrap().unwrap();
        assert_send(&owned);
        let h = std::thread::spawn(move || {
            owned
                .access::<Request>()
                .unwrap()
                .to_owned_request()
                .unwrap()
        });
        assert_eq!(h.join().unwrap(), put(b"o"));
    }
}
