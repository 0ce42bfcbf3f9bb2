#!/usr/bin/env bash
# Steady overwrite (issue 16, item 2): does the db file stay flat without
# defragmentation? One member (release build) with revision-mode
# auto-compaction keeps RETAIN revisions, compacting every COMPACT_MS; random
# puts over KEYS keys (KEY_SIZE / VAL_SIZE bytes) run for DURATION, and the
# db file size and in-use bytes are sampled every SAMPLE seconds.
#
# Usage: BIN=/work/rel-target/release DURATION=300s scripts/overwrite-bench.sh
# Data under a fresh directory in /var/tmp, removed at exit unless KEEP=1.
# Prints one line per sample; asserts nothing.
set -euo pipefail

BIN=${BIN:-target/release}
KEYS=${KEYS:-200000}
KEY_SIZE=${KEY_SIZE:-64}
VAL_SIZE=${VAL_SIZE:-256}
RETAIN=${RETAIN:-100000}
COMPACT_MS=${COMPACT_MS:-10000}
DURATION=${DURATION:-300s}
SAMPLE=${SAMPLE:-15}
CLIENTS=${CLIENTS:-200}
CONNS=${CONNS:-20}
# shellcheck source=lib/member-bench.sh
source "$(dirname "$0")/lib/member-bench.sh"
member_bench_setup overwrite
"$BIN/corekv" --name o1 --data-dir "$DIR/data" \
    --listen-client-urls "http://127.0.0.1:$HTTP" --advertise-client-urls "http://127.0.0.1:$HTTP" \
    --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
    --initial-cluster "o1=http://127.0.0.1:$PEER" --listen-native-addr "127.0.0.1:$NATIVE" \
    --auto-compaction-mode revision --auto-compaction-retention "$RETAIN" \
    --auto-compaction-revision-interval-ms "$COMPACT_MS" >"$DIR/log" 2>&1 &
PID=$!
until "$BIN/corekvctl" --endpoints "127.0.0.1:$NATIVE" --dial-timeout 200ms get probe >/dev/null 2>&1; do
    kill -0 "$PID" 2>/dev/null || { echo "member exited; log: $DIR/log" >&2; exit 1; }
    sleep 0.05
done
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

echo "overwrite: $KEYS keys ($KEY_SIZE B / $VAL_SIZE B) at random for $DURATION, keep $RETAIN revisions (compact every $COMPACT_MS ms)"
"$BIN/corekv-bench" --endpoints "127.0.0.1:$NATIVE" --protocol native --clients "$CLIENTS" --conns "$CONNS" \
    put --duration "$DURATION" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --key-space-size "$KEYS" \
    >"$DIR/bench.txt" 2>/dev/null &
BENCH=$!
T0=$(date +%s)
while kill -0 "$BENCH" 2>/dev/null; do
    sleep "$SAMPLE"
    total=$(metric etcd_mvcc_db_total_size_in_bytes)
    inuse=$(metric etcd_mvcc_db_total_size_in_use_in_bytes)
    rev=$(curl -s -X POST "http://127.0.0.1:$HTTP/v3/kv/range" -d '{"key":"AA=="}' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
    echo "  t=$(( $(date +%s) - T0 ))s revision $rev db file $(python3 -c "print(f'{$total/1e6:.1f}')") MB, in use $(python3 -c "print(f'{$inuse/1e6:.1f}')") MB"
done
wait "$BENCH" || true
grep -iE "throughput|p99|errors" "$DIR/bench.txt" | sed 's/^/  /'
echo "  compactions: $(grep -c 'physical compaction finished' "$DIR/log" || true)"
