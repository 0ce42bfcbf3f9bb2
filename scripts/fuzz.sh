#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time and reports executions.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Corpora live in fuzz/corpus/<target> (seeded here for the WAL reader and
# the store opener); crashes are written to fuzz/artifacts/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."

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
  # -rss_limit_mb bounds memory; -max_len bounds inputs (frames, segments).
  if (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1) >"$log" 2>&1; then
    result=ok
  else
    result=FAILED; status=1
    tail -40 "$log"
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  echo "fuzz: $t: $result executions=$execs exec/s=$rate seconds=$seconds"
  rm -f "$log"
done
exit "$status"
