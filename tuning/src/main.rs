//! The `corekv-tune` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mimalloc::MiMalloc;

use corekv_tuning::advise::{self, AdviceOptions};
use corekv_tuning::fsync::FsyncOptions;
use corekv_tuning::host::HostFs;
use corekv_tuning::probe::{self, HostProbe, ProbeOptions};
use corekv_tuning::{Result, TuneError, parse, profile, render};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

#[derive(Parser)]
#[command(
    name = "corekv-tune",
    version,
    about = "Host probe and settings advisor for corekv"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Directory on the filesystem corekv will use; the latency loop writes a
    /// temporary file here.
    #[arg(long, default_value = ".")]
    data_dir: PathBuf,
    /// 4 KiB write + fdatasync samples.
    #[arg(long, default_value_t = 2000)]
    samples: u32,
    /// 1 MiB write + fdatasync samples for the bandwidth estimate; 0 skips it.
    #[arg(long, default_value_t = 16)]
    bandwidth_samples: u32,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure and report the host.
    Probe {
        #[command(flatten)]
        probe: ProbeArgs,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Probe (or load a saved probe) and recommend corekv settings.
    Advise {
        #[command(flatten)]
        probe: ProbeArgs,
        /// Use a probe saved with `probe --output json` instead of probing.
        #[arg(long)]
        from_probe: Option<PathBuf>,
        /// Executors the member will run (default: every usable core).
        #[arg(long)]
        cores: Option<u32>,
        /// corekv members on this host sharing one user's memlock budget.
        #[arg(long, default_value_t = 1)]
        members_per_host: u32,
        /// Round-trip time between members in microseconds.
        #[arg(long, default_value_t = 1000)]
        peer_rtt_us: u64,
        /// io memory per executor corekv will ask glommio for.
        #[arg(long, default_value_t = advise::GLOMMIO_DEFAULT_IO_MEMORY_BYTES)]
        io_memory_bytes: u64,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
    /// Print an OS tuning profile with this host's current values; --apply installs it.
    Profile {
        /// Profile name.
        #[arg(long, default_value = "sysctl")]
        name: String,
        /// Write the profile to the sysctl directory and load it with `sysctl -e -p` (root only).
        #[arg(long)]
        apply: bool,
        /// Directory the profile is installed into.
        #[arg(long, default_value = profile::DEFAULT_SYSCTL_DIR)]
        sysctl_dir: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn run_probe(args: &ProbeArgs) -> Result<HostProbe> {
    let opts = ProbeOptions {
        data_dir: args.data_dir.clone(),
        fsync: FsyncOptions::small_writes(args.samples),
        bandwidth: (args.bandwidth_samples > 0)
            .then(|| FsyncOptions::large_writes(args.bandwidth_samples)),
    };
    probe::collect(&HostFs::system(), &opts)
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|source| TuneError::Json {
        op: "serialize",
        source,
    })
}

fn run(cli: Cli) -> Result<String> {
    match cli.command {
        Cmd::Probe { probe, output } => {
            let p = run_probe(&probe)?;
            match output {
                Output::Text => Ok(render::probe(&p)),
                Output::Json => json(&p),
            }
        }
        Cmd::Advise {
            probe,
            from_probe,
            cores,
            members_per_host,
            peer_rtt_us,
            io_memory_bytes,
            output,
        } => {
            let p = match from_probe {
                Some(path) => {
                    let text = corekv_tuning::host::read_bounded(&path)?;
                    serde_json::from_str(&text).map_err(|source| TuneError::Json {
                        op: "parse",
                        source,
                    })?
                }
                None => run_probe(&probe)?,
            };
            let opts = AdviceOptions {
                executors: cores,
                members_per_host,
                peer_rtt_us,
                io_memory_bytes,
                ..AdviceOptions::default()
            };
            let a = advise::advise(&p, &opts)?;
            match output {
                Output::Text => Ok(format!("{}\n{}", render::probe(&p), render::advice(&a))),
                Output::Json => json(&serde_json::json!({ "probe": p, "advice": a })),
            }
        }
        Cmd::Profile {
            name,
            apply,
            sysctl_dir,
            output,
        } => {
            let prof = profile::find(&name)?;
            let host = HostFs::system();
            if apply {
                let status =
                    host.parse("proc/self/status", "process status", parse::proc_status)?;
                let applied = profile::apply(prof, &sysctl_dir, status.effective_uid)?;
                let rows = profile::compare(&host, &profile::entries(prof)?);
                return match output {
                    Output::Text => Ok(format!(
                        "installed {}\n{}{}",
                        applied.installed.display(),
                        applied.sysctl_output,
                        render::comparison(&rows)
                    )),
                    Output::Json => {
                        json(&serde_json::json!({ "applied": applied, "settings": rows }))
                    }
                };
            }
            let rows = profile::compare(&host, &profile::entries(prof)?);
            match output {
                Output::Text => Ok(format!("{}\n{}", prof.text, render::comparison(&rows))),
                Output::Json => json(&rows),
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(text) => {
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Every variant's message already includes its source's text.
            eprintln!("corekv-tune: {e}");
            ExitCode::FAILURE
        }
    }
}
