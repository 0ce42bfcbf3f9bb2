//! WAL recovery tests on real files: torn tails, corruption before the
//! tail, missing segments, and crash tests that keep a random subset of the
//! sectors of the last (unsynced) write.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use corekv_raftcore::wal::runtime::{ExecutorSettings, run_on_new_executor};
use corekv_raftcore::wal::{Recovered, Wal, WalError, WalOptions};
use corekv_raftcore::{Entry, EntryKind, HardState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn opts() -> WalOptions {
    WalOptions {
        segment_bytes: 64 * 1024,
        max_batch_bytes: 8 * 1024,
        max_record_bytes: 16 * 1024,
        cache_max_bytes: 8 * 1024,
        read_chunk_bytes: 16 * 1024,
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
        data: vec![(index * 7 % 251) as u8; len],
    }
}

fn tmpdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("wal-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir under CARGO_TARGET_TMPDIR")
}

fn run<G, F, T>(make: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    run_on_new_executor("wal-test", &ExecutorSettings::default(), make).expect("executor")
}

fn open(dir: &Path) -> Result<Recovered, WalError> {
    let dir = dir.to_path_buf();
    run(move || async move {
        let (wal, rec) = Wal::open(&dir, opts()).await?;
        wal.close().await?;
        Ok(rec)
    })
}

/// Writes `batches` appends of `per_batch` entries; returns the entries,
/// and the segment + offset where the last append started and ended.
fn write_batches(
    dir: &Path,
    batches: u64,
    per_batch: u64,
    len: usize,
) -> (Vec<Entry>, PathBuf, u64, u64) {
    let dir = dir.to_path_buf();
    run(move || async move {
        let (mut wal, _) = Wal::open(&dir, opts()).await.unwrap();
        let mut all = Vec::new();
        let mut last_start = (PathBuf::new(), 0);
        for b in 0..batches {
            let ents: Vec<Entry> = (0..per_batch)
                .map(|k| e(1, b * per_batch + k + 1, len))
                .collect();
            let (p, off) = wal.write_position();
            last_start = (p.to_path_buf(), off);
            wal.append(
                &ents,
                Some(HardState {
                    term: 1,
                    vote: 1,
                    commit: b,
                }),
            )
            .await
            .unwrap();
            all.extend(ents);
        }
        let (p, end) = wal.write_position();
        assert_eq!(p, last_start.0, "last batch must not roll");
        wal.close().await.unwrap();
        (all, last_start.0, last_start.1, end)
    })
}

#[test]
fn torn_tail_is_cut_kept_as_broken_copy_and_appends_continue() {
    let dir = tmpdir();
    let (all, seg, start, end) = write_batches(dir.path(), 10, 3, 100);
    // Damage inside the last batch.
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xee; 8], start + (end - start) / 2)
        .unwrap();
    drop(f);

    let rec = open(dir.path()).unwrap();
    let torn = rec.torn_tail.clone().expect("torn tail reported");
    assert!(
        rec.entries.len() >= 27 && rec.entries.len() < 30,
        "{}",
        rec.entries.len()
    );
    assert_eq!(rec.entries[..], all[..rec.entries.len()]);
    assert_eq!(torn.segment, seg);
    assert_eq!(fs::read(&torn.copy).unwrap().len() as u64, torn.bytes);

    // The log continues after the kept prefix, and a second open is clean.
    let next = rec.entries.len() as u64 + 1;
    let path = dir.path().to_path_buf();
    run(move || async move {
        let (mut wal, _) = Wal::open(&path, opts()).await.unwrap();
        wal.append(&[e(2, next, 10)], None).await.unwrap();
        wal.close().await.unwrap();
    });
    let rec2 = open(dir.path()).unwrap();
    assert_eq!(rec2.torn_tail, None);
    assert_eq!(rec2.entries.len() as u64, next);
    assert_eq!(rec2.entries.last(), Some(&e(2, next, 10)));
}

#[test]
fn corruption_in_an_older_segment_refuses_to_open() {
    let dir = tmpdir();
    let (_, last_seg, _, _) = write_batches(dir.path(), 40, 2, 1500);
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 2);
    assert_ne!(segs[0], last_seg);
    let f = fs::OpenOptions::new().write(true).open(&segs[0]).unwrap();
    f.write_all_at(&[0x01], 5000).unwrap();
    drop(f);
    match open(dir.path()) {
        Err(WalError::Corrupted {
            path,
            offset,
            reason,
            ..
        }) => {
            assert_eq!(path, segs[0]);
            assert!(offset <= 5000 && offset + 4096 > 5000, "{offset}");
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

#[test]
fn corruption_far_before_the_tail_of_the_last_segment_refuses_to_open() {
    let dir = tmpdir();
    // Everything in one segment, far more data than one write can cover.
    let path = dir.path().to_path_buf();
    let big = WalOptions {
        segment_bytes: 1 << 20,
        ..opts()
    };
    let seg = run(move || async move {
        let (mut wal, _) = Wal::open(&path, big).await.unwrap();
        for i in 1..=300 {
            wal.append(&[e(1, i, 1000)], None).await.unwrap();
        }
        assert_eq!(wal.segment_count(), 1);
        wal.write_position().0.to_path_buf()
    });
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&[0xff; 4], 2000).unwrap();
    drop(f);
    let dir2 = dir.path().to_path_buf();
    let err = run(move || async move {
        Wal::open(
            &dir2,
            WalOptions {
                segment_bytes: 1 << 20,
                ..opts()
            },
        )
        .await
        .err()
    });
    match err {
        Some(WalError::Corrupted {
            path,
            last_good_index,
            ..
        }) => {
            assert_eq!(path, seg);
            assert!(last_good_index < 3, "{last_good_index}");
        }
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // Nothing was repaired or cut.
    assert!(
        !fs::read_dir(dir.path()).unwrap().any(|d| d
            .unwrap()
            .path()
            .to_string_lossy()
            .ends_with(".broken"))
    );
}

#[test]
fn a_missing_segment_refuses_to_open() {
    let dir = tmpdir();
    write_batches(dir.path(), 60, 2, 1500);
    let mut segs: Vec<PathBuf> = fs::read_dir(dir.path())
        .unwrap()
        .map(|d| d.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3);
    fs::remove_file(&segs[1]).unwrap();
    match open(dir.path()) {
        Err(WalError::Corrupted { reason, .. }) => assert!(reason.contains("sequence"), "{reason}"),
        other => panic!("expected Corrupted, got {other:?}"),
    }
}

/// Crash test: the last append was written but its fdatasync never
/// completed, so the device kept an arbitrary subset of its 512-byte
/// sectors. Recovery must return everything synced before plus a prefix
/// of the last batch, never an error.
#[test]
fn crash_keeping_random_sectors_of_the_unsynced_write_recovers_a_prefix() {
    for seed in 0..24u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tmpdir();
        let batches = rng.random_range(1..6u64);
        let per = rng.random_range(1..20u64);
        let len = rng.random_range(0..700usize);
        let (synced, _, _, _) = write_batches(dir.path(), batches, per, len);
        let seg_before: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(dir.path())
            .unwrap()
            .map(|d| d.unwrap().path())
            .map(|p| {
                let b = fs::read(&p).unwrap();
                (p, b)
            })
            .collect();

        let last: Vec<Entry> = (0..rng.random_range(1..30u64))
            .map(|k| {
                e(
                    2,
                    synced.len() as u64 + k + 1,
                    rng.random_range(0..900usize),
                )
            })
            .collect();
        let path = dir.path().to_path_buf();
        let last2 = last.clone();
        let (seg, start, end) = run(move || async move {
            let (mut wal, _) = Wal::open(&path, opts()).await.unwrap();
            let (p, start) = wal.write_position();
            let p = p.to_path_buf();
            wal.append(
                &last2,
                Some(HardState {
                    term: 2,
                    vote: 1,
                    commit: 0,
                }),
            )
            .await
            .unwrap();
            let (p2, end) = wal.write_position();
            let p2 = p2.to_path_buf();
            wal.close().await.unwrap();
            if p2 != p {
                (None, start, end)
            } else {
                (Some(p), start, end)
            }
        });
        let Some(seg) = seg else { continue }; // rolled: not the case under test
        let old = &seg_before.iter().find(|(p, _)| *p == seg).unwrap().1;
        let new = fs::read(&seg).unwrap();
        let mut mixed = new.clone();
        let from = (start / 4096 * 4096) as usize;
        let to = (end.div_ceil(4096) * 4096) as usize;
        for s in (from..to).step_by(512) {
            if rng.random_bool(0.5) {
                mixed[s..s + 512].copy_from_slice(&old[s..s + 512]);
            }
        }
        fs::write(&seg, &mixed).unwrap();

        let rec = open(dir.path()).unwrap_or_else(|err| panic!("seed {seed}: {err}"));
        let n = rec.entries.len();
        assert!(
            n >= synced.len(),
            "seed {seed}: lost synced entries ({n} < {})",
            synced.len()
        );
        let mut want = synced.clone();
        want.extend(last.iter().cloned());
        assert_eq!(rec.entries[..], want[..n], "seed {seed}: not a prefix");
        // Reopening again is stable and clean.
        let rec2 = open(dir.path()).unwrap();
        assert_eq!(rec2.entries, rec.entries, "seed {seed}");
        assert_eq!(rec2.torn_tail, None, "seed {seed}");
    }
}
