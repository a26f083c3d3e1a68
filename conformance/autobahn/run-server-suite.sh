#!/usr/bin/env bash
# Autobahn TestSuite against wsbus's server: build `wsbus` (release), start
# `wsbus echo` on a free loopback port, run the cases (all 517 by default), then
# compare the verdicts with the checked-in expected-server.json (check.py).
#
# usage: conformance/autobahn/run-server-suite.sh [CASE_GLOB ...] [-x GLOB ...]
#   e.g. run-server-suite.sh '6.*' 7.1.6        run-server-suite.sh -x '12.*' -x '13.*'
#   With globs or -x the run is partial and only the cases that ran are compared.
# writes: conformance/reports/autobahn-server-summary.json, autobahn-server-wsbus.log
# exit:   0 = no case worse than expected; non-zero = regression, crash or harness error
# env:    WSBUS_BIN        server binary to test instead of building (see ../lib.sh)
#         AUTOBAHN_TIMEOUT limit for the case run in seconds (default 1200; all 517
#                          cases take a few minutes, 12.x/13.x being the slow ones)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
summary="$reports_dir/autobahn-server-summary.json"
expected="$here/expected-server.json"

bin="$(wsbus_bin)"
start_echo_server "$bin" "$reports_dir/autobahn-server-wsbus.log"
echo "testing $bin echo at $server_url"

# run.sh exits 1 when some case FAILED; whether that is a regression is check.py's
# call (expected results may hold known failures). Any other code is a harness error.
rm -f "$summary"
rc=0
timeout "${AUTOBAHN_TIMEOUT:-1200}" "$here/run.sh" server "$server_url" "$summary" \
  --label "conformance/autobahn/run-server-suite.sh${*:+ $*}" "$@" || rc=$?
if [[ $rc -ne 0 && $rc -ne 1 ]]; then
  [[ $rc -eq 124 ]] && echo "error: the case run exceeded ${AUTOBAHN_TIMEOUT:-1200} s" >&2
  echo "error: Autobahn runner failed (exit $rc)" >&2
  exit "$rc"
fi
if ! echo_server_alive; then
  echo "error: wsbus exited during the run; log $reports_dir/autobahn-server-wsbus.log:" >&2
  tail -n 30 "$reports_dir/autobahn-server-wsbus.log" >&2
  exit 1
fi

"$here/check.py" "$summary" "$expected"
