#!/usr/bin/env bash
# The npm Bayeux clients (faye, cometd) against `wsbus serve`'s bus at /amb: once with
# WebSocket enabled, once with WSBUS_BUS__WEBSOCKET_ENABLED=false (every client must fall
# back to long-polling). Each time: the interop tests (clients.test.mjs, via run.sh), then
# wsbus's own bus features (wsbus.test.mjs: ack through a connection-killing proxy, replay
# after a reconnect, presence). Uses $WSBUS_BIN, else target/release/wsbus.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${WSBUS_BIN:-$here/../../target/release/wsbus}"
[[ -x $bin ]] || { echo "error: no wsbus binary at $bin (cargo build --release)" >&2; exit 1; }

server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

# start_server [ENV=VALUE ...]: starts `wsbus serve` on a free port, sets $url.
start_server() {
  local log
  log=$(mktemp)
  env "$@" "$bin" serve --listen 127.0.0.1:0 2>"$log" &
  server_pid=$!
  url=
  for _ in $(seq 100); do
    url=$(sed -n 's/.*listening on \(http:\/\/[^ ]*\).*/\1/p' "$log" | head -n 1)
    [[ -n $url ]] && break
    sleep 0.1
  done
  [[ -n $url ]] || { echo "error: wsbus serve did not start:" >&2; cat "$log" >&2; exit 1; }
  url="$url/amb"
}

# wsbus_tests: wsbus.test.mjs against $url (run.sh has installed node_modules).
wsbus_tests() {
  echo "==== wsbus.test.mjs against BUS_URL=$url (BUS_EXPECT_NO_WEBSOCKET=${BUS_EXPECT_NO_WEBSOCKET:-0})"
  (cd "$here" && BUS_URL="$url" node --test --test-force-exit --test-reporter=spec wsbus.test.mjs)
}

start_server
"$here/run.sh" "$url"
wsbus_tests
stop_server

start_server WSBUS_BUS__WEBSOCKET_ENABLED=false
export BUS_EXPECT_NO_WEBSOCKET=1
"$here/run.sh" "$url"
wsbus_tests
