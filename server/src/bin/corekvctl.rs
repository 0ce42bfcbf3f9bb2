use clap::Parser;
use corekv_server::ctl::{self, Cli, EXIT_BAD_ARGS};
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(EXIT_BAD_ARGS);
        }
        Err(e) => {
            let _ = e.print();
            std::process::exit(0);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: {e}");
            std::process::exit(ctl::EXIT_ERROR);
        }
    };
    if let Err(f) = runtime.block_on(ctl::run(cli)) {
        eprintln!("Error: {}", f.message);
        std::process::exit(f.code);
    }
}
