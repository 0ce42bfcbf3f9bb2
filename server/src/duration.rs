//! Go's `time.ParseDuration` syntax, which etcd's duration flags use
//! (`--experimental-corrupt-check-time 5m`, `--auto-compaction-retention 1h30m`,
//! etcdctl's `--dial-timeout 2s`): a sequence of decimal numbers, each with a
//! unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); `0` alone is allowed.

use std::time::Duration;

/// Parses `s`; errors name the input.
pub fn parse(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err("invalid duration \"\"".into());
    }
    let bad = || format!("invalid duration {s:?}");
    let mut rest = t;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        if num_len == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        total += value * secs;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_syntax() {
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse("").is_err());
        assert!(parse("5").is_err());
        assert!(parse("5x").is_err());
        assert!(parse("m").is_err());
        assert!(parse("-1s").is_err());
    }
}
