//! Which pages of the current mapping have had their checksum verified.
//!
//! A page's bytes cannot change while any snapshot can reach it, so one
//! successful verification holds until the writer rewrites the page; the
//! writer clears the bit before writing. Each mapping gets a fresh set.

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
