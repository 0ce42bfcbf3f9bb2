//! The host probe: one structured snapshot of everything that decides how
//! corekv should be configured on this machine.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TuneError};
use crate::fsync::{self, FsyncOptions, FsyncReport};
use crate::host::HostFs;
use crate::parse::{self, KernelVersion, MemInfo, SoftHard};
use crate::uring::{self, IoUringProbe};

/// What to probe.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Directory on the filesystem corekv will use; the latency loop writes here.
    pub data_dir: PathBuf,
    /// The WAL-like 4 KiB write + fdatasync loop.
    pub fsync: FsyncOptions,
    /// Large-block loop for sequential bandwidth; `None` skips it.
    pub bandwidth: Option<FsyncOptions>,
}

/// CPU facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    /// Online CPU ids (`/sys/devices/system/cpu/online`).
    pub online: Vec<u32>,
    /// CPUs removed from the scheduler by `isolcpus=` (`.../cpu/isolated`).
    pub isolated: Vec<u32>,
    /// CPUs this process may run on (affinity mask and cgroup quota).
    pub usable: u32,
    /// Distinct `scaling_governor` values over online CPUs; empty when the
    /// kernel exposes no cpufreq (common in VMs).
    pub governors: Vec<String>,
}

/// Filesystem holding the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsInfo {
    pub fs_type: String,
    pub mount_point: String,
    pub source: String,
    /// Bytes available to unprivileged users (`statvfs` f_bavail).
    pub available_bytes: Option<u64>,
}

/// Queue settings of the block device under the data dir (the whole disk
/// when the filesystem is on a partition).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDevice {
    pub name: String,
    pub rotational: Option<bool>,
    pub scheduler: Option<String>,
    /// `queue/nr_requests`: the block layer's queue depth per hardware queue.
    pub nr_requests: Option<u64>,
    /// `queue/write_cache`: `write back` (volatile cache, flushes needed) or `write through`.
    pub write_cache: Option<String>,
    pub logical_block_bytes: Option<u64>,
}

/// Writeback and swap sysctls (`/proc/sys/vm`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSettings {
    pub swappiness: Option<u64>,
    pub dirty_ratio: Option<u64>,
    pub dirty_background_ratio: Option<u64>,
    pub dirty_bytes: Option<u64>,
    pub dirty_background_bytes: Option<u64>,
    pub dirty_expire_centisecs: Option<u64>,
    pub dirty_writeback_centisecs: Option<u64>,
}

/// A check that could not be done, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unavailable {
    pub item: String,
    pub reason: String,
}

/// Everything the probe found. Optional fields are `None` when the host does
/// not expose them; `unavailable` then says why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostProbe {
    pub tool_version: String,
    pub data_dir: PathBuf,
    pub cpu: CpuInfo,
    pub memory: Option<MemInfo>,
    pub kernel: Option<KernelVersion>,
    pub io_uring: IoUringProbe,
    /// RLIMIT_MEMLOCK of this process (what a corekv started the same way gets).
    pub memlock: Option<SoftHard>,
    /// CAP_IPC_LOCK exempts io_uring buffer registration from RLIMIT_MEMLOCK.
    pub cap_ipc_lock: Option<bool>,
    pub filesystem: Option<FsInfo>,
    pub block_device: Option<BlockDevice>,
    /// `transparent_hugepage/enabled`: always, madvise or never.
    pub thp_enabled: Option<String>,
    pub thp_defrag: Option<String>,
    pub vm: VmSettings,
    /// 4 KiB O_DIRECT write + fdatasync latency.
    pub fsync: FsyncReport,
    /// Large-block write + fdatasync, for sequential bandwidth.
    pub bandwidth: Option<FsyncReport>,
    pub unavailable: Vec<Unavailable>,
}

impl HostProbe {
    /// Number of online CPUs (at least 1, since this process runs on one).
    pub fn online_cores(&self) -> u32 {
        u32::try_from(self.cpu.online.len())
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

/// Collects optional items, recording failures instead of aborting.
struct Collector {
    unavailable: Vec<Unavailable>,
}

impl Collector {
    fn get<T>(&mut self, item: &str, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.unavailable.push(Unavailable {
                    item: item.to_string(),
                    reason: e.to_string(),
                });
                None
            }
        }
    }

    fn note(&mut self, item: &str, reason: impl Into<String>) {
        self.unavailable.push(Unavailable {
            item: item.to_string(),
            reason: reason.into(),
        });
    }
}

/// Runs every check. Fails only when the data dir is unusable or the
/// latency loop cannot run; everything else degrades to `unavailable`.
pub fn collect(host: &HostFs, opts: &ProbeOptions) -> Result<HostProbe> {
    let data_dir = std::fs::canonicalize(&opts.data_dir)
        .map_err(|e| TuneError::io("resolve data dir", &opts.data_dir, e))?;
    let meta =
        std::fs::metadata(&data_dir).map_err(|e| TuneError::io("stat data dir", &data_dir, e))?;
    if !meta.is_dir() {
        return Err(TuneError::InvalidArgument {
            name: "data-dir",
            detail: format!("{} is not a directory", data_dir.display()),
        });
    }

    let mut c = Collector {
        unavailable: Vec::new(),
    };
    let cpu = cpu_info(host, &mut c);
    let memory = c.get(
        "memory",
        host.parse("proc/meminfo", "meminfo", parse::meminfo),
    );
    let kernel = c.get(
        "kernel version",
        host.parse(
            "proc/sys/kernel/osrelease",
            "kernel release",
            parse::kernel_release,
        ),
    );
    // The sysctl only exists on 6.6+; its absence is normal, so not recorded.
    let uring_sysctl = host
        .parse(
            "proc/sys/kernel/io_uring_disabled",
            "io_uring_disabled",
            parse::single_u64,
        )
        .ok();
    let io_uring = uring::probe(uring_sysctl);
    let memlock = c.get(
        "RLIMIT_MEMLOCK",
        host.parse("proc/self/limits", "memlock limit", parse::memlock_limit),
    );
    let cap_ipc_lock = c
        .get(
            "capabilities",
            host.parse("proc/self/status", "process status", parse::proc_status),
        )
        .map(|s| s.has_capability(parse::CAP_IPC_LOCK));
    let filesystem = fs_info(host, &data_dir, &mut c);
    let block_device = block_device(host, meta.dev(), &mut c);
    let thp_enabled = c.get(
        "transparent hugepages",
        host.parse(
            "sys/kernel/mm/transparent_hugepage/enabled",
            "THP mode",
            parse::bracketed_choice,
        ),
    );
    let thp_defrag = c.get(
        "transparent hugepage defrag",
        host.parse(
            "sys/kernel/mm/transparent_hugepage/defrag",
            "THP defrag mode",
            parse::bracketed_choice,
        ),
    );
    let vm = vm_settings(host, &mut c);

    let fsync = fsync::measure(&data_dir, &opts.fsync)?;
    let bandwidth = match &opts.bandwidth {
        Some(b) => Some(fsync::measure(&data_dir, b)?),
        None => None,
    };

    Ok(HostProbe {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        data_dir,
        cpu,
        memory,
        kernel,
        io_uring,
        memlock,
        cap_ipc_lock,
        filesystem,
        block_device,
        thp_enabled,
        thp_defrag,
        vm,
        fsync,
        bandwidth,
        unavailable: c.unavailable,
    })
}

fn cpu_info(host: &HostFs, c: &mut Collector) -> CpuInfo {
    let usable = std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let online = c
        .get(
            "online CPUs",
            host.parse("sys/devices/system/cpu/online", "CPU list", parse::cpu_list),
        )
        .unwrap_or_default();
    let isolated = c
        .get(
            "isolated CPUs",
            host.parse(
                "sys/devices/system/cpu/isolated",
                "CPU list",
                parse::cpu_list,
            ),
        )
        .unwrap_or_default();
    let mut governors: Vec<String> = Vec::new();
    for cpu in &online {
        let rel = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor");
        if !host.exists(&rel) {
            continue;
        }
        if let Some(g) = c.get("CPU governor", host.read(&rel)) {
            let g = g.trim().to_string();
            if !g.is_empty() && !governors.contains(&g) {
                governors.push(g);
            }
        }
    }
    if governors.is_empty() {
        c.note(
            "CPU governor",
            "no cpufreq in sysfs (fixed clock or virtual machine)",
        );
    }
    CpuInfo {
        online,
        isolated,
        usable,
        governors,
    }
}

fn fs_info(host: &HostFs, data_dir: &Path, c: &mut Collector) -> Option<FsInfo> {
    let text = c.get("filesystem", host.read("proc/self/mountinfo"))?;
    let entries = parse::mountinfo(&text);
    let path = data_dir.to_string_lossy();
    let Some(mount) = parse::mount_for(&entries, &path) else {
        c.note(
            "filesystem",
            format!("no mount in mountinfo contains {path}"),
        );
        return None;
    };
    Some(FsInfo {
        fs_type: mount.fs_type.clone(),
        mount_point: mount.mount_point.clone(),
        source: mount.source.clone(),
        available_bytes: c.get("free space", available_bytes(data_dir)),
    })
}

fn available_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
        TuneError::InvalidArgument {
            name: "data-dir",
            detail: "path contains a NUL byte".to_string(),
        }
    })?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `cpath` is a valid NUL-terminated string and `st` points to
    // writable memory of the right type; both outlive the call.
    let rc = unsafe { libc::statvfs(cpath.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(TuneError::io(
            "statvfs",
            dir,
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: statvfs returned 0, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    // fsblkcnt_t and c_ulong are u64 on 64-bit targets only.
    #[allow(clippy::useless_conversion)]
    let bytes = u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize));
    Ok(bytes)
}

fn block_device(host: &HostFs, dev: u64, c: &mut Collector) -> Option<BlockDevice> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    if major == 0 {
        c.note(
            "block device",
            format!("data dir is on a virtual filesystem (device 0:{minor}), no disk queue"),
        );
        return None;
    }
    let link = host.path(&format!("sys/dev/block/{major}:{minor}"));
    let mut dir = match std::fs::canonicalize(&link) {
        Ok(d) => d,
        Err(e) => {
            c.get::<()>("block device", Err(TuneError::io("resolve", link, e)));
            return None;
        }
    };
    // A partition's queue settings are those of the disk it belongs to.
    if dir.join("partition").exists() {
        if let Some(parent) = dir.parent() {
            dir = parent.to_path_buf();
        }
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let queue = HostFs::with_root(dir.join("queue"));
    let rotational = c
        .get(
            "disk rotational",
            queue.parse("rotational", "rotational flag", parse::single_u64),
        )
        .map(|v| v != 0);
    let scheduler = if queue.exists("scheduler") {
        c.get(
            "IO scheduler",
            queue.parse("scheduler", "scheduler", parse::bracketed_choice),
        )
    } else {
        None
    };
    let nr_requests = if queue.exists("nr_requests") {
        c.get(
            "queue depth",
            queue.parse("nr_requests", "nr_requests", parse::single_u64),
        )
    } else {
        None
    };
    let write_cache = if queue.exists("write_cache") {
        c.get("write cache", queue.read("write_cache"))
            .map(|s| s.trim().to_string())
    } else {
        None
    };
    let logical_block_bytes = c.get(
        "logical block size",
        queue.parse(
            "logical_block_size",
            "logical block size",
            parse::single_u64,
        ),
    );
    Some(BlockDevice {
        name,
        rotational,
        scheduler,
        nr_requests,
        write_cache,
        logical_block_bytes,
    })
}

fn vm_settings(host: &HostFs, c: &mut Collector) -> VmSettings {
    let mut get = |name: &str| {
        c.get(
            &format!("vm.{name}"),
            host.parse(
                &format!("proc/sys/vm/{name}"),
                "vm sysctl",
                parse::single_u64,
            ),
        )
    };
    VmSettings {
        swappiness: get("swappiness"),
        dirty_ratio: get("dirty_ratio"),
        dirty_background_ratio: get("dirty_background_ratio"),
        dirty_bytes: get("dirty_bytes"),
        dirty_background_bytes: get("dirty_background_bytes"),
        dirty_expire_centisecs: get("dirty_expire_centisecs"),
        dirty_writeback_centisecs: get("dirty_writeback_centisecs"),
    }
}
