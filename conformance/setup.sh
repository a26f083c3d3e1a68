#!/usr/bin/env bash
# Install the conformance harness's own dependencies, idempotently:
#   conformance/.venv                    Python venv with the pins of requirements.txt
#                                        (kosoku = Autobahn TestSuite, websockets = interop peer,
#                                        prometheus_client = the /metrics parsers)
#   conformance/interop/node_modules     Node `ws`, from package-lock.json via `npm ci`
# Both dirs are gitignored. When everything is already installed at the pinned
# versions this only checks and returns (well under a second).
#
# usage: conformance/setup.sh
# env:   PYTHON  interpreter for the venv (default python3; needs >= 3.11 for websockets)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
interop="$here/interop"
py="${PYTHON:-python3}"

# True when the venv's installed packages match every `name==version` pin.
venv_matches_pins() {
  [[ -x "$venv/bin/python" ]] || return 1
  "$venv/bin/python" - "$here/requirements.txt" 2>/dev/null <<'PY'
import re, sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    m = re.match(r"\s*([A-Za-z0-9_.-]+)==(\S+)", line)
    if m and version(m[1]) != m[2]:
        sys.exit(1)
PY
}

# True when node_modules holds exactly the versions of package-lock.json (npm records
# what it installed in node_modules/.package-lock.json).
node_modules_match_lock() {
  "$venv/bin/python" - "$interop/package-lock.json" "$interop/node_modules/.package-lock.json" \
    2>/dev/null <<'PY'
import json, sys
want, have = (json.load(open(f))["packages"] for f in sys.argv[1:])
for name, pkg in want.items():
    if name and have[name]["version"] != pkg["version"]:
        sys.exit(1)
PY
}

if ! venv_matches_pins; then
  echo "setup: installing Python packages into $venv" >&2
  "$py" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    || { echo "setup: $py is older than 3.11 (websockets needs 3.11)" >&2; exit 1; }
  "$py" -m venv "$venv" \
    || { echo "setup: '$py -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  venv_matches_pins || { echo "setup: venv does not match requirements.txt after install" >&2; exit 1; }
fi

if ! node_modules_match_lock; then
  echo "setup: installing Node packages into $interop/node_modules" >&2
  (cd "$interop" && npm ci --no-audit --no-fund --loglevel=error)
  node_modules_match_lock || { echo "setup: node_modules does not match package-lock.json after npm ci" >&2; exit 1; }
fi
