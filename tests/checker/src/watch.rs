//! Watch guarantees (etcd's API guarantees, as its robustness suite checks
//! them): ordered (revisions never go back), unique (no event twice),
//! atomic (one revision's events are never split across responses),
//! reliable (no event missing between the start revision and the last
//! revision the stream covered), resumable (a new stream from revision R
//! delivers exactly the history from R), correct `prev_kv` and create /
//! modify information (create_revision, version).

use std::collections::HashSet;

use crate::history::{EventKind, WatchSegment, Watcher};
use crate::linear::{Constraints, SeenRevision};
use crate::model::in_range;

/// Revisions one stream may claim to cover, past which its claims are not
/// turned into search constraints (a bogus progress revision must not make
/// the checker allocate without bound; the stream checks still report it).
const MAX_COVERED_SPAN: i64 = 1_000_000;

fn start_of(seg: &WatchSegment) -> i64 {
    if seg.start_revision > 0 {
        seg.start_revision
    } else {
        seg.created_revision + 1
    }
}

/// Last revision a stream covered: its last event or progress notification
/// before any cancel.
fn covered_of(seg: &WatchSegment) -> i64 {
    let mut covered = start_of(seg) - 1;
    for resp in seg.responses.iter().take_while(|r| !r.canceled) {
        let last = resp
            .events
            .last()
            .map_or(resp.header_revision, |e| e.kv.mod_revision);
        covered = covered.max(last);
    }
    covered
}

/// Whether stream `si` of `w` resumed at the revision a compaction
/// cancelled the previous stream with. etcd's compaction at revision C
/// keeps each key's last version at or before C unless it is a deletion
/// (`keyIndex.compact`), so a watch from C cannot deliver C's deletions,
/// nor the `prev_kv` of C's events (the versions before them are gone).
fn starts_at_compaction(w: &Watcher, si: usize) -> bool {
    let Some(prev) = si.checked_sub(1).and_then(|p| w.segments.get(p)) else {
        return false;
    };
    prev.responses.last().is_some_and(|r| {
        r.canceled && r.compact_revision > 0 && r.compact_revision == start_of(&w.segments[si])
    })
}

/// What every stream says about each revision it covered, for the search.
pub fn constraints(watchers: &[Watcher]) -> Constraints {
    let mut c = Constraints::new();
    let segments = watchers.iter().flat_map(|w| {
        (0..w.segments.len()).map(move |si| (&w.segments[si], starts_at_compaction(w, si)))
    });
    for (seg, at_compaction) in segments {
        let (start, covered) = (start_of(seg), covered_of(seg));
        if covered - start > MAX_COVERED_SPAN {
            continue;
        }
        let events: Vec<_> = seg
            .responses
            .iter()
            .take_while(|r| !r.canceled)
            .flat_map(|r| &r.events)
            .collect();
        for rev in start..=covered {
            let seen = SeenRevision {
                key: seg.key.clone(),
                range_end: seg.range_end.clone(),
                prev_kv: seg.prev_kv,
                events: events
                    .iter()
                    .filter(|e| e.kv.mod_revision == rev)
                    .map(|e| (*e).clone())
                    .collect(),
                deletions_dropped: at_compaction && rev == start,
            };
            let at = c.entry(rev).or_default();
            if !at.contains(&seen) {
                at.push(seen);
            }
        }
    }
    c
}
use crate::truth::Truth;
use crate::{Violation, ViolationKind};

/// Checks one watcher; returns the number of events it delivered.
pub fn check_watcher(w: &Watcher, truth: Option<&Truth>, out: &mut Vec<Violation>) -> usize {
    let mut seen: HashSet<(i64, String)> = HashSet::new();
    let mut last_rev = 0i64;
    let mut delivered = 0;
    for (si, seg) in w.segments.iter().enumerate() {
        let ctx = format!("watcher {} stream {si}", w.id);
        let start = start_of(seg);
        let covered = check_stream(seg, start, &ctx, &mut seen, &mut last_rev, out);
        delivered += seg.responses.iter().map(|r| r.events.len()).sum::<usize>();
        if let Some(t) = truth {
            let at_compaction = starts_at_compaction(w, si);
            check_reliable(seg, start, covered, at_compaction, t, &ctx, out);
        }
    }
    delivered
}

fn violation(out: &mut Vec<Violation>, kind: ViolationKind, detail: String) {
    out.push(Violation { kind, detail });
}

/// Order, uniqueness, atomicity and per-event invariants of one stream.
/// Returns the last revision the stream is known to cover (events and
/// progress notifications).
fn check_stream(
    seg: &WatchSegment,
    start: i64,
    ctx: &str,
    seen: &mut HashSet<(i64, String)>,
    last_rev: &mut i64,
    out: &mut Vec<Violation>,
) -> i64 {
    let mut covered = start - 1;
    let mut prev_resp_last: Option<i64> = None;
    for (ri, resp) in seg.responses.iter().enumerate() {
        if resp.canceled {
            break;
        }
        if resp.events.is_empty() {
            // A progress notification: every event up to its header
            // revision has been delivered.
            covered = covered.max(resp.header_revision);
            continue;
        }
        if let (Some(p), Some(first)) = (prev_resp_last, resp.events.first()) {
            if first.kv.mod_revision == p {
                violation(
                    out,
                    ViolationKind::WatchAtomic,
                    format!(
                        "{ctx}: revision {p} split across responses {} and {ri}",
                        ri - 1
                    ),
                );
            }
        }
        for ev in &resp.events {
            let r = ev.kv.mod_revision;
            if r < *last_rev {
                violation(
                    out,
                    ViolationKind::WatchOrder,
                    format!("{ctx}: revision {r} after {}", *last_rev),
                );
            }
            if r < start {
                violation(
                    out,
                    ViolationKind::WatchOrder,
                    format!("{ctx}: revision {r} before the start revision {start}"),
                );
            }
            if r > resp.header_revision {
                violation(
                    out,
                    ViolationKind::WatchOrder,
                    format!(
                        "{ctx}: event at {r} in a response with header revision {}",
                        resp.header_revision
                    ),
                );
            }
            if !seen.insert((r, ev.kv.key.clone())) {
                violation(
                    out,
                    ViolationKind::WatchDuplicate,
                    format!("{ctx}: event ({r}, {:?}) delivered twice", ev.kv.key),
                );
            }
            if !in_range(&ev.kv.key, &seg.key, &seg.range_end) {
                violation(
                    out,
                    ViolationKind::WatchEvent,
                    format!("{ctx}: key {:?} outside the watched range", ev.kv.key),
                );
            }
            check_flags(ev, seg.prev_kv, ctx, out);
            *last_rev = (*last_rev).max(r);
        }
        let last = resp.events.last().map_or(covered, |e| e.kv.mod_revision);
        prev_resp_last = Some(last);
        covered = covered.max(last);
    }
    covered
}

/// Create/modify information and prev_kv presence, independent of history.
fn check_flags(
    ev: &crate::history::WatchEvent,
    want_prev: bool,
    ctx: &str,
    out: &mut Vec<Violation>,
) {
    let kv = &ev.kv;
    let r = kv.mod_revision;
    match ev.kind {
        EventKind::Put => {
            let created = kv.create_revision == kv.mod_revision;
            if kv.version < 1
                || kv.create_revision > kv.mod_revision
                || created != (kv.version == 1)
            {
                violation(
                    out,
                    ViolationKind::WatchFlags,
                    format!(
                        "{ctx}: put of {:?} at {r}: create_revision {}, version {}",
                        kv.key, kv.create_revision, kv.version
                    ),
                );
            }
            if created && ev.prev_kv.is_some() {
                violation(
                    out,
                    ViolationKind::WatchPrevKv,
                    format!("{ctx}: create of {:?} at {r} carries a prev_kv", kv.key),
                );
            }
        }
        EventKind::Delete => {}
    }
    if !want_prev && ev.prev_kv.is_some() {
        violation(
            out,
            ViolationKind::WatchPrevKv,
            format!("{ctx}: prev_kv at {r} on a watch that did not ask for it"),
        );
    }
}

/// The stream delivered exactly the history's events of its range between
/// its start and the last revision it covered, with the right key-values.
fn check_reliable(
    seg: &WatchSegment,
    start: i64,
    covered: i64,
    at_compaction: bool,
    truth: &Truth,
    ctx: &str,
    out: &mut Vec<Violation>,
) {
    if covered > truth.final_revision {
        violation(
            out,
            ViolationKind::WatchEvent,
            format!(
                "{ctx}: covers revision {covered}, past the history's last revision {}",
                truth.final_revision
            ),
        );
    }
    let mut want = truth.events_in(
        start,
        covered.min(truth.final_revision),
        &seg.key,
        &seg.range_end,
    );
    if at_compaction {
        // The compaction dropped the start revision's deletions.
        want.retain(|e| !(e.kind == EventKind::Delete && e.kv.mod_revision == start));
    }
    let got: Vec<_> = seg
        .responses
        .iter()
        .take_while(|r| !r.canceled)
        .flat_map(|r| r.events.iter())
        .collect();
    for (i, w) in want.iter().enumerate() {
        let Some(g) = got.get(i) else {
            violation(
                out,
                ViolationKind::WatchGap,
                format!(
                    "{ctx}: missing event ({}, {:?}) (stream covers up to {covered})",
                    w.kv.mod_revision, w.kv.key
                ),
            );
            return;
        };
        if g.kind != w.kind || g.kv != w.kv {
            let kind = if g.kv.mod_revision > w.kv.mod_revision {
                ViolationKind::WatchGap
            } else {
                ViolationKind::WatchEvent
            };
            violation(
                out,
                kind,
                format!("{ctx}: event #{i} is {g:?}, the history has {w:?}"),
            );
            return;
        }
        // At a compaction's revision the previous versions are gone, so
        // etcd leaves prev_kv out (it reads it at the revision - 1).
        let prev_compacted = at_compaction && w.kv.mod_revision == start && g.prev_kv.is_none();
        if seg.prev_kv && g.prev_kv != w.prev_kv && !prev_compacted {
            violation(
                out,
                ViolationKind::WatchPrevKv,
                format!(
                    "{ctx}: prev_kv of ({}, {:?}) is {:?}, the history has {:?}",
                    w.kv.mod_revision, w.kv.key, g.prev_kv, w.prev_kv
                ),
            );
        }
    }
    if let Some(extra) = got.get(want.len()) {
        violation(
            out,
            ViolationKind::WatchEvent,
            format!("{ctx}: event {extra:?} is not in the history"),
        );
    }
}
