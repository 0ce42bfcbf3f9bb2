//! Live progress: an indicatif bar when stderr is a terminal, otherwise one
//! plain line per interval (logs and CI stay readable).

use crate::driver::Shared;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How often the bar is refreshed.
const TTY_REFRESH_MS: u64 = 200;
/// How often a plain progress line is printed when not on a terminal.
const PLAIN_INTERVAL_MS: u64 = 1000;

pub struct Progress {
    task: Option<JoinHandle<()>>,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn start(label: &str, expected: Option<u64>, shared: Arc<Shared>) -> Progress {
        let quiet = std::env::var_os("COREKV_BENCH_QUIET").is_some();
        if quiet {
            return Progress {
                task: None,
                bar: None,
            };
        }
        let label = label.to_string();
        let started = Instant::now();
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(expected, ProgressDrawTarget::stderr());
            let template = if expected.is_some() {
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} {msg}"
            } else {
                "{prefix} [{elapsed_precise}] {spinner} {pos} {per_sec} {msg}"
            };
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style);
            }
            bar.set_prefix(label);
            let b = bar.clone();
            let task = tokio::spawn(async move {
                loop {
                    b.set_position(shared.done.load(Ordering::Relaxed));
                    let failed = shared.failed.load(Ordering::Relaxed);
                    if failed > 0 {
                        b.set_message(format!("errors {failed}"));
                    }
                    tokio::time::sleep(Duration::from_millis(TTY_REFRESH_MS)).await;
                }
            });
            Progress {
                task: Some(task),
                bar: Some(bar),
            }
        } else {
            let task = tokio::spawn(async move {
                let mut last = 0u64;
                loop {
                    tokio::time::sleep(Duration::from_millis(PLAIN_INTERVAL_MS)).await;
                    let done = shared.done.load(Ordering::Relaxed);
                    let failed = shared.failed.load(Ordering::Relaxed);
                    let rate = (done - last) as f64 * 1000.0 / PLAIN_INTERVAL_MS as f64;
                    last = done;
                    let of = expected.map(|e| format!("/{e}")).unwrap_or_default();
                    eprintln!(
                        "{label}: {:>6.1}s done {done}{of} errors {failed} rate {rate:.0}/s",
                        started.elapsed().as_secs_f64()
                    );
                }
            });
            Progress {
                task: Some(task),
                bar: None,
            }
        }
    }

    pub fn finish(self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
