//! Unit tests of the glommio WAL that need its internals (failpoints,
//! stats). Crash, torn-tail and model tests are in `raftcore/tests/wal*.rs`.

use std::path::PathBuf;

use super::log::FailPoint;
use super::runtime::{ExecutorSettings, run_on_new_executor};
use super::*;
use crate::types::{EntryKind, HardState, SnapshotMeta};

fn small_opts() -> WalOptions {
    WalOptions {
        segment_bytes: 64 * 1024,
        max_batch_bytes: 8 * 1024,
        max_record_bytes: 32 * 1024,
        cache_max_bytes: 4 * 1024,
        read_chunk_bytes: 8 * 1024,
        zero_fill_segments: true,
        zero_fill_chunk_bytes: 16 * 1024,
        prepare_next_segment: true,
    }
}

fn e(term: u64, index: u64, len: usize) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: vec![(index % 251) as u8; len],
    }
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wal-unit-")
        .tempdir_in("/var/tmp")
        .expect("tempdir in /var/tmp")
}

fn run<G, F, T>(make: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    run_on_new_executor("wal-unit-test", &ExecutorSettings::default(), make).expect("executor")
}

#[test]
fn append_then_reopen_returns_everything() {
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    run(move || async move {
        let (mut wal, rec) = Wal::open(&path, small_opts()).await.unwrap();
        assert_eq!(rec, Recovered::default());
        let hs = HardState {
            term: 2,
            vote: 1,
            commit: 3,
        };
        wal.append(&[e(1, 1, 10), e(1, 2, 0)], None).await.unwrap();
        wal.append(&[e(2, 3, 300), e(2, 4, 5000)], Some(hs))
            .await
            .unwrap();
        wal.append(&[], Some(HardState { commit: 4, ..hs }))
            .await
            .unwrap();
        assert_eq!(wal.stats().fsyncs, 3);
        wal.close().await.unwrap();

        let (wal, rec) = Wal::open(&path, small_opts()).await.unwrap();
        assert_eq!(
            rec.entries,
            vec![e(1, 1, 10), e(1, 2, 0), e(2, 3, 300), e(2, 4, 5000)]
        );
        assert_eq!(rec.hard_state, HardState { commit: 4, ..hs });
        assert_eq!(rec.torn_tail, None);
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.term(3)),
            (1, 4, Some(2))
        );
        assert_eq!(
            wal.read_entries(2, 5).await.unwrap(),
            rec.entries[1..].to_vec()
        );
    });
}

#[test]
fn overwrite_replaces_suffix_in_memory_and_after_reopen() {
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    run(move || async move {
        let (mut wal, _) = Wal::open(&path, small_opts()).await.unwrap();
        let first: Vec<Entry> = (1..=6).map(|i| e(1, i, 40)).collect();
        wal.append(&first, None).await.unwrap();
        wal.append(&[e(2, 4, 7)], None).await.unwrap();
        assert_eq!(wal.last_index(), 4);
        assert!(wal.read_entries(4, 6).await.is_err());
        wal.close().await.unwrap();
        let (_, rec) = Wal::open(&path, small_opts()).await.unwrap();
        let mut want = first[..3].to_vec();
        want.push(e(2, 4, 7));
        assert_eq!(rec.entries, want);
    });
}

#[test]
fn large_append_is_split_into_bounded_writes_with_one_fdatasync() {
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    run(move || async move {
        let (mut wal, _) = Wal::open(&path, small_opts()).await.unwrap();
        let ents: Vec<Entry> = (1..=100).map(|i| e(1, i, 256)).collect();
        wal.append(&ents, None).await.unwrap();
        let st = wal.stats();
        assert_eq!(st.fsyncs, 1);
        assert!(st.writes >= 3, "{st:?}");
        let max_write = small_opts().max_batch_bytes as u64 + 2 * 4096;
        assert!(st.bytes_written <= st.writes * max_write);
        wal.close().await.unwrap();
        let (_, rec) = Wal::open(&path, small_opts()).await.unwrap();
        assert_eq!(rec.entries, ents);
    });
}

#[test]
fn rolls_segments_reads_old_entries_and_releases_below_snapshot() {
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    run(move || async move {
        let (mut wal, _) = Wal::open(&path, small_opts()).await.unwrap();
        let hs = HardState {
            term: 1,
            vote: 1,
            commit: 0,
        };
        for i in 1..=400u64 {
            let hs = (i % 50 == 0).then_some(HardState {
                commit: i - 1,
                ..hs
            });
            wal.append(&[e(1, i, 600)], hs).await.unwrap();
        }
        assert!(wal.segment_count() >= 4, "{}", wal.segment_count());
        // Old entries come from disk (the cache holds ~6 entries).
        let got = wal.read_entries(1, 401).await.unwrap();
        assert_eq!(got, (1..=400).map(|i| e(1, i, 600)).collect::<Vec<_>>());

        let meta = SnapshotMeta {
            index: 300,
            term: 1,
            ..Default::default()
        };
        wal.save_snapshot_marker(&meta).await.unwrap();
        assert!(wal.release_before(302).await.is_err());
        let before = wal.segment_count();
        let removed = wal.release_before(290).await.unwrap();
        assert!(removed >= 2 && wal.segment_count() == before - removed);
        assert_eq!(wal.first_index(), 290);
        assert_eq!(wal.read_entries(290, 292).await.unwrap()[0], e(1, 290, 600));
        wal.close().await.unwrap();

        let (wal, rec) = Wal::open(&path, small_opts()).await.unwrap();
        assert_eq!(rec.snapshot, Some(meta));
        assert_eq!(rec.hard_state, HardState { commit: 399, ..hs });
        assert_eq!(
            rec.entries,
            (301..=400).map(|i| e(1, i, 600)).collect::<Vec<_>>()
        );
        assert_eq!(wal.first_index(), 301);
    });
}

#[test]
fn snapshot_marker_beyond_the_log_restarts_it() {
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    run(move || async move {
        let (mut wal, _) = Wal::open(&path, small_opts()).await.unwrap();
        wal.append(&[e(1, 1, 1), e(1, 2, 1)], None).await.unwrap();
        let meta = SnapshotMeta {
            index: 10,
            term: 3,
            ..Default::default()
        };
        wal.save_snapshot_marker(&meta).await.unwrap();
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.term(10)),
            (11, 10, Some(3))
        );
        assert!(wal.append(&[e(3, 12, 1)], None).await.is_err());
        wal.append(&[e(3, 11, 1)], None).await.unwrap();
        wal.release_before(11).await.unwrap();
        assert_eq!(wal.segment_count(), 1);
        wal.close().await.unwrap();
        let (_, rec) = Wal::open(&path, small_opts()).await.unwrap();
        assert_eq!(rec.entries, vec![e(3, 11, 1)]);
        assert_eq!(rec.snapshot, Some(meta));
    });
}

#[test]
fn invalid_appends_are_refused_without_failing_the_log() {
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    run(move || async move {
        let (mut wal, _) = Wal::open(&path, small_opts()).await.unwrap();
        assert!(matches!(
            wal.append(&[e(1, 2, 1)], None).await,
            Err(WalError::InvalidArgument { .. })
        ));
        assert!(matches!(
            wal.append(&[e(1, 1, 40_000)], None).await,
            Err(WalError::RecordTooLarge { index: 1, .. })
        ));
        wal.append(&[e(1, 1, 1)], None).await.unwrap();
        assert!(wal.failure().is_none());
    });
}

fn fail_stop_case(point: FailPoint) {
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    run(move || async move {
        let (mut wal, _) = Wal::open(&path, small_opts()).await.unwrap();
        wal.append(&[e(1, 1, 8)], None).await.unwrap();
        wal.failpoint = Some(point);
        let err = wal.append(&[e(1, 2, 8)], None).await.unwrap_err();
        assert!(matches!(err, WalError::Io { .. }), "{err}");
        wal.failpoint = None;
        // Latched: nothing is retried, every call fails.
        for r in [
            wal.append(&[e(1, 2, 8)], None).await,
            wal.save_snapshot_marker(&SnapshotMeta::default()).await,
            wal.release_before(1).await.map(|_| ()),
            wal.read_entries(1, 2).await.map(|_| ()),
        ] {
            assert!(matches!(r, Err(WalError::Failed { .. })), "{r:?}");
        }
        assert!(wal.failure().unwrap().contains("injected"));
        drop(wal);
        let (_, rec) = Wal::open(&path, small_opts()).await.unwrap();
        assert_eq!(rec.entries[0], e(1, 1, 8));
    });
}

#[test]
fn failed_write_latches_the_log() {
    fail_stop_case(FailPoint::Write);
}

#[test]
fn failed_fdatasync_latches_the_log() {
    fail_stop_case(FailPoint::Sync);
}

#[test]
fn storage_trait_is_implemented_by_both_logs() {
    async fn exercise<L: LogStorage>(log: &mut L) -> Vec<Entry> {
        log.append(
            &[e(1, 1, 3), e(1, 2, 3), e(1, 3, 3)],
            Some(HardState {
                term: 1,
                vote: 0,
                commit: 2,
            }),
        )
        .await
        .unwrap();
        log.append(&[e(2, 3, 4)], None).await.unwrap();
        log.save_snapshot_marker(&SnapshotMeta {
            index: 2,
            term: 1,
            ..Default::default()
        })
        .await
        .unwrap();
        log.release_before(2).await.unwrap();
        assert_eq!(
            (log.first_index(), log.last_index(), log.term(3)),
            (2, 3, Some(2))
        );
        log.read_entries(2, 4).await.unwrap()
    }
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    let from_wal = run(move || async move {
        let (mut wal, _) = Wal::open(&path, small_opts()).await.unwrap();
        exercise(&mut wal).await
    });
    let mut mem = MemLog::new();
    let from_mem = futures_lite::future::block_on(exercise(&mut mem));
    assert_eq!(from_wal, from_mem);
}

#[test]
fn divergent_log_is_dropped_by_a_conflicting_snapshot_marker_across_reopen() {
    let dir = tmpdir();
    let path: PathBuf = dir.path().into();
    run(move || async move {
        let (mut wal, _) = Wal::open(&path, small_opts()).await.unwrap();
        let ents: Vec<Entry> = (1..=5).map(|i| e(1, i, 9)).collect();
        wal.append(&ents, None).await.unwrap();
        // The leader's snapshot at 3 has term 2: our entries 1..=5 diverge.
        let meta = SnapshotMeta {
            index: 3,
            term: 2,
            ..Default::default()
        };
        wal.save_snapshot_marker(&meta).await.unwrap();
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.term(4)),
            (4, 3, None)
        );
        wal.close().await.unwrap();
        let (wal, rec) = Wal::open(&path, small_opts()).await.unwrap();
        assert_eq!(rec.entries, vec![]);
        assert_eq!(
            (wal.first_index(), wal.last_index(), wal.term(3)),
            (4, 3, Some(2))
        );
    });
}
