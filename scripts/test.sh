#!/usr/bin/env bash
# The whole test suite: formatting, lints (warnings are errors), then every
# crate's unit, property, simulation and integration tests.
# Long soak/fuzz runs are not here: see README.md ("Long runs").
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# Fault injection (docs/reliability.md): a crash at every failpoint, then a
# 2-minute chaos run on the same debug build, judged by the history checker.
cargo test -p corekv-server --features failpoints --locked --test failpoints --test lease_keys_lagging
CHAOS_PROFILE=dev bash scripts/chaos.sh --runs 1 --minutes 2
