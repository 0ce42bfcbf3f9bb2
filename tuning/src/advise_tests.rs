use super::*;
use crate::fsync::FsyncReport;
use crate::parse::{KernelVersion, MemInfo, SoftHard};
use crate::probe::{BlockDevice, CpuInfo, FsInfo, VmSettings};
use crate::uring::IoUringProbe;

fn fsync(p50: u64, p99: u64, max: u64, block_bytes: usize) -> FsyncReport {
    FsyncReport {
        samples: 100,
        block_bytes,
        o_direct: true,
        preallocated: true,
        latency_us_min: p50 / 2,
        latency_us_p50: p50,
        latency_us_p99: p99,
        latency_us_max: max,
        latency_us_mean: p50,
    }
}

/// A healthy 8-core NVMe host.
fn good_host() -> HostProbe {
    HostProbe {
        tool_version: "test".to_string(),
        data_dir: "/var/lib/corekv".into(),
        cpu: CpuInfo {
            online: (0..8).collect(),
            isolated: vec![],
            usable: 8,
            governors: vec!["performance".to_string()],
        },
        memory: Some(MemInfo {
            total_bytes: 64 * GIB,
            available_bytes: Some(60 * GIB),
        }),
        kernel: Some(KernelVersion {
            release: "6.1.0".to_string(),
            major: 6,
            minor: 1,
            patch: 0,
        }),
        io_uring: IoUringProbe {
            status: IoUringStatus::Supported,
            errno: None,
            error: None,
            sysctl_disabled: Some(0),
        },
        memlock: Some(SoftHard {
            soft: Limit::Unlimited,
            hard: Limit::Unlimited,
        }),
        cap_ipc_lock: Some(false),
        filesystem: Some(FsInfo {
            fs_type: "xfs".to_string(),
            mount_point: "/var/lib/corekv".to_string(),
            source: "/dev/nvme0n1p2".to_string(),
            available_bytes: Some(500 * GIB),
        }),
        block_device: Some(BlockDevice {
            name: "nvme0n1".to_string(),
            rotational: Some(false),
            scheduler: Some("none".to_string()),
            nr_requests: Some(1023),
            write_cache: Some("write through".to_string()),
            logical_block_bytes: Some(4096),
        }),
        thp_enabled: Some("madvise".to_string()),
        thp_defrag: Some("madvise".to_string()),
        vm: VmSettings {
            swappiness: Some(1),
            dirty_ratio: Some(0),
            dirty_background_ratio: Some(0),
            dirty_bytes: Some(256 * MIB),
            dirty_background_bytes: Some(64 * MIB),
            dirty_expire_centisecs: Some(3000),
            dirty_writeback_centisecs: Some(100),
        },
        fsync: fsync(50, 100, 400, 4096),
        bandwidth: Some(fsync(1000, 1500, 2000, 1 << 20)),
        unavailable: vec![],
    }
}

fn advise_default(probe: &HostProbe) -> Advice {
    advise(probe, &AdviceOptions::default()).expect("advice")
}

#[test]
fn healthy_host_has_no_warnings() {
    let a = advise_default(&good_host());
    let serious: Vec<_> = a
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
        .collect();
    assert!(serious.is_empty(), "{serious:?}");
    assert_eq!(a.setting("cores"), Some("8"));
    assert_eq!(a.setting("pin_cores"), Some("true"));
    assert_eq!(a.setting("io_memory_bytes"), Some("10485760"));
    assert_eq!(
        a.setting("quota_backend_bytes"),
        Some(&*(8 * GIB).to_string())
    );
}

#[test]
fn pinning_only_when_cores_cover_executors() {
    let mut host = good_host();
    host.cpu.usable = 2;
    let three = AdviceOptions {
        executors: Some(3),
        ..AdviceOptions::default()
    };
    let a = advise(&host, &three).expect("advice");
    assert_eq!(a.setting("cores"), Some("3"));
    assert_eq!(a.setting("pin_cores"), Some("false"));
    let two = AdviceOptions {
        executors: Some(2),
        ..AdviceOptions::default()
    };
    assert_eq!(
        advise(&host, &two).expect("advice").setting("pin_cores"),
        Some("true")
    );
    let zero = AdviceOptions {
        executors: Some(0),
        ..AdviceOptions::default()
    };
    assert!(matches!(
        advise(&host, &zero),
        Err(TuneError::InvalidArgument { .. })
    ));
}

#[test]
fn isolated_cores_become_the_cpu_set() {
    let mut host = good_host();
    host.cpu.isolated = vec![4, 5, 6, 7];
    let opts = AdviceOptions {
        executors: Some(3),
        ..AdviceOptions::default()
    };
    assert_eq!(
        advise(&host, &opts).expect("advice").setting("cpu_set"),
        Some("4,5,6")
    );
    let opts = AdviceOptions {
        executors: Some(6),
        ..AdviceOptions::default()
    };
    let a = advise(&host, &opts).expect("advice");
    assert_eq!(a.setting("cpu_set"), None);
    assert!(a.has_finding("isolated cores"));
}

#[test]
fn heartbeat_follows_rtt_with_a_floor() {
    let host = good_host();
    let a = advise_default(&host);
    // 1 ms round trip is under the 10 ms floor; fast disk: 10x heartbeat dominates.
    assert_eq!(a.setting("heartbeat_interval_ms"), Some("10"));
    assert_eq!(a.setting("election_timeout_ms"), Some("100"));
    let wan = AdviceOptions {
        peer_rtt_us: 49_500,
        ..AdviceOptions::default()
    };
    let a = advise(&host, &wan).expect("advice");
    assert_eq!(a.setting("heartbeat_interval_ms"), Some("50"));
    assert_eq!(a.setting("election_timeout_ms"), Some("500"));
}

#[test]
fn slow_fsync_stretches_election_timeout() {
    let mut host = good_host();
    // p99 25 ms: 10x = 250 ms, beyond 10x heartbeat (100 ms).
    host.fsync = fsync(5_000, 25_000, 30_000, 4096);
    let a = advise_default(&host);
    assert_eq!(a.setting("election_timeout_ms"), Some("250"));
    assert!(a.has_finding("fsync latency"));
    // A single 180 ms stall: 2x max = 360 ms, rounded up to whole 10 ms heartbeats.
    host.fsync = fsync(100, 200, 178_500, 4096);
    let a = advise_default(&host);
    assert_eq!(a.setting("election_timeout_ms"), Some("360"));
    assert!(!a.has_finding("fsync latency"));
}

#[test]
fn wal_batch_is_bandwidth_delay_product() {
    let mut host = good_host();
    // 1 MiB in 1 ms = 1000 MiB/s; fsync p50 50 us -> ~51 KiB, clamped up to 64 KiB.
    assert_eq!(
        advise_default(&host).setting("wal_batch_max_bytes"),
        Some("65536")
    );
    // 1000 MiB/s x fsync p50 700 us = 700 KiB -> 512 KiB power of two.
    host.fsync = fsync(700, 2000, 3000, 4096);
    assert_eq!(
        advise_default(&host).setting("wal_batch_max_bytes"),
        Some("524288")
    );
    // Huge product is clamped to the maximum.
    host.fsync = fsync(100_000, 200_000, 300_000, 4096);
    assert_eq!(
        advise_default(&host).setting("wal_batch_max_bytes"),
        Some(&*(4 * MIB).to_string())
    );
    host.bandwidth = None;
    assert_eq!(
        advise_default(&host).setting("wal_batch_max_bytes"),
        Some("1048576")
    );
}

#[test]
fn quota_bounded_by_memory_and_disk() {
    let mut host = good_host();
    host.memory = Some(MemInfo {
        total_bytes: 6 * GIB,
        available_bytes: None,
    });
    assert_eq!(
        advise_default(&host).setting("quota_backend_bytes"),
        Some(&*(3 * GIB).to_string())
    );
    if let Some(fs) = host.filesystem.as_mut() {
        fs.available_bytes = Some(GIB + 100 * MIB);
    }
    // Half of 1124 MiB = 562 MiB, rounded down to 512 MiB.
    assert_eq!(
        advise_default(&host).setting("quota_backend_bytes"),
        Some(&*(512 * MIB).to_string())
    );
    if let Some(fs) = host.filesystem.as_mut() {
        fs.available_bytes = Some(300 * MIB);
    }
    assert!(advise_default(&host).has_finding("quota"));
}

#[test]
fn memlock_fits_io_memory_or_warns() {
    let mut host = good_host();
    host.cpu.usable = 2;
    host.memlock = Some(SoftHard {
        soft: Limit::Bytes(8 * MIB),
        hard: Limit::Bytes(8 * MIB),
    });
    // 2 executors x 3 rings x 10 MiB = 60 MiB > 8 MiB: fit to 8 MiB / 6 = 1.33 MiB -> 1344 KiB.
    let a = advise_default(&host);
    assert_eq!(
        a.setting("io_memory_bytes"),
        Some(&*(1344 * KIB).to_string())
    );
    assert!(
        a.findings
            .iter()
            .any(|f| f.check == "memlock" && f.severity == Severity::Warning)
    );
    // Three members on one host share the budget.
    let three = AdviceOptions {
        members_per_host: 3,
        executors: Some(1),
        ..AdviceOptions::default()
    };
    let a = advise(&host, &three).expect("advice");
    assert_eq!(
        a.setting("io_memory_bytes"),
        Some(&*(896 * KIB).to_string())
    );
    // CAP_IPC_LOCK exempts registration: keep the default, only a note.
    host.cap_ipc_lock = Some(true);
    let a = advise_default(&host);
    assert_eq!(a.setting("io_memory_bytes"), Some("10485760"));
    assert!(
        a.findings
            .iter()
            .any(|f| f.check == "memlock" && f.severity == Severity::Note)
    );
    // Below glommio's floor nothing starts.
    host.memlock = Some(SoftHard {
        soft: Limit::Bytes(64 * KIB),
        hard: Limit::Bytes(64 * KIB),
    });
    let a = advise_default(&host);
    assert!(
        a.findings
            .iter()
            .any(|f| f.check == "memlock" && f.severity == Severity::Critical)
    );
}

#[test]
fn host_warnings() {
    let mut host = good_host();
    host.io_uring.status = IoUringStatus::Disabled;
    host.io_uring.error = Some("Operation not permitted".to_string());
    host.io_uring.sysctl_disabled = Some(2);
    host.thp_enabled = Some("always".to_string());
    host.vm.swappiness = Some(60);
    host.cpu.governors = vec!["performance".to_string(), "powersave".to_string()];
    host.fsync.o_direct = false;
    host.kernel = KernelVersion {
        release: "5.4.0".to_string(),
        major: 5,
        minor: 4,
        patch: 0,
    }
    .into();
    if let Some(dev) = host.block_device.as_mut() {
        dev.rotational = Some(true);
        dev.scheduler = Some("bfq".to_string());
    }
    host.vm.dirty_bytes = Some(0);
    host.vm.dirty_ratio = Some(20);
    let a = advise_default(&host);
    for check in [
        "io_uring",
        "transparent hugepages",
        "swappiness",
        "CPU governor",
        "O_DIRECT",
        "kernel",
        "rotational disk",
        "IO scheduler",
        "dirty page limit",
    ] {
        assert!(a.has_finding(check), "missing {check}: {:?}", a.findings);
    }
    let uring = a
        .findings
        .iter()
        .find(|f| f.check == "io_uring")
        .expect("io_uring finding");
    assert_eq!(uring.severity, Severity::Critical);
    assert!(uring.message.contains("io_uring_disabled = 2"));
}

#[test]
fn volatile_filesystem_is_critical() {
    let mut host = good_host();
    assert!(!advise_default(&host).has_finding("volatile filesystem"));
    if let Some(fs) = host.filesystem.as_mut() {
        fs.fs_type = "tmpfs".to_string();
    }
    let a = advise_default(&host);
    let f = a
        .findings
        .iter()
        .find(|f| f.check == "volatile filesystem")
        .expect("tmpfs flagged");
    assert_eq!(f.severity, Severity::Critical);
}

#[test]
fn helpers() {
    assert_eq!(prev_power_of_two(0), 0);
    assert_eq!(prev_power_of_two(1), 1);
    assert_eq!(prev_power_of_two(65_536), 65_536);
    assert_eq!(prev_power_of_two(65_537), 65_536);
    assert_eq!(ceil_ms(1), 1);
    assert_eq!(ceil_ms(1000), 1);
    assert_eq!(ceil_ms(1001), 2);
    assert_eq!(fmt_limit(Limit::Bytes(8 * MIB)), "8 MiB");
    assert_eq!(fmt_limit(Limit::Bytes(100 * KIB)), "100 KiB");
    assert_eq!(fmt_limit(Limit::Unlimited), "unlimited");
}
