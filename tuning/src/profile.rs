//! OS tuning profiles shipped in `tuning/profiles/*.conf`: printing them next
//! to the host's current values, and installing them with `sysctl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::error::{Result, TuneError};
use crate::host::HostFs;

/// A profile compiled into the binary, so the tool works without the source tree.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Name used on the command line.
    pub name: &'static str,
    /// File name under `tuning/profiles/`.
    pub file_name: &'static str,
    /// Name it is installed as in the sysctl directory; the numeric prefix
    /// orders it after distribution defaults (10-50) so it wins.
    pub install_name: &'static str,
    pub text: &'static str,
}

/// Every shipped profile.
pub const PROFILES: &[Profile] = &[Profile {
    name: "sysctl",
    file_name: "corekv-sysctl.conf",
    install_name: "60-corekv-sysctl.conf",
    text: include_str!("../profiles/corekv-sysctl.conf"),
}];

/// Where `--apply` installs profiles by default.
pub const DEFAULT_SYSCTL_DIR: &str = "/etc/sysctl.d";

/// Looks a profile up by name.
pub fn find(name: &str) -> Result<&'static Profile> {
    PROFILES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| TuneError::UnknownProfile {
            name: name.to_string(),
            available: PROFILES
                .iter()
                .map(|p| p.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// One `key = value` line and the comment block above it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub why: String,
    pub line: usize,
}

/// Parses a profile. Every setting must be preceded by a comment block (a
/// group of settings may share one); values are whitespace-normalised as
/// the kernel prints them.
pub fn entries(profile: &Profile) -> Result<Vec<Entry>> {
    let bad = |line: usize, detail: &str| TuneError::BadProfile {
        profile: profile.name.to_string(),
        line,
        detail: detail.to_string(),
    };
    let mut out: Vec<Entry> = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    let mut why = String::new();
    for (i, raw) in profile.text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            comment.clear();
            why.clear();
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            comment.push(c.trim());
            continue;
        }
        if !comment.is_empty() {
            why = comment.join(" ");
            comment.clear();
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| bad(line_no, "expected key = value"))?;
        let key = key.trim();
        let value = normalise(value);
        if key.is_empty() || value.is_empty() || key.contains(char::is_whitespace) {
            return Err(bad(line_no, "empty key or value"));
        }
        if why.is_empty() {
            return Err(bad(line_no, "setting has no comment saying why"));
        }
        if out.iter().any(|e| e.key == key) {
            return Err(bad(line_no, "key set twice"));
        }
        out.push(Entry {
            key: key.to_string(),
            value,
            why: why.clone(),
            line: line_no,
        });
    }
    Ok(out)
}

fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A profile setting next to what the running kernel has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Comparison {
    pub key: String,
    pub wanted: String,
    /// `None` when the key does not exist on this kernel or cannot be read.
    pub current: Option<String>,
    pub why: String,
}

impl Comparison {
    pub fn matches(&self) -> bool {
        self.current.as_deref() == Some(self.wanted.as_str())
    }
}

/// Reads each key's current value from `/proc/sys`.
pub fn compare(host: &HostFs, entries: &[Entry]) -> Vec<Comparison> {
    entries
        .iter()
        .map(|e| Comparison {
            key: e.key.clone(),
            wanted: e.value.clone(),
            current: current_value(host, &e.key),
            why: e.why.clone(),
        })
        .collect()
}

/// `/proc/sys/<key with dots as slashes>`, whitespace-normalised.
pub fn current_value(host: &HostFs, key: &str) -> Option<String> {
    if key.contains("..") || key.contains('/') {
        return None;
    }
    host.read(&format!("proc/sys/{}", key.replace('.', "/")))
        .ok()
        .map(|v| normalise(&v))
}

/// Result of `--apply`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub installed: PathBuf,
    pub sysctl_output: String,
}

/// Installs the profile into `sysctl_dir` and loads it with `sysctl -e -p`.
/// Refuses before touching anything unless `effective_uid` is 0.
pub fn apply(profile: &Profile, sysctl_dir: &Path, effective_uid: u32) -> Result<Applied> {
    if effective_uid != 0 {
        return Err(TuneError::NotRoot {
            euid: effective_uid,
        });
    }
    // Validate before installing: a malformed file would be loaded at every boot.
    entries(profile)?;
    let installed = install(profile, sysctl_dir)?;
    let output = Command::new("sysctl")
        .arg("-e")
        .arg("-p")
        .arg(&installed)
        .output()
        .map_err(|e| TuneError::io("run sysctl -e -p", &installed, e))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(TuneError::Sysctl {
            path: installed,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(Applied {
        installed,
        sysctl_output: stdout,
    })
}

/// Writes the profile atomically (temp file, fsync, rename) so a crash never
/// leaves a half-written file for the next boot to load.
pub fn install(profile: &Profile, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| TuneError::io("create dir", dir, e))?;
    let target = dir.join(profile.install_name);
    let tmp = dir.join(format!(".{}.tmp", profile.install_name));
    let mut file = std::fs::File::create(&tmp).map_err(|e| TuneError::io("create", &tmp, e))?;
    file.write_all(profile.text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| TuneError::io("write", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, &target).map_err(|e| TuneError::io("rename", &target, e))?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("corekv-tune-profile")
            .tempdir_in("/var/tmp")
            .expect("tempdir")
    }

    #[test]
    fn shipped_profiles_parse_and_explain_every_setting() {
        for p in PROFILES {
            let e = entries(p).expect("profile parses");
            assert!(e.len() >= 10, "{} has {} settings", p.name, e.len());
            assert!(e.iter().all(|e| e.why.len() > 20), "{e:?}");
        }
        let sysctl = entries(find("sysctl").expect("exists")).expect("parses");
        let swappiness = sysctl
            .iter()
            .find(|e| e.key == "vm.swappiness")
            .expect("present");
        assert_eq!(swappiness.value, "1");
        let rmem = sysctl
            .iter()
            .find(|e| e.key == "net.ipv4.tcp_rmem")
            .expect("present");
        assert_eq!(rmem.value, "4096 131072 33554432");
        assert!(matches!(
            find("nope"),
            Err(TuneError::UnknownProfile { .. })
        ));
    }

    fn fake(text: &'static str) -> Profile {
        Profile {
            name: "fake",
            file_name: "fake.conf",
            install_name: "60-fake.conf",
            text,
        }
    }

    #[test]
    fn profile_format_errors() {
        let no_why = fake("# header\n\nvm.swappiness = 1\n");
        assert!(matches!(
            entries(&no_why),
            Err(TuneError::BadProfile { line: 3, .. })
        ));
        let no_eq = fake("# why\nvm.swappiness 1\n");
        assert!(matches!(
            entries(&no_eq),
            Err(TuneError::BadProfile { line: 2, .. })
        ));
        let twice = fake("# why\na.b = 1\na.b = 2\n");
        assert!(matches!(
            entries(&twice),
            Err(TuneError::BadProfile { line: 3, .. })
        ));
        let empty = fake("# why\na.b =\n");
        assert!(matches!(entries(&empty), Err(TuneError::BadProfile { .. })));
        let grouped = fake("# shared reason\na.b = 1\nc.d =  2\t3\n");
        let e = entries(&grouped).expect("parses");
        assert_eq!(e[1].why, "shared reason");
        assert_eq!(e[1].value, "2 3");
    }

    #[test]
    fn compares_against_proc_sys() {
        let root = scratch();
        let vm = root.path().join("proc/sys/vm");
        std::fs::create_dir_all(&vm).expect("mkdir");
        std::fs::create_dir_all(root.path().join("proc/sys/net/ipv4")).expect("mkdir");
        std::fs::write(vm.join("swappiness"), "60\n").expect("write");
        std::fs::write(
            root.path().join("proc/sys/net/ipv4/tcp_rmem"),
            "4096\t131072\t16777216\n",
        )
        .expect("write");
        let host = HostFs::with_root(root.path());
        let p = fake(
            "# why it matters\nvm.swappiness = 1\nnet.ipv4.tcp_rmem = 4096 131072 16777216\nno.such = 1\n",
        );
        let cmp = compare(&host, &entries(&p).expect("parses"));
        assert_eq!(cmp[0].current.as_deref(), Some("60"));
        assert!(!cmp[0].matches());
        assert!(cmp[1].matches());
        assert_eq!(cmp[2].current, None);
        assert_eq!(current_value(&host, "vm/../../etc"), None);
    }

    #[test]
    fn apply_refuses_non_root_before_writing() {
        let dir = scratch();
        let target = dir.path().join("sysctl.d");
        let err = apply(find("sysctl").expect("exists"), &target, 1000).expect_err("refused");
        assert!(matches!(err, TuneError::NotRoot { euid: 1000 }));
        assert!(!target.exists());
    }

    #[test]
    fn install_writes_the_profile_atomically() {
        let dir = scratch();
        let target = dir.path().join("sysctl.d");
        let p = find("sysctl").expect("exists");
        let path = install(p, &target).expect("installed");
        assert_eq!(path, target.join("60-corekv-sysctl.conf"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), p.text);
        // Reinstalling replaces it and leaves no temp file behind.
        install(p, &target).expect("reinstalled");
        let names: Vec<_> = std::fs::read_dir(&target)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("60-corekv-sysctl.conf")]
        );
    }
}
