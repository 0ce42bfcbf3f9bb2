use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    eprintln!("corekv: the server is not built yet (see README.md)");
    std::process::exit(2);
}
