#!/usr/bin/env python3
"""Compare an Autobahn run summary (written by kosoku_run.py) with the checked-in
expected results, case by case.

usage: check.py SUMMARY_JSON EXPECTED_JSON [--write]
  --write   record the summary as the new expected results (full runs only)

Fails (exit 1, listing each case) when a case got worse than expected, its close
verdict got worse, or an expected case did not run. Behavior ranks
OK > NON-STRICT > INFORMATIONAL > UNIMPLEMENTED > FAILED/ERROR; INFORMATIONAL
matches only INFORMATIONAL (the cases that always report it). Close verdicts rank
OK > INFORMATIONAL > the bad ones (FAILED, UNCLEAN, WRONG CODE, FAILED BY CLIENT).
Better than expected is reported and passes: record it with --write.
A partial run (case globs or -x given) is compared only on the cases that ran.
Exit: 0 no regression, 1 regression, 2 usage or unreadable files.

Expected file format: a header (harness, date and command of the run it came from,
mode, totals) plus "cases" (case id -> behavior) and "behaviorClose" (case id ->
close verdict) for every case.
"""
import argparse
import json
import os
import sys

BEHAVIOR_RANK = {"OK": 4, "NON-STRICT": 3, "INFORMATIONAL": 2, "UNIMPLEMENTED": 1,
                 "FAILED": 0, "ERROR": 0}
CLOSE_RANK = {"OK": 2, "INFORMATIONAL": 1}  # anything else is a bad close: 0


def _sort_key(case_id: str):
    return [int(p) for p in case_id.split(".")]


def _compare(rank: dict, expected: str, actual: str) -> int:
    """<0 worse, 0 same, >0 better (unknown verdicts rank lowest)."""
    return rank.get(actual, 0) - rank.get(expected, 0)


def _is_partial(summary: dict) -> bool:
    return summary["include"] != ["*"] or bool(summary["exclude"])


def write_expected(summary: dict, path: str) -> int:
    if _is_partial(summary):
        print(f"error: refusing to write {path} from a partial run "
              f"(include={summary['include']}, exclude={summary['exclude']})", file=sys.stderr)
        return 2
    if os.path.exists(path):
        with open(path) as f:
            old_mode = json.load(f).get("mode")
        if old_mode != summary["mode"]:
            print(f"error: {path} holds {old_mode!r} results, the summary is from a "
                  f"{summary['mode']!r} run", file=sys.stderr)
            return 2
    expected = {
        "harness": summary["harness"],
        "date": summary["date"],
        "command": summary["command"],
        "mode": summary["mode"],
        "totals": summary["totals"],
        "cases": summary["cases"],
        "behaviorClose": summary["behaviorClose"],
    }
    with open(path, "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"wrote {len(expected['cases'])} expected cases to {path}")
    return 0


def check(summary: dict, expected: dict) -> int:
    if expected.get("mode") != summary["mode"]:
        print(f"error: expected results are for mode {expected.get('mode')!r}, "
              f"the summary for {summary['mode']!r}", file=sys.stderr)
        return 2
    partial = _is_partial(summary)
    got, got_close = summary["cases"], summary["behaviorClose"]
    regressions, improvements, notes = [], [], []
    compared = 0
    for case in sorted(expected["cases"], key=_sort_key):
        want, want_close = expected["cases"][case], expected["behaviorClose"][case]
        if case not in got:
            if not partial:
                regressions.append(f"MISSING   {case}: expected {want}/{want_close}, did not run")
            continue
        compared += 1
        b, c = got[case], got_close[case]
        if (b, c) == (want, want_close):
            continue
        change = f"{case}: behavior {want} -> {b}, close {want_close} -> {c}"
        db, dc = _compare(BEHAVIOR_RANK, want, b), _compare(CLOSE_RANK, want_close, c)
        if db < 0 or dc < 0:
            regressions.append(f"WORSE     {change}")
        elif db > 0 or dc > 0:
            improvements.append(f"BETTER    {change}")
        else:
            notes.append(f"CHANGED   {change}")
    for case in sorted(set(got) - set(expected["cases"]), key=_sort_key):
        notes.append(f"NEW       {case}: {got[case]}/{got_close[case]} (not in expected results)")

    for line in regressions + improvements + notes:
        print(line)
    if improvements or notes:
        print("(better, changed or new cases pass; record them with --write)")
    scope = "cases that ran (partial run)" if partial else "all expected cases"
    print(f"compared {compared} {scope} with the expected results of {expected['date']}")
    passed = compared - sum(1 for r in regressions if r.startswith("WORSE"))
    print(f"autobahn-{summary['mode']}: {passed} passed, {len(regressions)} failed")
    return 1 if regressions else 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("summary_json")
    ap.add_argument("expected_json")
    ap.add_argument("--write", action="store_true",
                    help="record the summary as the new expected results (full runs only)")
    args = ap.parse_args()

    try:
        with open(args.summary_json) as f:
            summary = json.load(f)
    except (OSError, ValueError) as e:
        print(f"error: cannot read summary: {e}", file=sys.stderr)
        return 2
    if "cases" not in summary:
        print(f"error: {args.summary_json} has no per-case verdicts (not from kosoku_run.py?)",
              file=sys.stderr)
        return 2
    if args.write:
        return write_expected(summary, args.expected_json)
    if not os.path.exists(args.expected_json):
        print(f"error: no expected results at {args.expected_json}; after checking the run, "
              f"record them with:\n  {sys.argv[0]} {args.summary_json} {args.expected_json} --write",
              file=sys.stderr)
        return 1
    with open(args.expected_json) as f:
        expected = json.load(f)
    return check(summary, expected)


if __name__ == "__main__":
    sys.exit(main())
