#!/usr/bin/env bash
# Restart to healthy of a single member with many keys (issue 11, item 5):
# load KEYS keys (KEY_SIZE / VAL_SIZE bytes) into a fresh member, let it
# checkpoint, kill -9 it, start it again and time from the spawn to
# - the "leader elected" log line (a single voter campaigns at once), and
# - the first successful linearizable read (corekvctl get, consistency l;
#   the member answers nothing before its store caught up, node/ready.rs).
#
# Usage: scripts/restart-bench.sh            (release binaries in target/release)
#   BIN=/work/rel-target/release KEYS=1000000 scripts/restart-bench.sh
# Data goes to a fresh directory under /var/tmp (a real disk), removed at exit
# unless KEEP=1. Prints one line per figure; nothing is asserted.
set -euo pipefail

BIN=${BIN:-target/release}
KEYS=${KEYS:-1000000}
KEY_SIZE=${KEY_SIZE:-64}
VAL_SIZE=${VAL_SIZE:-256}
CLIENTS=${CLIENTS:-1000}
CONNS=${CONNS:-100}
# shellcheck source=lib/member-bench.sh
source "$(dirname "$0")/lib/member-bench.sh"
member_bench_setup restart

start() {
    "$BIN/corekv" --name r1 --data-dir "$DIR/data" \
        --listen-client-urls "http://127.0.0.1:$HTTP" \
        --advertise-client-urls "http://127.0.0.1:$HTTP" \
        --listen-peer-urls "http://127.0.0.1:$PEER" \
        --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
        --initial-cluster "r1=http://127.0.0.1:$PEER" \
        --listen-native-addr "127.0.0.1:$NATIVE" \
        --log-level info "$@" >>"$DIR/log.$RUN" 2>&1 &
    PID=$!
}

now_ms() { date +%s%3N; }

# Polls until a linearizable get succeeds; prints the milliseconds since $1.
wait_read() {
    local t0=$1
    until "$BIN/corekvctl" --endpoints "127.0.0.1:$NATIVE" --dial-timeout 200ms \
        --command-timeout 5s get restart-probe >/dev/null 2>&1; do
        kill -0 "$PID" 2>/dev/null || { echo "member exited; log: $DIR/log.$RUN" >&2; exit 1; }
        sleep 0.005
    done
    echo $(($(now_ms) - t0))
}

RUN=load
start
wait_read "$(now_ms)" >/dev/null
echo "loading $KEYS keys ($KEY_SIZE B / $VAL_SIZE B) with $CLIENTS clients over $CONNS connections"
"$BIN/corekv-bench" --endpoints "127.0.0.1:$NATIVE" --protocol native \
    --clients "$CLIENTS" --conns "$CONNS" \
    put --total "$KEYS" --key-size "$KEY_SIZE" --val-size "$VAL_SIZE" \
    --key-space-size "$KEYS" --sequential-keys >"$DIR/load.txt"
grep -i "requests/sec\|throughput" "$DIR/load.txt" | head -2 || true
DB="$DIR/data/member/snap/db"
echo "db file: $(du -m "$DB" | cut -f1) MiB; WAL: $(du -sm "$DIR/data/member/wal" | cut -f1) MiB"
kill -9 "$PID"
# Braces: the shell's own "Killed" notice goes to /dev/null too.
{ wait "$PID"; } 2>/dev/null || true
PID=

RUN=restart
T0=$(now_ms)
start
READ_MS=$(wait_read "$T0")
LEADER_MS=
# The log's first "leader elected" line, as milliseconds since the spawn
# (tracing prints RFC 3339 UTC timestamps).
if line=$(grep -m1 "leader elected" "$DIR/log.restart"); then
    ts=$(echo "$line" | grep -oE '^[^ ]+' | sed 's/\x1b\[[0-9;]*m//g')
    if t=$(date -d "$ts" +%s%3N 2>/dev/null); then LEADER_MS=$((t - T0)); fi
fi
echo "restart: leader elected after ${LEADER_MS:-?} ms; first linearizable read after $READ_MS ms"
grep -m1 "serving clients" "$DIR/log.restart" || true
