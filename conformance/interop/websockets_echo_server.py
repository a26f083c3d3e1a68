#!/usr/bin/env python3
"""Interop peer: a Python `websockets` (asyncio) echo server, for testing wsbus's
*client* against it. Run with conformance/.venv/bin/python (see ../setup.sh).

usage: websockets_echo_server.py --port P [--deflate]
  --port P    listen on 127.0.0.1:P (0 = a free port)
  --deflate   accept permessage-deflate (compression="deflate"; else None)
Prints `READY <port>` once listening. Echoes every message with its type (text or
binary); the text message `__extensions__` is answered with the negotiated
Sec-WebSocket-Extensions response header ("" if none), so a client can prove that
compression was negotiated. Close handshakes complete normally (websockets does
that). Exits 0 on SIGTERM / SIGINT.
"""
import argparse
import asyncio
import signal

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedError


async def echo(ws: ServerConnection) -> None:
    try:
        async for message in ws:
            if message == "__extensions__":
                await ws.send(ws.response.headers.get("Sec-WebSocket-Extensions", ""))
            else:
                await ws.send(message)  # str goes out as text, bytes as binary
    except ConnectionClosedError:
        pass  # the client dropped the connection: clients under test may do that


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--deflate", action="store_true")
    args = ap.parse_args()

    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)

    async with serve(
        echo,
        "127.0.0.1",
        args.port,
        compression="deflate" if args.deflate else None,
        # Above wsbus's 64 MiB message limit, so the peer is never the limiting side.
        max_size=128 * 1024 * 1024,
        # No keepalive pings: a client test should see only the frames it caused.
        ping_interval=None,
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(f"READY {port}", flush=True)
        await stop


if __name__ == "__main__":
    asyncio.run(main())
