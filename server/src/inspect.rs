//! `corekv inspect --data-dir DIR [--json]`: the byte budget of a member's
//! store file, read offline (see `corekv_storage::inspect`).

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "corekv inspect",
    about = "Print where the bytes of a member's store file go (read-only)"
)]
pub struct InspectArgs {
    /// The member's data directory (the store is DIR/member/snap/db).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A store file to read instead of the one under --data-dir.
    #[arg(long, conflicts_with = "data_dir")]
    pub file: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the subcommand on `args` (program name first); returns the exit code.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    let args = match InspectArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let path = match (args.file, args.data_dir) {
        (Some(f), _) => f,
        (None, Some(d)) => crate::node::start::db_path(&d),
        (None, None) => {
            eprintln!("corekv inspect: --data-dir or --file is required");
            return 2;
        }
    };
    match corekv_storage::inspect(&path) {
        Ok(b) if args.json => {
            println!("{}", b.to_json());
            0
        }
        Ok(b) => {
            print!("{}", b.to_text());
            0
        }
        Err(e) => {
            eprintln!("corekv inspect: {}: {e}", path.display());
            1
        }
    }
}
