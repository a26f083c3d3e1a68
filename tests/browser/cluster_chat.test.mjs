// The chat demo across two `wsbus serve` nodes of one cluster (SPEC §7), in
// headless Chromium: alice's browser on node A, bob's on node B, one
// `redis-server` of the test's own on a free port (never the machine's).
//
//   node --test tests/browser/cluster_chat.test.mjs   (after npm ci here)
// WSBUS_BIN=path: the binary (default target/release/wsbus of this repo).
// REDIS_SERVER=path: the Redis binary (default /usr/bin/redis-server).
// CHROMIUM=path: the browser (default /usr/bin/chromium).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const TIMEOUT = 15_000;
const REPO = fileURLToPath(new URL('../../', import.meta.url));
const ADMIN_TOKEN = 'cluster-chat-admin-token';

const processes = [];
let redisDir;
let browser;

function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

// Spawns a process whose output is kept for failure messages.
function start(bin, args, env = {}) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  child.log = '';
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      child.log = (child.log + chunk).slice(-50_000);
    });
  }
  processes.push(child);
  return child;
}

async function until(what, check, child) {
  const deadline = Date.now() + TIMEOUT;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`${what} not within ${TIMEOUT} ms (${last?.message ?? 'condition false'})${child ? `; its output:\n${child.log}` : ''}`);
}

function ping(port) {
  return new Promise((resolve) => {
    const c = connect(port, '127.0.0.1', () => c.write('PING\r\n'));
    c.on('data', (d) => {
      c.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    c.on('error', () => resolve(false));
  });
}

async function startRedis() {
  const port = await freePort();
  redisDir = mkdtempSync(join(tmpdir(), 'wsbus-cluster-chat-redis-'));
  const bin = process.env.REDIS_SERVER || '/usr/bin/redis-server';
  const redis = start(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', redisDir]);
  await until('redis-server answering PING', () => ping(port), redis);
  return `redis://127.0.0.1:${port}`;
}

async function startNode(redisUrl, nodeId) {
  const bin = process.env.WSBUS_BIN || `${REPO}target/release/wsbus`;
  const listen = `127.0.0.1:${await freePort()}`;
  const node = start(bin, ['serve', '--listen', listen], {
    WSBUS_CLUSTER__REDIS_URL: redisUrl,
    WSBUS_CLUSTER__NODE_ID: String(nodeId),
    WSBUS_ADMIN__TOKEN: ADMIN_TOKEN,
  });
  node.url = `http://${listen}`;
  await until(`node ${nodeId}'s Redis link up`, async () => {
    const ready = await (await fetch(`${node.url}/readyz`, { signal: AbortSignal.timeout(2000) })).json();
    return ready.cluster?.redis === 'up';
  }, node);
  return node;
}

async function chatSize(node) {
  const response = await fetch(`${node.url}/admin/api/groups/chat`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    signal: AbortSignal.timeout(2000),
  });
  return (await response.json()).size;
}

async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

const shown = (page, who, text) =>
  page.waitForFunction(
    (t) => [...document.querySelectorAll('#messages > li')].some((li) => li.textContent === t),
    text,
    { timeout: TIMEOUT },
  ).catch(async (e) => {
    const messages = await page.evaluate(() => [...document.querySelectorAll('#messages > li')].map((li) => li.textContent));
    throw new Error(`${who} was not shown ${JSON.stringify(text)} (${e.message.split('\n')[0]}); shown: ${JSON.stringify(messages)}`);
  });

// A browser of its own (cookie jar) signed in as `name` on `node`'s page.
async function signIn(node, name) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const response = await page.goto(node.url + '/', { timeout: TIMEOUT });
  assert.equal(response.status(), 200);
  await page.fill('#user', name, { timeout: TIMEOUT });
  await Promise.all([
    page.waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame(), timeout: TIMEOUT }),
    page.click('#login button[type=submit]', { timeout: TIMEOUT }),
  ]);
  await page.waitForFunction(() => document.getElementById('status')?.textContent === 'connected', null, { timeout: TIMEOUT });
  await shown(page, name, `Welcome to our chat ${name}`);
  return { context, page };
}

async function send(page, text) {
  await page.fill('#text', text, { timeout: TIMEOUT });
  await page.click('#send-button', { timeout: TIMEOUT });
}

describe('the chat demo across two nodes of a cluster, in headless Chromium', { timeout: 120_000 }, () => {
  let nodeA;
  let nodeB;

  before(async () => {
    const redisUrl = await startRedis();
    nodeA = await startNode(redisUrl, 1);
    nodeB = await startNode(redisUrl, 2);
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      timeout: 30_000,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
    });
  });

  after(async () => {
    await browser?.close();
    for (const child of processes.reverse()) await stop(child);
    if (redisDir) rmSync(redisDir, { recursive: true, force: true });
  });

  test('alice on node A and bob on node B chat, and each node counts both', async () => {
    const alice = await signIn(nodeA, 'alice');
    const bob = await signIn(nodeB, 'bob');
    try {
      // Each node counts the other's member once its subscription is
      // confirmed: from then on, what one sends reaches the other.
      for (const node of [nodeA, nodeB]) {
        await until(`${node.url} counting 2 chat members`, async () => (await chatSize(node)) === 2, node);
      }
      await send(alice.page, 'hello from alice on A');
      await shown(bob.page, 'bob', 'hello from alice on A');
      await shown(alice.page, 'alice', 'hello from alice on A');
      await send(bob.page, 'hi alice, bob on B');
      await shown(alice.page, 'alice', 'hi alice, bob on B');
      await shown(bob.page, 'bob', 'hi alice, bob on B');
      const count = await alice.page.evaluate(() =>
        [...document.querySelectorAll('#messages > li')].filter((li) => li.textContent === 'hello from alice on A').length);
      assert.equal(count, 1, 'a message crosses the cluster once');
    } finally {
      await alice.context.close();
      await bob.context.close();
    }
    for (const node of [nodeA, nodeB]) {
      await until(`${node.url} counting 0 chat members after both left`, async () => (await chatSize(node)) === 0, node);
    }
  });
});
