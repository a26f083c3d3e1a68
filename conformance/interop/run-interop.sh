#!/usr/bin/env bash
# Interop of wsbus's server with two independent client implementations: build
# `wsbus` (release), start `wsbus echo` on a free loopback port, and run the Node `ws`
# and Python `websockets` client checks against it, each without and with
# permessage-deflate. Installs the peers' dependencies first (../setup.sh).
#
# usage:  conformance/interop/run-interop.sh
# writes: conformance/reports/interop-wsbus.log (the server's output)
# exit:   0 when every check of every run passed
# env:    WSBUS_BIN  server binary to test instead of building (see ../lib.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

"$conformance_dir/setup.sh"
bin="$(wsbus_bin)"
start_echo_server "$bin" "$reports_dir/interop-wsbus.log"
echo "testing $bin echo at $server_url"

failed=()
# check_with NAME CMD...: run the client check CMD URL, then CMD URL --deflate.
check_with() {
  local name="$1" deflate url
  shift
  for deflate in "" --deflate; do
    # A distinct path per run, so that the server log tells the runs apart.
    url="$server_url/interop/$name${deflate:+-deflate}"
    echo "== $name client, ${deflate:-no deflate}: $url"
    "$@" "$url" ${deflate:+"$deflate"} || failed+=("$name${deflate:+ $deflate}")
  done
}
check_with ws node "$here/ws_client_check.mjs"
check_with websockets "$conformance_dir/.venv/bin/python" "$here/websockets_client_check.py"

if ! echo_server_alive; then
  echo "error: wsbus exited during the interop runs; log $reports_dir/interop-wsbus.log:" >&2
  tail -n 30 "$reports_dir/interop-wsbus.log" >&2
  exit 1
fi
[[ ${#failed[@]} -eq 0 ]] || printf 'FAILED run: %s\n' "${failed[@]}"
echo "interop: $((4 - ${#failed[@]})) passed, ${#failed[@]} failed"
[[ ${#failed[@]} -eq 0 ]]
