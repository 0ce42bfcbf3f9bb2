//! Seeded cluster simulations (see `common/sim.rs`).
//!
//! Default: 200 seeds x 3000 steps. Replay one failing seed exactly with
//! `SEED=<n> cargo test -p corekv-raftcore --test simulation -- --nocapture`
//! (add `SIM_VERBOSE=1` for the event trace). The long run
//! (`cargo test -p corekv-raftcore --release --test simulation -- --ignored`)
//! covers 5000 seeds; `SIM_SEEDS`, `SIM_SEED_START` and `SIM_STEPS` override
//! both.

mod common;

use common::sim::{Sim, SimOptions};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn run_seeds(default_seeds: u64, default_steps: u64) {
    let steps = env_u64("SIM_STEPS").unwrap_or(default_steps);
    let verbose = std::env::var("SIM_VERBOSE").is_ok();
    let seeds: Vec<u64> = match env_u64("SEED") {
        Some(s) => vec![s],
        None => {
            let start = env_u64("SIM_SEED_START").unwrap_or(0);
            (start..start + env_u64("SIM_SEEDS").unwrap_or(default_seeds)).collect()
        }
    };
    let (mut committed, mut reads) = (0usize, 0u64);
    for seed in seeds {
        let result = std::panic::catch_unwind(|| {
            let mut sim = Sim::new(SimOptions {
                seed,
                steps,
                verbose,
            });
            sim.run();
            (sim.committed_count(), sim.reads_served)
        });
        match result {
            Ok((c, r)) => {
                committed += c;
                reads += r;
            }
            Err(_) => panic!(
                "simulation failed for seed {seed}; replay with \
                 SEED={seed} SIM_STEPS={steps} cargo test -p corekv-raftcore --test simulation -- --nocapture"
            ),
        }
    }
    println!("simulation: {committed} entries committed, {reads} reads served");
    assert!(committed > 0, "the simulation never committed anything");
}

#[test]
fn simulation_default_seeds() {
    run_seeds(200, 3000);
}

#[test]
#[ignore = "long run: thousands of seeds"]
fn simulation_many_seeds() {
    run_seeds(5000, 5000);
}
