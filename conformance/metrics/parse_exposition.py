"""Parse a `/metrics` exposition with the Prometheus project's Python parsers.

usage: parse_exposition.py prometheus|openmetrics < exposition

Reads the exposition on stdin and parses it with `prometheus_client`'s
parser for that format: `prometheus_client.parser` (text format 0.0.4) or
`prometheus_client.openmetrics.parser` (OpenMetrics 1.0, strict: it rejects
a missing `# EOF`, a family declared twice, a counter without `_total`, a
unit not at the end of the name, ...). A parse error exits non-zero with the
parser's message. On success it prints one JSON object: for each family,
its type, help, unit and samples (`[name, labels, value]`), so that the Rust
process test (crates/wsbus-server/tests/metrics_process.rs) asserts on what
a real scraper would have read.
"""

import json
import math
import sys

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in ("prometheus", "openmetrics"):
        print(__doc__, file=sys.stderr)
        return 2
    parse = openmetrics_families if sys.argv[1] == "openmetrics" else text_string_to_metric_families
    families = {}
    try:
        for family in parse(sys.stdin.read()):
            if family.name in families:
                raise ValueError(f"family {family.name} declared twice")
            families[family.name] = {
                "type": family.type,
                "help": family.documentation,
                "unit": family.unit,
                "samples": [
                    # JSON has no infinities; none of our values is one.
                    [s.name, s.labels, None if math.isinf(s.value) else s.value]
                    for s in family.samples
                ],
            }
    except ValueError as error:
        print(f"parse error: {error}", file=sys.stderr)
        return 1
    json.dump(families, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
