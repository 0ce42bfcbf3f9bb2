//! `corekv-checker HISTORY.json [--json] [--max-steps N] [--lease-slack-ms MS]`: checks one
//! recorded history and prints the verdict. Exit status 0 = no violation,
//! 1 = violations, 2 = inconclusive (search budget) or unreadable input.

use std::process::ExitCode;

use corekv_checker::history::History;
use corekv_checker::{Options, check};

fn usage() -> ExitCode {
    eprintln!("usage: corekv-checker HISTORY.json [--json] [--max-steps N] [--lease-slack-ms MS]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut path = None;
    let mut json = false;
    let mut opts = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--json" => json = true,
            "--max-steps" => match args.next().and_then(|s| s.parse().ok()) {
                Some(n) => opts.max_search_steps = n,
                None => return usage(),
            },
            "--lease-slack-ms" => match args.next().and_then(|s| s.parse().ok()) {
                Some(n) => opts.lease_slack_ms = n,
                None => return usage(),
            },
            _ if path.is_none() && !a.starts_with('-') => path = Some(a),
            _ => return usage(),
        }
    }
    let Some(path) = path else {
        return usage();
    };
    let history: History = match std::fs::read(&path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("corekv-checker: {path}: {e}");
            return ExitCode::from(2);
        }
    };
    let report = check(&history, &opts);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("corekv-checker: {e}"),
        }
    } else {
        for v in &report.violations {
            println!("VIOLATION {:?}: {}", v.kind, v.detail);
        }
        if let Some(why) = &report.inconclusive {
            println!("INCONCLUSIVE: {why}");
        }
        println!(
            "ops={} acknowledged={} unknown={} failed={} watch_events={} leases={} expired={} final_revision={} violations={} lost={}",
            report.operations,
            report.acknowledged,
            report.unknown,
            report.failed,
            report.watch_events,
            report.leases,
            report.expired,
            report.final_revision,
            report.violations.len(),
            report.lost
        );
    }
    if !report.violations.is_empty() {
        ExitCode::from(1)
    } else if report.inconclusive.is_some() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
