#!/usr/bin/env bash
# Put throughput with auth on and with TLS, etcd 3.4 and corekv in one run
# (issue 15). For each setting -- plain, auth, tls, tls+auth -- starts a
# fresh single-member etcd and corekv on free loopback ports with their own
# data dirs, enables auth with etcdctl 3.4 against both where the setting
# says so, and runs corekv-bench put (8 B keys, 256 B values, 100k key space)
# at 1000 clients / 100 conns and at 1 client: etcd over gRPC, corekv over
# gRPC and over its native protocol. Prints one Markdown table (throughput,
# p50/p99, errors, ratio to the same system's plain figure, host load) and
# stops everything it started, also on failure or Ctrl-C.
#
#   scripts/bench-auth-tls.sh [--out FILE] [--settings "plain auth tls tls+auth"]
#                             [--total-many N] [--total-one N]
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

out= settings="plain auth tls tls+auth" total_many=100000 total_one=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --settings) settings=$2; shift 2 ;;
    --total-many) total_many=$2; shift 2 ;;
    --total-one) total_one=$2; shift 2 ;;
    *) echo "usage: $0 [--out FILE] [--settings \"plain auth tls tls+auth\"] [--total-many N] [--total-one N]" >&2; exit 2 ;;
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
"$etcd" --version | grep -q '^etcd Version: 3\.4\.' || {
  echo "$etcd is not etcd 3.4: $("$etcd" --version | head -1)" >&2; exit 1; }
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

# Starts etcd and corekv for setting $1; sets etcd_ep, corekv_ep, native_ep.
start_servers() {
  local setting=$1 scheme=http tls=()
  case "$setting" in tls|tls+auth)
    scheme=https
    tls=(--cert-file "$work/certs/server.pem" --key-file "$work/certs/server.key") ;;
  esac
  local system bin cport pport dir extra
  for system in etcd corekv; do
    cport=$(free_port) pport=$(free_port)
    dir=$work/$setting/$system
    mkdir -p "$dir"
    bin=$etcd extra=()
    if [ "$system" = corekv ]; then
      bin=$corekv
      native_ep=127.0.0.1:$(free_port)
      extra=(--listen-native-addr "$native_ep")
      corekv_ep=$scheme://127.0.0.1:$cport
    else
      etcd_ep=$scheme://127.0.0.1:$cport
    fi
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
  ctl_tls=()
  [ "$scheme" = https ] && ctl_tls=(--cacert "$work/certs/ca.pem")
  local ep
  for ep in "$etcd_ep" "$corekv_ep"; do
    for _ in $(seq 150); do
      "$etcdctl" --endpoints "$ep" "${ctl_tls[@]}" --dial-timeout 1s endpoint health \
        >/dev/null 2>&1 && continue 2
      sleep 0.2
    done
    echo "no healthy server at $ep within 30 s; logs in $work/$setting" >&2
    exit 1
  done
}

# Root (with the root role) and user bench with readwrite on every key, then
# AuthEnable: the same etcdctl 3.4 commands against both systems.
enable_auth() {
  local ep=$1 log=$2
  local ctl=("$etcdctl" --endpoints "$ep" "${ctl_tls[@]}")
  {
    "${ctl[@]}" user add root:rootpw
    "${ctl[@]}" role add root
    "${ctl[@]}" user grant-role root root
    "${ctl[@]}" role add bench
    "${ctl[@]}" role grant-permission bench readwrite --from-key ''
    "${ctl[@]}" user add bench:benchpw
    "${ctl[@]}" user grant-role bench bench
    "${ctl[@]}" auth enable
  } >>"$log" 2>&1 || { echo "enabling auth at $ep failed:" >&2; cat "$log" >&2; exit 1; }
}

rows=$work/rows.tsv
: >"$rows"
# run_put SETTING SYSTEM PROTOCOL ENDPOINT CLIENTS CONNS TOTAL
run_put() {
  local setting=$1 system=$2 protocol=$3 ep=$4 clients=$5 conns=$6 total=$7
  local args=(--endpoints "$ep" --protocol "$protocol" --clients "$clients" --conns "$conns" --output json)
  case "$setting" in *auth*) args+=(--user bench:benchpw) ;; esac
  case "$setting" in tls*)
    args+=(--cacert "$work/certs/ca.pem" --cert "$work/certs/client.pem" --key "$work/certs/client.key") ;;
  esac
  local json=$work/$setting/$system-$protocol-$clients.json
  echo "  $system $protocol, $clients clients / $conns conns, $total puts" >&2
  "$bench" "${args[@]}" put --key-size 8 --val-size 256 --key-space-size 100000 \
    --total "$total" >"$json"
  local load
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  python3 - "$json" "$setting" "$system $protocol" "$clients / $conns" "$load" >>"$rows" <<'EOF'
import json, sys
path, setting, system, load_shape, loadavg = sys.argv[1:]
s = json.load(open(path))
put = next(x for x in s["series"] if x["name"] == "put")
print("\t".join([setting, system, load_shape, "%.0f" % put["throughput_per_s"],
                 "%.3f" % (put["latency_us_p50"] / 1000), "%.3f" % (put["latency_us_p99"] / 1000),
                 str(sum(s["errors"].values())), loadavg]))
EOF
}

make_certs
echo "bench-auth-tls: $(date -u +%FT%TZ) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for setting in $settings; do
  echo "setting $setting" >&2
  start_servers "$setting"
  case "$setting" in *auth*)
    enable_auth "$etcd_ep" "$work/$setting/etcd/auth.log"
    enable_auth "$corekv_ep" "$work/$setting/corekv/auth.log" ;;
  esac
  run_put "$setting" etcd grpc "$etcd_ep" 1000 100 "$total_many"
  run_put "$setting" corekv grpc "$corekv_ep" 1000 100 "$total_many"
  run_put "$setting" corekv native "$native_ep" 1000 100 "$total_many"
  run_put "$setting" etcd grpc "$etcd_ep" 1 1 "$total_one"
  run_put "$setting" corekv grpc "$corekv_ep" 1 1 "$total_one"
  run_put "$setting" corekv native "$native_ep" 1 1 "$total_one"
  stop_servers
done

table=$(python3 - "$rows" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
plain = {(r[1], r[2]): float(r[3]) for r in rows if r[0] == "plain"}
print("| setting | system | clients / conns | put /s | p50 ms | p99 ms | errors | vs plain | load avg (1/5/15 min) |")
print("|---|---|---|---:|---:|---:|---:|---:|---|")
for r in sorted(rows, key=lambda r: (r[2] != "1000 / 100", r[1], ["plain", "auth", "tls", "tls+auth"].index(r[0]))):
    base = plain.get((r[1], r[2]))
    ratio = "%.2fx" % (float(r[3]) / base) if base else "-"
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (r[0], r[1], r[2], r[3], r[4], r[5], r[6], ratio, r[7]))
EOF
)
echo "$table"
[ -z "$out" ] || echo "$table" >"$out"
