// `node check-peer.mjs --url ws[s]://HOST:PORT [--deflate] [--ca FILE]`: checks that a server
// behaves like `wsbus echo` before it is benchmarked: text and binary echoed
// as such on two paths (64 KiB included), and on /broadcast a message from one
// of three sockets reaching all three (sender included). With --deflate the
// server must accept permessage-deflate; with wss:// and --ca, the server's
// certificate must verify against that PEM file. Exits non-zero with a reason.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { WebSocket } from "ws";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: "ws://127.0.0.1:9001" },
    deflate: { type: "boolean", default: false },
    ca: { type: "string" },
  },
});
const ca = values.ca === undefined ? undefined : readFileSync(values.ca);
const base = values.url.replace(/\/+$/, "");
const TIMEOUT_MS = 5000;

function open(path) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(base + path, { perMessageDeflate: values.deflate, ca });
    ws.binaryType = "nodebuffer";
    const inbox = [];
    const waiters = [];
    ws.on("message", (data, isBinary) => {
      const msg = { data, isBinary };
      const waiter = waiters.shift();
      if (waiter) waiter(msg);
      else inbox.push(msg);
    });
    ws.next = () =>
      inbox.length
        ? Promise.resolve(inbox.shift())
        : new Promise((res, rej) => {
            const timer = setTimeout(() => rej(new Error(`${path}: no message within ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
            waiters.push((m) => {
              clearTimeout(timer);
              res(m);
            });
          });
    ws.on("open", () => resolve(ws));
    ws.on("error", reject);
  });
}

function expectMessage(path, got, data, isBinary) {
  if (got.isBinary !== isBinary) {
    throw new Error(`${path}: expected a ${isBinary ? "binary" : "text"} message, got ${got.isBinary ? "binary" : "text"}`);
  }
  if (!Buffer.from(data).equals(got.data)) {
    throw new Error(`${path}: payload differs (${got.data.length} bytes, expected ${Buffer.byteLength(data)})`);
  }
}

async function checkEcho(path) {
  const ws = await open(path);
  if (values.deflate && !ws.extensions.includes("permessage-deflate")) {
    throw new Error(`${path}: permessage-deflate was not accepted (extensions: "${ws.extensions}")`);
  }
  const cases = [
    ["hello, echo", false],
    [Buffer.from([0, 1, 2, 255]), true],
    ["x".repeat(1024), false],
    [Buffer.alloc(64 * 1024, 7), true],
  ];
  for (const [data, isBinary] of cases) ws.send(data, { binary: isBinary });
  for (const [data, isBinary] of cases) expectMessage(path, await ws.next(), data, isBinary);
  ws.close();
}

async function checkBroadcast() {
  const sockets = await Promise.all([0, 1, 2].map(() => open("/broadcast")));
  // Let the server register every socket before publishing.
  await new Promise((r) => setTimeout(r, 200));
  sockets[1].send("to everyone");
  sockets[2].send(Buffer.from([9, 9]), { binary: true });
  for (const ws of sockets) {
    const got = [await ws.next(), await ws.next()];
    got.sort((a, b) => Number(a.isBinary) - Number(b.isBinary));
    expectMessage("/broadcast", got[0], "to everyone", false);
    expectMessage("/broadcast", got[1], Buffer.from([9, 9]), true);
  }
  for (const ws of sockets) ws.close();
}

try {
  await checkEcho("/");
  await checkEcho("/some/path");
  if (!values.deflate) await checkBroadcast();
  console.error(`check-peer: ${base} ok${values.deflate ? " (permessage-deflate)" : ""}`);
  process.exit(0);
} catch (e) {
  console.error(`check-peer: ${base}: ${e.message}`);
  process.exit(1);
}
