#!/usr/bin/env bash
# Run the Autobahn TestSuite with the project's pinned harness (PyPI `kosoku`, which
# executes the Autobahn v25.10.1 case files under Python 3) and write a JSON summary
# with every case's verdict. Installs the harness first (conformance/setup.sh).
#
# usage: run.sh server WS_URL OUT_JSON [CASE_GLOB ...] [options]
#        run.sh client OUT_JSON [CASE_GLOB ...] [options] -- CMD [ARG ...]
#   server           test the WebSocket server at WS_URL (loopback only)
#   client           test the WebSocket client CMD; it gets the fuzzingserver's URL in
#                    $AUTOBAHN_SERVER_URL (see kosoku_run.py for the protocol it follows)
#   CASE_GLOB        case ids or globs to include (default: all 517), e.g. '1.*' 6.4.3
#   -x GLOB          exclude (repeatable), e.g. -x '12.*' -x '13.*' (deflate)
#   -p N             server mode: run N cases in parallel (default 1; timing-sensitive
#                    cases 3.x, 4.x, 5.19/5.20, 7.1.5 may change verdict in parallel)
#   --reports DIR    also write Autobahn-style index.json + per-case JSON/HTML reports
#   --no-compat-fix  run kosoku 0.1.0 as shipped, without the two fixes of kosoku_run.py
#   --label TEXT     the command to record in the summary (default: the runner's argv)
# exit: 0 = no case FAILED/ERROR nor with a bad close; 1 = some such case (OUT_JSON
#       "failing"); 2 = usage; 3 = harness error. Compare with expected results: check.py.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ $# -lt 2 ]]; then
  sed -n '2,/^#       "failing")/p' "$0" >&2
  exit 2
fi

"$here/../setup.sh"
exec "$here/../.venv/bin/python" "$here/kosoku_run.py" "$@"
