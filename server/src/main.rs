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
    let cfg = corekv_server::config::Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = corekv_server::node::start::run(cfg) {
        eprintln!("corekv: {e:#}");
        std::process::exit(1);
    }
}
