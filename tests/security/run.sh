#!/usr/bin/env bash
# Security features of `wsbus serve` (SPEC §5) with real clients over real sockets:
#   raw_socket_test.py  Python `websockets` on /chat: tokens in the Authorization header and
#                       in ?access_token=, the 401 refusals and their reasons, a token that
#                       expires under an open socket (1008), the message rate (1008), the
#                       /chat JSON Schema (1007)
#   bus.test.mjs        npm faye and cometd, WebSocket and long-polling, on /amb: the token in
#                       the handshake's ext, 401::<reason>, the channels claim (403), a
#                       channel's schema (400::<pointer>)
#   browser.test.mjs    headless Chromium on the page at /#access_token=<JWT>
# Then checks that neither server wrote the secret or a token (eyJ…) in its log.
#
#   tests/security/run.sh [raw|bus|browser]...     all three parts, or only those named
#
# Starts two servers on free ports from configurations written here (a fresh random HS256
# secret each run): "strict" — [auth] required, /secure/** by claim, /typed/** with a schema,
# the /chat schema, 20 messages/s — and "chat", the same without the /chat schema (the
# chat's plain-text welcome is an outbound message a JSON schema on /chat would stop).
# Uses $WSBUS_BIN, else target/release/wsbus. Installs what it needs, idempotently: npm ci
# here, conformance/.venv (conformance/setup.sh), Debian's chromium (as root; or set
# CHROMIUM). Runs every part, exits non-zero if any failed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
bin="${WSBUS_BIN:-$repo/target/release/wsbus}"
[[ -x $bin ]] || { echo "error: no wsbus binary at $bin (cargo build --release)" >&2; exit 1; }

cd "$here"
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "==== npm ci (tests/security)"
  npm ci --no-audit --no-fund
fi
python="$repo/conformance/.venv/bin/python"
if ! "$python" -c 'import websockets' 2>/dev/null; then
  "$repo/conformance/setup.sh"
fi
chromium_bin="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x $chromium_bin ]]; then
  if [[ -z ${CHROMIUM:-} && $(id -u) -eq 0 ]]; then
    echo "==== installing Debian's chromium"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    echo "error: $chromium_bin missing; install Debian's chromium (apt-get install chromium) or set CHROMIUM" >&2
    exit 1
  fi
fi
export CHROMIUM="$chromium_bin"

tmp="$(mktemp -d)"
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_servers; rm -rf "$tmp"' EXIT

# The test configuration. The secret is random per run and only in files under $tmp and
# the tests' environment.
export SEC_JWT_SECRET="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
export SEC_JWT_ISSUER="https://issuer.wsbus.test"
export SEC_JWT_AUDIENCE="wsbus-security-tests"
cat >"$tmp/typed.json" <<'EOF'
{"type": "object", "required": ["text"],
 "properties": {"text": {"type": "string", "maxLength": 100}}, "additionalProperties": false}
EOF
cp "$tmp/typed.json" "$tmp/chat.json"
# write_config FILE WITH_CHAT_SCHEMA
write_config() {
  cat >"$1" <<EOF
demo = true                       # keep the chat page on although [auth] is set
[auth]
required = true
jwt_secret = "$SEC_JWT_SECRET"
issuer = "$SEC_JWT_ISSUER"
audience = "$SEC_JWT_AUDIENCE"
leeway = "1s"                     # the expiry test counts seconds
[[bus.channels]]
pattern = "/secure/**"
subscribe = "claim"
publish = "claim"
[[bus.channels]]
pattern = "/typed/**"
subscribe = "anyone"
publish = "anyone"
schema = "$tmp/typed.json"
[limits]
messages_per_second = 20
connections_per_ip = 1000
EOF
  if [[ $2 == yes ]]; then
    cat >>"$1" <<EOF
[[websocket.schemas]]
path = "/chat"
schema = "$tmp/chat.json"
on_invalid = "close"
EOF
  fi
}

# start_server NAME WITH_CHAT_SCHEMA: starts `wsbus serve`, sets $url to its http://HOST:PORT.
start_server() {
  write_config "$tmp/$1.toml" "$2"
  "$bin" serve --config "$tmp/$1.toml" --listen 127.0.0.1:0 2>"$tmp/$1.log" >&2 &
  pids+=($!)
  url=
  for _ in $(seq 100); do
    url=$(sed -n 's/.*listening on \(http:\/\/[^ ]*\).*/\1/p' "$tmp/$1.log" | head -n 1)
    [[ -n $url ]] && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $url ]]; then
    echo "error: wsbus serve ($1) did not start:" >&2
    cat "$tmp/$1.log" >&2
    exit 1
  fi
}
start_server strict yes
export SEC_URL=$url
start_server chat no
export SEC_CHAT_URL=$url
echo "==== servers: strict $SEC_URL, chat (no /chat schema) $SEC_CHAT_URL"

parts=("${@:-raw bus browser}")
parts=" ${parts[*]} "
failed=()
# run PART NAME COMMAND...: runs a part if it was asked for, records its failure.
run() {
  local part=$1 name=$2
  shift 2
  [[ $parts == *" $part "* ]] || return 0
  echo "==== $name"
  "$@" || failed+=("$name")
}
run raw "raw WebSocket (Python websockets): raw_socket_test.py" "$python" raw_socket_test.py
run bus "bus (faye, cometd): bus.test.mjs" node --test --test-force-exit --test-reporter=spec bus.test.mjs
run browser "browser (Chromium): browser.test.mjs" node --test --test-force-exit --test-reporter=spec browser.test.mjs
stop_servers

echo "==== no secret in the server logs"
if grep -l -e "$SEC_JWT_SECRET" -e 'eyJ' "$tmp"/*.log; then
  echo "FAIL: the secret or a token (eyJ…) is in a server log above" >&2
  grep -h -e "$SEC_JWT_SECRET" -e 'eyJ' "$tmp"/*.log | cut -c1-200 >&2
  failed+=("logs")
else
  echo "ok   neither the secret nor a token in $(cat "$tmp"/*.log | wc -l) log lines"
fi

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "FAILED: ${failed[*]}" >&2
  for name in strict chat; do
    echo "---- $name server log (last 30 lines)" >&2
    tail -n 30 "$tmp/$name.log" >&2
  done
  exit 1
fi
echo "==== security: all passed"
