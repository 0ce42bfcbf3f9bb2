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
# 2-minute chaos run on the same debug build, judged by the history checker
# (two 1-minute runs: network namespaces, then the in-process TCP proxies).
cargo test -p corekv-server --features failpoints --locked --test failpoints --test lagging_follower
CHAOS_PROFILE=dev bash scripts/chaos.sh --runs 2 --minutes 2 --net alternate
