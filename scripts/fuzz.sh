#!/usr/bin/env bash
# Runs every cargo-fuzz target, one at a time, for a bounded time (and, with
# --runs, until N executions) and reports executions and wall time.
#   scripts/fuzz.sh [--runs N] [--no-sanitizer] [SECONDS_PER_TARGET] [TARGET...]
# e.g. `nice -n 19 scripts/fuzz.sh --runs 10000000 900` (10M executions per
# target, at most 15 minutes each).
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Corpora live in fuzz/corpus/<target> (seeded here for the WAL reader and
# the store opener); crashes are written to fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=()
san=()
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=("-runs=$2"); shift 2 ;;
    # Without AddressSanitizer: several times the executions per second.
    # The parsers under test are safe Rust (the store target reads a
    # MemBackend, no mapping), so a panic is what the fuzzer looks for;
    # runs with the sanitizer (the default) also cover the unsafe code.
    --no-sanitizer) san=(-s none); shift ;;
    *) break ;;
  esac
done
seconds=${1:-60}
shift || true
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(frame storage_open wal_reader grpc_request)

# Seeds the fuzzer cannot find by mutation (valid CRC chains).
mkdir -p fuzz/corpus/wal_reader fuzz/corpus/storage_open
COREKV_WAL_SEED_DIR=$PWD/fuzz/corpus/wal_reader \
  cargo test -q -p corekv-raftcore --lib write_wal_seeds -- --ignored >/dev/null
COREKV_FUZZ_SEED_DIR=$PWD/fuzz/corpus/storage_open \
  cargo test -q -p corekv-storage --test fuzz_seeds -- --ignored >/dev/null

status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log=$(mktemp)
  # Built before the clock starts, so the time is the fuzzing's.
  (cd fuzz && cargo +nightly fuzz build "${san[@]}" "$t") >"$log" 2>&1 || { tail -40 "$log"; exit 1; }
  start=$(date +%s)
  # -rss_limit_mb bounds memory; -max_len bounds inputs (frames, segments).
  if (cd fuzz && cargo +nightly fuzz run "${san[@]}" "$t" "corpus/$t" -- "${runs[@]}" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) >"$log" 2>&1; then
    result=ok
  else
    result=FAILED; status=1
    tail -40 "$log"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  echo "fuzz: $t: $result executions=$execs exec/s=$rate seconds=$(( $(date +%s) - start )) limit=${seconds}s ${runs[*]:-} ${san[*]:-}"
  rm -f "$log"
done
exit "$status"
