//! Pure figures of the lease-at-scale workloads (`lease-scale`,
//! `lease-expiry`): latency samples cut into time windows, the expiry
//! timeline read from periodic counts of the lease keys, and server CPU
//! from `/proc/PID/stat`. No IO here, so tests can check every figure.

use crate::recorder::{MAX_LATENCY_US, new_histogram};
use std::time::Duration;

/// One timed request: when it was meant to be sent (since the run's
/// start) and how long from then until its answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub intended: Duration,
    pub latency_us: u64,
}

/// Requests intended inside one window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WindowStats {
    /// Window length, seconds.
    pub secs: f64,
    pub count: u64,
    /// `count / secs`.
    pub per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// Statistics of the samples intended in `[from, to)`. An empty or
/// inverted window gives zeros.
pub fn window_stats(samples: &[Sample], from: Duration, to: Duration) -> WindowStats {
    let mut h = new_histogram();
    for s in samples
        .iter()
        .filter(|s| s.intended >= from && s.intended < to)
    {
        h.saturating_record(s.latency_us.clamp(1, MAX_LATENCY_US));
    }
    let secs = to.saturating_sub(from).as_secs_f64();
    if h.is_empty() {
        return WindowStats {
            secs,
            ..WindowStats::default()
        };
    }
    WindowStats {
        secs,
        count: h.len(),
        per_s: if secs > 0.0 {
            h.len() as f64 / secs
        } else {
            0.0
        },
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
    }
}

/// One periodic count of the lease keys still present, with the server's
/// CPU time (clock ticks) read at the same moment when known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyCount {
    pub at: Duration,
    pub keys: u64,
    pub cpu_ticks: Option<u64>,
}

/// When the lease keys went, from the counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExpiryTimeline {
    /// The last count that still saw every key (expiry began after it), or
    /// the first count when even that one saw fewer (`began_unseen`).
    pub start: Duration,
    /// True when the first count already saw keys missing: expiry began
    /// before counting did, and `start` is late.
    pub began_unseen: bool,
    /// The first count of zero; `None` when keys were left at the last count.
    pub all_gone: Option<Duration>,
    /// Keys deleted from `start` to the last count considered.
    pub deleted: u64,
    /// `deleted` / (end - start), where end is `all_gone` or the last count.
    pub mean_per_s: f64,
    /// The fastest deletion between two counts at least one second apart.
    pub peak_per_s: f64,
}

/// Reads the expiry of `total` keys from counts taken in time order.
/// `None` when no count saw a key missing (nothing expired).
pub fn expiry_timeline(counts: &[KeyCount], total: u64) -> Option<ExpiryTimeline> {
    let first_drop = counts.iter().position(|c| c.keys < total)?;
    let (start, start_keys, began_unseen) = match first_drop {
        0 => (counts[0].at, counts[0].keys, true),
        i => (counts[i - 1].at, counts[i - 1].keys, false),
    };
    let gone = counts[first_drop..].iter().find(|c| c.keys == 0);
    // `first_drop` exists, so `counts` is not empty.
    let end = gone.copied().unwrap_or(counts[counts.len() - 1]);
    let deleted = start_keys.saturating_sub(end.keys);
    let secs = end.at.saturating_sub(start).as_secs_f64();
    let mut peak = 0.0f64;
    for (i, a) in counts.iter().enumerate() {
        let Some(b) = counts[i + 1..]
            .iter()
            .find(|b| b.at.saturating_sub(a.at) >= Duration::from_secs(1))
        else {
            break;
        };
        let rate = a.keys.saturating_sub(b.keys) as f64 / (b.at - a.at).as_secs_f64();
        peak = peak.max(rate);
    }
    Some(ExpiryTimeline {
        start,
        began_unseen,
        all_gone: gone.map(|c| c.at),
        deleted,
        mean_per_s: if secs > 0.0 {
            deleted as f64 / secs
        } else {
            0.0
        },
        peak_per_s: peak,
    })
}

/// Server CPU in `[from, to]`, percent of one core, from the first count
/// at or after `from` to the last at or before `to` (both with CPU
/// figures, at least `min_span` apart). `None` when no such pair exists.
pub fn cpu_in_window(
    counts: &[KeyCount],
    from: Duration,
    to: Duration,
    ticks_per_s: f64,
    min_span: Duration,
) -> Option<f64> {
    let a = counts
        .iter()
        .find(|c| c.at >= from && c.cpu_ticks.is_some())?;
    let b = counts
        .iter()
        .rev()
        .find(|c| c.at <= to && c.cpu_ticks.is_some())?;
    let span = b.at.checked_sub(a.at)?;
    if span < min_span {
        return None;
    }
    cpu_percent(a.cpu_ticks?, b.cpu_ticks?, span, ticks_per_s)
}

/// CPU used between two readings, percent of one core.
pub fn cpu_percent(
    ticks_before: u64,
    ticks_after: u64,
    elapsed: Duration,
    ticks_per_s: f64,
) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || ticks_per_s <= 0.0 || ticks_after < ticks_before {
        return None;
    }
    Some((ticks_after - ticks_before) as f64 / ticks_per_s / secs * 100.0)
}

/// utime + stime (clock ticks) from the text of `/proc/PID/stat`. The
/// command name (field 2) may hold spaces and parentheses, so fields are
/// counted after its last `)`: there field 3 (state) is the first token and
/// utime, stime (fields 14, 15) are tokens 11 and 12.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `a / b` as bytes per lease from two KiB readings, when both are known
/// and memory grew.
pub fn bytes_per_lease(
    before_kib: Option<u64>,
    after_kib: Option<u64>,
    leases: u64,
) -> Option<f64> {
    let (b, a) = (before_kib?, after_kib?);
    (leases > 0 && a >= b).then(|| (a - b) as f64 * 1024.0 / leases as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn sample(at_ms: u64, latency_us: u64) -> Sample {
        Sample {
            intended: ms(at_ms),
            latency_us,
        }
    }

    #[test]
    fn window_keeps_only_samples_intended_inside() {
        let mut s: Vec<Sample> = (0..100).map(|i| sample(1000 + i * 10, 100)).collect();
        s.push(sample(999, 9_000_000)); // before the window
        s.push(sample(2000, 8_000_000)); // at its end: excluded
        s.push(sample(1500, 50_000)); // the window's one slow request
        let w = window_stats(&s, ms(1000), ms(2000));
        assert_eq!(w.count, 101);
        assert!((w.per_s - 101.0).abs() < 1e-9);
        assert_eq!(w.p50_us, 100);
        // The histogram keeps 3 significant digits.
        assert!((50_000..50_100).contains(&w.max_us), "{}", w.max_us);
        assert!(w.p99_us < 200, "one slow request in 101 is above p99");
    }

    #[test]
    fn empty_and_inverted_windows_are_zero() {
        let s = vec![sample(10, 5)];
        assert_eq!(window_stats(&s, ms(20), ms(30)).count, 0);
        let inv = window_stats(&s, ms(30), ms(0));
        assert_eq!((inv.count, inv.secs, inv.per_s), (0, 0.0, 0.0));
    }

    fn counts(points: &[(u64, u64)]) -> Vec<KeyCount> {
        points
            .iter()
            .map(|&(at_ms, keys)| KeyCount {
                at: ms(at_ms),
                keys,
                cpu_ticks: Some(at_ms / 10),
            })
            .collect()
    }

    #[test]
    fn timeline_from_counts() {
        // 1000 keys, full until 2 s, then 250 deleted per half second.
        let c = counts(&[
            (1000, 1000),
            (1500, 1000),
            (2000, 1000),
            (2500, 750),
            (3000, 500),
            (3500, 250),
            (4000, 0),
            (4500, 0),
        ]);
        let t = expiry_timeline(&c, 1000).unwrap();
        assert_eq!(t.start, ms(2000));
        assert!(!t.began_unseen);
        assert_eq!(t.all_gone, Some(ms(4000)));
        assert_eq!(t.deleted, 1000);
        assert!((t.mean_per_s - 500.0).abs() < 1e-9);
        assert!((t.peak_per_s - 500.0).abs() < 1e-9);
    }

    #[test]
    fn timeline_peak_and_unfinished_and_unseen_start() {
        // A burst of 600 in one second, then a trickle; keys remain.
        let c = counts(&[(0, 900), (1000, 300), (2000, 250), (3000, 200)]);
        let t = expiry_timeline(&c, 1000).unwrap();
        assert!(t.began_unseen, "the first count already missed keys");
        assert_eq!(t.all_gone, None);
        assert_eq!(t.deleted, 700);
        assert!((t.peak_per_s - 600.0).abs() < 1e-9);
        assert!((t.mean_per_s - 700.0 / 3.0).abs() < 1e-9);
        assert!(expiry_timeline(&counts(&[(0, 5), (1000, 5)]), 5).is_none());
        assert!(expiry_timeline(&[], 5).is_none());
    }

    #[test]
    fn cpu_over_a_window() {
        // 1 tick per 10 ms at 100 ticks/s: one full core.
        let c = counts(&[(0, 1), (1000, 1), (2000, 1), (3000, 1)]);
        let full = cpu_in_window(&c, ms(500), ms(3000), 100.0, Duration::from_secs(1));
        assert!((full.unwrap() - 100.0).abs() < 1e-9);
        assert_eq!(
            cpu_in_window(&c, ms(2500), ms(3000), 100.0, Duration::from_secs(1)),
            None,
            "one reading in the window is no span"
        );
        assert_eq!(cpu_percent(10, 5, ms(1000), 100.0), None);
        assert_eq!(cpu_percent(0, 50, ms(1000), 100.0), Some(50.0));
    }

    #[test]
    fn proc_stat_fields_after_the_command_name() {
        let stat =
            "4242 (etcd (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 750 250 0 0 20 0 12 0 99 1 2";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_stat_cpu_ticks("4242 (etcd) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn memory_per_lease() {
        assert_eq!(bytes_per_lease(Some(1000), Some(1100), 1024), Some(100.0));
        assert_eq!(bytes_per_lease(Some(1000), Some(900), 10), None);
        assert_eq!(bytes_per_lease(None, Some(900), 10), None);
        assert_eq!(bytes_per_lease(Some(1), Some(2), 0), None);
    }
}
