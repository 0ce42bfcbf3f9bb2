//! Property test of the range options and of `ReadView::range_visit`: over
//! random stores (keys with zero runs, values in overflow chains, range
//! tombstones, compaction), every request's `range()` answer equals one
//! built naively from the full key range at that revision (filter, sort,
//! limit, count, keys-only, count-only applied here), and `range_visit`
//! hands out exactly `range()`'s entries with the same summary.

mod common;

use common::*;
use corekv_storage::*;
use proptest::prelude::*;

/// Keys from a small alphabet so ranges and rewrites overlap: plain keys,
/// keys with zero bytes (decoded into the scratch buffer) and one long key
/// (a key chain).
fn key(k: u8) -> Vec<u8> {
    match k % 8 {
        0 => b"a".to_vec(),
        1 => b"ab".to_vec(),
        2 => vec![b'a', 0],
        3 => vec![b'a', 0, 0, b'b'],
        4 => b"b".to_vec(),
        5 => vec![b'b'; 1500],
        6 => b"c".to_vec(),
        _ => vec![b'd', 0, 1],
    }
}

fn value(v: u8) -> Vec<u8> {
    // Every eighth value is too long for a leaf: an overflow chain.
    let len = if v % 8 == 7 { 3000 } else { usize::from(v % 5) };
    vec![v; len]
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, Option<u8>),
    Compact,
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (any::<u8>(), proptest::option::of(any::<u8>())).prop_map(|(k, e)| Op::Delete(k, e)),
        1 => Just(Op::Compact),
        2 => Just(Op::Commit),
    ]
}

fn sort_order() -> impl Strategy<Value = SortOrder> {
    prop_oneof![
        Just(SortOrder::None),
        Just(SortOrder::Ascend),
        Just(SortOrder::Descend)
    ]
}

fn sort_target() -> impl Strategy<Value = SortTarget> {
    prop_oneof![
        Just(SortTarget::Key),
        Just(SortTarget::Version),
        Just(SortTarget::Create),
        Just(SortTarget::Mod),
        Just(SortTarget::Value)
    ]
}

/// A request; revisions are fractions (0..=4 of 4) of the store's span,
/// resolved against it later; `range_end` None = a single key, `Some(255)`
/// = every key from `key`.
#[derive(Clone, Debug)]
struct Req {
    key: u8,
    end: Option<u8>,
    limit: i64,
    rev: u8,
    order: SortOrder,
    target: SortTarget,
    keys_only: bool,
    count_only: bool,
    filters: [u8; 4],
}

fn req() -> impl Strategy<Value = Req> {
    (
        (
            any::<u8>(),
            proptest::option::of(any::<u8>()),
            -1i64..5,
            0u8..5,
        ),
        (sort_order(), sort_target(), any::<bool>(), any::<bool>()),
        proptest::array::uniform4(0u8..6),
    )
        .prop_map(
            |((key, end, limit, rev), (order, target, keys_only, count_only), filters)| Req {
                key,
                end,
                limit,
                rev,
                order,
                target,
                keys_only,
                count_only: count_only && key % 4 == 0,
                filters,
            },
        )
}

/// Filter bound `f` (0 = off, else a fraction of the revision span).
fn bound(f: u8, lo: i64, hi: i64) -> i64 {
    if f == 0 {
        0
    } else {
        lo + (hi - lo) * i64::from(f - 1) / 4
    }
}

fn request(r: &Req, lo: i64, hi: i64) -> RangeRequest {
    let k = key(r.key);
    let range_end = match r.end {
        None => Vec::new(),
        Some(255) => vec![0],
        Some(e) => key(e),
    };
    RangeRequest {
        key: k,
        range_end,
        limit: r.limit,
        revision: if r.rev == 0 { 0 } else { bound(r.rev, lo, hi) },
        sort_order: r.order,
        sort_target: r.target,
        keys_only: r.keys_only,
        count_only: r.count_only,
        min_mod_revision: bound(r.filters[0], lo, hi),
        max_mod_revision: bound(r.filters[1], lo, hi),
        min_create_revision: bound(r.filters[2], 1, hi),
        max_create_revision: bound(r.filters[3], 1, hi),
    }
}

/// The answer to `q` built from the plain range (no options) at its revision.
fn naive(view: &ReadView, q: &RangeRequest) -> RangeResponse {
    let all = view
        .range(&RangeRequest {
            key: q.key.clone(),
            range_end: q.range_end.clone(),
            revision: q.revision,
            ..Default::default()
        })
        .unwrap();
    let count = all.kvs.len() as i64;
    let mut kvs: Vec<KeyValue> = all
        .kvs
        .into_iter()
        .filter(|kv| {
            (q.min_mod_revision == 0 || kv.mod_revision >= q.min_mod_revision)
                && (q.max_mod_revision == 0 || kv.mod_revision <= q.max_mod_revision)
                && (q.min_create_revision == 0 || kv.create_revision >= q.min_create_revision)
                && (q.max_create_revision == 0 || kv.create_revision <= q.max_create_revision)
        })
        .collect();
    let order = match (q.sort_order, q.sort_target) {
        (SortOrder::None, SortTarget::Key) => SortOrder::None,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    match (order, q.sort_target) {
        (SortOrder::None, _) | (SortOrder::Ascend, SortTarget::Key) => {}
        (SortOrder::Descend, SortTarget::Key) => kvs.reverse(),
        (order, target) => kvs.sort_by(|a, b| {
            // A stable sort of key-ordered entries: ties stay in key order.
            let o = match target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            };
            if order == SortOrder::Descend {
                o.reverse()
            } else {
                o
            }
        }),
    }
    let mut more = false;
    if q.limit > 0 && kvs.len() > q.limit as usize {
        kvs.truncate(q.limit as usize);
        more = true;
    }
    if q.count_only {
        kvs.clear();
        more = false;
    }
    if q.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    RangeResponse {
        kvs,
        more,
        count,
        revision: all.revision,
    }
}

fn run(ops: Vec<Op>, reqs: Vec<Req>) {
    let dir = tempdir();
    let store = Store::open(
        &dir.path().join("db"),
        StoreOptions {
            range_delete_min_keys: 1,
            max_range_tombstones: 2,
            ..small_opts()
        },
    )
    .unwrap();
    let mut applied = 0;
    let mut batch = store.write().unwrap();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                batch
                    .put(&PutRequest {
                        key: key(k),
                        value: value(v),
                        ..Default::default()
                    })
                    .unwrap();
            }
            Op::Delete(k, e) => {
                batch
                    .delete_range(&DeleteRangeRequest {
                        key: key(k),
                        range_end: e.map(key).unwrap_or_default(),
                        ..Default::default()
                    })
                    .unwrap();
            }
            Op::Compact => {
                match batch.compact((batch.revision() + 1) / 2) {
                    // A target at or below the last one is refused.
                    Ok(()) | Err(StorageError::Compacted { .. }) => {}
                    Err(e) => panic!("compact: {e}"),
                }
            }
            Op::Commit => {
                applied += 1;
                batch.commit(applied, false).unwrap();
                batch = store.write().unwrap();
            }
        }
    }
    applied += 1;
    batch.commit(applied, false).unwrap();
    let view = store.read().unwrap();
    let (lo, hi) = (view.compacted_revision().max(1), view.revision());
    for r in reqs {
        let q = request(&r, lo, hi);
        let got = view.range(&q);
        let mut visited = Vec::new();
        let summary = view.range_visit(&q, |kv| visited.push(kv.to_key_value()));
        let (got, summary) = match (got, summary) {
            (Ok(g), Ok(s)) => (g, s),
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string(), "{q:?}");
                continue;
            }
            (g, s) => panic!("range {g:?} but range_visit {s:?} for {q:?}"),
        };
        assert_eq!(got, naive(&view, &q), "{q:?}");
        assert_eq!(visited, got.kvs, "{q:?}");
        assert_eq!(
            summary,
            RangeSummary {
                more: got.more,
                count: got.count,
                revision: got.revision,
            },
            "{q:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]
    #[test]
    fn range_visit_matches_range_and_naive_options(
        ops in proptest::collection::vec(op(), 1..80),
        reqs in proptest::collection::vec(req(), 1..40),
    ) {
        run(ops, reqs);
    }
}
