#!/usr/bin/env python3
"""Write the committed seed inputs of the wsbus-proto fuzz targets.

    python3 fuzz/make_seeds.py

Writes fuzz/corpus/<target>/seed-* (standard library only; the output is
deterministic, so re-running it changes nothing). The input layouts are
documented in fuzz/src/lib.rs: `Options::decode` for the frame_decoder_*
targets, `inflate` for the inflate target.
"""

import base64
import hashlib
import struct
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "corpus"

# Opcodes (RFC 6455 section 5.2).
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

# frame_decoder_* option byte (byte 0) bits, see Options::decode.
DEFLATE = 0x01  # bits 1-2 choose the parameters
DEFLATE_NCT = 0x01 | (1 << 1)  # no context takeover both ways
DEFLATE_SMALL_WINDOWS = 0x01 | (2 << 1)  # server 9 bits, client 10 bits
DEFLATE_WINDOW_8 = 0x01 | (3 << 1)  # 8 bits: the server sends uncompressed
ECHO = 0x08
SMALL_LIMITS = 0x10  # frame 64, message 256, inflated 1024
CLOSE_FIRST = 0x20

# Must match CLIENT_KEY in fuzz/src/lib.rs.
CLIENT_KEY = b"wsbus-fuzz-key!!"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def mask_key(n):
    return bytes((0x37 * n + i * 0x5B + 1) & 0xFF for i in range(4))


def frame(opcode, payload=b"", fin=True, rsv1=False, mask=None, force_len=None):
    """One frame; `mask` is a 4-byte key or None. `force_len` picks a
    non-minimal length encoding (126 or 127) for the header."""
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if force_len == 127 or n > 0xFFFF:
        head = bytes([b0, mask_bit | 127]) + struct.pack(">Q", n)
    elif force_len == 126 or n > 125:
        head = bytes([b0, mask_bit | 126]) + struct.pack(">H", n)
    else:
        head = bytes([b0, mask_bit | n])
    if not mask:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class Peer:
    """Frames as a client (masked) or a server (unmasked) writes them."""

    def __init__(self, masked):
        self.masked = masked
        self.n = 0

    def __call__(self, opcode, payload=b"", **kw):
        mask = None
        if self.masked:
            self.n += 1
            mask = mask_key(self.n)
        return frame(opcode, payload, mask=mask, **kw)


class Deflater:
    """permessage-deflate's compressor (RFC 7692 section 7.2.1): a raw deflate
    stream, a sync flush per message, the trailing 00 00 FF FF removed."""

    def __init__(self, window_bits=15, no_context_takeover=False):
        self.bits = window_bits
        self.nct = no_context_takeover
        self.c = self._new()

    def _new(self):
        return zlib.compressobj(6, zlib.DEFLATED, -self.bits, 8)

    def __call__(self, data):
        out = self.c.compress(data) + self.c.flush(zlib.Z_SYNC_FLUSH)
        assert out.endswith(b"\x00\x00\xff\xff"), out
        if self.nct:
            self.c = self._new()
        return out[:-4] or b"\x00"


JSON = (
    b'{"channel":"/chat/room","data":{"user":"ana","text":"hello hello hello"},"seq":1}'
)
KOSME = "κόσμε".encode()


def close_payload(code, reason=b""):
    return struct.pack(">H", code) + reason


def frame_seeds(masked):
    """Seeds for frame_decoder_server (masked, client frames) or
    frame_decoder_client (unmasked, server frames)."""
    p = Peer(masked)
    seeds = {}
    # Compressed frames are what the peer's compressor writes: the client's
    # window for frames to a server, the server's window for frames to a client.
    small_window = 10 if masked else 9

    seeds["text"] = bytes([0, 0]) + p(TEXT, b"Hello, world")
    seeds["binary-echo-reads-of-3"] = (
        bytes([ECHO, 3])
        + p(BINARY, bytes(range(256)) * 2)
        + p(TEXT, KOSME)
        + p(BINARY, b"")
    )
    seeds["fragmented-with-ping"] = (
        bytes([ECHO, 5])
        + p(TEXT, KOSME[:3], fin=False)
        + p(PING, b"ping?")
        + p(CONT, KOSME[3:7], fin=False)
        + p(PONG, b"")
        + p(CONT, KOSME[7:])
    )
    seeds["close"] = (
        bytes([0, 0]) + p(TEXT, b"bye") + p(CLOSE, close_payload(1000, b"done"))
    )
    seeds["close-empty-then-garbage"] = bytes([0, 1]) + p(CLOSE) + b"\x81\x05junk!"
    seeds["app-closes-first"] = (
        bytes([CLOSE_FIRST, 2]) + p(PING, b"x") + p(CLOSE, close_payload(4000, b"ok"))
    )
    seeds["invalid-utf8"] = bytes([0, 4]) + p(TEXT, b"ok \xf4\x90\x80\x80 no")
    seeds["long-lengths"] = (
        bytes([ECHO, 7])
        + p(BINARY, b"126-bit", force_len=126)
        + p(TEXT, b"127-bit", force_len=127)
        + p(BINARY, b"\xaa" * 300)
    )
    seeds["small-limits"] = (
        bytes([SMALL_LIMITS, 0])
        + p(TEXT, b"a" * 60, fin=False)
        + p(CONT, b"b" * 60, fin=False)
        + p(CONT, b"c" * 60, fin=False)
        + p(CONT, b"d" * 60, fin=False)
        + p(CONT, b"e" * 60)
    )
    seeds["bad-opcode"] = bytes([0, 0]) + p(TEXT, b"a") + p(0x3, b"reserved")

    d = Deflater()
    seeds["deflate"] = (
        bytes([DEFLATE | ECHO, 0])
        + p(TEXT, d(JSON), rsv1=True)
        + p(TEXT, d(JSON), rsv1=True)  # back-references into the first message
        + p(BINARY, b"uncompressed")
        + p(TEXT, b"", rsv1=True)
    )
    d = Deflater()
    body = d(JSON * 4)
    third = len(body) // 3
    seeds["deflate-fragmented-reads-of-9"] = (
        bytes([DEFLATE | ECHO, 9])
        + p(TEXT, body[:third], fin=False, rsv1=True)
        + p(PING, b"")
        + p(CONT, body[third : 2 * third], fin=False)
        + p(CONT, body[2 * third :])
        + p(CLOSE, close_payload(1001))
    )
    d = Deflater(no_context_takeover=True)
    seeds["deflate-no-context-takeover"] = (
        bytes([DEFLATE_NCT | ECHO, 16])
        + p(TEXT, d(JSON), rsv1=True)
        + p(TEXT, d(JSON), rsv1=True)
    )
    d = Deflater(window_bits=small_window)
    seeds["deflate-small-windows"] = (
        bytes([DEFLATE_SMALL_WINDOWS | ECHO, 0])
        + p(BINARY, d(bytes(range(256)) * 8), rsv1=True)
        + p(TEXT, d(JSON), rsv1=True)
    )
    d = Deflater(window_bits=9)
    seeds["deflate-window-8"] = bytes([DEFLATE_WINDOW_8 | ECHO, 0]) + p(
        TEXT, d(JSON), rsv1=True
    )
    d = Deflater()
    seeds["deflate-bomb-small-limits"] = bytes([DEFLATE | SMALL_LIMITS, 0]) + p(
        BINARY, d(bytes(4096)), rsv1=True
    )
    seeds["deflate-rsv1-on-continuation"] = (
        bytes([DEFLATE, 0])
        + p(TEXT, b"a", fin=False)
        + p(CONT, b"b", rsv1=True)
    )
    return seeds


def accept(key_b64):
    return base64.b64encode(hashlib.sha1(key_b64 + GUID).digest())


def request(extra=b"", method=b"GET", version=b"13", key=b"dGhlIHNhbXBsZSBub25jZQ=="):
    return (
        method + b" /chat?room=1 HTTP/1.1\r\n"
        b"Host: server.example.com\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: keep-alive, Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: " + version + b"\r\n" + extra + b"\r\n"
    )


def handshake_seeds():
    client = Peer(True)
    server = Peer(False)
    d = Deflater()
    seeds = {}
    seeds["upgrade-deflate-then-frames"] = request(
        b"Origin: http://example.com\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    ) + client(TEXT, d(JSON), rsv1=True) + client(CLOSE, close_payload(1000))
    seeds["upgrade-minimal"] = request()
    seeds["upgrade-offers"] = request(
        b"Sec-WebSocket-Extensions: x-webkit-deflate-frame, "
        b"permessage-deflate; server_max_window_bits=16\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
        b'client_max_window_bits="10"; server_max_window_bits=9\r\n'
    )
    seeds["version-8-gets-426"] = request(version=b"8")
    seeds["post-gets-400"] = request(method=b"POST")
    seeds["bad-key"] = request(key=b"c2hvcnQ=")
    seeds["partial"] = request()[:40]
    key = base64.b64encode(CLIENT_KEY)
    d = Deflater()
    seeds["response-101-then-frames"] = (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept(key) + b"\r\n"
        b"Sec-WebSocket-Protocol: chat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n"
        b"\r\n"
    ) + server(TEXT, Deflater(window_bits=12)(JSON), rsv1=True) + server(PING, b"hi")
    seeds["response-403"] = (
        b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"
    )
    return seeds


def inflate_seed(flags, read, payload):
    return bytes([flags, read]) + payload


def inflate_seeds():
    # Byte 0: bit 0 text, bits 1-2 parameters, bits 3-4 fragments (1, 2, 3, 7),
    # bit 5 twice, bits 6-7 limit (0, 64, 1024, 16 KiB).
    TEXT_BIT, TWICE = 0x01, 0x20
    LIMIT_64, LIMIT_1K, LIMIT_16K = 1 << 6, 2 << 6, 3 << 6
    seeds = {}
    seeds["text"] = inflate_seed(TEXT_BIT | LIMIT_1K, 0, Deflater()(JSON))
    seeds["binary-3-fragments-reads-of-5"] = inflate_seed(
        (2 << 3) | LIMIT_16K, 5, Deflater()(bytes(range(256)) * 16)
    )
    seeds["twice-context-takeover"] = inflate_seed(
        TEXT_BIT | TWICE | LIMIT_1K, 0, Deflater()(JSON * 3)
    )
    seeds["bomb-over-64"] = inflate_seed(LIMIT_64, 0, Deflater()(bytes(100_000)))
    seeds["window-9-7-fragments"] = inflate_seed(
        (2 << 1) | (3 << 3) | LIMIT_16K, 1, Deflater(window_bits=9)(JSON * 10)
    )
    seeds["no-context-takeover-twice"] = inflate_seed(
        TEXT_BIT | (1 << 1) | TWICE | LIMIT_1K, 0, Deflater()(KOSME * 20)
    )
    seeds["empty-block"] = inflate_seed(LIMIT_64, 0, b"\x00")
    seeds["limit-zero"] = inflate_seed(0, 0, Deflater()(b"x"))
    final = zlib.compressobj(6, zlib.DEFLATED, -15)
    seeds["final-block-then-data"] = inflate_seed(
        TEXT_BIT | LIMIT_1K, 3, final.compress(b"the end") + final.flush() + b"more"
    )
    seeds["invalid-utf8"] = inflate_seed(
        TEXT_BIT | LIMIT_1K, 0, Deflater()(b"ok \xed\xa0\x80 surrogate")
    )
    return seeds


def write(target, seeds):
    directory = ROOT / target
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("seed-*"):
        old.unlink()
    for name, data in seeds.items():
        (directory / f"seed-{name}").write_bytes(data)
    print(f"{target}: {len(seeds)} seeds")


def main():
    write("frame_decoder_server", frame_seeds(masked=True))
    write("frame_decoder_client", frame_seeds(masked=False))
    write("handshake_request", handshake_seeds())
    write("inflate", inflate_seeds())


if __name__ == "__main__":
    main()
