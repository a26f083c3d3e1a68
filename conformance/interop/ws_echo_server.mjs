#!/usr/bin/env node
// Interop peer: a Node `ws` echo server, for testing wsbus's *client* against it.
//
// usage: node ws_echo_server.mjs --port P [--deflate]
//   --port P    listen on 127.0.0.1:P (0 = a free port)
//   --deflate   accept permessage-deflate (threshold 0: every message compressed)
// Prints `READY <port>` once listening. Echoes every message with its type (text or
// binary); the text message `__extensions__` is answered with the negotiated
// Sec-WebSocket-Extensions response header ("" if none), so a client can prove that
// compression was negotiated. Close handshakes complete normally (ws does that).
// Exits 0 on SIGTERM / SIGINT.
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';

const { values: opts } = parseArgs({
  options: { port: { type: 'string' }, deflate: { type: 'boolean', default: false } },
});
if (opts.port === undefined || !/^\d+$/.test(opts.port)) {
  console.error('usage: ws_echo_server.mjs --port P [--deflate]');
  process.exit(2);
}

const wss = new WebSocketServer({
  host: '127.0.0.1',
  port: Number(opts.port),
  perMessageDeflate: opts.deflate ? { threshold: 0 } : false,
  // Above wsbus's 64 MiB message limit, so the peer is never the limiting side.
  maxPayload: 128 * 1024 * 1024,
});

// 'headers' fires with the 101 response lines just before 'connection' for the same
// request: remember the extensions header on the request object.
wss.on('headers', (headers, req) => {
  const prefix = 'sec-websocket-extensions:';
  const line = headers.find((h) => h.toLowerCase().startsWith(prefix));
  req.negotiatedExtensions = line ? line.slice(prefix.length).trim() : '';
});

wss.on('connection', (ws, req) => {
  ws.on('message', (data, isBinary) => {
    if (!isBinary && data.toString() === '__extensions__') {
      ws.send(req.negotiatedExtensions);
    } else {
      ws.send(data, { binary: isBinary });
    }
  });
  ws.on('error', (err) => console.error(`connection error: ${err.message}`));
});

wss.on('listening', () => console.log(`READY ${wss.address().port}`));

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => process.exit(0));
}
