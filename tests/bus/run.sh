#!/usr/bin/env bash
# Interop tests of a Bayeux server with real npm Bayeux clients (faye, cometd): clients.test.mjs.
#
#   tests/bus/run.sh                          validate the harness against Faye's own server
#   tests/bus/run.sh http://127.0.0.1:8080/amb    test a running server (e.g. wsbus's /amb)
#
# With a URL: runs the tests once against it; set BUS_EXPECT_NO_WEBSOCKET=1 when that server
# refuses WebSocket (wsbus with websocket.enabled = false), and BUS_EXTENDED_CHANNEL=0 if it
# does not accept CometD's extended channel characters.
# Without a URL: starts the stand-in faye_server.mjs (npm `faye`'s NodeAdapter at /amb) on a free
# port twice — normally, then with --no-websocket and BUS_EXPECT_NO_WEBSOCKET=1 — and runs the
# tests against each. BUS_SERVER_TRACE_DIR=dir makes the stand-in log every HTTP body and
# WebSocket frame there (faye-ws.jsonl, faye-no-ws.jsonl).
#
# Installs what it needs (npm ci from package-lock.json, when node_modules is missing or stale).
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "==== npm ci (tests/bus)"
  npm ci --no-audit --no-fund
fi

# --test-force-exit: a server under test that never answers a held request could otherwise
# leave a client's retry timers running; the tests close their clients, so normally the file
# exits by itself.
run_tests() {
  node --test --test-force-exit --test-reporter=spec clients.test.mjs
}

if [[ $# -ge 1 ]]; then
  export BUS_URL="$1"
  echo "==== clients.test.mjs against BUS_URL=$BUS_URL (BUS_EXPECT_NO_WEBSOCKET=${BUS_EXPECT_NO_WEBSOCKET:-0})"
  run_tests
  exit
fi

server_pid=
stop_server() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
  fi
}
trap stop_server EXIT

# start_server NAME ARGS...: starts faye_server.mjs, sets $port from its `READY <port>` line.
start_server() {
  local name=$1
  shift
  local out
  out=$(mktemp)
  local trace=()
  if [[ -n ${BUS_SERVER_TRACE_DIR:-} ]]; then
    mkdir -p "$BUS_SERVER_TRACE_DIR"
    trace=(--trace "$BUS_SERVER_TRACE_DIR/$name.jsonl")
  fi
  node faye_server.mjs --port 0 "$@" "${trace[@]}" >"$out" 2>&1 &
  server_pid=$!
  port=
  for _ in $(seq 100); do
    port=$(awk '/^READY /{print $2; exit}' "$out")
    [[ -n $port ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if [[ -z $port ]]; then
    echo "error: faye_server.mjs $* did not start:" >&2
    cat "$out" >&2
    rm -f "$out"
    exit 1
  fi
  rm -f "$out"
}

status=0

echo "==== stand-in: faye NodeAdapter at /amb, WebSocket enabled"
start_server faye-ws --extended-channels
BUS_URL="http://127.0.0.1:$port/amb" BUS_EXPECT_NO_WEBSOCKET=0 run_tests || status=1
stop_server

echo "==== stand-in: faye NodeAdapter at /amb, WebSocket refused with 400 (--no-websocket)"
start_server faye-no-ws --extended-channels --no-websocket
BUS_URL="http://127.0.0.1:$port/amb" BUS_EXPECT_NO_WEBSOCKET=1 run_tests || status=1
stop_server

if [[ $status -ne 0 ]]; then
  echo "FAILED" >&2
fi
exit $status
