// wsbus behind a TLS-terminating nginx (SPEC §5: the origin rule behind a proxy, trusted
// proxies, connections per IP), with Node's test runner: `tests/proxy/run.sh`, or
// `node --test tests/proxy/proxy.test.mjs` once `npm ci` has run here and nginx is installed.
//
// The setup (harness.mjs): a self-signed certificate for 127.0.0.1; two `wsbus serve`
// (WSBUS_BIN, default target/release/wsbus) with `[limits] trusted_proxies =
// ["127.0.0.2/32"]`, the second also with `connections_per_ip = 2`; one nginx (NGINX_BIN,
// default /usr/sbin/nginx) with a TLS server in front of each, reaching wsbus from
// 127.0.0.2 (`proxy_bind`) and setting X-Forwarded-Proto/-Host/-For. Test clients connect
// from 127.0.0.1 (untrusted), to nginx or straight to wsbus. CHROMIUM=path: the browser.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import {
  KEYS, OTHER_CLIENT_ADDRESS, PROXY_ADDRESS, TIMEOUT, describeOutcome, get, makeCertificate,
  makeWorkDir, removeWorkDir, startNginx, startWsbus, stopProcess, upgrade,
} from './harness.mjs';

// wsbus's answer to a handshake whose Origin the same-origin rule refuses (body text).
const ORIGIN_REFUSED = /origin/i;

let dir;
let certificate;
let main; // wsbus with trusted proxies
let limited; // wsbus with trusted proxies and connections_per_ip = 2
let nginx;
let site; // https://127.0.0.1:<port>: nginx in front of `main`
let limitedSite; // nginx in front of `limited`
let browser;

async function setUp() {
  dir = makeWorkDir();
  certificate = makeCertificate(dir);
  const trustedProxies = [`${PROXY_ADDRESS}/32`];
  main = await startWsbus(dir, 'main', { trustedProxies });
  limited = await startWsbus(dir, 'limited', { trustedProxies, connectionsPerIp: 2 });
  nginx = await startNginx(dir, certificate, [main.port, limited.port]);
  [site, limitedSite] = nginx.urls;
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
  console.log(`nginx ${site} -> wsbus ${main.url}; nginx ${limitedSite} -> wsbus ${limited.url}; ` +
    `browser ${executablePath} ${browser.version()}; files in ${dir}`);
}

// Everything the servers said, for failure messages.
function serverLogs() {
  const parts = [];
  for (const [what, server] of [['wsbus main', main], ['wsbus limited', limited]]) {
    if (server) parts.push(`---- ${what} (${server.url}):\n${server.child.log.slice(-4000)}`);
  }
  if (nginx) parts.push(`---- nginx error log:\n${nginx.errorLog()}`);
  return parts.join('\n');
}

// ---------------------------------------------------------------- the page

async function describePage(page) {
  try {
    const state = await page.evaluate(() => ({
      url: location.href,
      status: document.getElementById('status')?.textContent,
      me: document.getElementById('me')?.textContent,
      loginShown: !document.getElementById('login')?.hidden,
      error: document.getElementById('error')?.hidden ? null : document.getElementById('error')?.textContent,
      messages: [...document.querySelectorAll('#messages > li')].map((li) => li.textContent),
      text: document.getElementById('status') ? undefined : document.body?.innerText?.slice(0, 500),
    }));
    return `the page: ${JSON.stringify(state, null, 2)}`;
  } catch (e) {
    return `the page: (could not read it: ${e.message})`;
  }
}

async function waitFor(page, what, fn, arg, more = () => '') {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`${what} within ${TIMEOUT} ms (${e.message.split('\n')[0]})\n${await describePage(page)}\n${more()}`);
  }
}

// ---------------------------------------------------------------- the tests

describe('wsbus behind a TLS-terminating nginx', { timeout: 120_000 }, () => {
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
    await stopProcess(nginx?.child);
    await stopProcess(main?.child);
    await stopProcess(limited?.child);
    removeWorkDir(dir);
  });

  test('nginx serves the pages of wsbus over https (plain HTTP proxying)', async () => {
    const page = await get(`${site}/`, { ca: certificate.pem });
    assert.equal(page.status, 200, `GET ${site}/ answered ${page.status}\n${serverLogs()}`);
    assert.match(page.headers['content-type'] ?? '', /^text\/html\b/);
    assert.match(page.body, /id="login"/, 'GET / through nginx is not the chat page');
    const me = await get(`${site}/api/me`, { ca: certificate.pem });
    assert.equal(me.status, 200);
    assert.deepEqual(JSON.parse(me.body), { user: null });
  });

  test(`wsbus accepts [${KEYS.section}] ${KEYS.trustedProxies} and ${KEYS.connectionsPerIp} (SPEC §8)`, () => {
    const refused = [...main.refusals, ...limited.refusals];
    assert.deepEqual([...new Set([...main.unknownKeys, ...limited.unknownKeys])], [],
      `wsbus refused the configuration: ${refused.join(' | ')}`);
  });

  test('the page signs in and chats over its own wss socket through nginx', async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    try {
      const page = await context.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => {
        if (m.type() === 'error' && !/favicon/.test(m.location()?.url ?? '')) errors.push(`console: ${m.text()}`);
      });
      const sockets = [];
      page.on('websocket', (ws) => {
        const entry = { url: ws.url(), errors: [] };
        ws.on('socketerror', (e) => entry.errors.push(String(e)));
        sockets.push(entry);
      });
      const more = () => `sockets: ${JSON.stringify(sockets)}; page errors: ${JSON.stringify(errors)}\n${serverLogs()}`;

      const response = await page.goto(`${site}/`, { timeout: TIMEOUT });
      assert.equal(response.status(), 200, `GET ${site}/ answered ${response.status()}`);
      await waitFor(page, 'the login form was not shown to a signed-out visitor',
        () => !document.getElementById('login').hidden && document.getElementById('chat').hidden, undefined, more);

      // Sign in through the page's form: a same-origin POST /login from https://… .
      await page.fill('#user', 'alice', { timeout: TIMEOUT });
      const [login] = await Promise.all([
        page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/login',
          { timeout: TIMEOUT }),
        page.click('#login button[type=submit]', { timeout: TIMEOUT }),
      ]);
      await page.waitForLoadState('load', { timeout: TIMEOUT });
      if (page.url() !== `${site}/`) {
        const body = await page.evaluate(() => document.body?.innerText ?? '');
        assert.fail(`signing in through the page's form: POST /login answered ${login.status()} ` +
          `${JSON.stringify(body.slice(0, 200))} and left the page at ${page.url()}\n${more()}`);
      }
      await waitFor(page, '"Signed in as alice" was not shown after signing in',
        () => document.getElementById('me').textContent === 'alice', undefined, more);

      // The page's own chat socket: wss:// through nginx, accepted by wsbus.
      await waitFor(page, 'the chat status did not read "connected"',
        () => document.getElementById('status')?.textContent === 'connected', undefined, more);
      const wsUrl = `${site.replace(/^https/, 'wss')}/chat`;
      assert.ok(sockets.some((s) => s.url === wsUrl), `expected a WebSocket to ${wsUrl}, saw ${JSON.stringify(sockets)}`);
      const shown = (text) => waitFor(page, `message ${JSON.stringify(text)} was not shown`,
        (t) => [...document.querySelectorAll('#messages > li')].some((li) => li.textContent === t), text, more);
      await shown('Welcome to our chat alice');
      await page.fill('#text', 'hello through nginx', { timeout: TIMEOUT });
      await page.click('#send-button', { timeout: TIMEOUT });
      await shown('hello through nginx');
      assert.deepEqual(errors, [], 'the page had errors');
    } finally {
      await context.close();
    }
  });

  test('a raw upgrade through nginx with the site\'s own origin is accepted (101)', async () => {
    const r = await upgrade(`${site}/chat`, { ca: certificate.pem, headers: { Origin: site } });
    r.close();
    assert.equal(r.status, 101, `Origin: ${site} through nginx: ${describeOutcome(r)}\n${serverLogs()}`);
  });

  test('a cross-site upgrade through nginx is refused (403)', async () => {
    for (const path of ['/chat', '/amb']) {
      const r = await upgrade(`${site}${path}`, { ca: certificate.pem, headers: { Origin: 'https://evil.example' } });
      r.close();
      assert.equal(r.status, 403, `${path} with Origin: https://evil.example: ${describeOutcome(r)}`);
      assert.match(r.body, ORIGIN_REFUSED, `${path}: not the origin refusal: ${describeOutcome(r)}`);
      assert.equal(r.headers['access-control-allow-origin'], undefined, `${path}: a refusal carries CORS headers`);
    }
  });

  test('forwarding headers from an untrusted peer are ignored by the origin rule', async () => {
    const direct = `${main.url}/chat`; // from 127.0.0.1, not a trusted proxy
    const host = new URL(site).host;
    const spoofs = {
      'X-Forwarded-*': { 'X-Forwarded-Proto': 'https', 'X-Forwarded-Host': host },
      Forwarded: { Forwarded: `proto=https;host="${host}"` },
    };
    for (const [name, spoof] of Object.entries(spoofs)) {
      // The proxied site's origin, claimed by a client that bypasses the proxy.
      const r = await upgrade(direct, { headers: { ...spoof, Origin: site } });
      r.close();
      assert.equal(r.status, 403, `direct, spoofed ${name}, Origin: ${site}: ${describeOutcome(r)}`);
      assert.match(r.body, ORIGIN_REFUSED, `not the origin refusal: ${describeOutcome(r)}`);
      // The same request with the origin of what it really reached is fine: the spoofed
      // headers changed nothing.
      const own = await upgrade(direct, { headers: { ...spoof, Origin: main.url } });
      own.close();
      assert.equal(own.status, 101, `direct, spoofed ${name}, Origin: ${main.url}: ${describeOutcome(own)}`);
    }
  });

  test('connections_per_ip counts the client behind nginx, and ignores a forged X-Forwarded-For', async () => {
    const open = [];
    const throughNginx = async (what, { headers = {}, localAddress } = {}) => {
      const r = await upgrade(`${limitedSite}/chat`, {
        ca: certificate.pem, localAddress, headers: { Origin: limitedSite, ...headers },
      });
      open.push(r);
      return [r, `${what}: ${describeOutcome(r)}`];
    };
    const assertLimited = (r, what) => {
      assert.equal(r.status, 429, what);
      assert.match(r.headers['retry-after'] ?? '', /^\d+$/, `no Retry-After (seconds): ${what}`);
    };
    try {
      for (const n of [1, 2]) {
        const [r, what] = await throughNginx(`connection ${n} of 2 from 127.0.0.1 through nginx`);
        assert.equal(r.status, 101, `${what}\n${serverLogs()}`);
      }
      const [third, thirdWhat] = await throughNginx('the third from 127.0.0.1 through nginx');
      assertLimited(third, thirdWhat);
      // nginx appends the address it saw to the client's claim: "10.9.9.9, 127.0.0.1".
      const [forged, forgedWhat] = await throughNginx('a third from 127.0.0.1 through nginx claiming X-Forwarded-For: 10.9.9.9',
        { headers: { 'X-Forwarded-For': '10.9.9.9' } });
      assertLimited(forged, forgedWhat);
      // Straight to wsbus from 127.0.0.1 (not a trusted proxy): the claim is ignored.
      const direct = await upgrade(`${limited.url}/chat`, {
        headers: { Origin: limited.url, 'X-Forwarded-For': '10.9.9.9' },
      });
      open.push(direct);
      assertLimited(direct, `direct from 127.0.0.1 claiming X-Forwarded-For: 10.9.9.9: ${describeOutcome(direct)}`);
      // Another client through the same nginx is not limited by 127.0.0.1's connections:
      // the count is per client address, not per proxy.
      const [other, otherWhat] = await throughNginx(`from ${OTHER_CLIENT_ADDRESS} through nginx`,
        { localAddress: OTHER_CLIENT_ADDRESS });
      assert.equal(other.status, 101, otherWhat);
    } finally {
      for (const r of open) r.close();
    }
  });
});
