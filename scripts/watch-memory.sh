#!/bin/bash
# Memory per idle gRPC watcher and per watch stream, corekv vs etcd 3.4 (/usr/bin/etcd).
# Usage: scripts/watch-memory.sh OUTDIR   (B=, K= override the release binaries)
# Fresh server per run; server VmRSS before, VmHWM after the run (watchers all
# registered, one put delivered to all of them, then closed).
set -u
B=${B:-target/release/corekv-bench}
K=${K:-target/release/corekv}
OUT=$1; mkdir -p $OUT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
kb() { awk -v k="$2" '$1==k":"{print $2}' /proc/$1/status; }
run() { # sys streams per_stream
  local sys=$1 s=$2 w=$3 D=/var/tmp/watchmem-$1; rm -rf $D
  local C=$(port) P=$(port) N=$(port)
  if [ $sys = etcd ]; then
    /usr/bin/etcd --name m --data-dir $D --listen-client-urls http://127.0.0.1:$C --advertise-client-urls http://127.0.0.1:$C \
      --listen-peer-urls http://127.0.0.1:$P --initial-advertise-peer-urls http://127.0.0.1:$P --initial-cluster m=http://127.0.0.1:$P >$OUT/$sys.log 2>&1 &
  else
    $K --name m --data-dir $D --listen-client-urls http://127.0.0.1:$C --advertise-client-urls http://127.0.0.1:$C --listen-native-addr 127.0.0.1:$N \
      --listen-peer-urls http://127.0.0.1:$P --initial-advertise-peer-urls http://127.0.0.1:$P --initial-cluster m=http://127.0.0.1:$P >$OUT/$sys.log 2>&1 &
  fi
  local pid=$!
  for i in $(seq 50); do curl -sf http://127.0.0.1:$C/health >/dev/null && break; sleep 0.2; done
  sleep 1
  local before=$(kb $pid VmRSS)
  COREKV_BENCH_QUIET=1 $B --endpoints 127.0.0.1:$C watch --streams $s --watch-per-stream $w --put-total 1 --put-rate 1 > $OUT/$sys-$s-$w.txt 2>&1
  local hwm=$(kb $pid VmHWM)
  echo "$sys streams=$s watchers/stream=$w watchers=$((s*w)) rss_before_kib=$before peak_kib=$hwm delta_kib=$((hwm-before))"
  kill $pid; wait $pid 2>/dev/null; rm -rf $D
}
for sys in etcd corekv; do
  run $sys 100 100
  run $sys 100 1000
  run $sys 1000 10
done
