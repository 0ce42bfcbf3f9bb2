//! Lease histories: expiry within etcd's bounds is accepted; keys of one
//! lease vanishing in two revisions, an expiry before the TTL ran out since
//! the grant or an acknowledged keep-alive, keys outliving TTL + election
//! timeout + slack (leader changes allowed for), and a keep-alive answered
//! after the revoke are rejected.

mod common;

use common::*;
use corekv_checker::ViolationKind as V;
use corekv_checker::history::*;
use corekv_checker::{Options, Report, check};

/// One second on the history's clock.
const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const ID: i64 = 7;

fn leased(k: &str, v: &str, rev: i64) -> Kv {
    Kv {
        lease: ID,
        ..kv(k, v, rev, rev, 1)
    }
}

fn grant(t: (u64, u64), ttl: i64, outcome: Outcome) -> Operation {
    op(1, t, Request::LeaseGrant { id: ID, ttl }, outcome)
}

fn put_leased(t: (u64, u64), k: &str, rev: i64) -> Operation {
    op(
        1,
        t,
        Request::Put {
            key: k.into(),
            value: "1".into(),
            lease: ID,
        },
        Outcome::Ok(Response::Put { revision: rev }),
    )
}

fn keep_alive(t: (u64, u64), ttl: i64) -> Operation {
    op(
        1,
        t,
        Request::LeaseKeepAlive { id: ID },
        Outcome::Ok(Response::LeaseKeepAlive { ttl }),
    )
}

/// Lease 7 with `ttl` granted at 0 (revision 1), a=1 at 2 and b=1 at 3
/// put with it by 40 ms.
fn leased_pair(ttl: i64) -> Vec<Operation> {
    vec![
        grant(
            (0, 10 * MS),
            ttl,
            Outcome::Ok(Response::LeaseGrant { revision: 1 }),
        ),
        put_leased((10 * MS, 20 * MS), "a", 2),
        put_leased((30 * MS, 40 * MS), "b", 3),
    ]
}

fn check_all(ops: Vec<Operation>, watchers: Vec<Watcher>, changes: Vec<u64>) -> Report {
    let h = History {
        operations: ops,
        watchers,
        leader_changes_ns: changes,
        ..History::default()
    };
    check(&h, &Options::default())
}

fn del_ev(k: &str, at: i64, prev: Kv) -> WatchEvent {
    WatchEvent {
        kind: EventKind::Delete,
        kv: Kv {
            mod_revision: at,
            ..kv(k, "", 0, 0, 0)
        },
        prev_kv: Some(prev),
    }
}

/// The watch events of `leased_pair`.
fn put_events() -> Vec<WatchEvent> {
    let mut events = vec![
        put_ev("a", "1", 2, 2, 1, None),
        put_ev("b", "1", 3, 3, 1, None),
    ];
    for e in &mut events {
        e.kv.lease = ID;
    }
    events
}

fn lease_watcher(responses: Vec<WatchResponse>) -> Vec<Watcher> {
    let mut w = watcher(true, responses);
    w.segments[0].start_revision = 2;
    vec![w]
}

#[test]
fn accepts_expiry_within_bounds_in_one_revision() {
    let mut ops = leased_pair(2);
    ops.push(get(2, (S, S + MS), "a", 3, vec![leased("a", "1", 2)]));
    // TTL 2 s + election timeout 1 s + slack 3 s after the grant: gone.
    ops.push(get(2, (7 * S, 7 * S + MS), "a", 4, vec![]));
    ops.push(get(2, (7 * S + 2 * MS, 7 * S + 3 * MS), "b", 4, vec![]));
    let gone = vec![
        del_ev("a", 4, leased("a", "1", 2)),
        del_ev("b", 4, leased("b", "1", 3)),
    ];
    let w = lease_watcher(vec![resp(3, put_events()), resp(4, gone)]);
    let r = check_all(ops, w, Vec::new());
    assert!(r.ok(), "{r:?}");
    assert_eq!((r.leases, r.expired, r.final_revision), (1, 1, 4));
}

#[test]
fn rejects_lease_keys_vanishing_in_two_revisions() {
    let mut ops = leased_pair(2);
    ops.push(get(2, (7 * S, 7 * S + MS), "a", 5, vec![]));
    let w = lease_watcher(vec![
        resp(3, put_events()),
        resp(4, vec![del_ev("a", 4, leased("a", "1", 2))]),
        resp(5, vec![del_ev("b", 5, leased("b", "1", 3))]),
    ]);
    let r = check_all(ops, w, Vec::new());
    assert!(r.has(V::NotLinearizable), "{r:?}");
}

#[test]
fn rejects_expiry_before_the_ttl_ran_out() {
    let mut ops = leased_pair(10);
    ops.push(get(2, (2 * S, 2 * S + MS), "a", 4, vec![]));
    let r = check_all(ops, Vec::new(), Vec::new());
    assert!(r.has(V::LeaseExpiredEarly), "{r:?}");
    assert!(!r.has(V::NotLinearizable), "{r:?}");
}

#[test]
fn rejects_expiry_despite_an_acknowledged_keep_alive() {
    let mut ops = leased_pair(3);
    ops.push(keep_alive((2500 * MS, 2510 * MS), 3));
    // Renewed at 2.5 s at the earliest: alive until 5.5 s.
    let mut bad = ops.clone();
    bad.push(get(2, (4 * S, 4 * S + MS), "a", 4, vec![]));
    let r = check_all(bad, Vec::new(), Vec::new());
    assert!(r.has(V::LeaseExpiredEarly), "{r:?}");
    ops.push(get(2, (6 * S, 6 * S + MS), "a", 4, vec![]));
    let r = check_all(ops, Vec::new(), Vec::new());
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.expired, 1);
}

#[test]
fn rejects_keys_outliving_their_lease_unless_a_leader_change_explains_it() {
    let mut ops = leased_pair(2);
    ops.push(get(
        2,
        (11 * S, 11 * S + MS),
        "a",
        3,
        vec![leased("a", "1", 2)],
    ));
    // No leader change: due by 10 ms + 2 s + 1 s + 3 s.
    let r = check_all(ops.clone(), Vec::new(), Vec::new());
    assert!(r.has(V::LeaseOutlived), "{r:?}");
    assert!(!r.has(V::NotLinearizable), "{r:?}");
    // A leader elected at 5 s restarts the TTL: due by 5 + 2 + 1 + 1 + 3 s.
    let r = check_all(ops.clone(), Vec::new(), vec![5 * S]);
    assert!(r.ok(), "{r:?}");
    ops.push(get(
        2,
        (20 * S, 20 * S + MS),
        "b",
        3,
        vec![leased("b", "1", 3)],
    ));
    let r = check_all(ops, Vec::new(), vec![5 * S]);
    assert!(r.has(V::LeaseOutlived), "{r:?}");
}

#[test]
fn rejects_keep_alive_answered_after_the_revoke() {
    let mut ops = leased_pair(30);
    ops.push(op(
        1,
        (S, S + MS),
        Request::LeaseRevoke { id: ID },
        Outcome::Ok(Response::LeaseRevoke { revision: 4 }),
    ));
    ops.push(get(2, (S + 2 * MS, S + 3 * MS), "a", 4, vec![]));
    // TTL 0 after the revoke is etcd's answer.
    let mut good = ops.clone();
    good.push(keep_alive((2 * S, 2 * S + MS), 0));
    assert!(check_all(good, Vec::new(), Vec::new()).ok());
    ops.push(keep_alive((2 * S, 2 * S + MS), 30));
    let r = check_all(ops, Vec::new(), Vec::new());
    assert!(r.has(V::NotLinearizable), "{r:?}");
}

#[test]
fn unknown_grant_has_no_deadline() {
    let mut ops = leased_pair(2);
    ops[0] = grant((0, 10 * MS), 2, Outcome::Unknown("timeout".into()));
    ops.push(get(
        2,
        (100 * S, 100 * S + MS),
        "a",
        3,
        vec![leased("a", "1", 2)],
    ));
    let r = check_all(ops, Vec::new(), Vec::new());
    assert!(r.ok(), "{r:?}");
}

#[test]
fn early_expiry_seen_by_a_watch_is_reported_without_the_search() {
    let mut ops = leased_pair(10);
    ops.push(get(2, (2 * S, 2 * S + MS), "a", 4, vec![]));
    let gone = vec![
        del_ev("a", 4, leased("a", "1", 2)),
        del_ev("b", 4, leased("b", "1", 3)),
    ];
    let w = lease_watcher(vec![resp(3, put_events()), resp(4, gone)]);
    let r = check_all(ops, w, Vec::new());
    let early: Vec<_> = r
        .violations
        .iter()
        .filter(|v| v.kind == V::LeaseExpiredEarly)
        .collect();
    assert_eq!(early.len(), 1, "{r:?}");
    assert!(early[0].detail.contains("revision 4"), "{r:?}");
    assert!(!r.has(V::NotLinearizable), "{r:?}");
}
