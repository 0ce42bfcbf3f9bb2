//! Key and value generation.

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Key `index` as `key_size` bytes: the index big-endian in the last (up to 8)
/// bytes, zero-padded in front. Distinct for distinct indexes below
/// 256^min(key_size, 8).
pub fn key_bytes(index: u64, key_size: usize) -> Bytes {
    let mut k = vec![0u8; key_size];
    let be = index.to_be_bytes();
    let n = key_size.min(8);
    k[key_size - n..].copy_from_slice(&be[8 - n..]);
    Bytes::from(k)
}

/// Picks key indexes: sequential (op number modulo the space) or uniformly random.
pub struct KeyPicker {
    rng: SmallRng,
    space: u64,
    sequential: bool,
}

impl KeyPicker {
    pub fn new(seed: u64, client: usize, space: u64, sequential: bool) -> Self {
        KeyPicker {
            rng: SmallRng::seed_from_u64(
                seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            space: space.max(1),
            sequential,
        }
    }

    pub fn pick(&mut self, op: u64) -> u64 {
        if self.sequential {
            op % self.space
        } else {
            self.rng.random_range(0..self.space)
        }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p.clamp(0.0, 1.0))
    }
}

/// A value of `size` bytes whose first 8 bytes are `stamp_ns` little-endian
/// (used to measure put-to-event latency from the event alone).
pub fn stamped_value(stamp_ns: u64, size: usize) -> Bytes {
    let mut v = vec![b'v'; size.max(8)];
    v[..8].copy_from_slice(&stamp_ns.to_le_bytes());
    Bytes::from(v)
}

pub fn read_stamp(value: &[u8]) -> Option<u64> {
    let b: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(b))
}

/// The smallest key greater than every key with this prefix (etcd's rule;
/// "\0" when the prefix is all 0xff, meaning "to the end").
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_sized() {
        assert_eq!(&key_bytes(258, 8)[..], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&key_bytes(258, 2)[..], &[1, 2]);
        assert_eq!(key_bytes(5, 12).len(), 12);
        assert_ne!(key_bytes(1, 8), key_bytes(2, 8));
    }

    #[test]
    fn picker_stays_in_space_and_is_seeded() {
        let mut a = KeyPicker::new(7, 0, 10, false);
        let mut b = KeyPicker::new(7, 0, 10, false);
        for op in 0..100 {
            let k = a.pick(op);
            assert!(k < 10);
            assert_eq!(k, b.pick(op));
        }
        let mut s = KeyPicker::new(7, 0, 10, true);
        assert_eq!(s.pick(13), 3);
    }

    #[test]
    fn stamps_round_trip() {
        let v = stamped_value(123_456_789, 4);
        assert_eq!(v.len(), 8);
        assert_eq!(read_stamp(&v), Some(123_456_789));
        assert_eq!(read_stamp(b"short"), None);
    }

    #[test]
    fn prefix_end_rules() {
        assert_eq!(prefix_end(b"abc"), b"abd".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
