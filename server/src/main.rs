use std::io::IsTerminal;

use clap::Parser;
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    // `corekv inspect ...`: offline byte budget of a store file.
    if std::env::args().nth(1).as_deref() == Some("inspect") {
        std::process::exit(corekv_server::inspect::main(std::env::args().skip(1)));
    }
    // FAILPOINTS=name=action;... (docs/reliability.md); lives until exit.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let mut cfg = corekv_server::config::Config::parse();
    let mut ignored_keys = Vec::new();
    let mut extra_flags = 0;
    if let Some(path) = cfg.config_file.clone() {
        extra_flags = std::env::args()
            .skip(1)
            .filter(|a| !a.starts_with("--config-file") && Some(a.as_str()) != path.to_str())
            .count();
        // SAFETY: no other thread exists yet.
        unsafe { corekv_server::config_file::clear_flag_env() };
        match corekv_server::config_file::load(&path) {
            Ok((from_file, ignored)) => {
                cfg = from_file;
                ignored_keys = ignored;
            }
            Err(e) => {
                eprintln!("corekv: {e}");
                std::process::exit(1);
            }
        }
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    if !ignored_keys.is_empty() {
        tracing::warn!(keys = ?ignored_keys, "config file keys corekv has no setting for (ignored)");
    }
    if extra_flags > 0 {
        tracing::warn!(
            "a config file is given: the other command line flags are ignored (as etcd)"
        );
    }
    if let Err(e) = corekv_server::node::start::run(cfg) {
        eprintln!("corekv: {e:#}");
        std::process::exit(1);
    }
}
