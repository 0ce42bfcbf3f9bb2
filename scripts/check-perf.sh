#!/bin/bash
# etcdctl 3.4 check perf --load=l and xl against a fresh etcd 3.4 (/usr/bin/etcd) and a fresh
# corekv each, on free loopback ports. Usage: scripts/check-perf.sh OUTDIR (K= overrides the corekv binary)
set -u
K=${K:-target/release/corekv}
OUT=$1; mkdir -p $OUT
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
for load in l xl; do
for sys in etcd corekv; do
  D=/var/tmp/checkperf-$sys; rm -rf $D
  C=$(port) P=$(port) N=$(port)
  if [ $sys = etcd ]; then
    /usr/bin/etcd --name m --data-dir $D --listen-client-urls http://127.0.0.1:$C --advertise-client-urls http://127.0.0.1:$C \
      --listen-peer-urls http://127.0.0.1:$P --initial-advertise-peer-urls http://127.0.0.1:$P --initial-cluster m=http://127.0.0.1:$P >$OUT/$sys-$load.log 2>&1 &
  else
    $K --name m --data-dir $D --listen-client-urls http://127.0.0.1:$C --advertise-client-urls http://127.0.0.1:$C --listen-native-addr 127.0.0.1:$N \
      --listen-peer-urls http://127.0.0.1:$P --initial-advertise-peer-urls http://127.0.0.1:$P --initial-cluster m=http://127.0.0.1:$P >$OUT/$sys-$load.log 2>&1 &
  fi
  pid=$!
  for i in $(seq 50); do curl -sf http://127.0.0.1:$C/health >/dev/null && break; sleep 0.2; done
  echo "== $sys --load=$load $(date -u +%T) $(cut -d' ' -f1-3 /proc/loadavg)"
  ETCDCTL_API=3 timeout 300 etcdctl --endpoints 127.0.0.1:$C check perf --load=$load 2>&1 | tr '\r' '\n' | grep -v "^\s*$" | grep -v "%" | tail -8
  echo "exit=${PIPESTATUS[0]}"
  kill $pid; wait $pid 2>/dev/null; rm -rf $D
done
done
