# Shared by the single-member bench scripts (restart-bench.sh,
# scale-bench.sh, overwrite-bench.sh); sourced, not run. Expects BIN.
#   member_bench_setup NAME   checks the release binaries in $BIN, makes
#                             DIR=/var/tmp/corekv-NAME.XXXXXX (removed at
#                             exit unless KEEP=1; a member in $PID is
#                             killed), and picks free NATIVE/HTTP/PEER ports.

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

member_bench_setup() {
    local b
    for b in corekv corekv-bench corekvctl; do
        [[ -x "$BIN/$b" ]] || { echo "missing $BIN/$b (cargo build --release)" >&2; exit 2; }
    done
    DIR=$(mktemp -d "/var/tmp/corekv-$1.XXXXXX")
    PID=
    trap member_bench_cleanup EXIT
    NATIVE=$(free_port); HTTP=$(free_port); PEER=$(free_port)
}

member_bench_cleanup() {
    if [[ -n "$PID" ]]; then
        kill -9 "$PID" 2>/dev/null || true
        { wait "$PID"; } 2>/dev/null || true
    fi
    [[ "${KEEP:-0}" == 1 ]] || rm -rf "$DIR"
}
