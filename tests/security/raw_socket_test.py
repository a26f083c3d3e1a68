#!/usr/bin/env python3
"""Security of wsbus's raw WebSocket endpoint (/chat of `wsbus serve`, SPEC §5) with the
Python `websockets` client over real sockets: access tokens at the upgrade (header and
query), the 401 refusals and their reasons, a token expiring under an open socket, the
message rate limit, and the /chat JSON Schema. Run by run.sh with conformance/.venv's
python (websockets is pinned in conformance/requirements.txt).

Environment (run.sh sets it):
  SEC_URL           http://HOST:PORT of the server with the whole test configuration
                    (tokens required, /chat schema, 20 messages/s)
  SEC_CHAT_URL      http://HOST:PORT of the same configuration without the /chat schema
                    (the chat's plain-text welcome is an outbound message that a JSON
                    schema on /chat would stop, SPEC §5 "both directions")
  SEC_JWT_SECRET    the HS256 secret of [auth]
  SEC_JWT_ISSUER    [auth] issuer
  SEC_JWT_AUDIENCE  [auth] audience
Tokens are minted here (hmac + base64url: no JWT library). Prints one line per check and
`N passed, M failed`; exit 0 only when all passed. The whole run is limited to 40 s.
"""
import asyncio
import base64
import hashlib
import hmac
import json
import math
import os
import sys
import time
import urllib.parse

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT_S = 40
STEP_S = 5  # one upgrade, one echo
FLOOD = 1_000  # messages the flooding socket sends as fast as it can

SECRET = os.environ["SEC_JWT_SECRET"].encode()
ISSUER = os.environ["SEC_JWT_ISSUER"]
AUDIENCE = os.environ["SEC_JWT_AUDIENCE"]
STRICT = os.environ["SEC_URL"].rstrip("/").replace("http", "ws", 1) + "/chat"
PLAIN = os.environ["SEC_CHAT_URL"].rstrip("/").replace("http", "ws", 1) + "/chat"


# ------------------------------------------------------------------ tokens

def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint(claims: dict | None = None, *, alg: str = "HS256", key: bytes = SECRET, **extra) -> str:
    """A JWT (RFC 7519) with the default claims (sub, name, iss, aud, exp in an hour)
    overridden by `claims`; a claim set to None is left out. `alg: none` is unsigned."""
    now = int(time.time())
    body = {"sub": "user-1", "name": "Test User", "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "exp": now + 3600}
    body.update(claims or {})
    body = {k: v for k, v in body.items() if v is not None}
    header = {"alg": alg, "typ": "JWT", **extra}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(body).encode())}"
    if alg == "none":
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


# ------------------------------------------------------------------ harness

class Checks:
    def __init__(self) -> None:
        self.passed = self.failed = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"{'ok  ' if ok else 'FAIL'} {name}{f' ({detail})' if detail else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def open_socket(url: str, token: str | None = None, *, header: bool = True):
    """connect() to `url` with the token in `Authorization: Bearer` (header=True) or in
    `?access_token=`; no proxy (loopback), no keepalive pings."""
    headers = {}
    if token is not None and header:
        headers["Authorization"] = f"Bearer {token}"
    elif token is not None:
        url = f"{url}?access_token={urllib.parse.quote(token, safe='')}"
    return connect(url, additional_headers=headers, proxy=None, ping_interval=None,
                   open_timeout=STEP_S, close_timeout=STEP_S, max_size=1 << 20)


async def refusal(url: str, token: str | None, *, header: bool = True):
    """The HTTP response refusing an upgrade: (status, headers, body), or raises if the
    upgrade succeeds."""
    try:
        async with open_socket(url, token, header=header) as ws:
            await ws.close()
    except InvalidStatus as e:
        r = e.response
        return r.status_code, r.headers, r.body.decode("utf-8", "replace")
    raise AssertionError("the upgrade succeeded (101)")


def describe(status, headers, body) -> str:
    return f"{status}, WWW-Authenticate: {headers.get('WWW-Authenticate')!r}, body {body[:80]!r}"


async def next_text(ws: ClientConnection, want=None) -> str:
    """The next text message (or the next one equal to `want`, skipping others)."""
    async with asyncio.timeout(STEP_S):
        while True:
            m = await ws.recv()
            if want is None or m == want:
                return m


async def closed(ws: ClientConnection, within: float):
    """Reads (and drops) messages until the server closes; its close frame (code, reason),
    or None if the connection ended without one."""
    try:
        async with asyncio.timeout(within):
            while True:
                await ws.recv()
    except ConnectionClosed as e:
        return (e.rcvd.code, e.rcvd.reason) if e.rcvd else None


# ------------------------------------------------------------------ 1. tokens at the upgrade

async def token_checks(c: Checks) -> None:
    token = mint({"sub": "zoe", "name": "Zoë Tester"})
    async with open_socket(PLAIN, token) as ws:
        c.check("Authorization: Bearer <valid token> opens (101)", ws.response.status_code == 101)
        welcome = await next_text(ws)
        c.check("the welcome names the token's `name` claim", welcome == "Welcome to our chat Zoë Tester",
                repr(welcome))

    async with open_socket(PLAIN, mint({"name": "Query User"}), header=False) as ws:
        c.check("?access_token=<valid token> opens (101)", ws.response.status_code == 101)
        welcome = await next_text(ws)
        c.check("... and the welcome names it", welcome == "Welcome to our chat Query User", repr(welcome))

    # The refusals: 401, WWW-Authenticate: Bearer error="invalid_token" (RFC 6750 §3.1),
    # the reason in error_description, never the token itself. (A request with no
    # credentials at all gets the same: SPEC §5 wants the reason said; RFC 6750 §3.1 only
    # says SHOULD NOT for an error code there.)
    cases = [
        ("no token", None, "Missing token"),
        ("a bad signature", mint(key=b"not the secret, but as long as one ......"), "Bad signature"),
        ("an expired token", mint({"exp": int(time.time()) - 3600}), "Token expired"),
        ("alg: none", mint(alg="none"), "Algorithm not allowed"),
        ("a token not valid for an hour (nbf)", mint({"nbf": int(time.time()) + 3600}), "Token not yet valid"),
        ("another issuer", mint({"iss": "https://elsewhere.example"}), "Wrong issuer"),
        ("another audience", mint({"aud": "someone-else"}), "Wrong audience"),
        ("not a JWT", "not-a-jwt", "Malformed token"),
    ]
    for what, tok, reason in cases:
        for url_name, header in [("header", True), ("query", False)] if tok else [("-", True)]:
            name = f"{what}{f' (in the {url_name})' if tok else ''} → 401"
            try:
                status, headers, body = await refusal(STRICT, tok, header=header)
            except Exception as e:  # noqa: BLE001 -- reported as the failure
                c.check(name, False, f"{type(e).__name__}: {e}")
                continue
            auth = headers.get("WWW-Authenticate", "")
            ok = (status == 401 and auth.startswith("Bearer") and 'error="invalid_token"' in auth
                  and f'error_description="{reason}"' in auth)
            leaked = tok is not None and (tok in body or tok in str(headers))
            c.check(f'{name} "{reason}"', ok and not leaked,
                    describe(status, headers, body) + (" — THE TOKEN IS IN THE RESPONSE" if leaked else ""))

    # 64 KiB of token: refused (401, or 431 for the header), and the server goes on.
    big = mint({"pad": "x" * (64 * 1024)})
    try:
        status, headers, body = await refusal(STRICT, big)
        c.check("a 64 KiB token → 401 or 431", status in (401, 431), describe(status, headers, body))
    except Exception as e:  # noqa: BLE001
        c.check("a 64 KiB token → 401 or 431", False, f"{type(e).__name__}: {e}")
    async with open_socket(STRICT, mint()) as ws:
        c.check("the next client is served after the 64 KiB token", ws.response.status_code == 101)

    # A token that expires under an open socket: 1008 "token expired" (SPEC §5: within a
    # second of `exp`; bounded here between 1 s and 10 s after the open).
    exp = math.ceil(time.time()) + 2
    async with open_socket(PLAIN, mint({"exp": exp})) as ws:
        opened = time.monotonic()
        frame = await closed(ws, 12)
        after = time.monotonic() - opened
    c.check("a token expiring 2 s after the open closes the socket with 1008 \"token expired\" within 1-10 s",
            frame == (1008, "token expired") and 1 <= after <= 10,
            f"close frame {frame} after {after:.2f} s (exp - open = {exp - time.time() + after:.2f} s)")


# ------------------------------------------------------------------ 2. rate limit and schema

async def rate_checks(c: Checks) -> None:
    async with open_socket(STRICT, mint({"sub": "bystander", "name": "Bystander"})) as b, \
               open_socket(STRICT, mint({"sub": "flooder", "name": "Flooder"})) as a:
        sent = 0

        async def flood():
            nonlocal sent
            try:
                for i in range(FLOOD):
                    await a.send(json.dumps({"text": f"flood {i}"}))
                    sent += 1
            except ConnectionClosed:
                pass

        flooding = asyncio.create_task(flood())
        frame = await closed(a, 10)
        await flooding
        c.check(f"a socket sending {FLOOD} messages at once is closed with 1008 (reason names the rate)",
                frame is not None and frame[0] == 1008 and "rate" in frame[1].lower(),
                f"close frame {frame} after {sent} messages sent")

        mine = json.dumps({"text": "the bystander is still served"})
        await b.send(mine)
        try:
            await next_text(b, mine)
            c.check("meanwhile another socket's message is still relayed back to it", True)
        except TimeoutError:
            c.check("meanwhile another socket's message is still relayed back to it", False,
                    f"no relay of {mine} within {STEP_S} s")


async def schema_checks(c: Checks) -> None:
    async with open_socket(STRICT, mint({"sub": "observer", "name": "Observer"})) as observer:
        ok_msg = json.dumps({"text": "hi"})
        async with open_socket(STRICT, mint({"sub": "writer", "name": "Writer"})) as w:
            await w.send(ok_msg)
            try:
                await next_text(w, ok_msg)
                c.check('{"text":"hi"} matches the /chat schema and is relayed', True)
            except TimeoutError:
                c.check('{"text":"hi"} matches the /chat schema and is relayed', False, "no relay")

        bad_messages = ['{"nope":1}', "hello", '{"text":"hi","extra":true}']
        for bad in bad_messages:
            async with open_socket(STRICT, mint({"sub": "writer", "name": "Writer"})) as w:
                await w.send(bad)
                frame = await closed(w, STEP_S)
            c.check(f"{bad!r} fails the /chat schema: the socket is closed with 1007",
                    frame is not None and frame[0] == 1007, f"close frame {frame}")

        # None of them reached the observer: its next message is a marker sent after them.
        marker = json.dumps({"text": "marker"})
        await observer.send(marker)
        seen = []
        try:
            async with asyncio.timeout(STEP_S):
                while (m := await observer.recv()) != marker:
                    seen.append(m)
        except TimeoutError:
            seen.append("(no marker)")
        leaked = [m for m in seen if m in bad_messages]
        c.check("the invalid messages were not relayed to the group", ok_msg in seen and not leaked,
                f"observer saw {seen}")


async def main() -> int:
    c = Checks()
    try:
        async with asyncio.timeout(TIMEOUT_S):
            for part in (token_checks, rate_checks, schema_checks):
                try:
                    await part(c)
                except Exception as e:  # noqa: BLE001 -- any error is a failed check, reported
                    c.check(f"{part.__name__} ran to the end", False, f"{type(e).__name__}: {e}")
    except TimeoutError:
        c.check(f"finished within {TIMEOUT_S} s", False)
    print(f"raw WebSocket security: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
