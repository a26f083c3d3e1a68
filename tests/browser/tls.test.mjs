// Headless Chromium over wss:// straight to wsbus: the browser's TLS stack
// (BoringSSL) against wsbus's own TLS 1.3 record layer
// (crates/wsbus/src/transport/tls/tls13.rs), which the Rust tests check
// against rustls and OpenSSL. `tests/browser/run.sh`, or
// `node --test tests/browser/tls.test.mjs` once `npm ci` has run here.
//
// WSBUS_BIN=path/to/wsbus   the binary (default: target/release/wsbus of this repo);
//                           it is spawned as `wsbus echo` on a free port.
// OPENSSL=path              makes the self-signed certificate (default: openssl).
// CHROMIUM=path             the browser (default /usr/bin/chromium).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const TIMEOUT = 15_000;
const REPO = fileURLToPath(new URL('../../', import.meta.url));

let dir;
let server;
let serverLog = '';
let url;
let browser;

before(async () => {
  const bin = process.env.WSBUS_BIN || `${REPO}target/release/wsbus`;
  assert.ok(existsSync(bin), `no wsbus binary at ${bin}: cargo build --release, or set WSBUS_BIN`);
  dir = mkdtempSync(join(tmpdir(), 'wsbus-browser-tls-'));
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(process.env.OPENSSL || 'openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-days', '2', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  server = spawn(bin, ['echo', '--listen', '127.0.0.1:0', '--tls-cert', cert, '--tls-key', key], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`wsbus echo did not listen in time:\n${serverLog}`)), TIMEOUT);
    for (const stream of [server.stdout, server.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        serverLog += chunk;
        const listening = serverLog.match(/listening on (wss:\/\/127\.0\.0\.1:\d+)/);
        if (listening) {
          clearTimeout(timer);
          resolve(listening[1]);
        }
      });
    }
    server.on('exit', (code) => reject(new Error(`wsbus echo exited (${code}):\n${serverLog}`)));
  });
  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium' });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('Chromium echoes 200 messages over wss, larger than a TLS record included, and closes cleanly', async () => {
  // The certificate is self-signed: the context trusts it as a user who
  // accepted it would; the TLS handshake and records are the browser's own.
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  const result = await page.evaluate(
    ({ url, count }) =>
      new Promise((resolve) => {
        const ws = new WebSocket(`${url}/echo`);
        const sent = Array.from({ length: count }, (_, i) => `m${i} ${'x'.repeat(i * 97)}`);
        const got = [];
        ws.onopen = () => sent.forEach((message) => ws.send(message));
        ws.onmessage = (event) => {
          got.push(event.data);
          if (got.length === count) ws.close(1000);
        };
        ws.onclose = (event) =>
          resolve({
            intact: got.length === count && got.every((message, i) => message === sent[i]),
            received: got.length,
            code: event.code,
            clean: event.wasClean,
            extensions: ws.extensions,
          });
        ws.onerror = () => resolve({ error: true });
      }),
    { url, count: 200 },
  );
  await context.close();
  assert.deepEqual(
    { intact: result.intact, received: result.received, code: result.code, clean: result.clean },
    { intact: true, received: 200, code: 1000, clean: true },
    `${JSON.stringify(result)}\nserver log:\n${serverLog}`,
  );
  // Chromium offers permessage-deflate and wsbus accepts it without
  // context takeover: the largest messages (19 KB) crossed compressed.
  assert.match(result.extensions, /permessage-deflate/);
});
