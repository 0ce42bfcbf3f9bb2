//! The probe against real directories: the fsync loop on the real disk, and
//! the full collection against both this host and a fixture tree with odd
//! contents. No timing assertions: latencies are only checked for order.

use std::path::Path;

use corekv_tuning::fsync::{self, FsyncOptions};
use corekv_tuning::host::HostFs;
use corekv_tuning::probe::{self, ProbeOptions};

fn scratch(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("tempdir under CARGO_TARGET_TMPDIR")
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("list").next().is_none()
}

#[test]
fn fsync_loop_measures_and_cleans_up() {
    let dir = scratch("fsync");
    let report = fsync::measure(dir.path(), &FsyncOptions::small_writes(20)).expect("measure");
    assert_eq!(report.samples, 20);
    assert_eq!(report.block_bytes, 4096);
    assert!(report.latency_us_min <= report.latency_us_p50);
    assert!(report.latency_us_p50 <= report.latency_us_p99);
    assert!(report.latency_us_p99 <= report.latency_us_max);
    assert!(is_empty_dir(dir.path()), "probe file left behind");
}

#[test]
fn fsync_loop_wraps_inside_a_small_file() {
    let dir = scratch("fsync-wrap");
    let opts = FsyncOptions {
        samples: 10,
        block_bytes: 8192,
        max_file_bytes: 3 * 8192,
    };
    let report = fsync::measure(dir.path(), &opts).expect("measure");
    assert_eq!(report.samples, 10);
    assert!(is_empty_dir(dir.path()));
}

#[test]
fn fsync_loop_reports_missing_dir() {
    let dir = scratch("fsync-missing");
    let err = fsync::measure(&dir.path().join("absent"), &FsyncOptions::small_writes(1))
        .expect_err("no dir");
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn probe_this_host() {
    let dir = scratch("probe-host");
    let opts = ProbeOptions {
        data_dir: dir.path().to_path_buf(),
        fsync: FsyncOptions::small_writes(10),
        bandwidth: Some(FsyncOptions::large_writes(2)),
    };
    let p = probe::collect(&HostFs::system(), &opts).expect("probe");
    assert!(p.online_cores() >= 1 && p.cpu.usable >= 1);
    assert!(p.memory.is_some_and(|m| m.total_bytes > 0));
    assert!(p.kernel.is_some());
    assert_eq!(p.bandwidth.as_ref().map(|b| b.samples), Some(2));
    // JSON round trip: `advise --from-probe` reads what `probe --output json` writes.
    let text = serde_json::to_string(&p).expect("serialize");
    let back: probe::HostProbe = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, p);
    assert!(is_empty_dir(dir.path()));
}

#[test]
fn probe_survives_odd_sys_contents() {
    let root = scratch("probe-odd-root");
    let data = scratch("probe-odd-data");
    let w = |rel: &str, text: &str| {
        let path = root.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    };
    w("sys/devices/system/cpu/online", "0-99999999\n");
    w("sys/devices/system/cpu/isolated", "\n");
    w("proc/meminfo", "MemTotal: lots\n");
    w("proc/sys/kernel/osrelease", "\u{0}\u{1}garbage");
    w("proc/self/limits", "Max locked memory  x  y  bytes\n");
    w("proc/self/status", "Uid:\n");
    w("proc/self/mountinfo", "not a mountinfo line\n");
    w(
        "sys/kernel/mm/transparent_hugepage/enabled",
        "always madvise never\n",
    );
    w("proc/sys/vm/swappiness", "-5\n");
    // Binary junk that is not UTF-8 at all.
    std::fs::write(
        root.path().join("proc/sys/vm/dirty_ratio"),
        [0xff, 0xfe, 0x00],
    )
    .expect("write");
    let opts = ProbeOptions {
        data_dir: data.path().to_path_buf(),
        fsync: FsyncOptions::small_writes(3),
        bandwidth: None,
    };
    let p = probe::collect(&HostFs::with_root(root.path()), &opts).expect("probe degrades");
    assert!(p.cpu.online.is_empty());
    assert!(p.memory.is_none() && p.kernel.is_none() && p.memlock.is_none());
    assert!(p.cap_ipc_lock.is_none() && p.filesystem.is_none() && p.thp_enabled.is_none());
    assert!(p.vm.swappiness.is_none() && p.vm.dirty_ratio.is_none());
    for item in [
        "online CPUs",
        "memory",
        "kernel version",
        "RLIMIT_MEMLOCK",
        "vm.dirty_ratio",
    ] {
        assert!(
            p.unavailable.iter().any(|u| u.item == item),
            "{item} not reported: {:?}",
            p.unavailable
        );
    }
    // Advice still works on a degraded probe.
    let a = corekv_tuning::advise::advise(&p, &Default::default()).expect("advice");
    assert_eq!(
        a.setting("cores").map(str::to_string),
        Some(p.cpu.usable.to_string())
    );
}
