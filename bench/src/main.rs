use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    eprintln!("corekv-bench is not built yet (see README.md)");
    std::process::exit(2);
}
