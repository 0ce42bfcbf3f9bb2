//! MVCC key encoding.
//!
//! One tree holds three tables, told apart by the first byte:
//! - `k` + esc(user key) + `00 00` + main (8 B big-endian) + sub (8 B BE) -> record
//! - `r` + main + sub -> user key (revision order, for watches and compaction)
//! - `m` + name -> value (server metadata such as membership or lease state)
//!
//! esc() writes each `00` byte as `00 FF`; with the `00 00` terminator the
//! encoding is prefix-free and preserves order, so byte order of tree keys is
//! (user key, revision) order. Records: see [`encode_record`].

use crate::error::{Result, StorageError};

pub const T_KEY: u8 = b'k';
pub const T_REV: u8 = b'r';
pub const T_META: u8 = b'm';

pub fn esc_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
}

/// `k` + esc(key) + terminator: the prefix of every entry of `key`.
pub fn key_prefix(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 20);
    v.push(T_KEY);
    esc_into(&mut v, key);
    v.extend_from_slice(&[0, 0]);
    v
}

/// Start bound for all keys >= `key`.
pub fn key_bound(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 2);
    v.push(T_KEY);
    esc_into(&mut v, key);
    v
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

pub fn meta_entry(name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(name.len() + 1);
    v.push(T_META);
    v.extend_from_slice(name);
    v
}

fn bad(what: &str) -> StorageError {
    StorageError::corrupted(0, format!("mvcc key: {what}"))
}

/// Splits a `k` entry into (prefix incl. terminator, main, sub).
pub fn split_key_entry(entry: &[u8]) -> Result<(&[u8], i64, i64)> {
    if entry.len() < 1 + 2 + 16 || entry[0] != T_KEY {
        return Err(bad("short key entry"));
    }
    let (prefix, rev) = entry.split_at(entry.len() - 16);
    if prefix[prefix.len() - 2..] != [0, 0] {
        return Err(bad("missing terminator"));
    }
    let (main, sub) = parse_rev(rev)?;
    Ok((prefix, main, sub))
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
    let body = prefix
        .get(1..prefix.len().saturating_sub(2))
        .ok_or_else(|| bad("prefix"))?;
    let mut out = Vec::with_capacity(body.len());
    // Copy runs between escaped zero bytes whole (most keys have none).
    let mut rest = body;
    while let Some(z) = rest.iter().position(|&b| b == 0) {
        if rest.get(z + 1) != Some(&0xFF) {
            return Err(bad("bad escape"));
        }
        out.extend_from_slice(&rest[..=z]);
        rest = &rest[z + 2..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub tombstone: bool,
    pub create: i64,
    pub version: i64,
    pub lease: i64,
}

// Stored record (format version 3):
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
    fn bad_escapes_are_corrupted() {
        for bad in [&b"ka\0\x01\0\0"[..], b"k\0\0\0", b"kab\0\0\0"] {
            assert!(unescape_prefix(bad).is_err(), "{bad:?}");
        }
        assert_eq!(unescape_prefix(b"ka\0\xFFb\0\0").unwrap(), b"a\0b");
    }
}
