// `node ws-server.mjs --port N [--deflate] [--tls-cert FILE --tls-key FILE]`:
// `wsbus echo`'s behaviour over
// Node's `ws` (with `bufferutil` for masking): every text or binary message is
// echoed back on every path; on /broadcast every message goes to every socket
// then on /broadcast, the sender included. Written the way the `ws` README
// writes echo and broadcast. `--deflate` turns on perMessageDeflate with its
// default server settings (`perMessageDeflate: true`; its `threshold` of 1024
// bytes applies only when server_no_context_takeover was agreed). `--tls-cert/--tls-key` serve wss://
// the way the `ws` README does: an `https.createServer` with the PEM files,
// passed to `WebSocketServer` as `server` (Node's TLS defaults otherwise).
import { readFileSync } from "node:fs";
import { createServer } from "node:https";
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { WebSocket, WebSocketServer } from "ws";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "9001" },
    host: { type: "string", default: "127.0.0.1" },
    deflate: { type: "boolean", default: false },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
  },
});
const tls = values["tls-cert"] !== undefined;
if (tls !== (values["tls-key"] !== undefined)) {
  console.error("ws-server: --tls-cert and --tls-key go together");
  process.exit(2);
}

// `ws` silently falls back to JavaScript masking without bufferutil, and
// bufferutil silently falls back to JavaScript without its native binding:
// refuse to run as a benchmark peer in either state.
try {
  const bufferUtil = createRequire(import.meta.url)("bufferutil");
  if (!String(bufferUtil.mask).includes("[native code]")) {
    throw new Error("its native binding did not load");
  }
} catch (e) {
  console.error(`ws-server: bufferutil is not usable (${e.message}); run npm ci`);
  process.exit(1);
}
if (process.env.WS_NO_BUFFER_UTIL) {
  console.error("ws-server: WS_NO_BUFFER_UTIL is set; unset it");
  process.exit(1);
}

const broadcast = new Set();
const https = tls
  ? createServer({ cert: readFileSync(values["tls-cert"]), key: readFileSync(values["tls-key"]) })
  : null;
const wss = new WebSocketServer({
  ...(tls ? { server: https } : { host: values.host, port: Number(values.port) }),
  perMessageDeflate: values.deflate,
  // `wsbus echo`'s limit (ws's default is 100 MiB).
  maxPayload: 64 * 1024 * 1024,
});

wss.on("connection", (ws, req) => {
  const path = new URL(req.url, "http://localhost").pathname;
  if (path === "/broadcast") {
    broadcast.add(ws);
    ws.on("close", () => broadcast.delete(ws));
    ws.on("message", (data, isBinary) => {
      for (const client of broadcast) {
        if (client.readyState === WebSocket.OPEN) {
          client.send(data, { binary: isBinary });
        }
      }
    });
  } else {
    ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
  }
  ws.on("error", () => {});
});

wss.on("listening", () => {
  const { address, port } = wss.address();
  const scheme = tls ? "wss" : "ws";
  console.error(`ws-server listening on ${scheme}://${address}:${port}${values.deflate ? " (permessage-deflate)" : ""}`);
});
// With `server`, `ws` listens through it (and emits "listening" when it does).
if (https) https.listen(Number(values.port), values.host);

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
