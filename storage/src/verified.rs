//! Which pages of the current mapping have had their checksum verified.
//!
//! A page's bytes cannot change while any snapshot can reach it, so one
//! successful verification holds until the writer rewrites the page; the
//! writer clears the bit before writing. The set covers a mapping's whole
//! reservation, so it survives file growth; a replacement mapping starts
//! from a copy ([`Verified::copy_of`]): the bytes of a page do not depend on
//! which mapping shows them.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Verified {
    bits: Vec<AtomicU64>,
}

impl Verified {
    pub fn new(pages: u64) -> Verified {
        let words = usize::try_from(pages.div_ceil(64)).unwrap_or(0);
        Verified {
            bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A set of `pages` pages holding the bits of `old` (those that fit).
    /// Bits `old` gains during the copy may be lost: that only costs a
    /// second verification.
    pub fn copy_of(old: &Verified, pages: u64) -> Verified {
        let new = Verified::new(pages);
        for (n, o) in new.bits.iter().zip(&old.bits) {
            n.store(o.load(Ordering::Acquire), Ordering::Relaxed);
        }
        new
    }

    fn slot(&self, id: u64) -> Option<(&AtomicU64, u64)> {
        let word = usize::try_from(id / 64).ok()?;
        Some((self.bits.get(word)?, 1u64 << (id % 64)))
    }

    pub fn get(&self, id: u64) -> bool {
        self.slot(id)
            .is_some_and(|(w, m)| w.load(Ordering::Acquire) & m != 0)
    }

    pub fn set(&self, id: u64) {
        if let Some((w, m)) = self.slot(id) {
            w.fetch_or(m, Ordering::AcqRel);
        }
    }

    pub fn clear(&self, id: u64) {
        if let Some((w, m)) = self.slot(id) {
            w.fetch_and(!m, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Verified;

    #[test]
    fn copy_keeps_bits_that_fit() {
        let v = Verified::new(200);
        v.set(3);
        v.set(130);
        v.set(199);
        let bigger = Verified::copy_of(&v, 1000);
        assert!(bigger.get(3) && bigger.get(130) && bigger.get(199));
        assert!(!bigger.get(4) && !bigger.get(500));
        let smaller = Verified::copy_of(&v, 64);
        assert!(smaller.get(3) && !smaller.get(130));
        // Out of range ids are never "verified".
        smaller.set(1 << 40);
        assert!(!smaller.get(1 << 40));
        bigger.clear(130);
        assert!(!bigger.get(130) && v.get(130));
    }
}
