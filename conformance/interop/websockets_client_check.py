#!/usr/bin/env python3
"""Interop check of a WebSocket echo SERVER (wsbus echo) with the Python
`websockets` client. Run with conformance/.venv/bin/python (see ../setup.sh).

usage: websockets_client_check.py URL [--deflate]
  --deflate   offer permessage-deflate and require it to be negotiated (without it,
              nothing is offered and nothing may be negotiated)
Prints one line per check and `N passed, M failed`; exit 0 only when all passed.
The whole run is limited to 30 s.
"""
import argparse
import asyncio
import sys

from websockets.asyncio.client import ClientConnection, connect

TIMEOUT_S = 30


class CountingConnection(ClientConnection):
    """Counts the bytes read from the socket, to see what the server put on the wire."""

    bytes_read = 0

    def data_received(self, data: bytes) -> None:
        self.bytes_read += len(data)
        super().data_received(data)


class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> None:
        print(f"{'ok  ' if ok else 'FAIL'} {name}{f' ({detail})' if detail else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1


def describe(message) -> str:
    kind = "text" if isinstance(message, str) else "binary"
    return f"{kind}, {len(message)} {'chars' if kind == 'text' else 'bytes'}"


async def expect_echo(c: Checks, ws: ClientConnection, name: str, sent, got=None) -> None:
    """Send `sent` (a message, or an iterable of fragments), then check that the next
    message equals `got` (default: `sent`) with the same type."""
    await ws.send(sent)
    want = sent if got is None else got
    echoed = await ws.recv()
    same = type(echoed) is type(want) and echoed == want
    c.check(f"echo {name}", same, "" if same else f"sent {describe(want)}, got {describe(echoed)}")


async def run(c: Checks, url: str, deflate: bool) -> None:
    async with connect(
        url,
        compression="deflate" if deflate else None,
        max_size=128 * 1024 * 1024,
        ping_interval=None,
        create_connection=CountingConnection,
    ) as ws:
        ext = ws.response.headers.get("Sec-WebSocket-Extensions", "")
        negotiated = ext.split(";")[0].strip() == "permessage-deflate"
        c.check("permessage-deflate negotiated" if deflate else "no extension negotiated",
                negotiated if deflate else ext == "", f"Sec-WebSocket-Extensions: {ext!r}")

        await expect_echo(c, ws, "short text", "hello wsbus")
        await expect_echo(c, ws, "text with 3-byte UTF-8", "euro \u20ac, kanji \u6f22\u5b57")
        await expect_echo(c, ws, "empty text", "")
        await expect_echo(c, ws, "binary with all 256 byte values", bytes(range(256)))
        await expect_echo(c, ws, "1 MiB binary", bytes(i * 7 % 251 for i in range(1 << 20)))
        fragments = ["first fragment, ", "second \u00e9, ", "third"]
        await expect_echo(c, ws, "text sent as 3 fragments", fragments, "".join(fragments))

        if deflate:
            text = "wsbus compresses repetitive text. " * 2048
            text = text[: 64 * 1024]
            before = ws.bytes_read
            await expect_echo(c, ws, "64 KiB repetitive text (compressed)", text)
            wire = ws.bytes_read - before
            c.check("server compressed the 64 KiB echo", wire < len(text) // 4,
                    f"{wire} bytes on the wire for {len(text)}")

        pong = await ws.ping(b"ping-payload")
        latency = await pong
        c.check("ping answered by pong", True, f"{latency * 1000:.1f} ms")

        await ws.close(1000, "bye")
        rcvd = ws.protocol.close_rcvd
        c.check("close 1000 answered with 1000", rcvd is not None and rcvd.code == 1000,
                f"server close frame: {rcvd}")
        c.check("clean close (close frames both ways)",
                ws.protocol.close_sent is not None and rcvd is not None)


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url")
    ap.add_argument("--deflate", action="store_true")
    args = ap.parse_args()

    c = Checks()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            await run(c, args.url, args.deflate)
    except TimeoutError:
        c.check(f"finished within {TIMEOUT_S} s", False)
    except Exception as e:  # noqa: BLE001 -- any error is a failed check, reported
        c.check("no connection error", False, f"{type(e).__name__}: {e}")
    print(f"websockets {'deflate' if args.deflate else 'plain'}: "
          f"{c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
