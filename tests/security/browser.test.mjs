// The chat page of `wsbus serve` with an access token, in headless Chromium (playwright-core),
// against a server with [auth] required and the demo on (run.sh starts it):
//
//   SEC_CHAT_URL=http://127.0.0.1:PORT SEC_JWT_SECRET=… SEC_JWT_ISSUER=… SEC_JWT_AUDIENCE=… \
//     CHROMIUM=/usr/bin/chromium node --test browser.test.mjs
//
// `/#access_token=<JWT>`: app.js takes the token from the fragment, removes it from the
// address bar, opens /chat with `?access_token=` and sends `ext.access_token` in the bus
// handshake (bus.js). Asserted: the chat connects and the server's welcome names the token's
// `name`; the address bar keeps no token; rooms on the bus work over WebSocket and
// long-polling. Without a token (demo login only) or with a bad one, the socket is refused
// with 401 (seen in Chromium's own report of the failed handshake) and the page says it
// could not connect; the bus handshake is refused with 401::Missing token.
//
// SEC_ASSETS_DIR=crates/wsbus-server/assets serves app.js and bus.js from that directory
// instead of the binary's copies (same headers): to try page changes without a rebuild.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { mint } from './jwt.mjs';

const TIMEOUT = 10_000;
const BASE = (process.env.SEC_CHAT_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
const ASSETS = process.env.SEC_ASSETS_DIR;
let browser;

async function newPage() {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  if (ASSETS) {
    await context.route(/\/(app|bus)\.js$/, async (route) => {
      const response = await route.fetch();
      const file = new URL(route.request().url()).pathname.slice(1);
      await route.fulfill({ response, body: readFileSync(join(ASSETS, file), 'utf8') });
    });
  }
  const page = await context.newPage();
  page.console = [];
  page.errors = [];
  page.sockets = [];
  page.on('console', (m) => page.console.push(m.text()));
  page.on('pageerror', (e) => page.errors.push(e.message));
  page.on('websocket', (ws) => {
    const entry = { url: ws.url(), errors: [] };
    page.sockets.push(entry);
    ws.on('socketerror', (e) => entry.errors.push(String(e)));
  });
  return { context, page };
}

async function state(page) {
  try {
    return JSON.stringify(await page.evaluate(() => ({
      url: location.href,
      status: document.getElementById('status')?.textContent,
      me: document.getElementById('me')?.textContent,
      busStatus: document.getElementById('bus-status')?.textContent,
      messages: [...document.querySelectorAll('#messages > li')].map((li) => li.textContent),
      csp: window.__cspViolations,
    })), null, 1);
  } catch (e) {
    return `(could not read the page: ${e.message})`;
  }
}

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`${what} within ${TIMEOUT} ms (${e.message.split('\n')[0]})\npage: ${await state(page)}\n` +
      `sockets: ${JSON.stringify(page.sockets)}\nconsole: ${JSON.stringify(page.console)}`);
  }
}

const statusIs = (page, s) => waitFor(page, `the status did not read ${JSON.stringify(s)}`,
  (x) => document.getElementById('status')?.textContent === x, s);

async function joinRoom(page, room) {
  await waitFor(page, 'the rooms section was not shown', () => !document.getElementById('bus').hidden);
  await page.fill('#room', room, { timeout: TIMEOUT });
  await page.click('#join', { timeout: TIMEOUT });
}

/**
 * Whether Chromium reported the page's WebSocket handshake refused with `status`: "Unexpected
 * response code: <status>", or for a 401 with a WWW-Authenticate challenge, "HTTP
 * Authentication failed; no valid credentials available".
 */
function refusedWith(page, status) {
  const texts = [...page.console, ...page.sockets.flatMap((s) => s.errors)];
  return texts.some((t) => t.includes(`Unexpected response code: ${status}`) ||
    (status === 401 && t.includes('HTTP Authentication failed')));
}

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    timeout: 30_000,
    args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
});

describe('the chat page with an access token (Chromium)', { timeout: 60_000 }, () => {
  test('/#access_token=<JWT>: connects, the welcome names the token, the address bar drops it', async () => {
    const token = mint({ sub: 'zoe', name: 'Zoë Browser' });
    const { context, page } = await newPage();
    try {
      await page.goto(`${BASE}/#access_token=${token}`, { timeout: TIMEOUT });
      await statusIs(page, 'connected');
      await waitFor(page, 'the welcome with the token\'s name was not shown',
        () => [...document.querySelectorAll('#messages > li')].some((li) => li.textContent === 'Welcome to our chat Zoë Browser'));
      assert.equal(await page.textContent('#me'), 'Zoë Browser');
      assert.equal(page.url(), `${BASE}/`, 'the token is still in the address bar');
      assert.equal(await page.evaluate(() => location.hash), '');
      const chat = page.sockets.find((s) => new URL(s.url).pathname === '/chat');
      assert.ok(chat, `no socket to /chat: ${JSON.stringify(page.sockets)}`);
      assert.equal(new URL(chat.url).searchParams.get('access_token'), token, 'the socket URL does not carry the token');

      // The bus handshake carries it too: joining a room works with [auth] required.
      await joinRoom(page, 'token-room');
      await waitFor(page, 'the room was not joined over websocket',
        () => document.getElementById('bus-status').textContent === 'in token-room over websocket');
      assert.deepEqual(await page.evaluate(() => window.__cspViolations), []);
      assert.deepEqual(page.errors, []);
    } finally {
      await context.close();
    }
  });

  test('/?bus=long-polling#access_token=<JWT>: the long-polling handshake carries the token', async () => {
    const { context, page } = await newPage();
    try {
      await page.goto(`${BASE}/?bus=long-polling#access_token=${mint({ sub: 'lp', name: 'Long Poller' })}`, { timeout: TIMEOUT });
      await statusIs(page, 'connected');
      assert.equal(page.url(), `${BASE}/?bus=long-polling`, 'the token is still in the address bar');
      await joinRoom(page, 'token-room');
      await waitFor(page, 'the room was not joined over long-polling',
        () => document.getElementById('bus-status').textContent === 'in token-room over long-polling');
    } finally {
      await context.close();
    }
  });

  test('without a token (demo login only): the socket is refused with 401, the page says so', async () => {
    const { context, page } = await newPage();
    try {
      await page.goto(`${BASE}/`, { timeout: TIMEOUT });
      await waitFor(page, 'the login form was not shown', () => !document.getElementById('login').hidden);
      await page.fill('#user', 'nobody', { timeout: TIMEOUT });
      await Promise.all([
        page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame(), timeout: TIMEOUT }),
        page.click('#login button[type=submit]', { timeout: TIMEOUT }),
      ]);
      await statusIs(page, 'could not connect');
      assert.ok(refusedWith(page, 401),
        `Chromium did not report a 401 for the socket: ${JSON.stringify({ console: page.console, sockets: page.sockets })}`);
      assert.equal(await page.isDisabled('#text'), true, 'the message box is enabled');

      await joinRoom(page, 'no-token-room');
      await waitFor(page, 'the bus handshake was not refused with 401::Missing token',
        () => document.getElementById('bus-status').textContent.includes('401::Missing token'));
    } finally {
      await context.close();
    }
  });

  test('a token with a bad signature: the socket is refused with 401', async () => {
    const { context, page } = await newPage();
    try {
      const bad = mint({ name: 'Mallory' }, { key: 'not the server secret, but 32+ bytes long' });
      await page.goto(`${BASE}/#access_token=${bad}`, { timeout: TIMEOUT });
      await statusIs(page, 'could not connect with this access token');
      assert.ok(refusedWith(page, 401),
        `Chromium did not report a 401 for the socket: ${JSON.stringify({ console: page.console, sockets: page.sockets })}`);
      assert.equal(page.url(), `${BASE}/`, 'the token is still in the address bar');
    } finally {
      await context.close();
    }
  });
});
