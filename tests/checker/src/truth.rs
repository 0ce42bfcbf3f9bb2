//! The store's history as one linearization says it happened: the key
//! space after every revision and the events of every revision. Watch
//! streams and non-linearizable reads are checked against it.

use std::collections::BTreeMap;

use crate::history::{Kv, WatchEvent};
use crate::linear::LinOp;
use crate::model::{State, apply, in_range};

#[derive(Debug, Clone, Default)]
pub struct Truth {
    /// (revision, key space at that revision), ascending.
    pub snapshots: Vec<(i64, BTreeMap<String, Kv>)>,
    /// Events of each revision, in the order the store applied them.
    pub events: BTreeMap<i64, Vec<WatchEvent>>,
    pub final_revision: i64,
}

impl Truth {
    /// Replays `path` (the states after each op of `order`) from `init`.
    pub fn build(init: &State, ops: &[LinOp], order: &[usize], path: &[State]) -> Truth {
        let mut t = Truth {
            snapshots: vec![(init.revision, init.kvs.clone())],
            events: BTreeMap::new(),
            final_revision: init.revision,
        };
        let mut prev = init;
        for (&i, next) in order.iter().zip(path) {
            if next.revision > prev.revision {
                let a = apply(prev, &ops[i].request);
                debug_assert_eq!(a.state, *next);
                t.events.insert(next.revision, a.events);
                t.snapshots.push((next.revision, next.kvs.clone()));
                t.final_revision = next.revision;
            }
            prev = next;
        }
        t
    }

    /// The key space at `revision`, or `None` past the last revision.
    pub fn kvs_at(&self, revision: i64) -> Option<&BTreeMap<String, Kv>> {
        if revision > self.final_revision {
            return None;
        }
        let i = self.snapshots.partition_point(|(r, _)| *r <= revision);
        self.snapshots.get(i.checked_sub(1)?).map(|(_, kvs)| kvs)
    }

    /// Keys of `[key, range_end)` at `revision`.
    pub fn range_at(&self, revision: i64, key: &str, range_end: &str) -> Option<Vec<Kv>> {
        Some(
            self.kvs_at(revision)?
                .values()
                .filter(|kv| in_range(&kv.key, key, range_end))
                .cloned()
                .collect(),
        )
    }

    /// Events of revisions `from..=to` on keys of `[key, range_end)`.
    pub fn events_in(&self, from: i64, to: i64, key: &str, range_end: &str) -> Vec<WatchEvent> {
        if from > to {
            return Vec::new();
        }
        self.events
            .range(from..=to)
            .flat_map(|(_, evs)| evs.iter())
            .filter(|e| in_range(&e.kv.key, key, range_end))
            .cloned()
            .collect()
    }
}
