//! Property test: the MVCC store against a naive model, a
//! `BTreeMap<(key, revision), Option<value>>` holding the full history,
//! including compaction, historical reads, events, snapshots and reopen.

mod common;
use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use corekv_storage::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, Option<u8>),
    TxnIfVersion(u8, i64, u8),
    Compact(u8),
    Commit(bool),
    Read(u8, Option<u8>, i64, u8),
}

/// Eight one-byte keys, four with zero runs around the encoding's run
/// token boundaries (format 3: runs of up to 127 zeros per token; one a
/// prefix of the next), and four long ones (key chains): long keys sharing
/// a 3001-byte prefix (one a prefix of the others, one ~64 KiB) force long
/// separators, and one is 2000 zero bytes after its first byte.
fn key(k: u8) -> Vec<u8> {
    let shared = |tail: &[u8]| {
        let mut v = vec![b'c'];
        v.extend(std::iter::repeat_n(b'x', 3000));
        v.extend_from_slice(tail);
        v
    };
    match k % 16 {
        12 => shared(b""),
        13 => shared(b"y"),
        14 => shared(&[b'z'; 61_000]),
        15 => {
            let mut v = vec![b'f'];
            v.extend(std::iter::repeat_n(0u8, 2000));
            v
        }
        8..=11 => {
            let mut v = vec![b'g'];
            v.extend(std::iter::repeat_n(
                0u8,
                [0, 1, 127, 130][k as usize % 16 - 8],
            ));
            if k % 16 == 11 {
                v.push(1);
            }
            v
        }
        i => vec![b'a' + i],
    }
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(k, e)| Op::Delete(k, e)),
        2 => (any::<u8>(), 0i64..3, any::<u8>()).prop_map(|(k, ver, v)| Op::TxnIfVersion(k, ver, v)),
        1 => any::<u8>().prop_map(Op::Compact),
        2 => any::<bool>().prop_map(Op::Commit),
        3 => (any::<u8>(), proptest::option::of(any::<u8>()), 0i64..4, any::<u8>())
            .prop_map(|(k, e, l, r)| Op::Read(k, e, l, r)),
    ]
}

#[derive(Default)]
struct Model {
    rev: i64,
    compacted: i64,
    hist: BTreeMap<(Vec<u8>, i64), Option<Vec<u8>>>,
}

impl Model {
    fn kv_at(&self, k: &[u8], rev: i64) -> Option<KeyValue> {
        let versions: Vec<(i64, &Option<Vec<u8>>)> = self
            .hist
            .range((k.to_vec(), 0)..=(k.to_vec(), rev))
            .map(|((_, r), v)| (*r, v))
            .collect();
        let (mod_rev, last) = versions.last()?;
        let value = last.as_ref()?;
        let life: Vec<i64> = versions
            .iter()
            .rev()
            .take_while(|(_, v)| v.is_some())
            .map(|(r, _)| *r)
            .collect();
        Some(KeyValue {
            key: k.to_vec(),
            create_revision: *life.last()?,
            mod_revision: *mod_rev,
            version: life.len() as i64,
            value: value.clone(),
            lease: 0,
        })
    }

    fn range(&self, start: &[u8], end: Option<&[u8]>, rev: i64) -> Vec<KeyValue> {
        let keys: std::collections::BTreeSet<Vec<u8>> =
            self.hist.keys().map(|(k, _)| k.clone()).collect();
        keys.into_iter()
            .filter(|k| k.as_slice() >= start && end.is_none_or(|e| k.as_slice() < e))
            .filter_map(|k| self.kv_at(&k, rev))
            .collect()
    }
}

fn bounds(k: u8, e: Option<u8>) -> (Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
    let start = key(k);
    match e {
        None => {
            let mut end = start.clone();
            end.push(0);
            (start, vec![], Some(end))
        }
        Some(e) => {
            let end = key(e);
            (start, end.clone(), Some(end))
        }
    }
}

fn run(ops: Vec<Op>) {
    run_with(ops, small_opts());
}

fn run_with(ops: Vec<Op>, opts: StoreOptions) {
    let backend = MemBackend::new();
    let mut store = Store::open_with_backend(Arc::new(backend.clone()), opts.clone()).unwrap();
    let mut m = Model {
        rev: 1,
        ..Model::default()
    };
    let mut batch_events: Vec<Event> = Vec::new();
    let mut all_events: Vec<Event> = Vec::new();
    let mut ops = ops.into_iter().peekable();
    while ops.peek().is_some() {
        let mut w = store.write().unwrap();
        let mut commit_durable = None;
        for op in ops.by_ref() {
            match op {
                Op::Put(k, v) => {
                    let resp = w
                        .put(&PutRequest {
                            key: key(k),
                            value: vec![v],
                            prev_kv: true,
                            ..Default::default()
                        })
                        .unwrap();
                    let prev = m.kv_at(&key(k), m.rev);
                    m.rev += 1;
                    m.hist.insert((key(k), m.rev), Some(vec![v]));
                    assert_eq!(resp.prev_kv, prev);
                    assert_eq!(resp.revision, m.rev);
                }
                Op::Delete(k, e) => {
                    let (start, range_end, end) = bounds(k, e);
                    let resp = w
                        .delete_range(&DeleteRangeRequest {
                            key: start.clone(),
                            range_end,
                            prev_kv: true,
                        })
                        .unwrap();
                    let victims = m.range(&start, end.as_deref(), m.rev);
                    assert_eq!(resp.prev_kvs, victims);
                    if !victims.is_empty() {
                        m.rev += 1;
                        for v in victims {
                            m.hist.insert((v.key, m.rev), None);
                        }
                    }
                    assert_eq!(resp.revision, m.rev);
                }
                Op::TxnIfVersion(k, ver, v) => {
                    let resp = w
                        .txn(&TxnRequest {
                            compare: vec![Compare {
                                result: CompareResult::Equal,
                                target: CompareTarget::Version(ver),
                                key: key(k),
                                range_end: vec![],
                            }],
                            success: vec![RequestOp::Put(PutRequest {
                                key: key(k),
                                value: vec![v],
                                ..Default::default()
                            })],
                            failure: vec![RequestOp::Range(RangeRequest {
                                key: key(k),
                                ..Default::default()
                            })],
                        })
                        .unwrap();
                    let cur_ver = m.kv_at(&key(k), m.rev).map_or(0, |kv| kv.version);
                    assert_eq!(resp.succeeded, cur_ver == ver);
                    if resp.succeeded {
                        m.rev += 1;
                        m.hist.insert((key(k), m.rev), Some(vec![v]));
                    }
                    assert_eq!(resp.revision, m.rev);
                }
                Op::Compact(r) => {
                    let target = 1 + (r as i64) % m.rev;
                    let res = w.compact(target);
                    if target <= m.compacted {
                        assert!(matches!(res, Err(StorageError::Compacted { .. })));
                    } else {
                        res.unwrap();
                        m.compacted = target;
                    }
                }
                Op::Commit(durable) => {
                    commit_durable = Some(durable);
                    break;
                }
                Op::Read(k, e, limit, r) => {
                    let rev = m.compacted.max(1) + (r as i64) % (m.rev - m.compacted.max(1) + 1);
                    let (start, range_end, end) = bounds(k, e);
                    let resp = w
                        .range(&RangeRequest {
                            key: start.clone(),
                            range_end,
                            limit,
                            revision: rev,
                            ..Default::default()
                        })
                        .unwrap();
                    let want = m.range(&start, end.as_deref(), rev);
                    assert_eq!(resp.count, want.len() as i64);
                    let n = if limit > 0 {
                        (limit as usize).min(want.len())
                    } else {
                        want.len()
                    };
                    assert_eq!(resp.kvs, want[..n].to_vec());
                    assert_eq!(resp.more, n < want.len());
                    if rev > 1 && m.compacted > 1 {
                        let old = w.range(&RangeRequest {
                            key: start,
                            revision: m.compacted - 1,
                            ..Default::default()
                        });
                        assert!(matches!(old, Err(StorageError::Compacted { .. })));
                    }
                }
            }
        }
        let durable = commit_durable.unwrap_or(true);
        let info = w.commit(m.rev as u64, durable).unwrap();
        assert_eq!(info.revision, m.rev);
        batch_events.extend(info.events);
        all_events.append(&mut batch_events);
        store.check_integrity().unwrap();
        if durable && m.rev % 3 == 0 {
            // Reopen from the file content.
            drop(store);
            store = Store::open_with_backend(Arc::new(backend.clone()), opts.clone()).unwrap();
            assert_eq!(store.current_revision(), m.rev);
        }
    }
    while store.compact_step().unwrap() {}
    store.check_integrity().unwrap();
    let view = store.read().unwrap();
    for rev in m.compacted.max(1)..=m.rev {
        assert_eq!(
            range_all(&view, rev),
            m.range(&[0], None, rev),
            "range at {rev}"
        );
    }
    // Events after the compaction point match the commit-time events.
    let from = m.compacted + 1;
    let (events, next) = view.events_since(from, &[0], &[0], usize::MAX).unwrap();
    let want: Vec<Event> = all_events
        .iter()
        .filter(|e| e.kv.mod_revision >= from)
        .cloned()
        .collect();
    assert_eq!(events, want);
    assert_eq!(next, m.rev + 1);
    check_events_at_compacted(&view, &m, &all_events);
    // Snapshot round trip preserves every readable revision and the hash.
    let mut buf = Vec::new();
    store.write_snapshot(&mut buf).unwrap();
    let restored = Store::restore_snapshot_with_backend(
        Arc::new(MemBackend::new()),
        &mut buf.as_slice(),
        opts.clone(),
    )
    .unwrap();
    restored.check_integrity().unwrap();
    let rview = restored.read().unwrap();
    assert_eq!(rview.revision(), m.rev);
    assert_eq!(rview.hash_kv(0).unwrap(), view.hash_kv(0).unwrap());
    for rev in m.compacted.max(1)..=m.rev {
        assert_eq!(
            range_all(&rview, rev),
            m.range(&[0], None, rev),
            "restored range at {rev}"
        );
    }
    check_events_at_compacted(&rview, &m, &all_events);
    // Same physical content: versions kept and revision entries from the
    // compacted revision on. (Not with range tombstones above the compacted
    // revision: the stream carries the per-key tombstones they stand for;
    // the model has 16 keys, so larger thresholds never store one.)
    if opts.range_delete_min_keys > 16 {
        assert_eq!(
            restored.check_integrity().unwrap().keys,
            store.check_integrity().unwrap().keys
        );
    }
}

/// After a complete compaction at C, watching from C yields the events at
/// C of surviving versions (puts; tombstones at C are gone, and with them
/// older versions, so prev_kv may be missing) and every later event.
fn check_events_at_compacted(view: &ReadView, m: &Model, all_events: &[Event]) {
    if m.compacted < 1 {
        return;
    }
    let c = m.compacted;
    let (events, next) = view.events_since(c, &[0], &[0], usize::MAX).unwrap();
    assert_eq!(next, m.rev + 1);
    let strip = |e: &Event| (e.kind, e.kv.clone());
    let want: Vec<_> = all_events
        .iter()
        .filter(|e| e.kv.mod_revision == c && e.kind == EventKind::Put)
        .map(strip)
        .collect();
    let got: Vec<_> = events
        .iter()
        .filter(|e| e.kv.mod_revision == c)
        .map(strip)
        .collect();
    assert_eq!(got, want, "events at the compacted revision {c}");
    let later: Vec<&Event> = events.iter().filter(|e| e.kv.mod_revision > c).collect();
    let want_later: Vec<&Event> = all_events
        .iter()
        .filter(|e| e.kv.mod_revision > c)
        .collect();
    assert_eq!(later, want_later);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]
    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops);
    }
}

/// Compaction passes spanning many commits (tiny budgets), in revision mode
/// (sweep ratio 0) or sweep mode (always): writes interleave with the pass,
/// and new targets arrive while one is in progress.
fn slow_compaction_opts(sweep: bool, budget: usize) -> StoreOptions {
    StoreOptions {
        compaction_batch_entries: budget,
        compaction_commit_entries: budget / 2,
        compaction_sweep_ratio: if sweep { u64::MAX } else { 0 },
        ..small_opts()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 120, .. ProptestConfig::default() })]
    #[test]
    fn store_matches_model_with_slow_compaction(
        ops in proptest::collection::vec(op(), 1..160),
        sweep in any::<bool>(),
        budget in 1usize..6,
    ) {
        run_with(ops, slow_compaction_opts(sweep, budget));
    }
}

// The same model check with every standalone delete-range stored as a
// range tombstone (up to four at a time; later ones take the per-key path
// until compaction removes some).
proptest! {
    #![proptest_config(ProptestConfig { cases: 120, .. ProptestConfig::default() })]
    #[test]
    fn store_matches_model_with_range_tombstones(
        ops in proptest::collection::vec(op(), 1..160),
        sweep in any::<bool>(),
        budget in 1usize..6,
    ) {
        run_with(ops, StoreOptions {
            range_delete_min_keys: 1,
            max_range_tombstones: 4,
            ..slow_compaction_opts(sweep, budget)
        });
    }
}
