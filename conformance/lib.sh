# shellcheck shell=bash disable=SC2034 # (its variables are for the sourcing scripts)
# Shared by the conformance runners (sourced, not executed): build and start the
# `wsbus echo` server under test on a free loopback port.
#
# env: WSBUS_BIN  use this executable instead of building target/release/wsbus
#                 (scripts/test sets it after its own build; handy for a stand-in server)

conformance_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(cd "$conformance_dir/.." && pwd)"
reports_dir="$conformance_dir/reports"

# Print the path of the wsbus binary, building it first unless WSBUS_BIN is set
# (cargo itself skips the build when nothing changed).
wsbus_bin() {
  if [[ -n "${WSBUS_BIN:-}" ]]; then
    echo "$WSBUS_BIN"
    return
  fi
  (cd "$repo_root" && cargo build --release -p wsbus-server >&2)
  echo "${CARGO_TARGET_DIR:-$repo_root/target}/release/wsbus"
}

# Print a TCP port that is free on 127.0.0.1 right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_echo_server BIN LOG: run `BIN echo` on a free loopback port, logging to LOG;
# set server_pid and server_url once the port accepts connections. Installs traps
# that stop the server however the calling script ends (INT/TERM become an exit so
# that the EXIT trap runs).
start_echo_server() {
  local bin="$1" log="$2" port
  trap stop_echo_server EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  port="$(free_port)"
  mkdir -p "$(dirname "$log")"
  "$bin" echo --listen "127.0.0.1:$port" >"$log" 2>&1 &
  server_pid=$!
  server_url="ws://127.0.0.1:$port"
  for _ in $(seq 100); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      echo "error: '$bin echo' exited at startup; log $log:" >&2
      tail -n 20 "$log" >&2
      return 1
    fi
    # bash's /dev/tcp: a plain TCP connect, closed at once.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "error: '$bin echo' did not listen on 127.0.0.1:$port within 10 s" >&2
  return 1
}

# Stop the server started by start_echo_server (SIGTERM, then SIGKILL after 5 s).
stop_echo_server() {
  [[ -n "${server_pid:-}" ]] || return 0
  kill "$server_pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

# True while the server started by start_echo_server is still running.
echo_server_alive() {
  kill -0 "$server_pid" 2>/dev/null
}
