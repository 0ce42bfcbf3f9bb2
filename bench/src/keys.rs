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

/// How key indexes are picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// Uniformly random (keys repeat).
    Random,
    /// Op number modulo the space.
    Sequential,
    /// `(op mod space) * m mod space` with `m` coprime with the space: each
    /// key once per pass, in a scattered order.
    Scattered(u64),
}

/// Picks key indexes: sequential, scattered or uniformly random.
pub struct KeyPicker {
    rng: SmallRng,
    space: u64,
    order: Order,
}

/// A multiplier near `space` / golden ratio that is coprime with `space`,
/// so `i -> i * m mod space` is a bijection of `0..space`.
fn scatter_multiplier(space: u64) -> u64 {
    fn gcd(mut a: u64, mut b: u64) -> u64 {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    }
    let mut m = ((space as f64 / 1.618_033_988_75) as u64).max(1);
    while gcd(m, space) != 1 {
        m += 1;
    }
    m
}

impl KeyPicker {
    /// The picker `--sequential-keys` / `--scattered-keys` ask for.
    pub fn for_keys(seed: u64, client: usize, keys: &crate::cli::KeyArgs) -> Self {
        let space = keys.key_space_size.max(1);
        let order = if keys.scattered_keys {
            Order::Scattered(scatter_multiplier(space))
        } else if keys.sequential_keys {
            Order::Sequential
        } else {
            Order::Random
        };
        Self::with_order(seed, client, space, order)
    }

    fn with_order(seed: u64, client: usize, space: u64, order: Order) -> Self {
        KeyPicker {
            rng: SmallRng::seed_from_u64(
                seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            space: space.max(1),
            order,
        }
    }

    pub fn pick(&mut self, op: u64) -> u64 {
        match self.order {
            Order::Sequential => op % self.space,
            Order::Scattered(m) => {
                ((u128::from(op % self.space) * u128::from(m)) % u128::from(self.space)) as u64
            }
            Order::Random => self.rng.random_range(0..self.space),
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
    fn scattered_keys_visit_every_key_once_per_pass() {
        for space in [1u64, 2, 10, 1000, 10_000_000 / 1000, 4096] {
            let m = scatter_multiplier(space);
            let mut p = KeyPicker::with_order(1, 0, space, Order::Scattered(m));
            let mut seen: Vec<u64> = (0..space).map(|op| p.pick(op)).collect();
            if space > 4 {
                // Not in order.
                assert_ne!(seen[..4], [0, 1, 2, 3]);
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..space).collect::<Vec<_>>(), "space {space}");
        }
    }

    #[test]
    fn keys_are_distinct_and_sized() {
        assert_eq!(&key_bytes(258, 8)[..], &[0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(&key_bytes(258, 2)[..], &[1, 2]);
        assert_eq!(key_bytes(5, 12).len(), 12);
        assert_ne!(key_bytes(1, 8), key_bytes(2, 8));
    }

    #[test]
    fn picker_stays_in_space_and_is_seeded() {
        let mut a = KeyPicker::with_order(7, 0, 10, Order::Random);
        let mut b = KeyPicker::with_order(7, 0, 10, Order::Random);
        for op in 0..100 {
            let k = a.pick(op);
            assert!(k < 10);
            assert_eq!(k, b.pick(op));
        }
        let mut s = KeyPicker::with_order(7, 0, 10, Order::Sequential);
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
