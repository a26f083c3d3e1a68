// Browser test of the admin page of `wsbus serve` (/admin), in headless
// Chromium through playwright-core, with Node's test runner:
// `tests/browser/run.sh`, or `node --test tests/browser/admin.test.mjs` once
// `npm ci` has run here.
//
// The server under test:
//   WSBUS_URL=http://127.0.0.1:8080 with WSBUS_ADMIN_TOKEN=<its [admin] token>
//                                     test a server that is already running, or else
//   WSBUS_BIN=path/to/wsbus           spawn `wsbus serve --listen 127.0.0.1:$WSBUS_ADMIN_TEST_PORT`
//                                     with an admin token of its own (default:
//                                     target/release/wsbus of this repo, port 18081)
//                                     and stop it at the end.
// CHROMIUM=path: the browser (default /usr/bin/chromium, Debian's package).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const TIMEOUT = 10_000;
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
  "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

let baseUrl;
let token;
let server; // the spawned wsbus, if any
let serverLog = '';
let browser;

// ---------------------------------------------------------------- the server

async function healthy(url) {
  const response = await fetch(new URL('/healthz', url), { signal: AbortSignal.timeout(2000) });
  return response.ok;
}

async function startServer() {
  if (process.env.WSBUS_URL) {
    baseUrl = process.env.WSBUS_URL.replace(/\/+$/, '');
    token = process.env.WSBUS_ADMIN_TOKEN;
    if (!token) throw new Error('WSBUS_URL is set: set WSBUS_ADMIN_TOKEN to its [admin] token too');
    return;
  }
  const bin = process.env.WSBUS_BIN || `${REPO}target/release/wsbus`;
  if (!existsSync(bin)) {
    throw new Error(
      `no wsbus binary at ${bin}: build it (cargo build --release), ` +
        'or set WSBUS_BIN to a binary, or WSBUS_URL and WSBUS_ADMIN_TOKEN to a running server',
    );
  }
  const port = process.env.WSBUS_ADMIN_TEST_PORT || '18081';
  const listen = `127.0.0.1:${port}`;
  baseUrl = `http://${listen}`;
  token = randomBytes(24).toString('base64url');
  server = spawn(bin, ['serve', '--listen', listen], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WSBUS_ADMIN__TOKEN: token, WSBUS_LOG: 'info' },
  });
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
      if (await healthy(baseUrl)) return;
    } catch (e) {
      lastError = e;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(
    `${bin} serve --listen ${listen} did not answer GET /healthz within ${TIMEOUT} ms ` +
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

async function describePage(page) {
  try {
    const state = await page.evaluate(() => ({
      url: location.href,
      status: document.getElementById('status')?.textContent,
      error: document.getElementById('error')?.hidden ? null : document.getElementById('error')?.textContent,
      connections: [...document.querySelectorAll('#connections tbody tr')].map((tr) => tr.textContent),
      cspViolations: window.__cspViolations,
    }));
    return `${page.who}'s page: ${JSON.stringify(state, null, 2)}`;
  } catch (e) {
    return `${page.who}'s page: (could not read it: ${e.message})`;
  }
}

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: TIMEOUT });
  } catch (e) {
    throw new Error(`${page.who}: ${what} within ${TIMEOUT} ms (${e.message.split('\n')[0]})\n${await describePage(page)}` +
      (server ? `\nserver log:\n${serverLog.slice(-4000)}` : ''));
  }
}

async function newPage(who) {
  const context = await browser.newContext();
  await context.addInitScript(() => {
    window.__cspViolations = [];
    document.addEventListener('securitypolicyviolation', (e) =>
      window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
  const page = await context.newPage();
  page.pageErrors = [];
  page.on('pageerror', (e) => page.pageErrors.push(e.message));
  page.on('console', (m) => {
    // Chromium reports every 4xx fetch as a console error; the API's refusals
    // (an invalid directive here) are expected and shown by the page itself.
    if (m.type() === 'error' && !/favicon/.test(m.location()?.url ?? '') &&
      !/Failed to load resource: the server responded with a status of 4\d\d/.test(m.text())) {
      page.pageErrors.push(`console: ${m.text()}`);
    }
  });
  page.who = who;
  return page;
}

async function assertClean(page) {
  const violations = await page.evaluate(() => window.__cspViolations);
  assert.deepEqual(violations, [], `${page.who}'s page violated its own Content-Security-Policy`);
  assert.deepEqual(page.pageErrors, [], `${page.who}'s page had errors`);
}

// A chat user signed in through the demo's login form, its chat connected.
async function chatUser(name) {
  const page = await newPage(`chat user ${name}`);
  await page.goto(baseUrl + '/', { timeout: TIMEOUT });
  await waitFor(page, 'the login form was not shown', () => !document.getElementById('login').hidden);
  await page.fill('#user', name, { timeout: TIMEOUT });
  await Promise.all([
    page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame(), timeout: TIMEOUT }),
    page.click('#login button[type=submit]', { timeout: TIMEOUT }),
  ]);
  await page.waitForLoadState('load', { timeout: TIMEOUT });
  await waitFor(page, 'the chat did not connect', () => document.getElementById('status').textContent === 'connected');
  return page;
}

// The admin page, signed in with the token.
async function adminPage() {
  const page = await newPage('admin');
  const response = await page.goto(baseUrl + '/admin', { timeout: TIMEOUT });
  assert.equal(response.status(), 200, `GET /admin answered ${response.status()}`);
  assert.equal(response.headers()['content-security-policy'], CSP, 'GET /admin has not the demo\'s Content-Security-Policy');
  await waitFor(page, 'the token form was not shown', () => !document.getElementById('signin').hidden);
  await page.fill('#token', token, { timeout: TIMEOUT });
  await page.click('#token-form button[type=submit]', { timeout: TIMEOUT });
  await waitFor(page, 'the panel was not shown after entering the token', () => !document.getElementById('panel').hidden);
  return page;
}

// The connection rows' cells, as text.
const rows = (page) => page.evaluate(() =>
  [...document.querySelectorAll('#connections tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent)));

// ---------------------------------------------------------------- the tests

describe('wsbus serve admin page in headless Chromium', { timeout: 120_000 }, () => {
  before(async () => {
    await startServer();
    const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
    browser = await chromium.launch({
      executablePath,
      timeout: 30_000,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    console.log(`server ${baseUrl}; browser ${executablePath} ${browser.version()}`);
  });

  after(async () => {
    await browser?.close();
    await stopServer();
  });

  test('a wrong token is refused and forgotten', async () => {
    const page = await newPage('admin with a wrong token');
    try {
      await page.goto(baseUrl + '/admin', { timeout: TIMEOUT });
      await page.fill('#token', 'not-the-token', { timeout: TIMEOUT });
      await page.click('#token-form button[type=submit]', { timeout: TIMEOUT });
      await waitFor(page, 'the token form did not come back', () => !document.getElementById('signin').hidden);
      const stored = await page.evaluate(() => sessionStorage.getItem('wsbus-admin-token'));
      assert.equal(stored, null, 'a refused token stayed in sessionStorage');
    } finally {
      await page.context().close();
    }
  });

  test('the page lists a connected Chromium chat client and disconnects it', async () => {
    // A name with markup: the admin page must show it as text.
    const name = '<b>eve</b><img src=x>';
    const chat = await chatUser(name);
    const admin = await adminPage();
    try {
      await waitFor(admin, `no connection row for ${JSON.stringify(name)} on /chat`,
        (n) => [...document.querySelectorAll('#connections tbody tr')]
          .some((tr) => tr.cells[2]?.textContent === n && tr.cells[3]?.textContent === '/chat'),
        name);
      const row = (await rows(admin)).find((cells) => cells[2] === name);
      assert.equal(row[1], '127.0.0.1', `the row's address: ${JSON.stringify(row)}`);
      assert.equal(await admin.locator('#connections b, #connections img').count(), 0,
        'the user name was rendered as markup');
      const token = await admin.evaluate(() => sessionStorage.getItem('wsbus-admin-token'));
      assert.ok(token, 'the token is kept in sessionStorage');
      assert.ok(!admin.url().includes(token), 'the token is in the address');

      const id = row[0];
      await admin.click(`#connections tbody tr[data-id="${id}"] button.disconnect`, { timeout: TIMEOUT });
      await waitFor(chat, 'the chat did not show "disconnected: 1008 closed by admin"',
        () => document.getElementById('status').textContent === 'disconnected: 1008 closed by admin');
      await waitFor(admin, `connection ${id} is still listed`,
        (i) => ![...document.querySelectorAll('#connections tbody tr')].some((tr) => tr.dataset.id === i), id);

      // The log form: a valid directive applies, an invalid one is named.
      await admin.fill('#directive', 'wsbus::admin=debug', { timeout: TIMEOUT });
      await admin.fill('#ttl', '1m', { timeout: TIMEOUT });
      await admin.click('#log-form button[type=submit]', { timeout: TIMEOUT });
      await waitFor(admin, 'the filter in force did not show the directive',
        () => document.getElementById('log-filter').textContent.includes('wsbus::admin=debug'));
      await admin.fill('#directive', 'wsbus::admin=loud', { timeout: TIMEOUT });
      await admin.click('#log-form button[type=submit]', { timeout: TIMEOUT });
      await waitFor(admin, 'the invalid directive was not named',
        () => document.getElementById('error').textContent.includes('wsbus::admin=loud'));
      await admin.click('#log-reset', { timeout: TIMEOUT });
      await waitFor(admin, 'the filter did not go back to its base',
        () => !document.getElementById('log-filter').textContent.includes('wsbus::admin=debug'));

      await assertClean(chat);
      await assertClean(admin);
    } finally {
      await chat.context().close();
      await admin.context().close();
    }
  });
  test('the page starts a capture of a chat user, lists it and downloads its JSON lines', async () => {
    const name = 'capture-user';
    const admin = await adminPage();
    const chat = await chatUser(name);
    try {
      await admin.selectOption('#capture-kind', 'user', { timeout: TIMEOUT });
      await admin.fill('#capture-value', name, { timeout: TIMEOUT });
      await admin.fill('#capture-duration', '2m', { timeout: TIMEOUT });
      await admin.click('#capture-form button[type=submit]', { timeout: TIMEOUT });
      await waitFor(admin, 'the capture was not listed running',
        (n) => [...document.querySelectorAll('#captures tbody tr')]
          .some((tr) => tr.cells[2]?.textContent === n && tr.cells[5]?.textContent === 'yes'), name);
      await chat.fill('#text', 'captured from the browser', { timeout: TIMEOUT });
      await chat.click('#send-button', { timeout: TIMEOUT });
      const id = await admin.evaluate((n) => [...document.querySelectorAll('#captures tbody tr')]
        .find((tr) => tr.cells[2]?.textContent === n).dataset.id, name);
      // Counted by the writer off the socket's path: wait for both records.
      await waitFor(admin, 'the capture did not count the message both ways',
        (i) => { const tr = document.querySelector(`#captures tbody tr[data-id="${i}"]`);
          return tr && Number(tr.cells[7].textContent) >= 2; }, id);
      const [download] = await Promise.all([
        admin.waitForEvent('download', { timeout: TIMEOUT }),
        admin.click(`#captures tbody tr[data-id="${id}"] button.capture-download`, { timeout: TIMEOUT }),
      ]);
      const text = (await import('node:fs')).readFileSync(await download.path(), 'utf8');
      const lines = text.trim().split('\n').map((l) => JSON.parse(l));
      const sent = lines.filter((l) => l.payload === 'captured from the browser');
      assert.deepEqual(sent.map((l) => l.direction).sort(), ['in', 'out'], text);
      await admin.click(`#captures tbody tr[data-id="${id}"] button.capture-stop`, { timeout: TIMEOUT });
      await waitFor(admin, 'the capture did not stop',
        (i) => document.querySelector(`#captures tbody tr[data-id="${i}"]`)?.cells[5].textContent === 'no', id);
      await assertClean(chat);
      await assertClean(admin);
    } finally {
      await chat.context().close();
      await admin.context().close();
    }
  });
});

process.on('exit', () => {
  if (server && server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
});
