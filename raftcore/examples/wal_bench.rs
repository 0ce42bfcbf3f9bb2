//! WAL micro-benchmark: `cargo run -p corekv-raftcore --release --example wal_bench [DIR] [DURATION_MS]`.
//! DIR defaults to /var/tmp/corekv-wal-bench (must be on the disk under
//! test, not tmpfs). Prints the report table.

use corekv_raftcore::wal::bench::{WalBenchOptions, run};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut opts = WalBenchOptions::default();
    if let Some(dir) = args.next() {
        opts.dir = dir.into();
    }
    if let Some(ms) = args.next() {
        match ms.parse() {
            Ok(ms) => {
                opts.duration_ms = ms;
                opts.raw_duration_ms = ms;
            }
            Err(e) => {
                eprintln!("DURATION_MS {ms:?}: {e}");
                std::process::exit(2);
            }
        }
    }
    match run(&opts) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("wal bench failed: {e}");
            std::process::exit(1);
        }
    }
}
