#!/usr/bin/env bash
# Chaos runner: builds corekv with failpoints and the corekv-chaos driver,
# then runs N runs of a 3-member cluster (own network namespaces when run as
# root, else loopback with in-process TCP proxies on the peer links) under a
# mixed native+gRPC workload with leases, kill -9, SIGSTOP pauses,
# partitions, a slow disk and membership changes (a member removed through
# the Cluster API, wiped and added back); each run ends with heal (three
# voters again), recovery and the history checker's verdict
# (docs/reliability.md).
#
#   scripts/chaos.sh [--runs N] [--seed S] [--minutes M] [--clients C]
#                    [--net auto|netns|proxy|alternate]
#
# --net: auto (default) uses namespaces where possible, else proxies;
# alternate runs even runs like auto and odd runs on proxies. Each run
# prints which network it uses. CHAOS_MEMBER_ARGS adds flags to every member
# (e.g. "--lease-checkpoint-interval-ms=2000").
# --minutes is the total fault time, split evenly over the runs.
# CHAOS_PROFILE=dev reuses the debug build (the default test suite does);
# the default is a release build. Last line:
#   runs=N ops=... faults=... kills=... members=... leases=... expired=... inconclusive=I violations=V lost=L
# Exit status 1 if any violation or lost write was found or a run was inconclusive.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=1 seed=$(date +%s) minutes=2 clients=6 net=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --minutes) minutes=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --net) net=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--seed S] [--minutes M] [--clients C] [--net auto|netns|proxy|alternate]" >&2; exit 2 ;;
  esac
done

profile=${CHAOS_PROFILE:-release}
case "$profile" in
  release) flag=--release dir=release ;;
  dev) flag= dir=debug ;;
  *) echo "CHAOS_PROFILE must be release or dev" >&2; exit 2 ;;
esac

# The failpoint build of corekv is copied aside at once: a later build
# without the feature would replace target/$dir/corekv.
cargo build $flag --locked -p corekv-server --features failpoints --bin corekv
mkdir -p target/chaos
# Copied then renamed: another chaos run may be executing the old one.
cp "target/$dir/corekv" target/chaos/corekv-failpoints.$$
mv -f target/chaos/corekv-failpoints.$$ target/chaos/corekv-failpoints
cargo build $flag --locked -p corekv-chaos

seconds=$(( minutes * 60 / runs ))
[ "$seconds" -ge 10 ] || seconds=10
out=${CHAOS_OUT:-/var/tmp/corekv-chaos-$$}
echo "chaos: runs=$runs seed=$seed seconds/run=$seconds clients=$clients net=$net out=$out"
status=0
"target/$dir/corekv-chaos" --bin target/chaos/corekv-failpoints --runs "$runs" --seed "$seed" \
  --seconds "$seconds" --clients "$clients" --out "$out" --net "$net" || status=$?
# Histories of clean runs are not kept (member data dirs are large).
if [ "$status" -eq 0 ]; then rm -rf "$out"; else echo "chaos: histories and logs kept in $out"; fi
exit "$status"
