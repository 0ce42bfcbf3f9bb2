use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    eprintln!("corekvctl: the CLI is not built yet (see README.md)");
    std::process::exit(2);
}
