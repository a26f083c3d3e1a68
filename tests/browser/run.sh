#!/usr/bin/env bash
# Browser tests of `wsbus serve` in headless Chromium: the chat demo (chat.test.mjs)
# and the admin page (admin.test.mjs).
#   tests/browser/run.sh
# Installs what it needs, idempotently: playwright-core (npm ci, from package-lock.json)
# and Debian's chromium (apt-get, as root). The server under test is, in order:
#   WSBUS_URL=http://HOST:PORT  a running server;
#   WSBUS_BIN=path              that binary, spawned as `serve --listen 127.0.0.1:$WSBUS_TEST_PORT`;
#   else                        target/release/wsbus of this repo (build it first).
# WSBUS_TEST_PORT defaults to 18080; CHROMIUM to /usr/bin/chromium. The admin test spawns
# its own server with an admin token on WSBUS_ADMIN_TEST_PORT (18081); with WSBUS_URL it
# needs WSBUS_ADMIN_TOKEN (that server's [admin] token). tls.test.mjs always spawns its own
# `wsbus echo` over wss (WSBUS_BIN or target/release/wsbus, a free port, a certificate made
# with openssl): Chromium's TLS against wsbus's TLS 1.3 record layer. cluster_chat.test.mjs
# starts its own nodes and redis-server.
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -d node_modules/playwright-core ]]; then
  echo "==== npm ci (tests/browser)"
  npm ci --no-audit --no-fund
fi

chromium_bin="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x $chromium_bin ]]; then
  if [[ -n ${CHROMIUM:-} ]]; then
    echo "error: CHROMIUM=$CHROMIUM is not an executable" >&2
    exit 1
  elif [[ $(id -u) -eq 0 ]]; then
    echo "==== installing Debian's chromium"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    echo "error: $chromium_bin missing; install Debian's chromium (apt-get install chromium) or set CHROMIUM" >&2
    exit 1
  fi
fi
export CHROMIUM="$chromium_bin"

exec node --test chat.test.mjs admin.test.mjs cluster_chat.test.mjs tls.test.mjs
