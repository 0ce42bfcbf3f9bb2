#!/usr/bin/env bash
# Scale run of one member (issue 16, item 5), and optionally the same load
# into a reference etcd (ETCD=1) for the footprint ratios of item 6.
#
# corekv (single member, release build, native protocol):
#  1. load KEYS distinct keys (KEY_SIZE / VAL_SIZE bytes) in scattered
#     order: throughput and p99, db file size and in-use bytes, RSS
#     (heap = RssAnon, mapped store pages = RssFile);
#  2. random single-key linearizable gets and ranges of SPAN keys: p99;
#  3. kill -9 and restart: time to the first linearizable read, RSS after
#     restart and after the gets again;
#  4. a second pass over every key, then a compaction of the KEYS old
#     revisions while puts run at PUT_RATE/s for DURING (from 3 s before
#     it): pass duration ("physical compaction finished" log line), put
#     p99 of that window, db file after;
#  5. `corekv inspect` of the stopped member's file (byte budget).
# etcd (ETCD=1, Debian etcd-server): step 1 over gRPC, and a restart.
# COMPACT=0 skips step 4; COREKV_FLAGS adds flags to corekv's command line.
#
# Usage: BIN=/work/rel-target/release KEYS=10000000 scripts/scale-bench.sh
# Data under a fresh directory in /var/tmp (a real disk), removed at exit
# unless KEEP=1. Prints figures; asserts nothing.
set -euo pipefail

BIN=${BIN:-target/release}
KEYS=${KEYS:-1000000}
KEY_SIZE=${KEY_SIZE:-64}
VAL_SIZE=${VAL_SIZE:-256}
CLIENTS=${CLIENTS:-200}
CONNS=${CONNS:-20}
SPAN=${SPAN:-100}
GETS=${GETS:-200000}
PUT_RATE=${PUT_RATE:-500}
DURING=${DURING:-120s}
ETCD=${ETCD:-0}
COMPACT=${COMPACT:-1}
# Extra corekv flags, e.g. COREKV_FLAGS="--store-map-advice normal".
read -r -a EXTRA <<<"${COREKV_FLAGS:-}"
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
# shellcheck source=lib/member-bench.sh
source "$(dirname "$0")/lib/member-bench.sh"
member_bench_setup scale
now_ms() { date +%s%3N; }
rss() {
    awk '/^VmRSS|^RssAnon|^RssFile/ {printf "%s %d MiB  ", $1, $2/1024}' "/proc/$1/status"
    echo
}
bench_summary() { grep -iE "throughput|requests/sec|p99|p50|errors|failed" "$1" | head -8 | sed 's/^/    /'; }
KEYARGS=(--key-size "$KEY_SIZE" --val-size "$VAL_SIZE" --key-space-size "$KEYS")

# --- corekv ---------------------------------------------------------------
start() {
    "$BIN/corekv" --name s1 --data-dir "$DIR/corekv" \
        --listen-client-urls "http://127.0.0.1:$HTTP" \
        --advertise-client-urls "http://127.0.0.1:$HTTP" \
        --listen-peer-urls "http://127.0.0.1:$PEER" \
        --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
        --initial-cluster "s1=http://127.0.0.1:$PEER" \
        --listen-native-addr "127.0.0.1:$NATIVE" \
        --quota-backend-bytes $((64 << 30)) \
        --log-level info "${EXTRA[@]}" "$@" >>"$DIR/corekv.log" 2>&1 &
    PID=$!
}
wait_read() {
    local t0=$1
    until "$BIN/corekvctl" --endpoints "127.0.0.1:$NATIVE" --dial-timeout 200ms \
        --command-timeout 5s get scale-probe >/dev/null 2>&1; do
        kill -0 "$PID" 2>/dev/null || { echo "member exited; log: $DIR/corekv.log" >&2; exit 1; }
        sleep 0.005
    done
    echo $(($(now_ms) - t0))
}
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v m="$1" '$1 == m {print $2}'; }
nb() { "$BIN/corekv-bench" --endpoints "127.0.0.1:$NATIVE" --protocol native "$@"; }
db_line() {
    local total inuse
    total=$(metric etcd_mvcc_db_total_size_in_bytes)
    inuse=$(metric etcd_mvcc_db_total_size_in_use_in_bytes)
    python3 -c "
t, u, keys = int(float('$total')), int(float('$inuse')), $KEYS
raw = keys * ($KEY_SIZE + $VAL_SIZE)
print(f'    db file {t/1e6:.1f} MB ({t/raw:.2f}x raw {raw/1e6:.0f} MB), in use {u/1e6:.1f} MB ({u/raw:.2f}x), {t/keys:.0f} B/key')"
}
# Percentiles of a Prometheus histogram between two /metrics dumps.
hist_delta() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys
name, a, b = sys.argv[1], sys.argv[2], sys.argv[3]
def buckets(path):
    out = {}
    for line in open(path):
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            out[float("inf") if le == "+Inf" else float(le)] = float(line.split()[-1])
    return out
x, y = buckets(a), buckets(b)
d = sorted((le, y[le] - x.get(le, 0)) for le in y)
n = d[-1][1] if d else 0
if n == 0:
    print(f"{name}: none in the window")
    sys.exit(0)
def q(p):
    for le, c in d:
        if c >= p * n:
            return le
    return float("nan")
print(f"{name}: {int(n)} in the window, p50 <= {q(.5)*1e3:g} ms, p99 <= {q(.99)*1e3:g} ms, max bucket <= {q(1.0)*1e3:g} ms")
PY
}
gets() {
    echo "  random get (1 key, linearizable, $GETS):"
    nb --clients "$CLIENTS" --conns "$CONNS" get --total "$GETS" "${KEYARGS[@]}" >"$DIR/get.$1.txt"
    bench_summary "$DIR/get.$1.txt"
    echo "  random range ($SPAN keys, linearizable, $((GETS / 20))):"
    nb --clients 20 --conns 20 get --span "$SPAN" --total $((GETS / 20)) "${KEYARGS[@]}" >"$DIR/range.$1.txt"
    bench_summary "$DIR/range.$1.txt"
}

echo "corekv: $KEYS keys ($KEY_SIZE B / $VAL_SIZE B), $CLIENTS clients / $CONNS conns, data $DIR"
start
wait_read "$(now_ms)" >/dev/null
echo "  idle: $(rss "$PID")"
echo "  load:"
nb --clients "$CLIENTS" --conns "$CONNS" put --total "$KEYS" "${KEYARGS[@]}" --scattered-keys >"$DIR/load.txt"
bench_summary "$DIR/load.txt"
sleep 2
db_line
echo "  after load: $(rss "$PID")"
gets load
echo "  after gets: $(rss "$PID")"

kill -9 "$PID"
{ wait "$PID"; } 2>/dev/null || true
T0=$(now_ms)
start
echo "  restart: first linearizable read after $(wait_read "$T0") ms"
echo "  after restart: $(rss "$PID")"
gets restart
echo "  after restart + gets: $(rss "$PID")"

if [[ "$COMPACT" == 1 ]]; then
echo "  second pass over every key:"
nb --clients "$CLIENTS" --conns "$CONNS" put --total "$KEYS" "${KEYARGS[@]}" --scattered-keys >"$DIR/pass2.txt"
bench_summary "$DIR/pass2.txt"
db_line
REV=$(curl -s -X POST "http://127.0.0.1:$HTTP/v3/kv/range" -d '{"key":"AA=="}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
nb --clients 10 --conns 10 put --rate "$PUT_RATE" --duration "$DURING" --key-size "$KEY_SIZE" \
    --val-size "$VAL_SIZE" --key-space-size "$KEYS" >"$DIR/during.txt" &
BG=$!
sleep 3
curl -s "http://127.0.0.1:$HTTP/metrics" >"$DIR/metrics.before"
T0=$(now_ms)
"$BIN/corekvctl" --endpoints "127.0.0.1:$NATIVE" compaction "$REV" >/dev/null
until grep -q "physical compaction finished" "$DIR/corekv.log"; do sleep 0.2; done
echo "  compaction at revision $REV ($KEYS old revisions): $(grep -m1 'physical compaction finished' "$DIR/corekv.log" | grep -oE 'seconds=[0-9.]+'), $(( $(now_ms) - T0 )) ms to the log line"
curl -s "http://127.0.0.1:$HTTP/metrics" >"$DIR/metrics.after"
for h in etcd_disk_wal_fsync_duration_seconds etcd_disk_backend_commit_duration_seconds corekv_store_sync_duration_seconds; do
    echo "    $(hist_delta "$h" "$DIR/metrics.before" "$DIR/metrics.after")"
done
wait "$BG"
echo "  puts at $PUT_RATE/s for $DURING from 3 s before the compaction:"
bench_summary "$DIR/during.txt"
db_line
echo "  after compaction: $(rss "$PID")"
fi
kill -TERM "$PID"
{ wait "$PID"; } 2>/dev/null || true
PID=
echo "  inspect:"
"$BIN/corekv" inspect --data-dir "$DIR/corekv" | sed 's/^/    /'

[[ "$ETCD" == 1 ]] || exit 0
# --- etcd -----------------------------------------------------------------
[[ -x "$ETCD_BIN" ]] || { echo "missing $ETCD_BIN (apt-get install etcd-server)" >&2; exit 2; }
rm -rf "$DIR/corekv"
EC=$(free_port); EP=$(free_port)
estart() {
    "$ETCD_BIN" --name e1 --data-dir "$DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$EC" --advertise-client-urls "http://127.0.0.1:$EC" \
        --listen-peer-urls "http://127.0.0.1:$EP" --initial-advertise-peer-urls "http://127.0.0.1:$EP" \
        --initial-cluster "e1=http://127.0.0.1:$EP" --quota-backend-bytes $((8 << 30)) \
        >>"$DIR/etcd.log" 2>&1 &
    PID=$!
}
ewait() {
    local t0=$1
    until curl -sf "http://127.0.0.1:$EC/health" | grep -q '"true"'; do
        kill -0 "$PID" 2>/dev/null || { echo "etcd exited; log: $DIR/etcd.log" >&2; exit 1; }
        sleep 0.01
    done
    echo $(($(now_ms) - t0))
}
echo "etcd: the same load over gRPC"
estart
ewait "$(now_ms)" >/dev/null
"$BIN/corekv-bench" --endpoints "127.0.0.1:$EC" --protocol grpc --clients "$CLIENTS" --conns "$CONNS" \
    put --total "$KEYS" "${KEYARGS[@]}" --scattered-keys >"$DIR/etcd-load.txt"
bench_summary "$DIR/etcd-load.txt"
sleep 2
HTTP=$EC db_line
echo "  after load: $(rss "$PID")"
kill -9 "$PID"
{ wait "$PID"; } 2>/dev/null || true
T0=$(now_ms)
estart
echo "  restart: healthy after $(ewait "$T0") ms"
echo "  after restart: $(rss "$PID")"
"$BIN/corekv-bench" --endpoints "127.0.0.1:$EC" --protocol grpc --clients "$CLIENTS" --conns "$CONNS" \
    get --total "$GETS" "${KEYARGS[@]}" >"$DIR/etcd-get.txt"
echo "  random get:"
bench_summary "$DIR/etcd-get.txt"
echo "  after restart + gets: $(rss "$PID")"
kill -TERM "$PID"
{ wait "$PID"; } 2>/dev/null || true
PID=
