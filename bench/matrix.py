"""The comparison matrix's servers and scenarios, for bench/run.

A server is a command line (given a port and the directory of the Rust
binaries) that serves `wsbus echo`'s behaviour (SPEC §8); a scenario is a
`wsbus bench` command line and the figures of its report shown in the table,
with the target wsbus must reach on each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parent / "node"


# --------------------------------------------------------------------------
# Servers


@dataclass
class Server:
    id: str
    label: str
    # The command line, given the port and the build's binary directory.
    argv: object
    deflate: bool = False
    wsbus: bool = False
    # Serves wss:// when given `--tls-cert FILE --tls-key FILE` (every server
    # here takes these two flags under these names).
    tls: bool = False


def _bin(name):
    return lambda port, bins: [str(bins / name), "--listen", f"127.0.0.1:{port}"]


def _wsbus(*flags):
    return lambda port, bins: [str(bins / "wsbus"), "echo", "--listen", f"127.0.0.1:{port}", *flags]


def _node(script, *flags):
    return lambda port, bins: ["node", str(NODE_DIR / script), "--port", str(port), *flags]


SERVERS = [
    Server("wsbus", "wsbus", _wsbus(), deflate=True, wsbus=True, tls=True),
    Server("fastwebsockets", "fastwebsockets", _bin("peer-fastwebsockets"), tls=True),
    Server("tungstenite", "tokio-tungstenite", _bin("peer-tungstenite"), tls=True),
    Server("ws", "Node ws", _node("ws-server.mjs"), tls=True),
    Server("uws", "uWebSockets", _node("uws-server.mjs"), tls=True),
    Server("ws-deflate", "Node ws (deflate)", _node("ws-server.mjs", "--deflate"), deflate=True),
    # wsbus with permessage-deflate's context takeover (RFC 7692 §7.1.1)
    # allowed, as Node ws and browsers do by default: the compression rows
    # show what keeping a compressor and a decompressor per connection costs
    # and saves next to wsbus's default (no context takeover).
    Server("wsbus-ctx", "wsbus (context takeover)", _wsbus("--deflate-context-takeover"),
           deflate=True, wsbus=True),
]
SERVER_BY_ID = {s.id: s for s in SERVERS}
PLAIN_SERVERS = ["wsbus", "fastwebsockets", "tungstenite", "ws", "uws"]
TLS_SERVERS = [s.id for s in SERVERS if s.tls]
# The servers that compress: Node ws is the only peer with permessage-deflate
# (the Rust peers have none, uWS's is off in its server).
DEFLATE_SERVERS = ["wsbus", "wsbus-ctx", "ws-deflate"]
# Selecting one of these with --only selects its variant too.
VARIANTS = {"ws": ["ws-deflate"], "wsbus": ["wsbus-ctx"]}


# --------------------------------------------------------------------------
# Scenarios


@dataclass
class Metric:
    key: str
    label: str
    higher_is_better: bool
    # ("ratio_le", x): wsbus / best peer <= x; ("ratio_ge", x): >= x;
    # ("abs_le", x): wsbus's own value <= x; ("zero", None): == 0 (worst round).
    target: tuple | None = None
    # Figures with no meaningful ratio (loss counts) are shown as they are.
    ratio: bool = True
    # How rounds are combined: the median, or the worst round (loss, errors).
    combine: str = "median"
    unit: str = ""


@dataclass
class Scenario:
    id: str
    label: str
    args: list
    metrics: list
    path: str = "/"
    servers: list = field(default_factory=lambda: list(PLAIN_SERVERS))
    # Replacements of `args` and `label` in --quick mode.
    quick_args: list | None = None
    quick_label: str | None = None
    note: str = ""
    # Over wss://localhost with the run's self-signed certificate.
    tls: bool = False


def cpu(per, target=None):
    return Metric("server_cpu_us_per_op", f"server CPU µs/{per}", False, target, unit="µs")


def msgs(target=None):
    return Metric("messages_per_sec", "msgs/s", True, target)


def rss(limit):
    return Metric("rss_per_conn_kib", "RSS KiB/conn", False, ("abs_le", limit), unit="KiB")


def echo(size, *more, connections=50, in_flight=8):
    return ["echo", "--connections", str(connections), "--size", str(size), "--in-flight", str(in_flight), *more]


LOST = Metric("lost", "lost", False, ("zero", None), ratio=False, combine="max")
# What the server's compression saves: bytes on the wire (frame headers
# included) per message the generator received.
WIRE_IN = Metric("wire_bytes_received_per_msg", "wire B/msg received", False, unit="B")

# Each message its own write, the next one written as soon as an echo comes
# back: how browsers (and most clients) send.
PER_MESSAGE = ["--shape", "per-message"]
# Exactly what Chromium offers: `permessage-deflate; client_max_window_bits`.
BROWSER_OFFER = ["--deflate-offer", "browser"]
# The demo chat's message size (BENCHMARKS.md, "Security costs": 193 bytes).
CHAT_MESSAGE = 200

SCENARIOS = [
    Scenario("echo-20b", "echo 50 × 20 B, 8 in flight", echo(20),
             [cpu("msg", ("ratio_le", 0.6)), msgs(("ratio_ge", 1.0))]),
    Scenario("echo-20b-pm", "echo 50 × 20 B, 8 in flight, one write per message", echo(20, *PER_MESSAGE),
             [cpu("msg", ("ratio_le", 0.8)), msgs()]),
    Scenario("echo-1k", "echo 50 × 1 KiB, 8 in flight", echo(1024),
             [cpu("msg", ("ratio_le", 0.6)), msgs(("ratio_ge", 1.0))]),
    Scenario("echo-1k-pm", "echo 50 × 1 KiB, 8 in flight, one write per message", echo(1024, *PER_MESSAGE),
             [cpu("msg", ("ratio_le", 0.8)), msgs()]),
    Scenario("echo-64k", "echo 10 × 64 KiB binary, 4 in flight",
             echo(65536, "--binary", connections=10, in_flight=4),
             [cpu("msg", ("ratio_le", 0.8)), Metric("mb_per_sec", "MB/s", True)]),
    Scenario("pingpong", "ping-pong 50 × 20 B", echo(20, in_flight=1),
             [Metric("p99_us", "p99 µs", False, ("ratio_le", 1.0), unit="µs"),
              Metric("p50_us", "p50 µs", False, unit="µs")]),
    Scenario("fanout-1k", "fan-out 1,000 subscribers × 64 B",
             ["fanout", "--subscribers", "1000", "--size", "64", "--window", "1024"],
             [Metric("deliveries_per_sec", "deliveries/s", True, ("ratio_ge", 2.0)),
              cpu("delivery"), LOST],
             path="/broadcast"),
    Scenario("fanout-10k", "fan-out 10,000 subscribers × 64 B",
             ["fanout", "--subscribers", "10000", "--size", "64", "--window", "100"],
             [Metric("deliveries_per_sec", "deliveries/s", True), cpu("delivery"), LOST],
             path="/broadcast",
             quick_args=["fanout", "--subscribers", "2000", "--size", "64", "--window", "500"],
             quick_label="fan-out 2,000 subscribers × 64 B (quick)"),
    Scenario("connect", "connect churn, 16 at once",
             ["connect", "--concurrency", "16"],
             [cpu("cycle", ("ratio_le", 0.7)), Metric("cycles_per_sec", "cycles/s", True)]),
    Scenario("idle-15k", "idle 15,000 connections",
             ["idle", "--connections", "15000"],
             [rss(1.5)],
             quick_args=["idle", "--connections", "1000"],
             quick_label="idle 1,000 connections (quick)"),
    Scenario("deflate", "permessage-deflate echo 50 × 1 KiB JSON-like text, 8 in flight",
             echo(1024, "--deflate"),
             [cpu("msg", ("ratio_le", 0.7)), msgs()],
             servers=["wsbus", "ws-deflate"],
             note="only servers with permessage-deflate: the Rust peers have none, uWS's is off in its server"),
    Scenario("deflate-browser",
             f"browser deflate offer, echo 50 × {CHAT_MESSAGE} B chat messages (all different), 8 in flight, "
             "one write per message",
             # --vary: one message repeated would shrink to a back-reference
             # under context takeover and flatter its bytes on the wire.
             echo(CHAT_MESSAGE, *PER_MESSAGE, *BROWSER_OFFER, "--vary"),
             [cpu("msg"), WIRE_IN, msgs()],
             servers=list(DEFLATE_SERVERS),
             # No 1 KiB variant: Node ws's `threshold` (1024 B) applies only
             # where server_no_context_takeover was agreed, which this offer
             # does not ask and ws does not impose, so ws compresses 200 B
             # replies too; the `deflate` row has 1 KiB messages.
             note="Node ws compresses every reply here: its 1024 B threshold applies only without "
                  "context takeover"),
    Scenario("idle-deflate", f"idle 2,000 connections after a {CHAT_MESSAGE} B compressed exchange",
             ["idle", "--connections", "2000", *BROWSER_OFFER, "--exchange-size", str(CHAT_MESSAGE)],
             [rss(2.0)],
             servers=list(DEFLATE_SERVERS)),
    Scenario("echo-20b-tls", "wss echo 50 × 20 B, 8 in flight", echo(20),
             [cpu("msg", ("ratio_le", 0.8)), msgs()],
             servers=list(TLS_SERVERS), tls=True),
    Scenario("echo-20b-tls-pm", "wss echo 50 × 20 B, 8 in flight, one write per message",
             echo(20, *PER_MESSAGE),
             [cpu("msg", ("ratio_le", 0.8)), msgs()],
             servers=list(TLS_SERVERS), tls=True),
    Scenario("connect-tls", "wss connect churn (full TLS handshake each), 16 at once",
             ["connect", "--concurrency", "16"],
             [cpu("cycle"), Metric("cycles_per_sec", "cycles/s", True)],
             servers=list(TLS_SERVERS), tls=True),
    Scenario("idle-tls", "idle 5,000 wss connections",
             ["idle", "--connections", "5000"],
             [rss(4.0)],
             servers=list(TLS_SERVERS), tls=True,
             quick_args=["idle", "--connections", "1000"],
             quick_label="idle 1,000 wss connections (quick)"),
]
SCENARIO_BY_ID = {s.id: s for s in SCENARIOS}
