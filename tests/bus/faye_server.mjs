#!/usr/bin/env node
// A stand-in Bayeux server for validating the interop harness (clients.test.mjs):
// npm `faye`'s own server (faye.NodeAdapter), unmodified, mounted at /amb.
// It proves the harness and the client libraries, not wsbus.
//
//   node faye_server.mjs [--port P] [--host H] [--mount /amb] [--timeout S]
//                        [--no-websocket] [--extended-channels] [--trace [FILE]]
//
//   --port P        listen port; 0 (the default) picks a free one
//   --host H        listen address, default 127.0.0.1
//   --mount PATH    Bayeux endpoint, default /amb. Faye serves PATH and every PATH/<segment>
//                   below it (its endpoint regexp is ^PATH(/[^/]*)*(\.[^.]+)?$), so CometD's
//                   POSTs to /amb/handshake, /amb/connect, /amb/disconnect and /amb/ work.
//   --timeout S     how long Faye holds a /meta/connect (advice.timeout), default 20 s
//   --no-websocket  answer every WebSocket upgrade with `400 Bad Request` before Faye sees it
//                   (the seed's "Unexpected response code: 400"), so clients must fall back to
//                   long-polling
//   --extended-channels  widen Faye's channel grammar (Bayeux 1.0 §2.2.1: letters, digits and
//                   `- _ ! ~ ( ) $ @`) to the set wsbus accepts (crates/wsbus-bayeux channel.rs:
//                   also `. & ' + , ; = : % # { }`), so CometD's extended-character channels
//                   such as /record/aW5jaWRlbnQ+x.y-z work. Without it Faye answers
//                   `405:<channel>:Invalid channel`. (Faye's *client* keeps the narrow grammar.)
//   --trace [FILE]  log every HTTP request/response body and every WebSocket text frame
//                   (both directions) as JSON lines to FILE, or to stderr
//
// Prints `READY <port>` on stdout once listening. Exits 0 on SIGTERM / SIGINT.

import http from 'node:http';
import fs from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const faye = require('faye');

function usage(message) {
  if (message) console.error(`faye_server: ${message}`);
  console.error('usage: node faye_server.mjs [--port P] [--host H] [--mount /amb] [--timeout S] ' +
    '[--no-websocket] [--extended-channels] [--trace [FILE]]');
  process.exit(2);
}

const opts = {
  port: 0, host: '127.0.0.1', mount: '/amb', timeout: 20, websocket: true, extendedChannels: false, trace: null,
};
{
  const args = process.argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const value = () => {
      if (i + 1 >= args.length) usage(`${a} needs a value`);
      return args[++i];
    };
    switch (a) {
      case '--port': opts.port = Number(value()); break;
      case '--host': opts.host = value(); break;
      case '--mount': opts.mount = value(); break;
      case '--timeout': opts.timeout = Number(value()); break;
      case '--no-websocket': opts.websocket = false; break;
      case '--extended-channels': opts.extendedChannels = true; break;
      case '--trace':
        opts.trace = (i + 1 < args.length && !args[i + 1].startsWith('--')) ? args[++i] : '-';
        break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage('bad --port');
  if (!(opts.timeout > 0)) usage('bad --timeout');
  if (!opts.mount.startsWith('/')) usage('--mount must start with /');
}

// ------------------------------------------------------------------ tracing

let traceOut = null;
if (opts.trace === '-') traceOut = (line) => process.stderr.write(line + '\n');
else if (opts.trace) {
  const fd = fs.openSync(opts.trace, 'a');
  traceOut = (line) => fs.writeSync(fd, line + '\n');
}
let connSeq = 0;
function trace(record) {
  if (traceOut) traceOut(JSON.stringify({ t: new Date().toISOString(), ...record }));
}

if (traceOut) {
  // Server-side WebSocket frames: faye's NodeAdapter wraps each upgrade in faye-websocket's
  // WebSocket (the same module instance as ours), so instrument its prototype. Only the
  // server's sockets live in this process.
  const FayeWebSocket = require('faye-websocket');
  const proto = FayeWebSocket.prototype;
  const origSend = proto.send;
  proto.send = function (data) {
    trace({ conn: this.__traceId, dir: 'ws-out', body: String(data) });
    return origSend.call(this, data);
  };
  const origDispatch = proto.dispatchEvent;
  proto.dispatchEvent = function (event) {
    if (event.type === 'message') trace({ conn: this.__traceId, dir: 'ws-in', body: String(event.data) });
    else if (event.type === 'open' || event.type === 'close') {
      trace({ conn: this.__traceId, dir: `ws-${event.type}`, code: event.code, reason: event.reason });
    }
    return origDispatch.call(this, event);
  };
  Object.defineProperty(proto, '__traceId', {
    get() { return this.__tid ?? (this.__tid = `ws${++connSeq}`); },
  });
}

// ------------------------------------------------------------------ server

if (opts.extendedChannels) {
  // Faye's server and engine read Grammar.CHANNEL_NAME / CHANNEL_PATTERN at call time.
  const grammar = require('faye/src/protocol/grammar');
  const seg = "[A-Za-z0-9\\-._~!$&'()+,;=:@%#{}]+";
  grammar.CHANNEL_NAME = new RegExp(`^(\\/${seg})+$`);
  grammar.CHANNEL_PATTERN = new RegExp(`^(\\/${seg})*\\/\\*{1,2}$`);
}

const bayeux = new faye.NodeAdapter({ mount: opts.mount, timeout: opts.timeout });

const server = http.createServer((req, res) => {
  if (!bayeux.check(req)) {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
    return;
  }
  if (traceOut) {
    const id = `http${++connSeq}`;
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => trace({
      conn: id, dir: 'http-in', method: req.method, url: req.url, headers: req.headers,
      body: Buffer.concat(chunks).toString('utf8'),
    }));
    const out = [];
    let outHeaders = {};
    const origWriteHead = res.writeHead.bind(res);
    res.writeHead = (status, ...rest) => {
      const h = rest.find((x) => x && typeof x === 'object');
      if (h) outHeaders = { ...h };
      return origWriteHead(status, ...rest);
    };
    const origWrite = res.write.bind(res);
    const origEnd = res.end.bind(res);
    res.write = (c, ...rest) => { if (c) out.push(Buffer.from(c)); return origWrite(c, ...rest); };
    res.end = (c, ...rest) => {
      if (c && typeof c !== 'function') out.push(Buffer.from(c));
      trace({
        conn: id, dir: 'http-out', url: req.url, status: res.statusCode, headers: { ...res.getHeaders(), ...outHeaders },
        body: Buffer.concat(out).toString('utf8'),
      });
      return origEnd(c, ...rest);
    };
  }
  bayeux.handle(req, res);
});

server.on('upgrade', (req, socket, head) => {
  if (!opts.websocket || !bayeux.check(req)) {
    const status = opts.websocket ? '404 Not Found' : '400 Bad Request';
    const body = opts.websocket ? 'not found\n' : 'WebSocket is disabled on this server\n';
    trace({ dir: 'ws-refused', url: req.url, status, headers: req.headers });
    socket.on('error', () => {});
    socket.end(
      `HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
      `Connection: close\r\n\r\n${body}`,
    );
    return;
  }
  trace({ dir: 'ws-upgrade', url: req.url, headers: req.headers });
  bayeux.handleUpgrade(req, socket, head);
});

server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
});

server.listen(opts.port, opts.host, () => {
  const { port } = server.address();
  process.stdout.write(`READY ${port}\n`);
});

function shutdown() {
  bayeux.close();
  server.close(() => process.exit(0));
  server.closeAllConnections?.();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
