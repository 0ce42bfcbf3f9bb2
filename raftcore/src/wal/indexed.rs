//! A contiguous run of per-index items, shared by the WAL's position index,
//! its tail cache and the in-memory log, so overwrite and compaction rules
//! are written once.

use std::collections::VecDeque;

/// Items for indices `first_index ..= last_index()`.
///
/// Invariant: `items[k]` belongs to index `first_index + k`.
#[derive(Clone, Debug)]
pub struct IndexedLog<T> {
    first_index: u64,
    items: VecDeque<T>,
}

impl<T> IndexedLog<T> {
    /// An empty run whose next index is `next_index`.
    pub fn new(next_index: u64) -> Self {
        Self {
            first_index: next_index,
            items: VecDeque::new(),
        }
    }

    pub fn first_index(&self) -> u64 {
        self.first_index
    }

    /// `first_index - 1` when empty.
    pub fn last_index(&self) -> u64 {
        self.first_index + self.items.len() as u64 - 1
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, index: u64) -> Option<&T> {
        let k = index.checked_sub(self.first_index)?;
        self.items.get(usize::try_from(k).ok()?)
    }

    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.items.iter()
    }

    /// Stores `item` at `index`, dropping everything at and after it.
    /// Precondition: `first_index <= index <= last_index() + 1`.
    pub fn put(&mut self, index: u64, item: T) {
        assert!(
            index >= self.first_index && index <= self.last_index() + 1,
            "put at {index} outside [{}, {}]",
            self.first_index,
            self.last_index() + 1
        );
        self.truncate_from(index);
        self.items.push_back(item);
    }

    /// Drops indices `>= index` (no-op if `index > last_index()`).
    pub fn truncate_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first_index);
        if let Ok(keep) = usize::try_from(keep) {
            self.items.truncate(keep);
        }
    }

    /// Drops indices `< index`. If that empties the run, the next index
    /// becomes `max(index, last_index() + 1)`.
    pub fn drop_before(&mut self, index: u64) -> usize {
        let mut n = 0;
        while self.first_index < index && !self.items.is_empty() {
            self.items.pop_front();
            self.first_index += 1;
            n += 1;
        }
        if self.items.is_empty() && self.first_index < index {
            self.first_index = index;
        }
        n
    }

    /// Removes the front item (the lowest index).
    pub fn pop_front(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        self.first_index += 1;
        Some(item)
    }

    /// Removes the back item (the highest index).
    pub fn pop_back(&mut self) -> Option<T> {
        self.items.pop_back()
    }

    /// Empties the run; the next index becomes `next_index`.
    pub fn reset(&mut self, next_index: u64) {
        self.items.clear();
        self.first_index = next_index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_overwrites_suffix_and_drop_before_compacts() {
        let mut l = IndexedLog::new(5);
        assert_eq!(l.last_index(), 4);
        for i in 5..10 {
            l.put(i, i * 10);
        }
        l.put(7, 700);
        assert_eq!(l.last_index(), 7);
        assert_eq!(l.get(7), Some(&700));
        assert_eq!(l.get(8), None);
        assert_eq!(l.drop_before(6), 1);
        assert_eq!(l.first_index(), 6);
        l.drop_before(20);
        assert!(l.is_empty());
        assert_eq!(l.first_index(), 20);
        assert_eq!(l.get(4), None);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn put_with_gap_is_a_broken_invariant() {
        let mut l = IndexedLog::new(1);
        l.put(3, ());
    }
}
