//! Human-readable text for probe results, advice and profiles.

use std::fmt::Write;

use crate::advise::{Advice, Severity};
use crate::fsync::FsyncReport;
use crate::parse::Limit;
use crate::probe::HostProbe;
use crate::profile::Comparison;
use crate::uring::IoUringStatus;

/// `1536 MiB` style sizes with one decimal for GiB.
pub fn bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;
    if n >= GIB {
        format!("{:.1} GiB", n as f64 / GIB as f64)
    } else if n >= MIB {
        format!("{} MiB", n / MIB)
    } else if n >= KIB {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

/// Compresses sorted CPU ids into kernel list syntax (`0-3,8`).
pub fn cpu_list(cpus: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}-{end}");
        }
        i += 1;
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| v.to_string())
}

fn limit(l: Limit) -> String {
    match l {
        Limit::Unlimited => "unlimited".to_string(),
        Limit::Bytes(b) => bytes(b),
    }
}

fn latency(label: &str, r: &FsyncReport) -> String {
    format!(
        "{label:<22}{} samples{}: min {} / p50 {} / p99 {} / max {} / mean {} us",
        r.samples,
        if r.o_direct {
            ", O_DIRECT"
        } else {
            ", buffered (no O_DIRECT)"
        },
        r.latency_us_min,
        r.latency_us_p50,
        r.latency_us_p99,
        r.latency_us_max,
        r.latency_us_mean
    )
}

/// The `probe` report.
pub fn probe(p: &HostProbe) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<22}{v}");
    };
    line("corekv-tune", format!("{} probe", p.tool_version));
    line("data dir", p.data_dir.display().to_string());
    line(
        "cpu",
        format!(
            "{} online ({}), {} usable, isolated: {}, governor: {}",
            p.online_cores(),
            cpu_list(&p.cpu.online),
            p.cpu.usable,
            cpu_list(&p.cpu.isolated),
            if p.cpu.governors.is_empty() {
                "n/a".to_string()
            } else {
                p.cpu.governors.join(", ")
            }
        ),
    );
    line(
        "memory",
        p.memory.map_or("n/a".to_string(), |m| {
            format!(
                "{} total, {} available",
                bytes(m.total_bytes),
                m.available_bytes.map_or("n/a".to_string(), bytes)
            )
        }),
    );
    line("kernel", opt(p.kernel.as_ref().map(|k| k.release.clone())));
    let uring = match p.io_uring.status {
        IoUringStatus::Supported => "supported".to_string(),
        IoUringStatus::NotInKernel => "not in this kernel (ENOSYS)".to_string(),
        IoUringStatus::Disabled => "disabled (EPERM)".to_string(),
        IoUringStatus::Failed => format!("failed: {}", opt(p.io_uring.error.clone())),
    };
    line(
        "io_uring",
        format!(
            "{uring}; kernel.io_uring_disabled = {}",
            opt(p.io_uring.sysctl_disabled)
        ),
    );
    line(
        "RLIMIT_MEMLOCK",
        format!(
            "{}; CAP_IPC_LOCK: {}",
            p.memlock.map_or("n/a".to_string(), |m| format!(
                "soft {} / hard {}",
                limit(m.soft),
                limit(m.hard)
            )),
            p.cap_ipc_lock
                .map_or("n/a", |c| if c { "yes" } else { "no" })
        ),
    );
    line(
        "filesystem",
        p.filesystem.as_ref().map_or("n/a".to_string(), |f| {
            format!(
                "{} on {} mounted at {}, {} free",
                f.fs_type,
                f.source,
                f.mount_point,
                f.available_bytes.map_or("n/a".to_string(), bytes)
            )
        }),
    );
    line(
        "O_DIRECT",
        if p.fsync.o_direct {
            "supported"
        } else {
            "NOT supported"
        }
        .to_string(),
    );
    line(
        "block device",
        p.block_device.as_ref().map_or("n/a".to_string(), |d| {
            format!(
                "{}: rotational {}, scheduler {}, nr_requests {}, write cache {}, logical block {}",
                d.name,
                opt(d.rotational.map(|r| if r { "yes" } else { "no" })),
                opt(d.scheduler.clone()),
                opt(d.nr_requests),
                opt(d.write_cache.clone()),
                opt(d.logical_block_bytes.map(bytes))
            )
        }),
    );
    line(
        "transparent huge",
        format!(
            "enabled {}, defrag {}",
            opt(p.thp_enabled.clone()),
            opt(p.thp_defrag.clone())
        ),
    );
    let vm = &p.vm;
    line(
        "vm",
        format!(
            "swappiness {}, dirty_ratio {}, dirty_background_ratio {}, dirty_bytes {}, \
             dirty_background_bytes {}, dirty_expire_centisecs {}, dirty_writeback_centisecs {}",
            opt(vm.swappiness),
            opt(vm.dirty_ratio),
            opt(vm.dirty_background_ratio),
            opt(vm.dirty_bytes),
            opt(vm.dirty_background_bytes),
            opt(vm.dirty_expire_centisecs),
            opt(vm.dirty_writeback_centisecs)
        ),
    );
    let _ = writeln!(
        s,
        "{}",
        latency(
            &format!(
                "write {}+fdatasync",
                bytes(p.fsync.block_bytes as u64).replace(' ', "")
            ),
            &p.fsync
        )
    );
    if let Some(bw) = &p.bandwidth {
        let _ = writeln!(
            s,
            "{}",
            latency(
                &format!(
                    "write {}+fdatasync",
                    bytes(bw.block_bytes as u64).replace(' ', "")
                ),
                bw
            )
        );
        let _ = writeln!(
            s,
            "{:<22}{}/s at p50",
            "write bandwidth",
            bytes(bw.bytes_per_sec_p50())
        );
    }
    if !p.unavailable.is_empty() {
        let _ = writeln!(s, "unavailable:");
        for u in &p.unavailable {
            let _ = writeln!(s, "  - {}: {}", u.item, u.reason);
        }
    }
    s
}

/// The `advise` report.
pub fn advice(a: &Advice) -> String {
    let mut s = String::from("recommended settings:\n");
    for setting in &a.settings {
        let _ = writeln!(
            s,
            "  {} = {}\n      why: {}",
            setting.key, setting.value, setting.reason
        );
    }
    if a.findings.is_empty() {
        s.push_str("findings: none\n");
    } else {
        s.push_str("findings:\n");
        for f in &a.findings {
            let sev = match f.severity {
                Severity::Critical => "CRITICAL",
                Severity::Warning => "warning",
                Severity::Note => "note",
            };
            let _ = writeln!(s, "  [{sev}] {}: {}", f.check, f.message);
            if let Some(fix) = &f.fix {
                let _ = writeln!(s, "      fix: {fix}");
            }
        }
    }
    s
}

/// The `profile` comparison table printed after the profile text.
pub fn comparison(rows: &[Comparison]) -> String {
    let mut s = String::from("# current values on this host:\n");
    for r in rows {
        let state = match &r.current {
            Some(_) if r.matches() => "ok",
            Some(_) => "differs",
            None => "absent",
        };
        let _ = writeln!(
            s,
            "#   {:<34} {:<8} now: {:<24} profile: {}",
            r.key,
            state,
            r.current.as_deref().unwrap_or("-"),
            r.wanted
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpu_list(&[5]), "5");
        assert_eq!(cpu_list(&[]), "none");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(8 << 20), "8 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
