// Browser test of the chat demo of `wsbus serve`, in headless Chromium through
// playwright-core, with Node's test runner: `tests/browser/run.sh`, or
// `node --test tests/browser/chat.test.mjs` once `npm ci` has run here.
//
// The server under test:
//   WSBUS_URL=http://127.0.0.1:8080   test a server that is already running, or else
//   WSBUS_BIN=path/to/wsbus           spawn `wsbus serve --listen 127.0.0.1:$WSBUS_TEST_PORT`
//                                     (default: target/release/wsbus of this repo,
//                                     port 18080) and stop it at the end.
// CHROMIUM=path: the browser (default /usr/bin/chromium, Debian's package).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const TIMEOUT = 10_000;
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
  "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

let baseUrl;
let server; // the spawned wsbus, if any
let serverLog = '';
let browser;

// ---------------------------------------------------------------- the server

async function apiMe(url) {
  const response = await fetch(new URL('/api/me', url), { signal: AbortSignal.timeout(2000) });
  return response;
}

async function startServer() {
  if (process.env.WSBUS_URL) {
    baseUrl = process.env.WSBUS_URL.replace(/\/+$/, '');
    try {
      await apiMe(baseUrl);
    } catch (e) {
      throw new Error(`WSBUS_URL=${baseUrl}: GET /api/me failed (${e.cause?.message ?? e.message}); is the server running?`);
    }
    return;
  }
  const bin = process.env.WSBUS_BIN || `${REPO}target/release/wsbus`;
  if (!existsSync(bin)) {
    throw new Error(
      `no wsbus binary at ${bin}: build it (cargo build --release), ` +
        'or set WSBUS_BIN to a binary, or WSBUS_URL to a running server',
    );
  }
  const port = process.env.WSBUS_TEST_PORT || '18080';
  const listen = `127.0.0.1:${port}`;
  baseUrl = `http://${listen}`;
  server = spawn(bin, ['serve', '--listen', listen], { stdio: ['ignore', 'pipe', 'pipe'] });
  let exited = null;
  let spawnError = null;
  server.on('error', (e) => (spawnError = e));
  server.on('exit', (code, signal) => (exited = signal ?? code));
  for (const stream of [server.stdout, server.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      serverLog += chunk;
      if (serverLog.length > 100_000) serverLog = serverLog.slice(-50_000);
    });
  }
  const deadline = Date.now() + TIMEOUT;
  let lastError;
  while (Date.now() < deadline) {
    if (spawnError) throw new Error(`could not start ${bin}: ${spawnError.message}`);
    if (exited !== null) {
      throw new Error(`${bin} serve --listen ${listen} exited (${exited}) before answering; its output:\n${serverLog}`);
    }
    try {
      const response = await apiMe(baseUrl);
      if (response.ok) return;
      lastError = new Error(`GET /api/me answered ${response.status}`);
    } catch (e) {
      lastError = e;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(
    `${bin} serve --listen ${listen} did not answer GET /api/me within ${TIMEOUT} ms ` +
      `(last error: ${lastError?.cause?.message ?? lastError?.message}); its output:\n${serverLog}`,
  );
}

async function stopServer() {
  if (!server || server.exitCode !== null || server.signalCode !== null) return;
  const exited = new Promise((resolve) => server.once('exit', resolve));
  server.kill('SIGTERM');
  const timer = setTimeout(() => server.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------- the pages

// Text describing what a page shows, for failure messages.
async function describePage(page, who) {
  try {
    const state = await page.evaluate(() => ({
      url: location.href,
      status: document.getElementById('status')?.textContent,
      me: document.getElementById('me')?.textContent,
      loginShown: !document.getElementById('login')?.hidden,
      error: document.getElementById('error')?.hidden ? null : document.getElementById('error')?.textContent,
      messages: [...document.querySelectorAll('#messages > li')].map((li) => li.textContent),
      cspViolations: window.__cspViolations,
    }));
    return `${who}'s page: ${JSON.stringify(state, null, 2)}`;
  } catch (e) {
    return `${who}'s page: (could not read it: ${e.message})`;
  }
}

// Waits until fn(arg) is truthy in the page; on timeout, fails with `what` and the page's state.
async function waitFor(page, who, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`${who}: ${what} within ${TIMEOUT} ms (${e.message.split('\n')[0]})\n${await describePage(page, who)}`);
  }
}

const statusIs = (page, who, expected) =>
  waitFor(page, who, `status line did not read ${JSON.stringify(expected)}`,
    (s) => document.getElementById('status')?.textContent === s, expected);

const messageShown = (page, who, text) =>
  waitFor(page, who, `message ${JSON.stringify(text)} was not shown`,
    (t) => [...document.querySelectorAll('#messages > li')].some((li) => li.textContent === t), text);

// A page that records CSP violations and uncaught errors, so tests can assert there are none.
async function newPage(context, who) {
  const page = await context.newPage();
  page.pageErrors = [];
  page.on('pageerror', (e) => page.pageErrors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error' && !/favicon/.test(m.location()?.url ?? '')) page.pageErrors.push(`console: ${m.text()}`);
  });
  page.who = who;
  return page;
}

// A new browser context: its own cookie jar; its pages record CSP violations.
async function newContext() {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  return context;
}

// Clicks `selector`, which submits a form, and waits for the page it leads to to load.
async function submit(page, selector) {
  await Promise.all([
    page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame(), timeout: TIMEOUT }),
    page.click(selector, { timeout: TIMEOUT }),
  ]);
  await page.waitForLoadState('load', { timeout: TIMEOUT });
  assert.equal(page.url(), baseUrl + '/', `${page.who}: submitting the form led to ${page.url()}`);
}

// A new browser context (its own cookie jar) signed in as `name` through the
// login form, with its chat connected.
async function signIn(name) {
  const context = await newContext();
  const page = await newPage(context, name);
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  const response = await page.goto(baseUrl + '/', { timeout: TIMEOUT });
  assert.equal(response.status(), 200, `${name}: GET / answered ${response.status()}`);
  await waitFor(page, name, 'the login form was not shown to a signed-out visitor',
    () => !document.getElementById('login').hidden && document.getElementById('chat').hidden);
  assert.deepEqual(sockets, [], `${name}: the page opened a WebSocket before signing in`);
  await page.fill('#user', name, { timeout: TIMEOUT });
  await submit(page, '#login button[type=submit]');
  await waitFor(page, name, `"Signed in as ${name}" was not shown after signing in`,
    (n) => document.getElementById('me').textContent === n && !document.getElementById('account').hidden, name);
  await statusIs(page, name, 'connected');
  const wsUrl = baseUrl.replace(/^http/, 'ws') + '/chat';
  assert.ok(sockets.includes(wsUrl), `${name}: expected a WebSocket to ${wsUrl}, saw ${JSON.stringify(sockets)}`);
  return { context, page };
}

async function send(page, text) {
  await page.fill('#text', text, { timeout: TIMEOUT });
  await page.click('#send-button', { timeout: TIMEOUT });
  await waitFor(page, page.who, 'the message box was not cleared after sending',
    () => document.getElementById('text').value === '');
}

async function assertClean(page) {
  const violations = await page.evaluate(() => window.__cspViolations);
  assert.deepEqual(violations, [], `${page.who}'s page violated its own Content-Security-Policy`);
  assert.deepEqual(page.pageErrors, [], `${page.who}'s page had errors`);
}

// ---------------------------------------------------------------- the tests

async function setUp() {
  await startServer();
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  browser = await chromium.launch({
    executablePath,
    timeout: 30_000,
    args: [
      '--headless=new',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  console.log(`server ${baseUrl}; browser ${executablePath} ${browser.version()}`);
}

describe('wsbus serve chat demo in headless Chromium', { timeout: 120_000 }, () => {
  before(async () => {
    try {
      await setUp();
    } catch (e) {
      console.error(`setup failed: ${e.message}`);
      throw e;
    }
  });

  after(async () => {
    await browser?.close();
    await stopServer();
  });

  test('two users see their welcome and each other\'s messages', async () => {
    const alice = await signIn('alice');
    const bob = await signIn('bob');
    try {
      await messageShown(alice.page, 'alice', 'Welcome to our chat alice');
      await messageShown(bob.page, 'bob', 'Welcome to our chat bob');

      await send(alice.page, 'hello from alice');
      await messageShown(bob.page, 'bob', 'hello from alice');
      await messageShown(alice.page, 'alice', 'hello from alice');

      await send(bob.page, 'hi alice, bob here');
      await messageShown(alice.page, 'alice', 'hi alice, bob here');
      await messageShown(bob.page, 'bob', 'hi alice, bob here');

      // The sender's own message shows once: as relayed by the server, not echoed locally.
      const count = await alice.page.evaluate(() =>
        [...document.querySelectorAll('#messages > li')].filter((li) => li.textContent === 'hello from alice').length);
      assert.equal(count, 1, `alice's page shows "hello from alice" ${count} times\n${await describePage(alice.page, 'alice')}`);

      await assertClean(alice.page);
      await assertClean(bob.page);
    } finally {
      await alice.context.close();
      await bob.context.close();
    }
  });

  test('rooms on the bus: presence and messages over WebSocket and long-polling', async () => {
    const alice = await signIn('alice');
    const bob = await signIn('bob');
    const carol = await signIn('carol');
    try {
      // carol's page forces the long-polling transport: no WebSocket to /amb.
      const carolSockets = [];
      carol.page.on('websocket', (ws) => carolSockets.push(ws.url()));
      await carol.page.goto(baseUrl + '/?bus=long-polling', { timeout: TIMEOUT });
      const room = 'demo-room';
      for (const [who, page, transport] of [
        ['alice', alice.page, 'websocket'], ['bob', bob.page, 'websocket'], ['carol', carol.page, 'long-polling']]) {
        await waitFor(page, who, 'the rooms section was not shown', () => !document.getElementById('bus').hidden);
        await page.fill('#room', room, { timeout: TIMEOUT });
        await page.click('#join', { timeout: TIMEOUT });
        const expected = `in ${room} over ${transport}`;
        await waitFor(page, who, `the bus status did not read ${JSON.stringify(expected)}`,
          (s) => document.getElementById('bus-status').textContent === s, expected);
      }
      assert.ok(!carolSockets.some((u) => u.endsWith('/amb')), `carol opened ${JSON.stringify(carolSockets)}`);

      const presenceIs = (page, who, names) =>
        waitFor(page, who, `presence did not become ${JSON.stringify(names)}`,
          (n) => JSON.stringify([...document.querySelectorAll('#presence > li')].map((li) => li.textContent)) === n,
          JSON.stringify(names));
      // Everyone sees everyone, whatever the transport (join events or the
      // member list of the presence subscription).
      for (const [who, page] of [['alice', alice.page], ['bob', bob.page], ['carol', carol.page]]) {
        await presenceIs(page, who, ['alice', 'bob', 'carol']);
      }

      const busMessageShown = (page, who, text) =>
        waitFor(page, who, `room message ${JSON.stringify(text)} was not shown`,
          (t) => [...document.querySelectorAll('#bus-messages > li')].some((li) => li.textContent === t), text);
      async function say(page, text) {
        await page.fill('#bus-text', text, { timeout: TIMEOUT });
        await page.click('#bus-send-button', { timeout: TIMEOUT });
      }
      await say(carol.page, 'hello over long-polling');
      await say(alice.page, '<img src=x onerror=alert(1)> over websocket');
      for (const [who, page] of [['alice', alice.page], ['bob', bob.page], ['carol', carol.page]]) {
        await busMessageShown(page, who, 'carol: hello over long-polling');
        await busMessageShown(page, who, 'alice: <img src=x onerror=alert(1)> over websocket');
      }
      // Each message shows once on each page (the bus does not echo to the sender).
      const counts = await carol.page.evaluate(() =>
        [...document.querySelectorAll('#bus-messages > li')].map((li) => li.textContent));
      assert.deepEqual(counts.filter((t) => t === 'carol: hello over long-polling').length, 1, JSON.stringify(counts));
      assert.equal(await bob.page.locator('#bus-messages img').count(), 0, 'markup in a room message was rendered');

      // bob leaves: the others see him go.
      await bob.page.click('#leave', { timeout: TIMEOUT });
      await presenceIs(alice.page, 'alice', ['alice', 'carol']);
      await presenceIs(carol.page, 'carol', ['alice', 'carol']);

      for (const page of [alice.page, bob.page, carol.page]) await assertClean(page);
    } finally {
      for (const user of [alice, bob, carol]) await user.context.close();
    }
  });

  test('messages are shown as text, never as HTML', async () => {
    const alice = await signIn('alice');
    const bob = await signIn('bob');
    const payloads = [
      '<script>window.__xss = 1</script><b>bold</b>',
      '<img src="/x" onerror="window.__xss = 2">&amp; &lt;i&gt;',
    ];
    try {
      for (const payload of payloads) {
        await send(alice.page, payload);
        await messageShown(bob.page, 'bob', payload);
        await messageShown(alice.page, 'alice', payload);
        for (const page of [bob.page, alice.page]) {
          const li = await page.evaluate((p) => {
            const found = [...document.querySelectorAll('#messages > li')].filter((li) => li.textContent === p);
            return found.map((li) => ({ text: li.textContent, children: li.childElementCount, nodes: li.childNodes.length }));
          }, payload);
          assert.equal(li.length, 1, `${page.who}: expected one <li> with the payload, found ${li.length}`);
          assert.equal(li[0].text, payload, `${page.who}: the <li> text differs from what alice sent`);
          assert.equal(li[0].children, 0, `${page.who}: the <li> has element children: the message was parsed as HTML`);
          assert.equal(li[0].nodes, 1, `${page.who}: the <li> should hold exactly one text node`);
        }
      }
      // Let anything that would run (an image's onerror) have its chance.
      await bob.page.waitForTimeout(300);
      for (const page of [bob.page, alice.page]) {
        const xss = await page.evaluate(() => typeof window.__xss);
        assert.equal(xss, 'undefined', `${page.who}: window.__xss is set: a message ran as code`);
        const injected = await page.evaluate(() => document.querySelectorAll('#messages script, #messages b, #messages img').length);
        assert.equal(injected, 0, `${page.who}: message markup became elements in the list`);
        await assertClean(page);
      }
    } finally {
      await alice.context.close();
      await bob.context.close();
    }
  });

  test('pages carry the Content-Security-Policy and the right content types', async () => {
    const context = await newContext();
    try {
      const page = await newPage(context, 'visitor');
      const responses = new Map();
      page.on('response', (r) => responses.set(new URL(r.url()).pathname, r));
      const response = await page.goto(baseUrl + '/', { timeout: TIMEOUT });
      await waitFor(page, 'visitor', 'the login form was not shown', () => !document.getElementById('login').hidden);
      const headers = response.headers();
      assert.equal(headers['content-security-policy'], CSP, 'GET / has not the expected Content-Security-Policy');
      assert.match(headers['content-type'] ?? '', /^text\/html\b/, 'GET / content-type');
      for (const [path, type] of [['/app.js', /^(text|application)\/javascript\b/], ['/app.css', /^text\/css\b/]]) {
        const r = responses.get(path);
        assert.ok(r, `the page did not load ${path}`);
        assert.equal(r.status(), 200, `GET ${path} answered ${r.status()}`);
        assert.match(r.headers()['content-type'] ?? '', type, `GET ${path} content-type`);
        assert.equal(r.headers()['content-security-policy'], CSP, `GET ${path} has not the expected Content-Security-Policy`);
      }
      // The stylesheet applied (a wrong MIME type would have it ignored).
      const maxWidth = await page.evaluate(() => getComputedStyle(document.querySelector('main')).maxWidth);
      assert.notEqual(maxWidth, 'none', 'app.css was not applied');
      await assertClean(page);
    } finally {
      await context.close();
    }
  });

  test('signing out in another tab closes the chat with 1008', async () => {
    const alice = await signIn('alice');
    const bob = await signIn('bob');
    try {
      await messageShown(alice.page, 'alice', 'Welcome to our chat alice');
      const tab = await newPage(alice.context, 'alice (second tab)');
      await tab.goto(baseUrl + '/', { timeout: TIMEOUT });
      await waitFor(tab, 'alice (second tab)', 'the second tab did not show alice signed in',
        () => document.getElementById('me').textContent === 'alice');
      await submit(tab, '#logout');
      await waitFor(tab, 'alice (second tab)', 'the login form was not shown after signing out',
        () => !document.getElementById('login').hidden && document.getElementById('account').hidden);

      await waitFor(alice.page, 'alice', 'the chat tab did not show "disconnected: 1008 HTTP session ended"',
        () => {
          const s = document.getElementById('status').textContent;
          return s.includes('1008') && s.includes('HTTP session ended');
        });
      assert.equal(await alice.page.textContent('#status'), 'disconnected: 1008 HTTP session ended');
      await waitFor(alice.page, 'alice', 'the chat tab did not offer to sign in again',
        () => !document.getElementById('login').hidden);
      assert.equal(await alice.page.isDisabled('#text'), true, 'alice: the message box is still enabled');
      const me = await alice.page.evaluate(() => fetch('/api/me').then((r) => r.json()));
      assert.deepEqual(me, { user: null }, 'alice: /api/me after signing out');

      // Bob's session is untouched.
      assert.equal(await bob.page.textContent('#status'), 'connected', 'bob was disconnected by alice signing out');
      await send(bob.page, 'still here');
      await messageShown(bob.page, 'bob', 'still here');
      await assertClean(alice.page);
      await assertClean(bob.page);
    } finally {
      await alice.context.close();
      await bob.context.close();
    }
  });

  test('the record switch keeps the page\'s WebSocket messages and downloads them as JSON lines', async () => {
    const alice = await signIn('alice');
    try {
      const { page } = alice;
      await page.check('#record', { timeout: TIMEOUT });
      await send(page, 'recorded hello');
      await messageShown(page, 'alice', 'recorded hello');
      const room = 'record-room';
      await page.fill('#room', room, { timeout: TIMEOUT });
      await page.click('#join', { timeout: TIMEOUT });
      await waitFor(page, 'alice', 'the room was not joined',
        (r) => document.getElementById('bus-status').textContent.startsWith('in ' + r), room);
      await page.fill('#bus-text', 'recorded on the bus', { timeout: TIMEOUT });
      await page.click('#bus-send-button', { timeout: TIMEOUT });
      await waitFor(page, 'alice', 'the record count did not show',
        () => /^[1-9][0-9]* messages/.test(document.getElementById('record-count').textContent));
      const [download] = await Promise.all([
        page.waitForEvent('download', { timeout: TIMEOUT }),
        page.click('#record-download', { timeout: TIMEOUT }),
      ]);
      assert.match(download.suggestedFilename(), /^wsbus-browser-.*\.jsonl$/);
      const path = await download.path();
      const text = (await import('node:fs')).readFileSync(path, 'utf8');
      const lines = text.trim().split('\n').map((l) => JSON.parse(l));
      const chat = lines.filter((l) => l.opcode === 'text' && l.payload === 'recorded hello');
      assert.deepEqual(chat.map((l) => l.direction).sort(), ['in', 'out'], text);
      assert.ok(lines.every((l) => l.side === 'browser' && typeof l.time === 'string' && l.socket), text);
      const bayeux = lines.filter((l) => l.channel === '/chat/' + room && l.bayeux?.data?.text === 'recorded on the bus');
      assert.ok(bayeux.some((l) => l.direction === 'out' && typeof l.clientId === 'string'), text);
      await assertClean(page);
    } finally {
      await alice.context.close();
    }
  });

  // SPEC §1: Chromium offers permessage-deflate with context takeover; by default the
  // server answers without it both ways (RFC 7692 §7.1.1.1, §7.1.1.2), so idle sockets
  // hold no zlib state. Memory itself is measured by crates/wsbus-server/tests/deflate_process.rs.
  test('the browser\'s sockets are compressed without context takeover', async () => {
    // Under connections_per_ip (1,000); anonymous, so no per-user cap. Each message is
    // relayed to every socket (SOCKETS² deliveries), so not more.
    const SOCKETS = 100;
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      await page.goto(baseUrl + '/', { timeout: TIMEOUT });
      const result = await page.evaluate(async (n) => {
        const url = location.origin.replace(/^http/, 'ws') + '/chat';
        const sockets = [];
        const received = new Array(n).fill(0);
        for (let i = 0; i < n; i++) {
          const ws = new WebSocket(url, 'text');
          ws.onmessage = () => received[i]++;
          await new Promise((resolve, reject) => {
            ws.onopen = resolve;
            ws.onerror = () => reject(new Error(`socket ${i} failed`));
          });
          sockets.push(ws);
        }
        // Each sends one ~200-byte JSON message; the chat relays it to every socket.
        sockets.forEach((ws, i) => ws.send(JSON.stringify({
          type: 'chat', room: 'lobby', user: `user-${String(i).padStart(5, '0')}`,
          text: 'Hello everyone, this is a message of about two hundred bytes to check compression.',
          sent: 1765000000000 + i,
        })));
        // The welcome plus n relayed messages each.
        const deadline = Date.now() + 60_000;
        while (received.some((c) => c < n + 1) && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const extensions = [...new Set(sockets.map((ws) => ws.extensions))];
        sockets.forEach((ws) => ws.close());
        return { extensions, fewest: Math.min(...received) };
      }, SOCKETS);
      assert.deepEqual(result.extensions,
        ['permessage-deflate; server_no_context_takeover; client_no_context_takeover']);
      assert.equal(result.fewest, SOCKETS + 1, 'every socket got the welcome and every message');
    } finally {
      await context.close();
    }
  });
});

process.on('exit', () => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
});
