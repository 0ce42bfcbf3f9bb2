//! MVCC key encoding.
//!
//! One tree holds three tables, told apart by the first byte:
//! - `k` + enc(user key) + main (8 B big-endian) + sub (8 B BE) -> record
//! - `r` + main + sub -> enc(user key) (revision order, for watches and
//!   compaction; `k` + the value is the prefix of the version's `k` entry)
//! - `m` + name -> value (server metadata such as membership or lease state)
//! - `d` + main + sub -> range tombstone (`range_del.rs`)
//!
//! enc() (format version 3 and later) copies non-zero bytes and writes zero runs as
//! two-byte tokens `00 t`:
//! - `t = 0`: end of the key (no trailing zeros);
//! - `t` in 1..=127: `t` zero bytes, then end of the key;
//! - `t = 128`: 127 zero bytes, and more zero bytes follow;
//! - `t` in 129..=255: `256 - t` zero bytes, then a non-zero byte follows.
//!
//! Tokens are self-delimiting and every encoding ends with an end token, so
//! the encoding is prefix-free; the token order (end < zeros then end,
//! shorter first < more zeros < zeros then non-zero, longer first < non-zero
//! bytes) is the order of the keys they stand for, so byte order of tree
//! keys is (user key, revision) order. Keys padded with zeros (etcd's
//! benchmark and `check perf` keys, 8-byte integers) cost 2 bytes per 127
//! zeros instead of the 2 bytes per zero of byte stuffing, which also keeps
//! separators in branch pages short. The snapshot stream and `hash_kv` use
//! the canonical stuffing encoding ([`stream_key_entry`]), independent of
//! the file format. Records: see [`encode_record`].

use crate::error::{Result, StorageError};
use crate::splitkey::SplitKey;

pub const T_KEY: u8 = b'k';
pub const T_REV: u8 = b'r';
pub const T_META: u8 = b'm';
pub const T_RANGE_DEL: u8 = b'd';

/// Longest zero run one token stands for.
const RUN_MAX: usize = 127;
/// Token: `RUN_MAX` zeros, more follow.
const RUN_MORE: u8 = 128;

/// Appends enc(key) (see the module docs).
pub fn enc_into(out: &mut Vec<u8>, key: &[u8]) {
    // Most keys have no zero byte: the key itself, then the terminator.
    if !has_zero(key) {
        out.extend_from_slice(key);
        out.extend_from_slice(&[0, 0]);
        return;
    }
    let mut rest = key;
    loop {
        let nz = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        out.extend_from_slice(&rest[..nz]);
        rest = &rest[nz..];
        if rest.is_empty() {
            out.extend_from_slice(&[0, 0]);
            return;
        }
        let mut run = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
        rest = &rest[run..];
        while run > RUN_MAX {
            out.extend_from_slice(&[0, RUN_MORE]);
            run -= RUN_MAX;
        }
        if rest.is_empty() {
            out.extend_from_slice(&[0, run as u8]);
            return;
        }
        out.extend_from_slice(&[0, (256 - run) as u8]);
    }
}

/// Whether `b` holds a zero byte, tested 8 bytes at a time (every key a
/// read returns, and every key written, is checked for one).
#[inline]
pub(crate) fn has_zero(b: &[u8]) -> bool {
    const LOW: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_le_bytes(w);
        // Sets a high bit in the word exactly when some byte of `v` is zero
        // (the classic test; no false positives in the OR over bytes).
        if v.wrapping_sub(LOW) & !v & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().contains(&0)
}

/// Decodes enc(key) from the start of `b`, appending the key to `out`;
/// returns the encoded length. Only the canonical form [`enc_into`] writes
/// is accepted.
fn dec_split_into(b: SplitKey<'_>, out: &mut Vec<u8>) -> Result<usize> {
    let mut at = 0;
    loop {
        let nz = b.find_zero(at).ok_or_else(|| bad("unterminated key"))?;
        b.slice(at, nz).extend_into(out);
        at = nz;
        let t = b.get(at + 1).ok_or_else(|| bad("unterminated key"))?;
        at += 2;
        match t {
            0 => return Ok(at),
            1..=127 => {
                out.resize(out.len() + t as usize, 0);
                return Ok(at);
            }
            RUN_MORE => {
                out.resize(out.len() + RUN_MAX, 0);
                if b.get(at) != Some(0) || b.get(at + 1).is_none_or(|t| t == 0) {
                    return Err(bad("zero run continued by no zeros"));
                }
            }
            _ => {
                out.resize(out.len() + 256 - t as usize, 0);
                if b.get(at).is_none_or(|x| x == 0) {
                    return Err(bad("zero run not followed by a non-zero byte"));
                }
            }
        }
    }
}

/// `k` + enc(key): the prefix of every entry of `key`.
pub fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 20);
    v.push(T_KEY);
    enc_into(&mut v, key);
    v
}

/// The `k` prefix of a user key stored as enc(key) (an `r` entry's value).
pub fn prefix_from_enc(enc: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(enc.len() + 17);
    v.push(T_KEY);
    v.extend_from_slice(enc);
    v
}

/// The `k` entry of version (main, sub) of a user key stored as enc(key).
pub fn key_entry_from_enc(enc: &[u8], main: i64, sub: i64) -> Vec<u8> {
    let mut v = prefix_from_enc(enc);
    v.extend_from_slice(&rev_bytes(main, sub));
    v
}

/// enc(user key) inside a `k` entry built by [`key_entry`] (the `r` value).
pub fn enc_of_entry(entry: &[u8]) -> &[u8] {
    &entry[1..entry.len() - 16]
}

/// Canonical (stream) encoding: `00` bytes stuffed as `00 FF`, `00 00` terminator.
fn esc_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// A `k` entry in the canonical stream encoding (`k` esc(key) `00 00` rev).
pub fn stream_key_entry(key: &[u8], main: i64, sub: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 20);
    v.push(T_KEY);
    esc_into(&mut v, key);
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&rev_bytes(main, sub));
    v
}

/// A stored `k` entry in the canonical stream encoding.
pub fn key_entry_to_stream(entry: &[u8]) -> Result<Vec<u8>> {
    let (prefix, main, sub) = split_key_entry(entry)?;
    Ok(stream_key_entry(&unescape_prefix(prefix)?, main, sub))
}

/// A `k` entry of the stream encoding: (user key, main, sub).
pub fn split_stream_key_entry(entry: &[u8]) -> Result<(Vec<u8>, i64, i64)> {
    if entry.len() < 1 + 2 + 16 || entry[0] != T_KEY {
        return Err(bad("short key entry"));
    }
    let (prefix, rev) = entry.split_at(entry.len() - 16);
    let (main, sub) = parse_rev(rev)?;
    let body = &prefix[1..];
    if body[body.len() - 2..] != [0, 0] {
        return Err(bad("missing terminator"));
    }
    let body = &body[..body.len() - 2];
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(z) = rest.iter().position(|&b| b == 0) {
        if rest.get(z + 1) != Some(&0xFF) {
            return Err(bad("bad escape"));
        }
        out.extend_from_slice(&rest[..=z]);
        rest = &rest[z + 2..];
    }
    out.extend_from_slice(rest);
    Ok((out, main, sub))
}

/// Start bound for all keys >= `key` (enc is prefix-free and
/// order-preserving, so the key's own prefix is that bound).
pub fn key_bound(key: &[u8]) -> Vec<u8> {
    key_prefix(key)
}

pub fn rev_bytes(main: i64, sub: i64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&main.to_be_bytes());
    b[8..].copy_from_slice(&sub.to_be_bytes());
    b
}

pub fn key_entry(key: &[u8], main: i64, sub: i64) -> Vec<u8> {
    let mut v = key_prefix(key);
    v.extend_from_slice(&rev_bytes(main, sub));
    v
}

pub fn rev_entry(main: i64, sub: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(T_REV);
    v.extend_from_slice(&rev_bytes(main, sub));
    v
}

/// The `d` entry of the range tombstone of the delete at revision `main`.
pub fn range_del_entry(main: i64) -> Vec<u8> {
    let mut v = Vec::with_capacity(17);
    v.push(T_RANGE_DEL);
    v.extend_from_slice(&rev_bytes(main, 0));
    v
}

pub fn meta_entry(name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 1);
    v.push(T_META);
    v.extend_from_slice(name);
    v
}

fn bad(what: &str) -> StorageError {
    StorageError::corrupted(0, format!("mvcc key: {what}"))
}

/// Splits a `k` entry into (prefix incl. its end token, main, sub). Checks
/// only that the prefix ends with an end token (O(1): this runs per entry
/// of every scan); [`unescape_prefix`] validates the whole encoding.
pub fn split_key_entry(entry: &[u8]) -> Result<(&[u8], i64, i64)> {
    if entry.len() < 1 + 2 + 16 || entry[0] != T_KEY {
        return Err(bad("short key entry"));
    }
    let (main, sub) = entry_tail_rev(entry[0], &entry[entry.len() - 18..])?;
    Ok((&entry[..entry.len() - 16], main, sub))
}

/// `(main, sub)` of a `k` entry from its table byte and its last 18 bytes
/// (the end token of enc(key), then the revision), checked as
/// [`split_key_entry`] checks them; readers of split keys parse the tail in
/// place instead of copying it.
#[inline]
pub fn entry_tail_rev(table: u8, tail: &[u8]) -> Result<(i64, i64)> {
    if table != T_KEY || tail.len() != 18 {
        return Err(bad("short key entry"));
    }
    if tail[0] != 0 || tail[1] as usize > RUN_MAX {
        return Err(bad("missing end token"));
    }
    parse_rev(&tail[2..])
}

pub fn parse_rev(b: &[u8]) -> Result<(i64, i64)> {
    if b.len() != 16 {
        return Err(bad("revision length"));
    }
    let mut m = [0u8; 8];
    let mut s = [0u8; 8];
    m.copy_from_slice(&b[..8]);
    s.copy_from_slice(&b[8..]);
    Ok((i64::from_be_bytes(m), i64::from_be_bytes(s)))
}

/// User key from a prefix produced by [`key_prefix`].
pub fn unescape_prefix(prefix: &[u8]) -> Result<Vec<u8>> {
    unescape_split(SplitKey::whole(prefix))
}

/// [`unescape_prefix`] of a prefix read from a leaf (prefix and suffix).
pub fn unescape_split(prefix: SplitKey<'_>) -> Result<Vec<u8>> {
    let mut key = Vec::with_capacity(prefix.len());
    unescape_split_into(prefix, &mut key)?;
    Ok(key)
}

/// [`unescape_split`] without an allocation per key: a key without zero
/// bytes (enc(key) = key `00 00`, the common case) is the parts minus the
/// table byte and the terminator, borrowed when they lie in one part of
/// `prefix`, else copied into `scratch`; any other key is decoded into
/// `scratch`. `scratch` (cleared first) then holds it; it grows once to the
/// key's size (no reallocation per key part).
pub fn user_key<'a>(prefix: SplitKey<'a>, scratch: &'a mut Vec<u8>) -> Result<&'a [u8]> {
    if let Some(key) = plain_key(prefix) {
        return Ok(match key.contiguous() {
            Some(k) => k,
            None => {
                scratch.clear();
                scratch.reserve(key.len());
                key.extend_into(scratch);
                scratch
            }
        });
    }
    scratch.clear();
    scratch.reserve(prefix.len());
    unescape_split_into(prefix, scratch)?;
    Ok(scratch)
}

/// The user key of `'k' enc(key)` when the key has no zero byte: the bytes
/// between the table byte and the `00 00` terminator, none of them zero
/// (then enc(key) is the key itself plus the terminator). `None` for any
/// other prefix, which the full decoder handles (or rejects).
#[inline]
fn plain_key(prefix: SplitKey<'_>) -> Option<SplitKey<'_>> {
    let n = prefix.len();
    if n < 3 || prefix.get(n - 1) != Some(0) || prefix.get(n - 2) != Some(0) {
        return None;
    }
    let key = prefix.slice(1, n - 2);
    (!has_zero(key.pre) && !has_zero(key.suf)).then_some(key)
}

fn unescape_split_into(prefix: SplitKey<'_>, out: &mut Vec<u8>) -> Result<()> {
    if prefix.is_empty() {
        return Err(bad("prefix"));
    }
    let body = prefix.split_at(1).1;
    let used = dec_split_into(body, out)?;
    if used != body.len() {
        return Err(bad("bytes after the end token"));
    }
    Ok(())
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub tombstone: bool,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
}

// Stored record (format version 3 and later):
// `[flags u8][version varint][create varint if F_CREATE][lease varint if F_LEASE][value]`.
// The common put (create == its own main revision, no lease, small version)
// takes 2 header bytes instead of 25; a tombstone (all zero) takes 2.
const F_TOMBSTONE: u8 = 1;
/// `create` is stored; without it, it is the version's main revision (a
/// put) or 0 (a tombstone).
const F_CREATE: u8 = 2;
/// `lease` is stored; without it, it is 0.
const F_LEASE: u8 = 4;
const F_KNOWN: u8 = F_TOMBSTONE | F_CREATE | F_LEASE;
/// Longest record header: flags and three 10-byte varints.
pub const MAX_RECORD_HEADER: usize = 31;

fn put_varint(out: &mut Vec<u8>, x: i64) {
    let mut x = x as u64;
    while x >= 0x80 {
        out.push(x as u8 | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
}

fn take_varint(b: &[u8], at: &mut usize) -> Result<i64> {
    let mut x = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or_else(|| bad("short record"))?;
        *at += 1;
        x |= u64::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(x as i64);
        }
    }
    Err(bad("record varint too long"))
}

/// The stored record of version `main` (see the layout above).
pub fn encode_record(r: &Record, main: i64, value: &[u8]) -> Vec<u8> {
    let implied_create = if r.tombstone { 0 } else { main };
    let mut flags = 0;
    if r.tombstone {
        flags |= F_TOMBSTONE;
    }
    if r.create != implied_create {
        flags |= F_CREATE;
    }
    if r.lease != 0 {
        flags |= F_LEASE;
    }
    let mut v = Vec::with_capacity(MAX_RECORD_HEADER + value.len());
    v.push(flags);
    put_varint(&mut v, r.version);
    if flags & F_CREATE != 0 {
        put_varint(&mut v, r.create);
    }
    if flags & F_LEASE != 0 {
        put_varint(&mut v, r.lease);
    }
    v.extend_from_slice(value);
    v
}

/// Decodes the stored record of version `main`; returns it and the value bytes.
pub fn decode_record(b: &[u8], main: i64) -> Result<(Record, &[u8])> {
    let flags = *b.first().ok_or_else(|| bad("short record"))?;
    if flags & !F_KNOWN != 0 {
        return Err(bad("record flags"));
    }
    let tombstone = flags & F_TOMBSTONE != 0;
    let mut at = 1;
    let version = take_varint(b, &mut at)?;
    let create = if flags & F_CREATE != 0 {
        take_varint(b, &mut at)?
    } else if tombstone {
        0
    } else {
        main
    };
    let lease = if flags & F_LEASE != 0 {
        take_varint(b, &mut at)?
    } else {
        0
    };
    let r = Record {
        tombstone,
        create,
        version,
        lease,
    };
    Ok((r, &b[at..]))
}

/// Whether a stored record is a tombstone (reads the flags byte only).
#[inline]
pub fn record_is_tombstone(b: &[u8]) -> Result<bool> {
    match b.first() {
        Some(f) if f & !F_KNOWN == 0 => Ok(f & F_TOMBSTONE != 0),
        Some(_) => Err(bad("record flags")),
        None => Err(bad("short record")),
    }
}

// Canonical record, independent of the file format: the snapshot stream and
// `hash_kv` use it, so streams and hashes stay comparable across formats.
// `[kind u8: 0 put, 1 tombstone][create i64 LE][version i64 LE][lease i64 LE][value]`.
pub const KIND_PUT: u8 = 0;
pub const KIND_TOMBSTONE: u8 = 1;
pub const STREAM_RECORD_HEADER: usize = 25;

pub fn encode_stream_record(r: &Record, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(STREAM_RECORD_HEADER + value.len());
    v.push(if r.tombstone {
        KIND_TOMBSTONE
    } else {
        KIND_PUT
    });
    v.extend_from_slice(&r.create.to_le_bytes());
    v.extend_from_slice(&r.version.to_le_bytes());
    v.extend_from_slice(&r.lease.to_le_bytes());
    v.extend_from_slice(value);
    v
}

pub fn decode_stream_record(b: &[u8]) -> Result<(Record, &[u8])> {
    if b.len() < STREAM_RECORD_HEADER {
        return Err(bad("short record"));
    }
    let tombstone = match b[0] {
        KIND_PUT => false,
        KIND_TOMBSTONE => true,
        _ => return Err(bad("record kind")),
    };
    let f = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        i64::from_le_bytes(a)
    };
    Ok((
        Record {
            tombstone,
            create: f(1),
            version: f(9),
            lease: f(17),
        },
        &b[STREAM_RECORD_HEADER..],
    ))
}

/// A stored record of version `main` in the canonical layout.
pub fn record_to_stream(b: &[u8], main: i64) -> Result<Vec<u8>> {
    let (r, v) = decode_record(b, main)?;
    Ok(encode_stream_record(&r, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_preserves_order() {
        let keys: Vec<&[u8]> = vec![
            b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0", b"a\0b", b"a\x01", b"ab", b"b",
        ];
        let mut prev: Option<Vec<u8>> = None;
        for k in &keys {
            for rev in [1i64, 2, 300] {
                let e = key_entry(k, rev, 0);
                if let Some(p) = &prev {
                    assert!(p < &e, "{k:?} {rev}");
                }
                let (prefix, m, _) = split_key_entry(&e).unwrap();
                assert_eq!(m, rev);
                assert_eq!(unescape_prefix(prefix).unwrap(), *k);
                prev = Some(e);
            }
            assert!(key_bound(k) <= key_entry(k, 0, 0));
        }
    }

    #[test]
    fn has_zero_finds_a_zero_at_any_position() {
        for len in 0..40 {
            let mut b = vec![0xA5u8; len];
            assert!(!has_zero(&b), "len {len}");
            // Bytes next to zero in the word arithmetic (0x01, 0x80, 0xFF).
            for x in [0x01u8, 0x80, 0xFF] {
                b.iter_mut().for_each(|y| *y = x);
                assert!(!has_zero(&b), "len {len} of {x:#x}");
            }
            for at in 0..len {
                let mut z = b.clone();
                z[at] = 0;
                assert!(has_zero(&z), "zero at {at} of {len}");
            }
        }
    }

    #[test]
    fn user_key_of_every_split_matches_the_decoder() {
        let keys: Vec<Vec<u8>> = vec![
            vec![],
            b"a".to_vec(),
            b"abcdefghijklmnopqrstuvwxyz".to_vec(),
            vec![0],
            b"a\0b".to_vec(),
            b"ab\0".to_vec(),
            vec![0xFF; 20],
        ];
        for k in &keys {
            let p = key_prefix(k);
            for at in 0..=p.len() {
                let split = SplitKey {
                    pre: &p[..at],
                    suf: &p[at..],
                };
                let mut scratch = Vec::new();
                assert_eq!(
                    user_key(split, &mut scratch).unwrap(),
                    &k[..],
                    "{k:?} @{at}"
                );
            }
        }
    }

    #[test]
    fn records_roundtrip_compactly() {
        let cases = [
            (
                Record {
                    tombstone: false,
                    create: 7,
                    version: 1,
                    lease: 0,
                },
                7,
                2,
            ),
            (
                Record {
                    tombstone: false,
                    create: 3,
                    version: 300,
                    lease: 0,
                },
                9,
                4,
            ),
            (
                Record {
                    tombstone: false,
                    create: 3,
                    version: 2,
                    lease: 1 << 40,
                },
                9,
                9,
            ),
            (
                Record {
                    tombstone: true,
                    create: 0,
                    version: 0,
                    lease: 0,
                },
                5,
                2,
            ),
            (
                Record {
                    tombstone: true,
                    create: 4,
                    version: -1,
                    lease: -2,
                },
                5,
                22,
            ),
        ];
        for (r, main, header) in cases {
            let b = encode_record(&r, main, b"val");
            assert_eq!(b.len(), header + 3, "{r:?}");
            let (d, v) = decode_record(&b, main).unwrap();
            assert_eq!((d, v), (r.clone(), &b"val"[..]));
            assert_eq!(record_is_tombstone(&b).unwrap(), r.tombstone);
            let s = record_to_stream(&b, main).unwrap();
            assert_eq!(decode_stream_record(&s).unwrap(), (r, &b"val"[..]));
        }
        assert!(decode_record(&[], 1).is_err());
        assert!(decode_record(&[8, 1], 1).is_err());
        assert!(decode_record(&[0], 1).is_err());
        assert!(decode_record(&[0, 0x80], 1).is_err());
        assert!(decode_record(&[0, 1, 0xFF], 1).is_ok());
        assert!(decode_record(&[F_CREATE, 1], 1).is_err());
        assert!(
            decode_record(
                &[
                    0, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1
                ],
                1
            )
            .is_err()
        );
    }

    #[test]
    fn bad_encodings_are_corrupted() {
        for bad in [
            &b"ka\0\x81"[..],   // zeros then nothing
            b"ka\0\x81\0\0",    // zeros then an end token
            b"k\0\x80\x05\0\0", // "more zeros" then a non-zero byte
            b"k\0\x80\0\0",     // "more zeros" then the end
            b"k\0\0\0",         // bytes after the end
            b"kab",             // no end token
            b"k\0\x05a",        // bytes after "zeros then end"
        ] {
            assert!(unescape_prefix(bad).is_err(), "{bad:?}");
        }
        assert_eq!(unescape_prefix(b"ka\0\xFFb\0\0").unwrap(), b"a\0b");
    }

    #[test]
    fn zero_runs_are_short_and_keep_order() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for n in [0usize, 1, 2, 126, 127, 128, 129, 254, 255, 300] {
            for tail in [&[][..], &[0][..], &[1][..], &[0, 5][..], &[255][..]] {
                for head in [&[][..], &b"a"[..]] {
                    let mut k = head.to_vec();
                    k.resize(head.len() + n, 0);
                    k.extend_from_slice(tail);
                    keys.push(k);
                }
            }
        }
        let mut x = 3u64;
        for _ in 0..3000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let len = (x >> 58) as usize * 5;
            keys.push(
                (0..len)
                    .map(|j| [0u8, 0, 0, 1, 0xFF][((x >> (j % 60)) % 5) as usize])
                    .collect(),
            );
        }
        keys.sort();
        keys.dedup();
        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| key_entry(k, 7, 0)).collect();
        for (i, (k, e)) in keys.iter().zip(&encoded).enumerate() {
            let (prefix, main, _) = split_key_entry(e).unwrap();
            assert_eq!(main, 7);
            assert_eq!(&unescape_prefix(prefix).unwrap(), k);
            assert_eq!(key_bound(k).as_slice(), prefix);
            if i > 0 {
                assert!(encoded[i - 1] < *e, "{:?} vs {k:?}", keys[i - 1]);
                // Prefix-free: no key's prefix starts another key's entry.
                let prev = split_key_entry(&encoded[i - 1]).unwrap().0;
                assert!(!e.starts_with(prev));
            }
            let s = key_entry_to_stream(e).unwrap();
            assert_eq!(split_stream_key_entry(&s).unwrap(), (k.clone(), 7, 0));
        }
        // 248 zeros and an 8-byte index (corekv-bench keys): 14 bytes.
        let mut k = vec![0u8; 248];
        k.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(key_prefix(&k).len(), 1 + 2 + 2 + 8 + 2);
    }
}
