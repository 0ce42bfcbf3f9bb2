//! `--config-file FILE`: etcd's YAML configuration file.
//!
//! The keys are the flags' long names (`name`, `data-dir`,
//! `listen-client-urls`, `quota-backend-bytes`, `auto-compaction-retention`,
//! ... and corekv's own, e.g. `listen-native-addr`, `cores`); a YAML list is
//! joined with commas, as etcd's URL keys may be written either way. TLS
//! settings sit under `client-transport-security` and
//! `peer-transport-security` (`cert-file`, `key-file`, `client-cert-auth`,
//! `trusted-ca-file`, `auto-tls`) and map to the flags `--cert-file`, ... and
//! `--peer-cert-file`, ...; a TLS key corekv has no flag for is refused.
//!
//! As in etcd, a config file replaces the command line and the environment:
//! the file is turned into an argument list and parsed by the same clap
//! definition with the `ETCD_*`/`COREKV_*` variables removed, so every flag
//! keeps its default, validation and help text. Keys etcd knows but corekv
//! has no flag for are ignored with a warning (etcd ignores unknown keys).

use std::path::Path;

use clap::{ArgAction, CommandFactory, Parser};
use serde_yaml::Value;

use crate::config::Config;

/// The nested TLS sections and the flag prefix of each.
const TLS_SECTIONS: [(&str, &str); 2] = [
    ("client-transport-security", ""),
    ("peer-transport-security", "peer-"),
];

/// Reads `path` and builds the configuration from it alone; returns the
/// keys that were ignored (no such flag) for the caller to log.
pub fn load(path: &Path) -> Result<(Config, Vec<String>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--config-file {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("--config-file {}: {e}", path.display()))
}

/// Builds the configuration from YAML text (see the module doc).
pub fn parse(text: &str) -> Result<(Config, Vec<String>), String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let map = match doc {
        Value::Mapping(m) => m,
        Value::Null => Default::default(),
        _ => return Err("the file is not a mapping of keys to values".into()),
    };
    let cmd = Config::command();
    let flag = |name: &str| {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(name))
            .map(|a| matches!(a.get_action(), ArgAction::SetTrue))
    };
    let mut args = vec!["corekv".to_string()];
    let mut ignored = Vec::new();
    let mut push = |name: String, value: &Value, ignored: &mut Vec<String>| -> Result<(), String> {
        if name == "config-file" {
            return Err("config-file inside a config file".into());
        }
        let Some(is_switch) = flag(&name) else {
            ignored.push(name);
            return Ok(());
        };
        let Some(text) = scalar(value).map_err(|e| format!("{name}: {e}"))? else {
            return Ok(());
        };
        if is_switch {
            match text.as_str() {
                "true" => args.push(format!("--{name}")),
                "false" => {}
                other => return Err(format!("{name}: expected true or false, got {other:?}")),
            }
        } else {
            args.push(format!("--{name}={text}"));
        }
        Ok(())
    };
    for (k, v) in &map {
        let key = k.as_str().ok_or("a key that is not a string")?.to_string();
        if let Some((_, prefix)) = TLS_SECTIONS.iter().find(|(s, _)| *s == key) {
            let Value::Mapping(section) = v else {
                if v.is_null() {
                    continue;
                }
                return Err(format!("{key} must be a mapping"));
            };
            for (tk, tv) in section {
                let tk = tk.as_str().ok_or("a key that is not a string")?;
                let name = format!("{prefix}{tk}");
                let before = ignored.len();
                push(name.clone(), tv, &mut ignored)?;
                // A TLS setting silently dropped would serve plaintext.
                if ignored.len() > before
                    && scalar(tv)
                        .ok()
                        .flatten()
                        .is_some_and(|t| !t.is_empty() && t != "false")
                {
                    return Err(format!(
                        "{key}.{tk}: TLS is not supported by this build (no --{name} flag)"
                    ));
                }
            }
            continue;
        }
        push(key, v, &mut ignored)?;
    }
    let cfg = Config::try_parse_from(&args).map_err(|e| e.to_string())?;
    Ok((cfg, ignored))
}

/// A YAML scalar as flag text; `None` for null (the flag keeps its default);
/// a list becomes comma-joined scalars.
fn scalar(v: &Value) -> Result<Option<String>, String> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Sequence(items) => items
            .iter()
            .map(|i| scalar(i).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()?
            .join(","),
        Value::Mapping(_) | Value::Tagged(_) => {
            return Err("expected a scalar or a list".into());
        }
    }))
}

/// Removes the environment variables the flags read (`ETCD_*`,
/// `COREKV_*`), so the file alone decides, as etcd does.
///
/// # Safety
/// Call before any other thread exists (the environment is process-global).
pub unsafe fn clear_flag_env() {
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("ETCD_") || k.starts_with("COREKV_"))
        .collect();
    for k in names {
        // SAFETY: the caller guarantees no other thread reads the
        // environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_style_file_sets_flags_and_defaults_stay() {
        let (cfg, ignored) = parse(
            "name: infra1\n\
             data-dir: /var/lib/corekv/infra1\n\
             listen-client-urls: http://127.0.0.1:2379\n\
             initial-cluster:\n\
             initial-advertise-peer-urls: [http://10.0.0.1:2380, http://10.0.0.2:2380]\n\
             heartbeat-interval: 50\n\
             quota-backend-bytes: 8589934592\n\
             auto-compaction-mode: revision\n\
             auto-compaction-retention: \"1000\"\n\
             enable-v2: false\n\
             client-transport-security:\n  client-cert-auth: false\n  cert-file:\n\
             listen-native-addr: 127.0.0.1:12378\n",
        )
        .unwrap();
        assert_eq!(cfg.name, "infra1");
        assert_eq!(cfg.heartbeat_interval, 50);
        assert_eq!(cfg.quota_backend_bytes, 8 << 30);
        assert_eq!(cfg.initial_cluster, None, "null keeps the default");
        assert_eq!(cfg.initial_advertise_peer_urls.len(), 2);
        assert_eq!(cfg.election_timeout, 1000, "default");
        assert_eq!(cfg.listen_native_addr.port(), 12378);
        // TLS keys map to the --cert-file family of flags now that TLS exists.
        assert_eq!(ignored, vec!["enable-v2"]);
        assert!(!cfg.client_cert_auth);
        assert_eq!(cfg.cert_file, None, "null keeps the default");
    }

    #[test]
    fn bad_files_are_refused_with_the_key() {
        let e = parse("heartbeat-interval: soon\n").err().unwrap();
        assert!(e.contains("heartbeat-interval"), "{e}");
        assert!(parse("- a\n- b\n").is_err());
        assert!(parse("name: {a: 1}\n").err().unwrap().contains("name"));
        let (tls, _) = parse(
            "client-transport-security:\n  cert-file: /etc/c.pem\n\
             peer-transport-security:\n  key-file: /etc/p.key\n",
        )
        .unwrap();
        assert_eq!(tls.cert_file, Some(std::path::PathBuf::from("/etc/c.pem")));
        assert_eq!(
            tls.peer_key_file,
            Some(std::path::PathBuf::from("/etc/p.key"))
        );
        let auto = parse("client-transport-security:\n  auto-tls: true\n")
            .err()
            .unwrap();
        assert!(auto.contains("TLS"), "{auto}");
        assert!(parse("config-file: x\n").is_err());
    }
}
