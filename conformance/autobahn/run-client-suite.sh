#!/usr/bin/env bash
# Autobahn TestSuite against a WebSocket CLIENT: kosoku serves the cases (Autobahn's
# "fuzzingserver") on a free loopback port, runs the client command with the base URL
# in $AUTOBAHN_SERVER_URL, then the verdicts are compared with the checked-in
# expected-client.json (check.py).
#
# usage: conformance/autobahn/run-client-suite.sh [CASE_GLOB ...] [-x GLOB ...] -- CMD [ARG ...]
#   e.g. run-client-suite.sh -- target/release/examples/autobahn_client
#        run-client-suite.sh '1.*' -x 1.2.8 -- node my-client.js
#   CMD is run as is (build it first). It must follow the standard Autobahn client
#   protocol: read the count N from $AUTOBAHN_SERVER_URL/getCaseCount (one text
#   message), for i in 1..N connect to /runCase?case=i&agent=NAME and echo every
#   message back until the server closes, then connect to /updateReports?agent=NAME,
#   which ends the run (kosoku drops that connection without a close frame).
#   With globs or -x the run is partial and only the cases that ran are compared.
# writes: conformance/reports/autobahn-client-summary.json
# exit:   0 = no case worse than expected; non-zero = regression, client or harness error
# env:    AUTOBAHN_TIMEOUT  limit for the whole run in seconds (default 1200)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$here/../lib.sh"
summary="$reports_dir/autobahn-client-summary.json"
expected="$here/expected-client.json"

case_args=()
while [[ $# -gt 0 && $1 != -- ]]; do
  case_args+=("$1")
  shift
done
if [[ $# -lt 2 ]]; then
  sed -n '2,/^# env:/p' "$0" >&2
  exit 2
fi
shift # the --

# run.sh exits 1 when some case FAILED; whether that is a regression is check.py's
# call (expected results may hold known failures). Any other code is an error of the
# harness or of the client (exit status, run never ended): check.py still reports
# the cases that did run, then this script fails.
rm -f "$summary"
rc=0
timeout "${AUTOBAHN_TIMEOUT:-1200}" "$here/run.sh" client "$summary" "${case_args[@]}" \
  --label "conformance/autobahn/run-client-suite.sh ${case_args[*]:+${case_args[*]} }-- $*" \
  -- "$@" || rc=$?
[[ $rc -eq 124 ]] && echo "error: the client run exceeded ${AUTOBAHN_TIMEOUT:-1200} s" >&2
if [[ ! -f $summary ]]; then
  echo "error: Autobahn runner failed (exit $rc) without writing $summary" >&2
  exit "$rc"
fi
check_rc=0
"$here/check.py" "$summary" "$expected" || check_rc=$?
if [[ $rc -ne 0 && $rc -ne 1 ]]; then
  echo "error: Autobahn client run failed (exit $rc)" >&2
  exit "$rc"
fi
exit "$check_rc"
