//! Helpers shared by the hand-written history tests.
#![allow(dead_code)]

use corekv_checker::history::*;
use corekv_checker::{Options, Report, check};

pub fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64) -> Kv {
    Kv {
        key: key.into(),
        value: value.into(),
        create_revision: create,
        mod_revision: modr,
        version,
        lease: 0,
    }
}

pub fn op(client: u32, t: (u64, u64), request: Request, outcome: Outcome) -> Operation {
    Operation {
        client,
        invoke_ns: t.0,
        complete_ns: t.1,
        request,
        outcome,
    }
}

pub fn put(client: u32, t: (u64, u64), k: &str, v: &str, rev: i64) -> Operation {
    op(
        client,
        t,
        Request::Put {
            key: k.into(),
            value: v.into(),
            lease: 0,
        },
        Outcome::Ok(Response::Put { revision: rev }),
    )
}

pub fn put_unknown(client: u32, t0: u64, k: &str, v: &str) -> Operation {
    op(
        client,
        (t0, t0 + 1),
        Request::Put {
            key: k.into(),
            value: v.into(),
            lease: 0,
        },
        Outcome::Unknown("timeout".into()),
    )
}

pub fn get(client: u32, t: (u64, u64), k: &str, rev: i64, kvs: Vec<Kv>) -> Operation {
    op(
        client,
        t,
        Request::Range {
            key: k.into(),
            range_end: String::new(),
            revision: 0,
            serializable: false,
        },
        Outcome::Ok(Response::Range { revision: rev, kvs }),
    )
}

pub fn run(ops: Vec<Operation>) -> Report {
    run_with(ops, Vec::new(), Vec::new())
}

pub fn run_with(ops: Vec<Operation>, watchers: Vec<Watcher>, hashes: Vec<MemberHash>) -> Report {
    let h = History {
        operations: ops,
        watchers,
        hashes,
        ..History::default()
    };
    check(&h, &Options::default())
}

pub fn put_ev(
    k: &str,
    v: &str,
    create: i64,
    modr: i64,
    version: i64,
    prev: Option<Kv>,
) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Put,
        kv: kv(k, v, create, modr, version),
        prev_kv: prev,
    }
}

pub fn resp(header: i64, events: Vec<WatchEvent>) -> WatchResponse {
    WatchResponse {
        header_revision: header,
        events,
        canceled: false,
        compact_revision: 0,
    }
}

pub fn watcher(prev_kv: bool, responses: Vec<WatchResponse>) -> Watcher {
    Watcher {
        id: 1,
        segments: vec![WatchSegment {
            key: "a".into(),
            range_end: "\0".into(),
            start_revision: 2,
            prev_kv,
            created_revision: 1,
            responses,
        }],
    }
}
