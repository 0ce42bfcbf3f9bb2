//! Property test: random appends (with overwrites), hard states, snapshot
//! markers, releases and reopens against a naive `Vec` model of the log,
//! on the glommio WAL (small segments, so rolls and releases happen) and on
//! the in-memory `MemLog`.

use corekv_raftcore::wal::runtime::{ExecutorSettings, run_on_new_executor};
use corekv_raftcore::wal::{LogStorage, MemLog, Wal, WalOptions};
use corekv_raftcore::{Entry, EntryKind, HardState, SnapshotMeta};
use proptest::prelude::*;

/// The naive model: live entries, the snapshot, the hard state.
#[derive(Clone, Debug, Default)]
struct Model {
    first: u64,
    entries: Vec<Entry>,
    snap: Option<SnapshotMeta>,
    hs: HardState,
}

impl Model {
    fn new() -> Self {
        Self {
            first: 1,
            ..Default::default()
        }
    }
    fn snap_index(&self) -> u64 {
        self.snap.as_ref().map_or(0, |s| s.index)
    }
    fn last(&self) -> u64 {
        (self.first + self.entries.len() as u64 - 1).max(self.snap_index())
    }
    fn term(&self, i: u64) -> Option<u64> {
        if i >= self.first && i < self.first + self.entries.len() as u64 {
            return Some(self.entries[(i - self.first) as usize].term);
        }
        self.snap.as_ref().filter(|s| s.index == i).map(|s| s.term)
    }
    fn max_term(&self) -> u64 {
        self.entries
            .last()
            .map_or(0, |e| e.term)
            .max(self.snap.as_ref().map_or(0, |s| s.term))
    }
    fn append(&mut self, ents: &[Entry]) {
        let i = ents[0].index;
        if self.entries.is_empty() {
            self.first = i;
        }
        self.entries.truncate((i - self.first) as usize);
        self.entries.extend_from_slice(ents);
    }
    fn snapshot(&mut self, m: SnapshotMeta) {
        if self.term(m.index) != Some(m.term) {
            self.entries.clear();
            self.first = m.index + 1;
        }
        self.snap = Some(m);
    }
    fn release(&mut self, x: u64) {
        while self.first < x && !self.entries.is_empty() {
            self.entries.remove(0);
            self.first += 1;
        }
        if self.entries.is_empty() {
            self.first = self.first.max(x);
        }
    }
    /// What a restart sees: entries after the snapshot.
    fn after_restart(&self) -> Vec<Entry> {
        self.entries
            .iter()
            .filter(|e| e.index > self.snap_index())
            .cloned()
            .collect()
    }
}

/// Abstract op; the numbers are turned into a valid op for the model state.
#[derive(Clone, Debug)]
enum Op {
    Append {
        back: u16,
        count: u8,
        len: u16,
        bump: bool,
        hs: bool,
    },
    /// `mode` 0: at an index the log holds (keeps the rest); 1: beyond the
    /// log; 2: at an index the log holds with another term (a divergent
    /// follower installing the leader's snapshot: the log restarts).
    Snapshot {
        back: u16,
        mode: u8,
    },
    Release {
        back: u16,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u16>(), 1..6u8, 0..2500u16, any::<bool>(), any::<bool>())
            .prop_map(|(back, count, len, bump, hs)| Op::Append { back, count, len, bump, hs }),
        2 => (any::<u16>(), 0..3u8).prop_map(|(back, mode)| Op::Snapshot { back, mode }),
        1 => any::<u16>().prop_map(|back| Op::Release { back }),
        1 => Just(Op::Reopen),
    ]
}

/// A concrete op, valid for the model.
#[derive(Clone, Debug)]
enum Concrete {
    Append(Vec<Entry>, Option<HardState>),
    Snapshot(SnapshotMeta),
    Release(u64),
    Reopen,
}

fn concretize(m: &Model, op: &Op) -> Concrete {
    match *op {
        Op::Append {
            back,
            count,
            len,
            bump,
            hs,
        } => {
            // Overwrites stay above the snapshot (committed entries are never rewritten).
            let lo = m.first.max(m.snap_index() + 1);
            let hi = m.last() + 1;
            let start = hi - u64::from(back) % (hi - lo + 1);
            let term = m.max_term().max(1) + u64::from(bump);
            let ents: Vec<Entry> = (0..u64::from(count))
                .map(|k| Entry {
                    term,
                    index: start + k,
                    kind: if k % 3 == 2 {
                        EntryKind::ConfChange
                    } else {
                        EntryKind::Normal
                    },
                    data: vec![(start + k) as u8; usize::from(len) / (k as usize + 1)],
                })
                .collect();
            let hs = hs.then_some(HardState {
                term,
                vote: start % 3,
                commit: start - 1,
            });
            Concrete::Append(ents, hs)
        }
        Op::Snapshot { back, mode } => {
            let meta = if mode == 1 {
                SnapshotMeta {
                    index: m.last() + 1 + u64::from(back % 5),
                    term: m.max_term() + 1,
                    conf_state: corekv_raftcore::ConfState {
                        voters: vec![1, 2, 3],
                        learners: vec![4],
                    },
                }
            } else {
                let lo = m.snap_index().max(m.first);
                let hi = m.last();
                if hi < lo || m.term(hi).is_none() {
                    return Concrete::Reopen;
                }
                let index = hi - u64::from(back) % (hi - lo + 1);
                let Some(term) = m.term(index) else {
                    return Concrete::Reopen;
                };
                SnapshotMeta {
                    index,
                    term,
                    conf_state: Default::default(),
                }
            };
            Concrete::Snapshot(meta)
        }
        Op::Release { back } => {
            let hi = m.snap_index() + 1;
            let lo = m.first.min(hi);
            Concrete::Release(hi - u64::from(back) % (hi - lo + 1))
        }
        Op::Reopen => Concrete::Reopen,
    }
}

fn wal_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 64 * 1024,
        max_batch_bytes: 6 * 1024,
        max_record_bytes: 8 * 1024,
        cache_max_bytes: 5 * 1024,
        read_chunk_bytes: 8 * 1024,
        zero_fill_segments: true,
        zero_fill_chunk_bytes: 32 * 1024,
        prepare_next_segment: false,
    }
}

async fn check<L: LogStorage>(log: &L, m: &Model, step: usize) {
    assert_eq!(log.last_index(), m.last(), "step {step}: last index");
    assert_eq!(log.first_index(), m.first, "step {step}: first index");
    assert_eq!(log.hard_state(), m.hs, "step {step}: hard state");
    assert_eq!(log.snapshot(), m.snap.as_ref(), "step {step}: snapshot");
    let got = log
        .read_entries(m.first, m.first + m.entries.len() as u64)
        .await
        .unwrap();
    assert_eq!(got, m.entries, "step {step}: entries");
}

fn run_wal_case(ops: Vec<Op>) {
    let dir = tempfile::Builder::new()
        .prefix("wal-model-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let path = dir.path().to_path_buf();
    run_on_new_executor(
        "wal-model",
        &ExecutorSettings::default(),
        move || async move {
            let (mut wal, _) = Wal::open(&path, wal_opts()).await.unwrap();
            let mut m = Model::new();
            for (step, op) in ops.iter().enumerate() {
                match concretize(&m, op) {
                    Concrete::Append(ents, hs) => {
                        wal.append(&ents, hs).await.unwrap();
                        m.append(&ents);
                        m.hs = hs.unwrap_or(m.hs);
                    }
                    Concrete::Snapshot(meta) => {
                        wal.save_snapshot_marker(&meta).await.unwrap();
                        m.snapshot(meta);
                    }
                    Concrete::Release(x) => {
                        wal.release_before(x).await.unwrap();
                        m.release(x);
                    }
                    Concrete::Reopen => {
                        wal.close().await.unwrap();
                        let (w, rec) = Wal::open(&path, wal_opts()).await.unwrap();
                        wal = w;
                        assert_eq!(
                            rec.entries,
                            m.after_restart(),
                            "step {step}: recovered entries"
                        );
                        assert_eq!(rec.hard_state, m.hs, "step {step}: recovered hard state");
                        assert_eq!(rec.torn_tail, None);
                        m.entries = m.after_restart();
                        m.first = m.snap_index() + 1;
                    }
                }
                check(&wal, &m, step).await;
            }
        },
    )
    .unwrap();
}

fn run_mem_case(ops: Vec<Op>) {
    let mut mem = MemLog::new();
    let mut m = Model::new();
    futures_lite::future::block_on(async {
        for (step, op) in ops.iter().enumerate() {
            match concretize(&m, op) {
                Concrete::Append(ents, hs) => {
                    mem.append(&ents, hs).await.unwrap();
                    m.append(&ents);
                    m.hs = hs.unwrap_or(m.hs);
                }
                Concrete::Snapshot(meta) => {
                    mem.save_snapshot_marker(&meta).await.unwrap();
                    m.snapshot(meta);
                }
                Concrete::Release(x) => {
                    mem.release_before(x).await.unwrap();
                    m.release(x);
                }
                Concrete::Reopen => {
                    // Everything was synced through the trait, so nothing is lost.
                    let rec = mem.crash(0);
                    assert_eq!(rec.entries, m.after_restart(), "step {step}");
                    m.entries = m.after_restart();
                    m.first = m.snap_index() + 1;
                }
            }
            check(&mem, &m, step).await;
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_vec_model(ops in proptest::collection::vec(op(), 1..40)) {
        run_wal_case(ops);
    }

    #[test]
    fn memlog_matches_vec_model(ops in proptest::collection::vec(op(), 1..60)) {
        run_mem_case(ops);
    }
}
