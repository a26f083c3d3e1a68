// `node ws-server.mjs --port N [--deflate]`: `wsbus echo`'s behaviour over
// Node's `ws` (with `bufferutil` for masking): every text or binary message is
// echoed back on every path; on /broadcast every message goes to every socket
// then on /broadcast, the sender included. Written the way the `ws` README
// writes echo and broadcast. `--deflate` turns on perMessageDeflate with its
// default server settings (`perMessageDeflate: true`; note its defaults do not
// compress messages under 1024 bytes).
import { createRequire } from "node:module";
import { parseArgs } from "node:util";
import { WebSocket, WebSocketServer } from "ws";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "9001" },
    host: { type: "string", default: "127.0.0.1" },
    deflate: { type: "boolean", default: false },
  },
});

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
const wss = new WebSocketServer({
  host: values.host,
  port: Number(values.port),
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
  console.error(`ws-server listening on ${address}:${port}${values.deflate ? " (permessage-deflate)" : ""}`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
