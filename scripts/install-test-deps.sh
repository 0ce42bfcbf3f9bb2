#!/usr/bin/env bash
# Installs the system packages the test suite needs. Idempotent: it installs
# only what is missing, and refreshes the package lists before any install.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# etcdctl 3.4 drives the gRPC gateway tests (server/tests/gateway*.rs).
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing ${need[*]} and not root; install them first" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-test-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
