#!/usr/bin/env bash
# Put throughput with auth on and with TLS, etcd 3.4 and corekv in one run
# (issue 15). For each setting -- plain, auth, tls, tls+auth -- starts a
# single-member etcd and corekv on free loopback ports with their own data
# dirs (all eight side by side), enables auth with etcdctl 3.4 against both
# where the setting says so, and runs corekv-bench put (8 B keys, 256 B
# values, 100k key space) at 1000 clients / 100 conns and at 1 client: etcd
# over gRPC, corekv over gRPC and over its native protocol, each workload
# through the four settings back to back, --rounds times. Prints one
# Markdown table (median round: throughput, p50/p99; errors; ratio to the
# same system's plain median; every round's throughput; host load) and stops
# everything it started, also on failure or Ctrl-C.
#
#   scripts/bench-auth-tls.sh [--out FILE] [--settings "plain auth tls tls+auth"]
#                             [--total-many 50000] [--total-one 1000] [--rounds 3]
#
# Binaries: $CARGO_TARGET_DIR/release/{corekv,corekv-bench} (build them with
# `cargo build --release -p corekv-server -p corekv-bench`), /usr/bin/etcd and
# /usr/bin/etcdctl 3.4 (Debian: `apt-get install etcd-server etcd-client`);
# override with COREKV_BIN, BENCH_BIN, ETCD_BIN, ETCDCTL_BIN. Data dirs and
# certificates go under $DATA_ROOT (default /var/tmp: a real disk, not tmpfs),
# removed at the end (kept, with the servers' logs, when the run fails).
#
# Settings: "auth" = root + user `bench` whose role `bench` has readwrite on
# every key (the bench's keys are binary, 8-byte big-endian indexes, so no
# text prefix names them), simple tokens, bcrypt cost 10 (both defaults);
# the bench authenticates once per connection. "tls" = server certificate
# on the client URL (corekv: also its native address), client certificate
# auth off; the bench verifies the server against a throw-away CA.
set -euo pipefail
cd "$(dirname "$0")/.."

out= settings="plain auth tls tls+auth" total_many=50000 total_one=1000 rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --settings) settings=$2; shift 2 ;;
    --total-many) total_many=$2; shift 2 ;;
    --total-one) total_one=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--out FILE] [--settings \"plain auth tls tls+auth\"] [--total-many N] [--total-one N] [--rounds N]" >&2; exit 2 ;;
  esac
done
for s in $settings; do
  case "$s" in plain|auth|tls|tls+auth) ;; *) echo "unknown setting $s" >&2; exit 2 ;; esac
done

target_dir=${CARGO_TARGET_DIR:-target}
corekv=${COREKV_BIN:-$target_dir/release/corekv}
bench=${BENCH_BIN:-$target_dir/release/corekv-bench}
etcd=${ETCD_BIN:-/usr/bin/etcd}
etcdctl=${ETCDCTL_BIN:-/usr/bin/etcdctl}
for b in "$corekv" "$bench" "$etcd" "$etcdctl"; do
  [ -x "$b" ] || { echo "missing $b (see the header of $0)" >&2; exit 1; }
done
etcd_version=$("$etcd" --version 2>&1 | sed -n 1p)
case "$etcd_version" in
  "etcd Version: 3.4."*) ;;
  *) echo "$etcd is not etcd 3.4: $etcd_version" >&2; exit 1 ;;
esac
for t in openssl python3; do
  command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done

work=$(mktemp -d "${DATA_ROOT:-/var/tmp}/bench-auth-tls.XXXXXX")
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
finish() {
  local rc=$?
  stop_servers
  if [ "$rc" -eq 0 ]; then
    rm -rf "$work"
  else
    echo "bench-auth-tls: failed (exit $rc); logs and data kept in $work" >&2
  fi
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# A throw-away CA, a server certificate for 127.0.0.1/localhost and a client
# certificate (CN bench), EC P-256, valid two days.
make_certs() {
  local d=$work/certs
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj /CN=bench-auth-tls-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    2>/dev/null
  local name cn
  for name in server client; do
    cn=$([ "$name" = server ] && echo bench-server || echo bench)
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$d/$name.key" -out "$d/$name.csr" -subj "/CN=$cn" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' \
      >"$d/$name.ext"
    openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" \
      -CAcreateserial -days 2 -extfile "$d/$name.ext" -out "$d/$name.pem" 2>/dev/null
  done
}

# Starts etcd and corekv for setting $1 and records their endpoints in
# ep[etcd,$1], ep[corekv,$1] (gRPC) and ep[native,$1].
declare -A ep ctl_tls
start_servers() {
  local setting=$1 scheme=http tls=()
  case "$setting" in tls|tls+auth)
    scheme=https
    tls=(--cert-file "$work/certs/server.pem" --key-file "$work/certs/server.key") ;;
  esac
  ctl_tls[$setting]=
  [ "$scheme" = https ] && ctl_tls[$setting]="--cacert=$work/certs/ca.pem"
  local system bin cport pport dir extra
  for system in etcd corekv; do
    cport=$(free_port) pport=$(free_port)
    dir=$work/$setting/$system
    mkdir -p "$dir"
    bin=$etcd extra=()
    if [ "$system" = corekv ]; then
      bin=$corekv
      ep[native,$setting]=127.0.0.1:$(free_port)
      extra=(--listen-native-addr "${ep[native,$setting]}")
    fi
    ep[$system,$setting]=$scheme://127.0.0.1:$cport
    "$bin" --name "${system}0" --data-dir "$dir/data" \
      --listen-client-urls "$scheme://127.0.0.1:$cport" \
      --advertise-client-urls "$scheme://127.0.0.1:$cport" \
      --listen-peer-urls "http://127.0.0.1:$pport" \
      --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
      --initial-cluster "${system}0=http://127.0.0.1:$pport" \
      --initial-cluster-token "bench-$system" \
      "${tls[@]}" "${extra[@]}" >"$dir/server.log" 2>&1 &
    pids+=($!)
  done
}

# etcdctl against system $1 (etcd or corekv) of setting $2, then the rest.
ctl() {
  local system=$1 setting=$2
  shift 2
  # shellcheck disable=SC2086 # ctl_tls is one flag or nothing
  "$etcdctl" --endpoints "${ep[$system,$setting]}" ${ctl_tls[$setting]} "$@"
}

wait_healthy() {
  local system=$1 setting=$2
  for _ in $(seq 150); do
    ctl "$system" "$setting" --dial-timeout 1s endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "no healthy $system at ${ep[$system,$setting]} within 30 s; logs in $work/$setting" >&2
  exit 1
}

# Root (with the root role) and user bench with readwrite on every key, then
# AuthEnable: the same etcdctl 3.4 commands against both systems.
enable_auth() {
  local system=$1 setting=$2
  local log=$work/$setting/$system/auth.log
  {
    ctl "$system" "$setting" user add root:rootpw
    ctl "$system" "$setting" role add root
    ctl "$system" "$setting" user grant-role root root
    ctl "$system" "$setting" role add bench
    ctl "$system" "$setting" role grant-permission bench readwrite --from-key ''
    ctl "$system" "$setting" user add bench:benchpw
    ctl "$system" "$setting" user grant-role bench bench
    ctl "$system" "$setting" auth enable
  } >>"$log" 2>&1 || {
    echo "enabling auth on $system ($setting) failed:" >&2; cat "$log" >&2; exit 1; }
  # Auth must now be enforced: a put without credentials is refused.
  if ctl "$system" "$setting" put bench-auth-check x >>"$log" 2>&1 ||
    ! grep -q 'user name is empty' "$log"; then
    echo "auth is not enforced on $system ($setting):" >&2; cat "$log" >&2; exit 1
  fi
}

rows=$work/rows.tsv
: >"$rows"
# run_put SETTING SYSTEM PROTOCOL CLIENTS CONNS TOTAL ROUND
run_put() {
  local setting=$1 system=$2 protocol=$3 clients=$4 conns=$5 total=$6 round=$7
  local target=$system
  [ "$protocol" = native ] && target=native
  local args=(--endpoints "${ep[$target,$setting]}" --protocol "$protocol"
    --clients "$clients" --conns "$conns" --output json)
  case "$setting" in *auth*) args+=(--user bench:benchpw) ;; esac
  case "$setting" in tls*)
    args+=(--cacert "$work/certs/ca.pem" --cert "$work/certs/client.pem" --key "$work/certs/client.key") ;;
  esac
  local json=$work/$setting/$system-$protocol-$clients-$round.json
  echo "  round $round: $setting, $system $protocol, $clients clients / $conns conns, $total puts" >&2
  "$bench" "${args[@]}" put --key-size 8 --val-size 256 --key-space-size 100000 \
    --total "$total" >"$json"
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  python3 - "$json" "$setting" "$system $protocol" "$clients / $conns" "$load" >>"$rows" <<'EOF'
import json, sys
path, setting, system, shape, loadavg = sys.argv[1:]
s = json.load(open(path))
put = next(x for x in s["series"] if x["name"] == "put")
print("\t".join([setting, system, shape, "%.0f" % put["throughput_per_s"],
                 "%.3f" % (put["latency_us_p50"] / 1000), "%.3f" % (put["latency_us_p99"] / 1000),
                 str(sum(s["errors"].values())), loadavg]))
EOF
}

make_certs
echo "bench-auth-tls: $(date -u +%FT%TZ) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
# Every setting's servers run side by side, and each workload goes through
# the settings back to back, round after round: when the shared host's load
# drifts, it shifts all settings alike instead of favouring the ones
# measured last.
for setting in $settings; do start_servers "$setting"; done
for setting in $settings; do
  for system in etcd corekv; do
    wait_healthy "$system" "$setting"
    case "$setting" in *auth*) enable_auth "$system" "$setting" ;; esac
  done
done
for round in $(seq "$rounds"); do
  for shape in "1000 100 $total_many" "1 1 $total_one"; do
    read -r clients conns total <<<"$shape"
    for sp in "etcd grpc" "corekv grpc" "corekv native"; do
      read -r system protocol <<<"$sp"
      for setting in $settings; do
        run_put "$setting" "$system" "$protocol" "$clients" "$conns" "$total" "$round"
      done
    done
  done
done
stop_servers

# The median round per (shape, system, setting); "vs plain" compares medians.
table=$(python3 - "$rows" "$rounds" <<'EOF'
import sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    if line.strip():
        r = line.rstrip("\n").split("\t")
        runs[(r[0], r[1], r[2])].append(r)
med = {k: sorted(v, key=lambda r: float(r[3]))[len(v) // 2] for k, v in runs.items()}
order = ["plain", "auth", "tls", "tls+auth"]
print("| clients / conns | system | setting | put /s (median of %s) | p50 ms | p99 ms | errors | vs plain | put /s each round | load avg at the median run |" % sys.argv[2])
print("|---|---|---|---:|---:|---:|---:|---:|---|---|")
for k in sorted(med, key=lambda k: (k[2] != "1000 / 100", k[1], order.index(k[0]))):
    r = med[k]
    base = med.get(("plain", k[1], k[2]))
    ratio = "%.2fx" % (float(r[3]) / float(base[3])) if base else "-"
    each = ", ".join(x[3] for x in runs[k])
    errors = sum(int(x[6]) for x in runs[k])
    print("| %s | %s | %s | %s | %s | %s | %d | %s | %s | %s |" % (k[2], k[1], k[0], r[3], r[4], r[5], errors, ratio, each, r[7]))
EOF
)
echo "$table"
[ -z "$out" ] || echo "$table" >"$out"
