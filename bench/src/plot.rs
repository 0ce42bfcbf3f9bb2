//! A self-contained SVG: the latency percentile distribution (x axis in
//! "nines", like HdrHistogram plots) and throughput per second over time.

use crate::recorder::Recorder;
use crate::report::Summary;
use std::fmt::Write;

const WIDTH: f64 = 900.0;
const PANEL_HEIGHT: f64 = 320.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 40.0;
const GAP: f64 = 80.0;
/// The distribution is drawn up to the 99.999th percentile (5 nines).
const MAX_NINES: f64 = 5.0;
/// Points drawn per percentile curve.
const CURVE_POINTS: usize = 200;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

pub fn render(summary: &Summary, rec: &Recorder) -> String {
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let total_h = MARGIN_TOP + PANEL_HEIGHT * 2.0 + GAP + 50.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{total_h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = format!(
        "{} over {} — {} clients, {} conns",
        summary.workload, summary.protocol, summary.clients, summary.conns
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" font-size="15" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(&title)
    );

    // Panel 1: latency by percentile.
    let top = MARGIN_TOP;
    let max_us = rec
        .series()
        .iter()
        .filter(|s| !s.hist.is_empty())
        .map(|s| s.hist.value_at_quantile(1.0 - 10f64.powf(-MAX_NINES)))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_max_ms = nice_ceiling(max_us / 1000.0);
    axes(&mut svg, top, plot_w, "latency (ms)", y_max_ms);
    for n in 0..=MAX_NINES as usize {
        let x = MARGIN_LEFT + plot_w * n as f64 / MAX_NINES;
        let label = match n {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            2 => "99%".to_string(),
            k => format!("99.{}%", "9".repeat(k - 2)),
        };
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            top + PANEL_HEIGHT + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        top + PANEL_HEIGHT + 34.0
    );
    for (i, s) in rec.series().iter().enumerate() {
        if s.hist.is_empty() {
            continue;
        }
        let mut pts = String::new();
        for k in 0..=CURVE_POINTS {
            let nines = MAX_NINES * k as f64 / CURVE_POINTS as f64;
            let q = 1.0 - 10f64.powf(-nines);
            let v_ms = s.hist.value_at_quantile(q) as f64 / 1000.0;
            let x = MARGIN_LEFT + plot_w * nines / MAX_NINES;
            let y = top + PANEL_HEIGHT - PANEL_HEIGHT * (v_ms / y_max_ms).min(1.0);
            let _ = write!(pts, "{x:.1},{y:.1} ");
        }
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>"#
        );
        legend(&mut svg, i, &s.name, color, top);
    }

    // Panel 2: throughput per second.
    let top = MARGIN_TOP + PANEL_HEIGHT + GAP;
    let secs = rec
        .series()
        .iter()
        .map(|s| s.timeline.len())
        .max()
        .unwrap_or(0)
        .max(1);
    let peak = rec
        .series()
        .iter()
        .flat_map(|s| s.timeline.iter().copied())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let y_max = nice_ceiling(peak);
    axes(&mut svg, top, plot_w, "ops/s", y_max);
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time (s), 0 to {secs}</text>"#,
        MARGIN_LEFT + plot_w / 2.0,
        top + PANEL_HEIGHT + 20.0
    );
    for (i, s) in rec.series().iter().enumerate() {
        if s.timeline.is_empty() {
            continue;
        }
        let mut pts = String::new();
        for (sec, &n) in s.timeline.iter().enumerate() {
            let x = MARGIN_LEFT + plot_w * (sec as f64 + 0.5) / secs as f64;
            let y = top + PANEL_HEIGHT - PANEL_HEIGHT * (n as f64 / y_max).min(1.0);
            let _ = write!(pts, "{x:.1},{y:.1} ");
        }
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>"#
        );
        legend(&mut svg, i, &s.name, color, top);
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

fn axes(svg: &mut String, top: f64, plot_w: f64, y_label: &str, y_max: f64) {
    let bottom = top + PANEL_HEIGHT;
    let _ = writeln!(
        svg,
        r##"<rect x="{MARGIN_LEFT}" y="{top}" width="{plot_w}" height="{PANEL_HEIGHT}" fill="none" stroke="#444"/>"##
    );
    for k in 0..=4 {
        let v = y_max * k as f64 / 4.0;
        let y = bottom - PANEL_HEIGHT * k as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{MARGIN_LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            MARGIN_LEFT + plot_w,
            MARGIN_LEFT - 6.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" transform="rotate(-90 16 {:.1})" text-anchor="middle">{y_label}</text>"#,
        top + PANEL_HEIGHT / 2.0,
        top + PANEL_HEIGHT / 2.0
    );
}

fn legend(svg: &mut String, i: usize, name: &str, color: &str, top: f64) {
    let y = top + 16.0 + 16.0 * i as f64;
    let x = MARGIN_LEFT + 12.0;
    let _ = writeln!(
        svg,
        r#"<rect x="{x}" y="{:.1}" width="12" height="4" fill="{color}"/><text x="{:.1}" y="{y:.1}">{}</text>"#,
        y - 5.0,
        x + 18.0,
        escape(name)
    );
}

/// Smallest 1/2/5 x 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn fmt_tick(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunInfo;
    use std::time::{Duration, Instant};

    #[test]
    fn nice_ceiling_steps() {
        assert_eq!(nice_ceiling(0.7), 1.0);
        assert_eq!(nice_ceiling(1.3), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(51.0), 100.0);
    }

    #[test]
    fn svg_has_one_curve_per_series_in_each_panel() {
        let t0 = Instant::now();
        let mut r = Recorder::new(t0, &["put", "range<x>"]);
        for us in 1..500u64 {
            r.record(
                0,
                Duration::from_micros(us),
                t0 + Duration::from_millis(us * 4),
            );
            r.record(1, Duration::from_micros(us * 2), t0);
        }
        let eps = vec!["e".to_string()];
        let info = RunInfo {
            workload: "put",
            protocol: "grpc",
            endpoints: &eps,
            clients: 1,
            conns: 1,
        };
        let s = Summary::build(&info, &r, Duration::from_secs(2), &[]);
        let svg = render(&s, &r);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("range&lt;x&gt;"));
    }
}
