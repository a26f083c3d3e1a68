#!/usr/bin/env bash
# wsbus behind a real nginx, in headless Chromium and with raw upgrades:
#   proxy.test.mjs: TLS-terminating nginx; SPEC §5 "Trusted proxies" and the same-origin rule;
#   websocket-test.test.mjs: the connectivity test page (SPEC §6) through nginx proxying
#     WebSocket correctly, without forwarding Upgrade, and with a read timeout shorter than
#     the page's idle hold; asserts each diagnosis and the downloaded JSON report.
#   tests/proxy/run.sh
# Installs what it needs, idempotently: playwright-core (npm ci, from package-lock.json),
# and, as root, Debian's nginx and chromium (apt-get). It never touches the system nginx
# service or its configuration: the tests start their own nginx with a configuration, logs,
# pid file and temp directories in a temporary directory, on free loopback ports, and stop it.
# The server under test: WSBUS_BIN=path, else target/release/wsbus of this repo (build it
# first); the tests spawn it with configuration files they write (harness.mjs).
# NGINX_BIN (default /usr/sbin/nginx), CHROMIUM (default /usr/bin/chromium), OPENSSL (default
# openssl on PATH): the programs used. WSBUS_PROXY_KEEP=1 keeps the temporary directory.
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -d node_modules/playwright-core ]]; then
  echo "==== npm ci (tests/proxy)"
  npm ci --no-audit --no-fund
fi

# Debian packages that are missing, as "package:path" pairs checked below.
missing=()
nginx_bin="${NGINX_BIN:-/usr/sbin/nginx}"
chromium_bin="${CHROMIUM:-/usr/bin/chromium}"
[[ -x $nginx_bin ]] || missing+=("nginx:NGINX_BIN:$nginx_bin")
[[ -x $chromium_bin ]] || missing+=("chromium:CHROMIUM:$chromium_bin")
command -v "${OPENSSL:-openssl}" >/dev/null || missing+=("openssl:OPENSSL:${OPENSSL:-openssl}")
if [[ ${#missing[@]} -gt 0 ]]; then
  packages=()
  for entry in "${missing[@]}"; do
    IFS=: read -r package variable path <<<"$entry"
    if [[ -n ${!variable:-} ]]; then
      echo "error: $variable=$path is not an executable" >&2
      exit 1
    elif [[ $(id -u) -ne 0 ]]; then
      echo "error: $path missing; install Debian's $package (apt-get install $package) or set $variable" >&2
      exit 1
    fi
    packages+=("$package")
  done
  # Installing nginx may try to start the system service (Debian's postinst); the tests
  # never use it, and containers usually forbid it (policy-rc.d).
  echo "==== installing Debian packages: ${packages[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y "${packages[@]}"
fi
export NGINX_BIN="$nginx_bin" CHROMIUM="$chromium_bin"

exec node --test proxy.test.mjs websocket-test.test.mjs
