#!/usr/bin/env bash
# Runs `corekv-bench compare`: etcd 3.4 (Debian etcd-server) and, when it can
# serve, corekv, each as a single member on free loopback ports with a data dir
# under /var/tmp, the same workloads against both, one table at the end.
#
# Usage: bench/compare.sh [corekv-bench compare flags, e.g. --repeat 3 --markdown-out FILE]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v etcd >/dev/null 2>&1 && [ ! -x /usr/bin/etcd ]; then
    echo "compare.sh: etcd not found, installing Debian etcd-server and etcd-client" >&2
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y etcd-server etcd-client
fi
ETCD_BIN=$(command -v etcd || echo /usr/bin/etcd)
# The Debian package enables a systemd unit on the default ports; the compare
# uses its own ports and data dir, so a running system etcd does not interfere.

TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -p corekv-bench
if cargo build --release -p corekv-server --bin corekv; then
    COREKV_BIN=$TARGET_DIR/release/corekv
else
    echo "compare.sh: corekv does not build; the compare runs etcd alone" >&2
    COREKV_BIN=/nonexistent/corekv
fi

exec "$TARGET_DIR/release/corekv-bench" compare --etcd-bin "$ETCD_BIN" --corekv-bin "$COREKV_BIN" "$@"
