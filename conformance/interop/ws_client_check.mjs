#!/usr/bin/env node
// Interop check of a WebSocket echo SERVER (wsbus echo) with the Node `ws` client.
//
// usage: node ws_client_check.mjs URL [--deflate]
//   --deflate   offer permessage-deflate (threshold 0: every message compressed) and
//               require it to be negotiated (without it, nothing is offered and
//               nothing may be negotiated)
// Prints one line per check and `N passed, M failed`; exit 0 only when all passed.
// The whole run is limited to 30 s.
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';

const TIMEOUT_MS = 30_000;

const { values: opts, positionals } = parseArgs({
  options: { deflate: { type: 'boolean', default: false } },
  allowPositionals: true,
});
if (positionals.length !== 1) {
  console.error('usage: ws_client_check.mjs URL [--deflate]');
  process.exit(2);
}
const [url] = positionals;

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? ` (${detail})` : ''}`);
  if (ok) passed += 1;
  else failed += 1;
}
function finish() {
  console.log(`ws ${opts.deflate ? 'deflate' : 'plain'}: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 ? 0 : 1);
}

// Not unref'd: it also keeps the process alive while a check awaits a promise.
setTimeout(() => {
  check(`finished within ${TIMEOUT_MS / 1000} s`, false);
  finish();
}, TIMEOUT_MS);

// Messages arrive as events; queue them so each check can await the next one.
// Once the connection is closed, awaiting a message rejects.
function messageQueue(ws) {
  const queued = [];
  const waiting = [];
  let closed = null;
  ws.on('message', (data, isBinary) => {
    const message = { data, isBinary };
    if (waiting.length) waiting.shift().resolve(message);
    else queued.push(message);
  });
  ws.on('close', (code, reason) => {
    closed = new Error(`connection closed by the server: ${code} '${reason}'`);
    waiting.splice(0).forEach((w) => w.reject(closed));
  });
  return () => {
    if (queued.length) return Promise.resolve(queued.shift());
    if (closed) return Promise.reject(closed);
    return new Promise((resolve, reject) => waiting.push({ resolve, reject }));
  };
}

const describe = (m) => `${m.isBinary ? 'binary' : 'text'}, ${m.data.length} bytes`;

// Send `fragments` as one message (fin only on the last), then check that the next
// message is the same bytes with the same type.
async function expectEcho(ws, next, name, fragments, isBinary) {
  fragments.forEach((f, i) => ws.send(f, { binary: isBinary, fin: i === fragments.length - 1 }));
  const want = { data: Buffer.concat(fragments.map((f) => Buffer.from(f))), isBinary };
  const got = await next();
  const same = got.isBinary === isBinary && got.data.equals(want.data);
  check(`echo ${name}`, same, same ? '' : `sent ${describe(want)}, got ${describe(got)}`);
}

async function run() {
  const ws = new WebSocket(url, {
    perMessageDeflate: opts.deflate ? { threshold: 0 } : false,
    maxPayload: 128 * 1024 * 1024,
  });
  const next = messageQueue(ws);
  let ext = '';
  ws.on('upgrade', (response) => {
    ext = response.headers['sec-websocket-extensions'] ?? '';
  });
  await once(ws, 'open'); // rejects on an 'error' event

  const negotiated = ext.split(';')[0].trim() === 'permessage-deflate';
  check(
    opts.deflate ? 'permessage-deflate negotiated' : 'no extension negotiated',
    opts.deflate ? negotiated : ext === '',
    `Sec-WebSocket-Extensions: '${ext}'`,
  );

  await expectEcho(ws, next, 'short text', ['hello wsbus'], false);
  await expectEcho(ws, next, 'text with 3-byte UTF-8', ['euro \u20ac, kanji \u6f22\u5b57'], false);
  await expectEcho(ws, next, 'empty text', [''], false);
  const all256 = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
  await expectEcho(ws, next, 'binary with all 256 byte values', [all256], true);
  const mib = Buffer.alloc(1 << 20).map((_, i) => (i * 7) % 251);
  await expectEcho(ws, next, '1 MiB binary', [mib], true);
  const fragments = ['first fragment, ', 'second \u00e9, ', 'third'];
  await expectEcho(ws, next, 'text sent as 3 fragments', fragments, false);

  if (opts.deflate) {
    const text = 'wsbus compresses repetitive text. '.repeat(2048).slice(0, 64 * 1024);
    const before = ws._socket.bytesRead;
    await expectEcho(ws, next, '64 KiB repetitive text (compressed)', [text], false);
    const wire = ws._socket.bytesRead - before;
    check('server compressed the 64 KiB echo', wire < text.length / 4,
      `${wire} bytes on the wire for ${text.length}`);
  }

  const payload = Buffer.from('ping-payload');
  const started = performance.now();
  ws.ping(payload);
  const [pong] = await once(ws, 'pong');
  check('ping answered by pong', pong.equals(payload),
    `payload '${pong}', ${(performance.now() - started).toFixed(1)} ms`);

  // The CloseEvent of the EventTarget API carries wasClean (close frames both ways).
  const closed = new Promise((resolve) => ws.addEventListener('close', resolve, { once: true }));
  ws.close(1000, 'bye');
  const event = await closed;
  check('close 1000 answered with 1000', event.code === 1000,
    `server close frame: ${event.code} '${event.reason}'`);
  check('clean close (close frames both ways)', event.wasClean);
}

run()
  .catch((err) => check('no connection error', false, `${err.name}: ${err.message}`))
  .finally(finish);
