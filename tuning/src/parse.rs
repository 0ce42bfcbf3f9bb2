//! Parsers for the text the kernel exposes in `/proc` and `/sys`.
//!
//! All parsers are pure (text in, value out) so they can be tested against
//! fixtures. They return `None` for text they do not understand; the caller
//! turns that into a [`crate::TuneError::Parse`] naming the file. None of them
//! panics or allocates in proportion to a number found in the input.

use serde::{Deserialize, Serialize};

/// Highest CPU id accepted in a CPU list. Linux's `NR_CPUS` maximum is 8192;
/// the bound keeps a corrupt range like `0-4294967295` from allocating.
pub const MAX_CPU_ID: u32 = 8191;

/// Parses a kernel CPU list such as `0-3,8,10-11` (from
/// `/sys/devices/system/cpu/online` or `isolated`). An empty (or all
/// whitespace) list is valid and means no CPUs.
pub fn cpu_list(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Some(cpus);
    }
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (
                lo.trim().parse::<u32>().ok()?,
                hi.trim().parse::<u32>().ok()?,
            ),
            None => {
                let cpu = part.parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        if lo > hi || hi > MAX_CPU_ID {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Some(cpus)
}

/// Memory figures from `/proc/meminfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemInfo {
    pub total_bytes: u64,
    /// `MemAvailable` (absent on kernels before 3.14).
    pub available_bytes: Option<u64>,
}

/// Parses `/proc/meminfo`; `MemTotal` is required.
pub fn meminfo(text: &str) -> Option<MemInfo> {
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key.trim() {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            _ => continue,
        };
        let mut fields = rest.split_whitespace();
        let value: u64 = fields.next()?.parse().ok()?;
        let scale = match fields.next() {
            Some("kB") => 1024,
            None => 1,
            Some(_) => return None,
        };
        *slot = Some(value.checked_mul(scale)?);
    }
    Some(MemInfo {
        total_bytes: total?,
        available_bytes: available,
    })
}

/// Returns the bracketed choice of a sysfs selector such as
/// `always [madvise] never` or `none [mq-deadline] kyber bfq`.
pub fn bracketed_choice(text: &str) -> Option<String> {
    let start = text.find('[')?;
    let end = start + text[start..].find(']')?;
    let choice = text[start + 1..end].trim();
    (!choice.is_empty() && !choice.contains(char::is_whitespace)).then(|| choice.to_string())
}

/// A kernel release (`/proc/sys/kernel/osrelease`), e.g. `6.1.0-18-amd64`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelVersion {
    pub release: String,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KernelVersion {
    /// True when this kernel is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

/// Parses a kernel release string; the patch level is optional (`6.8-rc1`).
pub fn kernel_release(text: &str) -> Option<KernelVersion> {
    let release = text.trim();
    let numeric_end = release
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(release.len());
    let mut parts = release[..numeric_end].split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = match parts.next() {
        Some("") | None => 0,
        Some(p) => p.parse().ok()?,
    };
    Some(KernelVersion {
        release: release.to_string(),
        major,
        minor,
        patch,
    })
}

/// Parses a single unsigned integer file such as `/proc/sys/vm/swappiness`.
pub fn single_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A resource limit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Bytes(u64),
    Unlimited,
}

impl Limit {
    /// True when the limit admits `bytes`.
    pub fn admits(self, bytes: u64) -> bool {
        match self {
            Limit::Bytes(limit) => bytes <= limit,
            Limit::Unlimited => true,
        }
    }
}

/// Soft and hard values of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftHard {
    pub soft: Limit,
    pub hard: Limit,
}

/// Finds `Max locked memory` (RLIMIT_MEMLOCK) in `/proc/<pid>/limits`.
pub fn memlock_limit(text: &str) -> Option<SoftHard> {
    const NAME: &str = "Max locked memory";
    let line = text.lines().find(|l| l.starts_with(NAME))?;
    let mut fields = line[NAME.len()..].split_whitespace();
    let parse = |f: Option<&str>| -> Option<Limit> {
        match f? {
            "unlimited" => Some(Limit::Unlimited),
            n => n.parse().ok().map(Limit::Bytes),
        }
    };
    let soft = parse(fields.next())?;
    let hard = parse(fields.next())?;
    Some(SoftHard { soft, hard })
}

/// Identity and capabilities from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcStatus {
    pub effective_uid: u32,
    /// Effective capability mask (`CapEff`).
    pub cap_effective: u64,
}

/// Linux capability number of CAP_IPC_LOCK.
pub const CAP_IPC_LOCK: u32 = 14;

impl ProcStatus {
    pub fn has_capability(&self, cap: u32) -> bool {
        cap < 64 && self.cap_effective & (1u64 << cap) != 0
    }
}

/// Parses the `Uid:` (real, effective, saved, fs) and `CapEff:` lines.
pub fn proc_status(text: &str) -> Option<ProcStatus> {
    let mut uid = None;
    let mut cap = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            uid = Some(rest.split_whitespace().nth(1)?.parse().ok()?);
        } else if let Some(rest) = line.strip_prefix("CapEff:") {
            cap = Some(u64::from_str_radix(rest.trim(), 16).ok()?);
        }
    }
    Some(ProcStatus {
        effective_uid: uid?,
        cap_effective: cap?,
    })
}

/// Parses a `MAJOR:MINOR` device number as found in `/sys/block/*/dev`.
pub fn dev_numbers(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub major: u32,
    pub minor: u32,
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
}

/// Parses `/proc/self/mountinfo`, skipping malformed lines (the file is
/// generated by the kernel; a line we cannot read just does not match).
pub fn mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(mountinfo_line).collect()
}

fn mountinfo_line(line: &str) -> Option<MountEntry> {
    // id parent major:minor root mount_point options [optional...] - fstype source super_options
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let (major, minor) = dev_numbers(left.nth(2)?)?;
    let mount_point = unescape_octal(left.nth(1)?);
    let mut right = right.split(' ');
    let fs_type = right.next()?.to_string();
    let source = unescape_octal(right.next().unwrap_or(""));
    Some(MountEntry {
        major,
        minor,
        mount_point,
        fs_type,
        source,
    })
}

/// Undoes the kernel's `\ooo` escaping of space, tab, newline and backslash.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount containing `path` (absolute, canonical): the entry with the
/// longest mount point that is a path prefix of it. Later entries win ties,
/// as later mounts shadow earlier ones on the same point.
pub fn mount_for<'a>(entries: &'a [MountEntry], path: &str) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for entry in entries {
        let mp = entry.mount_point.as_str();
        let contains = mp == "/"
            || path == mp
            || (path.starts_with(mp) && path.as_bytes().get(mp.len()) == Some(&b'/'));
        if contains && best.is_none_or(|b| mp.len() >= b.mount_point.len()) {
            best = Some(entry);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(cpu_list("0-3,8,10-11\n"), Some(vec![0, 1, 2, 3, 8, 10, 11]));
        assert_eq!(cpu_list("0\n"), Some(vec![0]));
        assert_eq!(cpu_list("\n"), Some(vec![]));
        assert_eq!(cpu_list("2,1,1-2"), Some(vec![1, 2]));
        assert_eq!(cpu_list("3-1"), None);
        assert_eq!(cpu_list("0-4294967295"), None);
        assert_eq!(cpu_list("a-b"), None);
        assert_eq!(cpu_list("1,,2"), None);
    }

    const MEMINFO: &str = "MemTotal:       24684096 kB\nMemFree:        20000000 kB\n\
                           MemAvailable:   22000000 kB\nHugePages_Total:       0\n";

    #[test]
    fn meminfo_fixture() {
        let m = meminfo(MEMINFO).expect("parses");
        assert_eq!(m.total_bytes, 24_684_096 * 1024);
        assert_eq!(m.available_bytes, Some(22_000_000 * 1024));
        assert_eq!(
            meminfo("MemTotal: 1000 kB\n").map(|m| m.available_bytes),
            Some(None)
        );
        assert_eq!(meminfo("MemFree: 1 kB\n"), None);
        assert_eq!(meminfo("MemTotal: x kB\n"), None);
        assert_eq!(meminfo("MemTotal: 1 MB\n"), None);
        assert_eq!(meminfo("MemTotal: 18446744073709551615 kB\n"), None);
    }

    #[test]
    fn bracketed() {
        assert_eq!(
            bracketed_choice("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(
            bracketed_choice("none [mq-deadline] kyber bfq \n").as_deref(),
            Some("mq-deadline")
        );
        assert_eq!(
            bracketed_choice("[none] mq-deadline").as_deref(),
            Some("none")
        );
        assert_eq!(bracketed_choice("none\n"), None);
        assert_eq!(bracketed_choice("[]"), None);
        assert_eq!(bracketed_choice("a ]b[ c"), None);
        assert_eq!(bracketed_choice("[unterminated"), None);
    }

    #[test]
    fn kernel_releases() {
        let k = kernel_release("6.18.44-fc-v595\n").expect("parses");
        assert_eq!((k.major, k.minor, k.patch), (6, 18, 44));
        assert_eq!(k.release, "6.18.44-fc-v595");
        assert!(k.at_least(5, 8) && k.at_least(6, 18) && !k.at_least(6, 19));
        let rc = kernel_release("6.8-rc1").expect("parses");
        assert_eq!((rc.major, rc.minor, rc.patch), (6, 8, 0));
        assert_eq!(kernel_release("6.1.0-18-amd64").map(|k| k.patch), Some(0));
        assert_eq!(kernel_release("linux"), None);
        assert_eq!(kernel_release("6"), None);
    }

    #[test]
    fn single_values() {
        assert_eq!(single_u64("60\n"), Some(60));
        assert_eq!(single_u64(" 0 "), Some(0));
        assert_eq!(single_u64("-1"), None);
        assert_eq!(single_u64(""), None);
    }

    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max open files            1048576              1048576              files     \n\
        Max locked memory         8388608              8388608              bytes     \n";

    #[test]
    fn limits_fixture() {
        let l = memlock_limit(LIMITS).expect("parses");
        assert_eq!(l.soft, Limit::Bytes(8 << 20));
        assert_eq!(l.hard, Limit::Bytes(8 << 20));
        let unl = memlock_limit("Max locked memory  unlimited  unlimited  bytes\n");
        assert_eq!(unl.map(|l| l.soft), Some(Limit::Unlimited));
        assert_eq!(memlock_limit("Max open files 1 1 files\n"), None);
        assert_eq!(memlock_limit("Max locked memory lots\n"), None);
        assert!(Limit::Bytes(10).admits(10) && !Limit::Bytes(10).admits(11));
        assert!(Limit::Unlimited.admits(u64::MAX));
    }

    #[test]
    fn status_fixture() {
        let text = "Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n\
                    CapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let s = proc_status(text).expect("parses");
        assert_eq!(s.effective_uid, 0);
        assert!(s.has_capability(CAP_IPC_LOCK));
        let user = proc_status("Uid:\t1000\t1000\t1000\t1000\nCapEff:\t0000000000000000\n")
            .expect("parses");
        assert_eq!(user.effective_uid, 1000);
        assert!(!user.has_capability(CAP_IPC_LOCK));
        assert!(!user.has_capability(200));
        assert_eq!(proc_status("Uid:\t1000\n"), None);
        assert_eq!(proc_status("CapEff:\tzz\nUid:\t1 1 1 1\n"), None);
    }

    #[test]
    fn dev_number() {
        assert_eq!(dev_numbers("254:0\n"), Some((254, 0)));
        assert_eq!(dev_numbers("254"), None);
        assert_eq!(dev_numbers("a:b"), None);
    }

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24684096k
40 27 259:2 / /var/lib/corekv rw,noatime shared:5 - xfs /dev/nvme0n1p2 rw,attr2
41 27 0:30 / /mnt/with\\040space rw - tmpfs none rw
garbage line without separator
";

    #[test]
    fn mountinfo_fixture() {
        let entries = mountinfo(MOUNTINFO);
        assert_eq!(entries.len(), 5);
        let nvme = mount_for(&entries, "/var/lib/corekv/member-1").expect("found");
        assert_eq!(
            (nvme.fs_type.as_str(), nvme.major, nvme.minor),
            ("xfs", 259, 2)
        );
        assert_eq!(nvme.source, "/dev/nvme0n1p2");
        assert_eq!(
            mount_for(&entries, "/var/lib/corekv").map(|e| e.major),
            Some(259)
        );
        // A sibling with a common string prefix is not inside the mount.
        assert_eq!(
            mount_for(&entries, "/var/lib/corekv2").map(|e| e.fs_type.as_str()),
            Some("ext4")
        );
        assert_eq!(
            mount_for(&entries, "/dev/shm/x").map(|e| e.fs_type.as_str()),
            Some("tmpfs")
        );
        assert_eq!(
            mount_for(&entries, "/mnt/with space/d").map(|e| e.mount_point.as_str()),
            Some("/mnt/with space")
        );
        assert!(mount_for(&[], "/").is_none());
    }

    #[test]
    fn octal_unescape_edges() {
        assert_eq!(unescape_octal("a\\040b"), "a b");
        assert_eq!(unescape_octal("a\\134b"), "a\\b");
        assert_eq!(unescape_octal("trailing\\04"), "trailing\\04");
        assert_eq!(unescape_octal("\\999"), "\\999");
        assert_eq!(unescape_octal("\\"), "\\");
    }
}
