//! Turns a [`HostProbe`] into recommended corekv settings, each with the
//! reason it was chosen, plus warnings about the host.
//!
//! Pure: no IO, so every rule is unit-tested against synthetic probes.

use serde::{Deserialize, Serialize};

use crate::error::{Result, TuneError};
use crate::parse::Limit;
use crate::probe::HostProbe;
use crate::uring::IoUringStatus;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// glommio refuses to start an executor below this RLIMIT_MEMLOCK.
pub const GLOMMIO_MIN_MEMLOCK_BYTES: u64 = 512 * KIB;
/// glommio never uses less io memory than this per executor.
pub const GLOMMIO_MIN_IO_MEMORY_BYTES: u64 = 64 * KIB;
/// glommio 0.9 creates and registers buffers with this many rings per executor.
pub const GLOMMIO_RINGS_PER_EXECUTOR: u64 = 3;
/// glommio's default io memory per executor.
pub const GLOMMIO_DEFAULT_IO_MEMORY_BYTES: u64 = 10 * MIB;
/// Filesystems that keep data only in memory. tmpfs accepts O_DIRECT since
/// Linux 6.6, so the O_DIRECT check alone does not catch it.
pub const VOLATILE_FILESYSTEMS: &[&str] = &["tmpfs", "ramfs", "devtmpfs"];
/// Oldest kernel glommio supports.
pub const GLOMMIO_MIN_KERNEL: (u32, u32) = (5, 8);

/// Knobs of the advice rules. Defaults follow etcd's tuning guide where it
/// has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdviceOptions {
    /// Executors the member will run (`--cores`); `None`: every usable core.
    pub executors: Option<u32>,
    /// corekv members sharing this host and user (tests run 3 on one box);
    /// they share one RLIMIT_MEMLOCK budget for registered buffers.
    pub members_per_host: u32,
    /// Round trip between members. Not measurable from one host, so given.
    pub peer_rtt_us: u64,
    /// Heartbeats below this cost CPU for no availability gain.
    pub min_heartbeat_ms: u64,
    /// Election timeout as a multiple of the heartbeat (etcd: ~10x).
    pub election_heartbeats: u64,
    /// Election timeout at least this many fsync p99s, so a slow disk on the
    /// leader does not look like a dead leader.
    pub election_fsync_p99_factor: u64,
    /// ... and at least this many of the worst observed fsync.
    pub election_fsync_max_factor: u64,
    /// io memory per executor corekv asks glommio for.
    pub io_memory_bytes: u64,
    pub wal_batch_min_bytes: u64,
    pub wal_batch_max_bytes: u64,
    /// etcd's documented maximum useful backend quota.
    pub quota_max_bytes: u64,
    pub quota_min_bytes: u64,
    /// Swappiness above this is warned about.
    pub swappiness_max: u64,
    /// etcd's guidance: WAL fsync p99 should stay below 10 ms.
    pub fsync_p99_warn_us: u64,
}

impl Default for AdviceOptions {
    fn default() -> Self {
        AdviceOptions {
            executors: None,
            members_per_host: 1,
            peer_rtt_us: 1000,
            min_heartbeat_ms: 10,
            election_heartbeats: 10,
            election_fsync_p99_factor: 10,
            election_fsync_max_factor: 2,
            io_memory_bytes: GLOMMIO_DEFAULT_IO_MEMORY_BYTES,
            wal_batch_min_bytes: 64 * KIB,
            wal_batch_max_bytes: 4 * MIB,
            quota_max_bytes: 8 * GIB,
            quota_min_bytes: 256 * MIB,
            swappiness_max: 10,
            fsync_p99_warn_us: 10_000,
        }
    }
}

/// One recommended setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Setting {
    pub key: String,
    pub value: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// corekv will not start or will violate its targets.
    Critical,
    /// Costs latency or stability; fix it on a production host.
    Warning,
    /// Worth knowing; no action needed.
    Note,
}

/// A finding about the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub check: String,
    pub message: String,
    pub fix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advice {
    pub settings: Vec<Setting>,
    pub findings: Vec<Finding>,
}

impl Advice {
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|s| s.key == key)
            .map(|s| s.value.as_str())
    }

    pub fn has_finding(&self, check: &str) -> bool {
        self.findings.iter().any(|f| f.check == check)
    }

    fn set(&mut self, key: &str, value: impl ToString, reason: String) {
        self.settings.push(Setting {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        });
    }

    fn find(&mut self, severity: Severity, check: &str, message: String, fix: Option<&str>) {
        self.findings.push(Finding {
            severity,
            check: check.to_string(),
            message,
            fix: fix.map(str::to_string),
        });
    }
}

/// Applies every rule.
pub fn advise(probe: &HostProbe, opts: &AdviceOptions) -> Result<Advice> {
    if opts.executors == Some(0) {
        return Err(TuneError::InvalidArgument {
            name: "cores",
            detail: "at least one executor is needed".to_string(),
        });
    }
    if opts.members_per_host == 0 || opts.election_heartbeats == 0 {
        return Err(TuneError::InvalidArgument {
            name: "members-per-host",
            detail: "must be at least 1".to_string(),
        });
    }
    let mut advice = Advice {
        settings: Vec::new(),
        findings: Vec::new(),
    };
    let executors = cores(probe, opts, &mut advice);
    timing(probe, opts, &mut advice);
    wal_batch(probe, opts, &mut advice);
    quota(probe, opts, &mut advice);
    memlock(probe, opts, executors, &mut advice);
    host_findings(probe, opts, &mut advice);
    Ok(advice)
}

fn cores(probe: &HostProbe, opts: &AdviceOptions, advice: &mut Advice) -> u32 {
    let usable = probe.cpu.usable.max(1);
    let executors = opts.executors.unwrap_or(usable);
    let source = if opts.executors.is_some() {
        "as requested"
    } else {
        "one per usable core"
    };
    advice.set(
        "cores",
        executors,
        format!(
            "{source}; {usable} usable of {} online cores",
            probe.online_cores()
        ),
    );
    let pin = usable >= executors;
    let why = if pin {
        format!("{usable} usable cores >= {executors} executors: each executor gets its own core")
    } else {
        format!(
            "{executors} executors > {usable} usable cores: executors must share cores, \
             and pinned executors on one core would starve each other"
        )
    };
    advice.set("pin_cores", pin, why);
    let isolated = &probe.cpu.isolated;
    if pin && !isolated.is_empty() {
        if isolated.len() >= executors as usize {
            let set: Vec<String> = isolated
                .iter()
                .take(executors as usize)
                .map(u32::to_string)
                .collect();
            advice.set(
                "cpu_set",
                set.join(","),
                "isolated cores (isolcpus=) see no other scheduler load".to_string(),
            );
        } else {
            advice.find(
                Severity::Note,
                "isolated cores",
                format!(
                    "{} isolated cores, fewer than {executors} executors; not used",
                    isolated.len()
                ),
                None,
            );
        }
    }
    executors
}

fn ceil_ms(us: u64) -> u64 {
    us.div_ceil(1000)
}

fn timing(probe: &HostProbe, opts: &AdviceOptions, advice: &mut Advice) {
    let rtt_ms = ceil_ms(opts.peer_rtt_us);
    let heartbeat_ms = rtt_ms.max(opts.min_heartbeat_ms).max(1);
    let hb_reason = if rtt_ms >= opts.min_heartbeat_ms {
        format!("about one peer round trip ({} us, given)", opts.peer_rtt_us)
    } else {
        format!(
            "peer round trip {} us is below the {} ms floor; faster heartbeats cost CPU \
             without detecting failures sooner",
            opts.peer_rtt_us, opts.min_heartbeat_ms
        )
    };
    advice.set("heartbeat_interval_ms", heartbeat_ms, hb_reason);

    let by_heartbeat = heartbeat_ms.saturating_mul(opts.election_heartbeats);
    let by_p99 = ceil_ms(
        probe
            .fsync
            .latency_us_p99
            .saturating_mul(opts.election_fsync_p99_factor),
    );
    let by_max = ceil_ms(
        probe
            .fsync
            .latency_us_max
            .saturating_mul(opts.election_fsync_max_factor),
    );
    let raw = by_heartbeat.max(by_p99).max(by_max);
    // Whole heartbeats: Raft counts the timeout in ticks of one heartbeat.
    let election_ms = raw.div_ceil(heartbeat_ms).saturating_mul(heartbeat_ms);
    let dominant = if raw == by_heartbeat {
        format!("{}x heartbeat", opts.election_heartbeats)
    } else if raw == by_p99 {
        format!(
            "{}x the measured fsync p99 ({} us)",
            opts.election_fsync_p99_factor, probe.fsync.latency_us_p99
        )
    } else {
        format!(
            "{}x the worst measured fsync ({} us)",
            opts.election_fsync_max_factor, probe.fsync.latency_us_max
        )
    };
    advice.set(
        "election_timeout_ms",
        election_ms,
        format!(
            "{dominant}, the largest of: {}x heartbeat = {by_heartbeat} ms, {}x fsync p99 = \
             {by_p99} ms, {}x fsync max = {by_max} ms; rounded up to whole heartbeats",
            opts.election_heartbeats,
            opts.election_fsync_p99_factor,
            opts.election_fsync_max_factor
        ),
    );
}

fn wal_batch(probe: &HostProbe, opts: &AdviceOptions, advice: &mut Advice) {
    let Some(bw) = &probe.bandwidth else {
        let bytes = prev_power_of_two(opts.wal_batch_max_bytes / 4).max(opts.wal_batch_min_bytes);
        advice.set(
            "wal_batch_max_bytes",
            bytes,
            "no bandwidth measurement in the probe; a middle value".to_string(),
        );
        return;
    };
    let bytes_per_sec = bw.bytes_per_sec_p50();
    let fsync_p50_us = probe.fsync.latency_us_p50.max(1);
    // Bytes the disk transfers in the time one flush costs: larger batches
    // spend longer transferring than flushing and only add latency.
    let bdp = u64::try_from(u128::from(bytes_per_sec) * u128::from(fsync_p50_us) / 1_000_000)
        .unwrap_or(u64::MAX);
    let bytes = prev_power_of_two(bdp.clamp(opts.wal_batch_min_bytes, opts.wal_batch_max_bytes));
    advice.set(
        "wal_batch_max_bytes",
        bytes,
        format!(
            "~ write bandwidth ({} MiB/s) x fsync p50 ({fsync_p50_us} us) = {} KiB, \
             clamped to {}..{} KiB and rounded down to a power of two",
            bytes_per_sec / MIB,
            bdp / KIB,
            opts.wal_batch_min_bytes / KIB,
            opts.wal_batch_max_bytes / KIB
        ),
    );
}

fn prev_power_of_two(n: u64) -> u64 {
    if n == 0 {
        0
    } else {
        1u64 << (63 - n.leading_zeros())
    }
}

fn quota(probe: &HostProbe, opts: &AdviceOptions, advice: &mut Advice) {
    let mut quota = opts.quota_max_bytes;
    let mut why = vec![format!(
        "at most {} GiB (etcd's suggested maximum)",
        opts.quota_max_bytes / GIB
    )];
    if let Some(mem) = &probe.memory {
        let half = mem.total_bytes / 2;
        if half < quota {
            quota = half;
            why.push(format!(
                "half of RAM ({} MiB) so the memory-mapped tree stays in the page cache",
                half / MIB
            ));
        }
    }
    if let Some(avail) = probe.filesystem.as_ref().and_then(|f| f.available_bytes) {
        let half = avail / 2;
        if half < quota {
            quota = half;
            why.push(format!(
                "half of free disk ({} MiB) leaving room for defragmentation's copy",
                half / MIB
            ));
        }
    }
    let rounded = quota / (256 * MIB) * (256 * MIB);
    let quota = if rounded == 0 { quota } else { rounded };
    if quota < opts.quota_min_bytes {
        advice.find(
            Severity::Warning,
            "quota",
            format!("only {} MiB can be given to the data file", quota / MIB),
            Some("give the data dir more disk space or the host more memory"),
        );
    }
    advice.set("quota_backend_bytes", quota, why.join("; "));
}

fn memlock(probe: &HostProbe, opts: &AdviceOptions, executors: u32, advice: &mut Advice) {
    let Some(limit) = probe.memlock else {
        return;
    };
    let soft = limit.soft;
    if !soft.admits(GLOMMIO_MIN_MEMLOCK_BYTES) {
        advice.find(
            Severity::Critical,
            "memlock",
            format!(
                "RLIMIT_MEMLOCK {} is below glommio's minimum of {} KiB: executors will not start",
                fmt_limit(soft),
                GLOMMIO_MIN_MEMLOCK_BYTES / KIB
            ),
            Some("raise it: LimitMEMLOCK=infinity in the systemd unit, or memlock in /etc/security/limits.d"),
        );
    }
    let buffers = u64::from(opts.members_per_host)
        .saturating_mul(u64::from(executors))
        .saturating_mul(GLOMMIO_RINGS_PER_EXECUTOR);
    let needed = buffers.saturating_mul(opts.io_memory_bytes);
    if soft.admits(needed) {
        advice.set(
            "io_memory_bytes",
            opts.io_memory_bytes,
            format!(
                "RLIMIT_MEMLOCK {} covers {} registered buffers of this size",
                fmt_limit(soft),
                buffers
            ),
        );
        return;
    }
    if probe.cap_ipc_lock == Some(true) {
        advice.set(
            "io_memory_bytes",
            opts.io_memory_bytes,
            format!(
                "RLIMIT_MEMLOCK {} is below the {} MiB needed, but this process has \
                 CAP_IPC_LOCK, which exempts io_uring buffer registration",
                fmt_limit(soft),
                needed / MIB
            ),
        );
        advice.find(
            Severity::Note,
            "memlock",
            format!(
                "run as a user without CAP_IPC_LOCK, corekv would need RLIMIT_MEMLOCK >= {} MiB \
                 ({} member(s) x {executors} executor(s) x {GLOMMIO_RINGS_PER_EXECUTOR} rings x {} MiB)",
                needed / MIB,
                opts.members_per_host,
                opts.io_memory_bytes / MIB
            ),
            None,
        );
        return;
    }
    let Limit::Bytes(soft_bytes) = soft else {
        return;
    };
    let per_buffer =
        soft_bytes / buffers.max(1) / GLOMMIO_MIN_IO_MEMORY_BYTES * GLOMMIO_MIN_IO_MEMORY_BYTES;
    let fitted = per_buffer.max(GLOMMIO_MIN_IO_MEMORY_BYTES);
    advice.set(
        "io_memory_bytes",
        fitted,
        format!(
            "RLIMIT_MEMLOCK {} / ({} member(s) x {executors} executor(s) x {GLOMMIO_RINGS_PER_EXECUTOR} rings), \
             rounded down to 64 KiB",
            fmt_limit(soft),
            opts.members_per_host
        ),
    );
    advice.find(
        Severity::Warning,
        "memlock",
        format!(
            "RLIMIT_MEMLOCK {} is below the {} MiB that {} MiB of io memory per executor needs; \
             glommio would skip buffer registration and copy through unregistered buffers",
            fmt_limit(soft),
            needed / MIB,
            opts.io_memory_bytes / MIB
        ),
        Some(
            "use the io_memory_bytes above, or raise the limit (LimitMEMLOCK= in the systemd unit)",
        ),
    );
}

fn fmt_limit(limit: Limit) -> String {
    match limit {
        Limit::Unlimited => "unlimited".to_string(),
        Limit::Bytes(b) if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        Limit::Bytes(b) => format!("{} KiB", b / KIB),
    }
}

fn host_findings(probe: &HostProbe, opts: &AdviceOptions, advice: &mut Advice) {
    match probe.io_uring.status {
        IoUringStatus::Supported => {}
        IoUringStatus::NotInKernel => advice.find(
            Severity::Critical,
            "io_uring",
            "the kernel has no io_uring (ENOSYS); corekv's executors cannot run".to_string(),
            Some("use a kernel >= 5.8 built with CONFIG_IO_URING"),
        ),
        IoUringStatus::Disabled => advice.find(
            Severity::Critical,
            "io_uring",
            format!(
                "io_uring_setup was refused ({}); kernel.io_uring_disabled = {}",
                probe.io_uring.error.as_deref().unwrap_or("EPERM"),
                probe
                    .io_uring
                    .sysctl_disabled
                    .map_or("absent".to_string(), |v| v.to_string())
            ),
            Some("sysctl kernel.io_uring_disabled=0, or allow io_uring_* in the container's seccomp profile"),
        ),
        IoUringStatus::Failed => advice.find(
            Severity::Critical,
            "io_uring",
            format!(
                "io_uring_setup failed: {}",
                probe.io_uring.error.as_deref().unwrap_or("unknown error")
            ),
            Some("on kernels before 5.12 rings count against RLIMIT_MEMLOCK: raise it"),
        ),
    }
    if let Some(k) = &probe.kernel {
        let (major, minor) = GLOMMIO_MIN_KERNEL;
        if !k.at_least(major, minor) {
            advice.find(
                Severity::Critical,
                "kernel",
                format!(
                    "kernel {} is older than {major}.{minor}, glommio's minimum",
                    k.release
                ),
                Some("upgrade the kernel"),
            );
        }
    }
    if !probe.fsync.o_direct {
        let fs = probe
            .filesystem
            .as_ref()
            .map_or("this filesystem", |f| f.fs_type.as_str());
        advice.find(
            Severity::Critical,
            "O_DIRECT",
            format!("{fs} refuses O_DIRECT; the WAL cannot open its segments"),
            Some("put the data dir on ext4 or xfs on a real block device"),
        );
    }
    if let Some(fs) = &probe.filesystem {
        if VOLATILE_FILESYSTEMS.contains(&fs.fs_type.as_str()) {
            advice.find(
                Severity::Critical,
                "volatile filesystem",
                format!(
                    "the data dir is on {} ({}): its contents live in memory and vanish on \
                     reboot, and the measured fsync latency says nothing about a disk",
                    fs.fs_type, fs.mount_point
                ),
                Some("put the data dir on ext4 or xfs on a local SSD/NVMe"),
            );
        }
    }
    if probe.fsync.latency_us_p99 > opts.fsync_p99_warn_us {
        advice.find(
            Severity::Warning,
            "fsync latency",
            format!(
                "write+fdatasync p99 is {} us, above etcd's {} ms guidance for WAL fsync",
                probe.fsync.latency_us_p99,
                opts.fsync_p99_warn_us / 1000
            ),
            Some("use a local SSD/NVMe with power-loss protection for the data dir"),
        );
    }
    if let Some(dev) = &probe.block_device {
        if dev.rotational == Some(true) {
            advice.find(
                Severity::Warning,
                "rotational disk",
                format!(
                    "{} reports rotational=1 (measured fsync p50 {} us). Virtual disks often \
                     report 1 regardless of the backing store; trust the measured latency",
                    dev.name, probe.fsync.latency_us_p50
                ),
                Some("use an SSD or NVMe device for the data dir"),
            );
        }
        if matches!(dev.scheduler.as_deref(), Some("bfq") | Some("cfq")) {
            advice.find(
                Severity::Warning,
                "IO scheduler",
                format!(
                    "{} uses {}, which adds latency to small synchronous writes",
                    dev.name,
                    dev.scheduler.as_deref().unwrap_or_default()
                ),
                Some("echo none (NVMe) or mq-deadline > /sys/block/<dev>/queue/scheduler"),
            );
        }
    }
    if probe.thp_enabled.as_deref() == Some("always") {
        advice.find(
            Severity::Warning,
            "transparent hugepages",
            "THP is 'always': khugepaged compaction causes latency spikes and memory bloat"
                .to_string(),
            Some("echo madvise > /sys/kernel/mm/transparent_hugepage/enabled"),
        );
    }
    if let Some(s) = probe.vm.swappiness {
        if s > opts.swappiness_max {
            advice.find(
                Severity::Warning,
                "swappiness",
                format!(
                    "vm.swappiness = {s} (> {}): the kernel may swap out the heap and \
                     mapped tree pages under page-cache pressure, stalling requests",
                    opts.swappiness_max
                ),
                Some("corekv-tune profile --apply (sets vm.swappiness = 1)"),
            );
        }
    }
    if probe.cpu.governors.iter().any(|g| g == "powersave") {
        advice.find(
            Severity::Warning,
            "CPU governor",
            "a CPU runs the 'powersave' governor: low clocks and slow ramp-up add latency"
                .to_string(),
            Some("cpupower frequency-set -g performance"),
        );
    }
    if probe.vm.dirty_bytes == Some(0) {
        if let (Some(ratio), Some(mem)) = (probe.vm.dirty_ratio, &probe.memory) {
            let threshold = mem.available_bytes.unwrap_or(mem.total_bytes) / 100 * ratio;
            if threshold > GIB {
                advice.find(
                    Severity::Note,
                    "dirty page limit",
                    format!(
                        "vm.dirty_ratio = {ratio}% allows ~{} MiB of dirty page cache; flushing \
                         that much can stall fdatasync on the same disk",
                        threshold / MIB
                    ),
                    Some("corekv-tune profile --apply (bounds vm.dirty_bytes)"),
                );
            }
        }
    }
}

#[cfg(test)]
#[path = "advise_tests.rs"]
mod tests;
