#!/usr/bin/env bash
# Installs the system packages the test suite needs. Idempotent: it installs
# only what is missing, and refreshes the package lists before any install.
set -euo pipefail

need=()
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# etcdctl 3.4 drives the gRPC gateway tests (server/tests/gateway*.rs).
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
# protoc builds the Rust `etcd-client` crate (a dev-dependency: server/tests/clients.rs).
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
# python3 + venv run the Python etcd client test (server/tests/clients.rs).
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing ${need[*]} and not root; install them first" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${need[@]}"
fi

# Python etcd clients for server/tests/clients.rs, in a venv of their own
# (the test reads the same path): etcd-sdk-python speaks gRPC (grpcio),
# etcd3gw the HTTP/JSON gateway.
venv="${COREKV_PY_VENV:-$HOME/.cache/corekv/py-clients}"
if ! "$venv/bin/python" -c 'import pyetcd, etcd3gw' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  # etcd-sdk-python's generated code (protobuf 5.27.2) needs a 5.x runtime
  # it does not declare.
  "$venv/bin/pip" install --quiet 'etcd-sdk-python==0.0.7' 'protobuf>=5.27.2,<6' 'etcd3gw==2.7.0'
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-test-deps: cargo not found; install a Rust toolchain (rustup) first" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
