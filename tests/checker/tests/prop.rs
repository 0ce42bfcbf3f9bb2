//! Histories generated from a model run must pass: concurrent clients,
//! random overlaps, unknown outcomes (applied or not), serializable reads,
//! CAS txns, multi-key txns, and a watcher that resumes mid-run.

use std::collections::BTreeMap;

use corekv_checker::history::*;
use corekv_checker::model::{State, apply};
use corekv_checker::{Options, check};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Gen {
    client: u32,
    kind: u8,
    key: u8,
    key2: u8,
    gap: u64,
    d1: u64,
    d2: u64,
    unknown: u8,
    applied: bool,
}

fn gen_op() -> impl Strategy<Value = Gen> {
    (
        0u32..5,
        0u8..8,
        0u8..4,
        0u8..4,
        0u64..20,
        1u64..30,
        1u64..30,
        0u8..10,
        any::<bool>(),
    )
        .prop_map(
            |(client, kind, key, key2, gap, d1, d2, unknown, applied)| Gen {
                client,
                kind,
                key,
                key2,
                gap,
                d1,
                d2,
                unknown,
                applied,
            },
        )
}

fn key(i: u8) -> String {
    format!("k{i}")
}

fn request(i: usize, g: &Gen, last_value: &BTreeMap<String, String>) -> Request {
    let k = key(g.key);
    match g.kind {
        0 | 1 => Request::Put {
            key: k,
            value: format!("v{i}"),
            lease: 0,
        },
        2 => Request::Delete {
            key: k,
            range_end: String::new(),
        },
        3 => Request::Range {
            key: k,
            range_end: String::new(),
            revision: 0,
            serializable: false,
        },
        4 => Request::Range {
            key: "k".into(),
            range_end: "l".into(),
            revision: 0,
            serializable: true,
        },
        5 => Request::Range {
            key: "k".into(),
            range_end: "l".into(),
            revision: 0,
            serializable: false,
        },
        6 => Request::Txn {
            compare: vec![Compare {
                key: k.clone(),
                result: CompareResult::Equal,
                target: CompareTarget::Value(last_value.get(&k).cloned().unwrap_or_default()),
            }],
            success: vec![TxnOp::Put {
                key: k.clone(),
                value: format!("v{i}"),
                lease: 0,
            }],
            failure: vec![TxnOp::Get { key: k }],
        },
        _ => {
            let k2 = key(g.key2);
            let mut success = vec![TxnOp::Put {
                key: k.clone(),
                value: format!("v{i}"),
                lease: 0,
            }];
            if k2 != k {
                success.push(TxnOp::Delete { key: k2 });
            }
            Request::Txn {
                compare: vec![],
                success,
                failure: vec![],
            }
        }
    }
}

/// Runs the generated ops against the model at random linearization points
/// inside their intervals and records what clients and a watcher would see.
fn simulate(gens: &[Gen], split_at: usize) -> History {
    let mut free = [0u64; 5];
    let mut planned = Vec::new();
    let mut last_value = BTreeMap::new();
    for (i, g) in gens.iter().enumerate() {
        let invoke = free[g.client as usize] + g.gap;
        let lp = invoke + g.d1;
        let complete = lp + g.d2;
        free[g.client as usize] = complete + 1;
        let req = request(i, g, &last_value);
        if let Request::Put { key, value, .. } = &req {
            last_value.insert(key.clone(), value.clone());
        }
        // Times scaled so linearization points are distinct.
        planned.push((
            lp * 1000 + i as u64,
            invoke * 1000,
            complete * 1000 + 999,
            g,
            req,
        ));
    }
    planned.sort_by_key(|p| p.0);
    let mut state = State::new(1);
    let mut ops = Vec::new();
    let mut events: Vec<(i64, Vec<WatchEvent>)> = Vec::new();
    for (_, invoke, complete, g, req) in planned {
        let unknown = g.unknown == 0 && req.is_write();
        let a = apply(&state, &req);
        let outcome = if unknown {
            Outcome::Unknown("connection lost".into())
        } else {
            match &a.response {
                Ok(r) => Outcome::Ok(r.clone()),
                Err(e) => Outcome::Failed(e.clone()),
            }
        };
        if !unknown || g.applied {
            if a.state.revision > state.revision {
                events.push((a.state.revision, a.events.clone()));
            }
            state = a.state;
        }
        ops.push(Operation {
            client: g.client,
            invoke_ns: invoke,
            complete_ns: complete,
            request: req,
            outcome,
        });
    }
    let split = if events.is_empty() {
        0
    } else {
        split_at % events.len()
    };
    let seg = |from: usize, to: usize, start: i64| WatchSegment {
        key: "k".into(),
        range_end: "l".into(),
        start_revision: start,
        prev_kv: true,
        created_revision: 1,
        responses: events[from..to]
            .iter()
            .map(|(rev, evs)| WatchResponse {
                header_revision: *rev,
                events: evs.clone(),
                canceled: false,
                compact_revision: 0,
            })
            .collect(),
    };
    let resume = events.get(split).map_or(state.revision + 1, |e| e.0);
    let watcher = Watcher {
        id: 0,
        segments: vec![seg(0, split, 2), seg(split, events.len(), resume)],
    };
    // Every real run ends the way the chaos runner ends one: a linearizable
    // read of the whole key space after all clients stopped. It pins which
    // unknown writes were applied (the watch alone may show a revision that
    // no acknowledged operation reached).
    let end = ops.iter().map(|o| o.complete_ns).max().unwrap_or(0) + 1000;
    let last = Request::Range {
        key: "k".into(),
        range_end: "l".into(),
        revision: 0,
        serializable: false,
    };
    let outcome = match apply(&state, &last).response {
        Ok(r) => Outcome::Ok(r),
        Err(e) => Outcome::Failed(e),
    };
    ops.push(Operation {
        client: 0,
        invoke_ns: end,
        complete_ns: end + 999,
        request: last,
        outcome,
    });
    ops.sort_by_key(|o| o.invoke_ns);
    History {
        operations: ops,
        watchers: vec![watcher],
        ..History::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn model_runs_pass(gens in prop::collection::vec(gen_op(), 1..80), split in 0usize..100) {
        let h = simulate(&gens, split);
        let r = check(&h, &Options::default());
        prop_assert!(r.ok(), "{:?}\n{}", r, serde_json::to_string(&h).unwrap_or_default());
        prop_assert_eq!(r.lost, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4))]

    /// Chaos-sized histories (thousands of operations, a few percent unknown).
    #[test]
    fn long_model_runs_pass(gens in prop::collection::vec(gen_op(), 3000..4000), split in 0usize..3000) {
        let h = simulate(&gens, split);
        let r = check(&h, &Options::default());
        prop_assert!(r.ok(), "{:?}", r);
    }
}
