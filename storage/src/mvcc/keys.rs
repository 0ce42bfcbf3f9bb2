//! MVCC key encoding.
//!
//! One tree holds three tables, told apart by the first byte:
//! - `k` + esc(user key) + `00 00` + main (8 B big-endian) + sub (8 B BE) -> record
//! - `r` + main + sub -> user key (revision order, for watches and compaction)
//! - `m` + name -> value (server metadata such as membership or lease state)
//!
//! esc() writes each `00` byte as `00 FF`; with the `00 00` terminator the
//! encoding is prefix-free and preserves order, so byte order of tree keys is
//! (user key, revision) order. Record: `[kind u8][create i64][version i64][lease i64][value]`.

use crate::error::{Result, StorageError};

pub const T_KEY: u8 = b'k';
pub const T_REV: u8 = b'r';
pub const T_META: u8 = b'm';
pub const KIND_PUT: u8 = 0;
pub const KIND_TOMBSTONE: u8 = 1;
pub const RECORD_HEADER: usize = 25;

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

pub fn encode_record(r: &Record, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(RECORD_HEADER + value.len());
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

/// Decodes a record; returns it and the value bytes.
pub fn decode_record(b: &[u8]) -> Result<(Record, &[u8])> {
    if b.len() < RECORD_HEADER {
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
        &b[RECORD_HEADER..],
    ))
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
    fn bad_escapes_are_corrupted() {
        for bad in [&b"ka\0\x01\0\0"[..], b"k\0\0\0", b"kab\0\0\0"] {
            assert!(unescape_prefix(bad).is_err(), "{bad:?}");
        }
        assert_eq!(unescape_prefix(b"ka\0\xFFb\0\0").unwrap(), b"a\0b");
    }
}
