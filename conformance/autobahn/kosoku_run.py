#!/usr/bin/env python3
"""Run the Autobahn TestSuite (via the PyPI package `kosoku`) against a WebSocket
server or client on loopback and write a JSON summary with every case's verdict.

  kosoku_run.py server URL OUT_JSON [CASE_GLOB ...] [options]
      Autobahn "fuzzingclient": kosoku connects to the server under test at URL.
  kosoku_run.py client OUT_JSON [CASE_GLOB ...] [options] -- CMD [ARG ...]
      Autobahn "fuzzingserver": kosoku serves the cases on a free loopback port and
      runs CMD, the client under test, with the server's base URL in the environment
      variable AUTOBAHN_SERVER_URL (e.g. ws://127.0.0.1:40123). CMD must follow the
      standard Autobahn client protocol: connect to URL/getCaseCount (the server sends
      the number of cases N as a text message), then for i in 1..N connect to
      URL/runCase?case=i&agent=NAME and echo every message until the server closes,
      then connect to URL/updateReports?agent=NAME, which ends the run (kosoku drops
      that connection without a close frame: the client must not treat that as an error).

Called by run.sh (which installs kosoku first); see ../README.md.

Exit: 0 no case failed; 1 some case has behavior FAILED/ERROR or a bad close (listed
in OUT_JSON "failing"); 2 usage; 3 harness error (including, in client mode, a client
command that exited non-zero or never ended the run).

Derived from the runner in the project's shared tools (shared/tools/autobahn), which
found and fixed two kosoku 0.1.0 bugs. The fixes are kept here (on by default,
--no-compat-fix disables both); they change no file of kosoku, only the loaded case
classes in memory:

1. 12.x/13.x: kosoku hands the case code a `str` (not `bytes`) when the peer echoes
   a message *uncompressed* inside a permessage-deflate session (legal per RFC 7692;
   Node `ws` does it below its 1024-byte threshold when no_context_takeover is
   negotiated); the case code then hashes it and the case ends as ERROR ("Strings
   must be encoded before hashing"). Fix: wrap those cases' onMessage to turn the
   `str` back into the exact octets (latin-1 for binary, UTF-8 for text) before the
   unchanged case code runs.
2. 6.x: the valid-UTF-8 vectors are py2 byte-string escapes (e.g.
   'hello\\xF0\\xA4\\xAD\\xA2world'); kosoku keeps them as py3 `str` and UTF-8
   encodes that for TEXT frames, so they hit the wire double-encoded (only 2-byte
   sequences; 4-byte U+24B62 never sent). Fix: re-read such payloads as the UTF-8
   they denote (latin-1 octets -> UTF-8 decode), so the exact octets Autobahn sends
   go on the wire. Payloads that are not valid UTF-8 that way (real text literals
   such as 6.2.1's "Hello-\\u00b5@...") are left alone.

Summary changes from the shared runner: "cases" and "behaviorClose" map every case
id that ran to its verdicts (the shared runner listed only non-OK cases), so that
check.py can compare all cases with the checked-in expected results.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import ipaddress
import json
import os
import shlex
import sys
import time
import traceback
from importlib.metadata import version
from urllib.parse import urlsplit

BEHAVIORS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
CLOSE_BAD = {"FAILED", "UNCLEAN", "WRONG CODE", "FAILED BY CLIENT"}
HARNESS_ERROR = 3
# After the client under test exits, how long to wait for kosoku to finish the run
# before ending it ourselves (a client that never calls /updateReports).
CLIENT_EXIT_GRACE_S = 10


def _sort_key(case_id: str):
    return [int(p) for p in case_id.split(".")]


def _apply_compat_fix() -> int:
    from kosoku.cases import CASES

    def wrap(orig):
        def onMessage(self, msg, binary):  # noqa: N802 (Autobahn naming)
            if isinstance(msg, str):
                msg = msg.encode("latin-1" if binary else "utf-8")
            return orig(self, msg, binary)

        onMessage.__wrapped__ = orig
        return onMessage

    n = 0
    for case_id, cls in CASES.items():
        if case_id.split(".")[0] in ("12", "13") and "onMessage" in cls.__dict__:
            setattr(cls, "onMessage", wrap(cls.__dict__["onMessage"]))
            n += 1
    return n


def _fix_utf8_payloads() -> int:
    from kosoku.cases import CASES

    n = 0
    for case_id, cls in CASES.items():
        if not case_id.startswith("6."):
            continue
        for attr in ("PAYLOAD", "PAYLOAD1", "PAYLOAD2", "PAYLOAD3"):
            v = cls.__dict__.get(attr)
            if not isinstance(v, str) or not any(ord(c) >= 0x80 for c in v):
                continue
            if any(ord(c) > 0xFF for c in v):
                continue
            try:
                fixed = v.encode("latin-1").decode("utf-8")
            except UnicodeDecodeError:
                continue  # a real text literal, already correct
            setattr(cls, attr, fixed)
            n += 1
    return n


def _check_loopback(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws",):
        print(f"error: only ws:// URLs are supported, got {url!r}", file=sys.stderr)
        sys.exit(2)
    host = parts.hostname or ""
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok and os.environ.get("AUTOBAHN_ALLOW_NON_LOOPBACK") != "1":
        print(f"error: refusing non-loopback target {host!r}", file=sys.stderr)
        sys.exit(2)


async def _test_server(args) -> tuple[list, dict]:
    """kosoku as fuzzingclient against the server at args.url."""
    from kosoku import FailureError, run_fuzzingclient

    try:
        results = await run_fuzzingclient(
            args.url, args.include or None, args.exclude or None,
            concurrency=args.parallelism,
        )
    except FailureError as failure:  # raised when any case did not pass
        results = failure.results
    return list(results), {"url": args.url, "parallelism": args.parallelism}


async def _end_run(base_url: str) -> None:
    """Ask kosoku's fuzzingserver to finish, as a client's /updateReports would."""
    from websockets.asyncio.client import connect

    try:
        async with connect(f"{base_url}/updateReports?agent=kosoku_run", open_timeout=5):
            pass
    except Exception:  # noqa: BLE001 -- kosoku drops this connection by design
        pass


async def _test_client(args) -> tuple[list, dict]:
    """kosoku as fuzzingserver; args.command is the client under test."""
    from kosoku import FailureError, run_fuzzingserver

    info: dict = {"client_command": args.command}
    async with run_fuzzingserver(args.include or None, args.exclude or None,
                                 host="127.0.0.1", port=0) as server:
        base_url = f"ws://127.0.0.1:{server.port}"
        print(f"fuzzingserver on {base_url}; running: {shlex.join(args.command)}", flush=True)
        result = asyncio.ensure_future(server.get_result())
        client = await asyncio.create_subprocess_exec(
            *args.command, env=os.environ | {"AUTOBAHN_SERVER_URL": base_url})
        info["client_exit_code"] = await client.wait()
        done, _ = await asyncio.wait([result], timeout=CLIENT_EXIT_GRACE_S)
        if not done:
            info["error"] = "the client exited without ending the run (/updateReports)"
            await _end_run(base_url)
        try:
            results = await result
        except FailureError as failure:
            results = failure.results
    return list(results), info


def _summary(args, mode_info: dict, results: list, started: str, wall: float) -> dict:
    by_case = {}
    for r in results:  # a client may run a case twice: the last run counts
        by_case[r.case_id] = r
    results = sorted(by_case.values(), key=lambda r: _sort_key(r.case_id))

    beh = collections.Counter(r.behavior.value for r in results)
    bclose = collections.Counter(r.behavior_close.value for r in results)
    non_ok, failing = [], []
    for r in results:
        b, bc = r.behavior.value, r.behavior_close.value
        if b != "OK" or bc != "OK":
            non_ok.append({"id": r.case_id, "behavior": b, "behaviorClose": bc,
                           "result": r.result, "resultClose": r.result_close,
                           "duration_ms": r.duration})
        if b in ("FAILED", "ERROR") or bc in CLOSE_BAD:
            failing.append(r.case_id)
    durations = collections.defaultdict(int)
    for r in results:
        durations[r.case_id.split(".")[0]] += r.duration
    return {
        "mode": args.mode,
        **mode_info,
        "agent": sorted({r.agent for r in results}),
        "harness": f"kosoku {version('kosoku')} (Autobahn TestSuite v25.10.1 case files)",
        "compat_fixes": args.patched or "disabled",
        "command": args.label or shlex.join(sys.argv),
        "date": started,
        "include": args.include or ["*"],
        "exclude": args.exclude,
        "cases_run": len(results),
        "wall_seconds": round(wall, 1),
        "totals": {
            "behavior": {k: beh.get(k, 0) for k in BEHAVIORS}
            | {k: v for k, v in beh.items() if k not in BEHAVIORS},
            "behaviorClose": dict(sorted(bclose.items())),
        },
        "failing": failing,
        "cases": {r.case_id: r.behavior.value for r in results},
        "behaviorClose": {r.case_id: r.behavior_close.value for r in results},
        "non_ok": non_ok,
        "case_ms_by_group": dict(sorted(durations.items(), key=lambda kv: int(kv[0]))),
    }


def _parse_args(argv: list[str]):
    usage = __doc__.split("\n\n")[1]
    if not argv or argv[0] not in ("server", "client"):
        print("usage:\n" + usage, file=sys.stderr)
        sys.exit(2)
    mode, argv = argv[0], argv[1:]
    command = []
    if mode == "client":
        if "--" not in argv:
            print("error: client mode needs '-- CMD [ARG ...]'\nusage:\n" + usage, file=sys.stderr)
            sys.exit(2)
        split = argv.index("--")
        argv, command = argv[:split], argv[split + 1:]

    ap = argparse.ArgumentParser(prog=f"kosoku_run.py {mode}", usage=usage)
    if mode == "server":
        ap.add_argument("url", help="ws:// URL of the server under test (loopback only)")
    ap.add_argument("out_json")
    ap.add_argument("include", nargs="*", help="case ids or globs, e.g. '1.*' 9.7.1")
    ap.add_argument("-x", "--exclude", action="append", default=[])
    if mode == "server":
        ap.add_argument("-p", "--parallelism", type=int, default=1,
                        help="cases run in parallel (timing-sensitive cases prefer 1)")
    ap.add_argument("--reports", help="also write Autobahn-style HTML/JSON reports here")
    ap.add_argument("--no-compat-fix", action="store_true")
    ap.add_argument("--label", help="command recorded in the summary (default: this one)")
    args = ap.parse_intermixed_args(argv)
    args.mode, args.command = mode, command
    if mode == "server":
        _check_loopback(args.url)
    elif not command:
        ap.error("empty client command after '--'")
    return args


def main() -> int:
    args = _parse_args(sys.argv[1:])
    args.patched = {}
    if not args.no_compat_fix:
        args.patched = {"12_13_onMessage_str_to_bytes": _apply_compat_fix(),
                        "6_x_utf8_payloads_redecoded": _fix_utf8_payloads()}

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    t0 = time.monotonic()
    run = _test_server if args.mode == "server" else _test_client
    results, mode_info = asyncio.run(run(args))
    summary = _summary(args, mode_info, results, started, time.monotonic() - t0)

    if args.reports:
        from kosoku._report import write_reports
        write_reports(results, args.reports)

    os.makedirs(os.path.dirname(os.path.abspath(args.out_json)), exist_ok=True)
    with open(args.out_json, "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    failing = summary["failing"]
    print(f"{summary['cases_run']} cases in {summary['wall_seconds']}s: "
          + ", ".join(f"{k}={v}" for k, v in summary["totals"]["behavior"].items() if v)
          + f"; failing={len(failing)}; summary -> {args.out_json}")

    if mode_info.get("error"):
        print(f"error: {mode_info['error']}", file=sys.stderr)
        return HARNESS_ERROR
    if mode_info.get("client_exit_code", 0) != 0:
        print(f"error: the client command exited with {mode_info['client_exit_code']}",
              file=sys.stderr)
        return HARNESS_ERROR
    return 1 if failing else 0


if __name__ == "__main__":
    try:
        rc = main()
    except SystemExit as e:  # argparse / usage errors keep their code
        rc = e.code if isinstance(e.code, int) else 2
    except BaseException:  # noqa: BLE001 -- an exit code of 1 must mean "cases failed"
        traceback.print_exc()
        rc = HARNESS_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: one run in ~20 died with SIGABRT *after* the summary
    # was written (native extension shutdown), turning a good run into exit 134.
    os._exit(rc)
