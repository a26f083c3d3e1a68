// wsbus's bus features that a Bayeux server need not have, with real, unmodified npm clients
// (CometD with its own AckExtension; faye) against `wsbus serve` (run by run-wsbus.sh;
// `BUS_URL=http://127.0.0.1:8080/amb node --test wsbus.test.mjs` by hand):
//
//   1. the `ack` extension: a small TCP proxy between a CometD client and the server kills the
//      connection carrying the first /meta/connect reply that contains a data message (the
//      client never sees it); the client retries its connect, the server sends the
//      unacknowledged batch again, the application gets the message exactly once. Over
//      long-polling, and over WebSocket (the killed WebSocket is replaced by a new one);
//   2. history and replay: a client is cut off without /meta/disconnect, messages are published
//      while it is away, it comes back as a new session and subscribes with
//      `ext: {replay: <last offset it saw>}` (a client extension, see README.md) and receives
//      exactly the missed messages, in order, then live ones;
//   3. presence: client A watches `/presence/chat/room1`, client B subscribes to `/chat/room1`
//      (A sees B join), unsubscribes (A sees B leave), subscribes again and disconnects (A sees
//      B leave).
//
// Environment: BUS_URL (default http://127.0.0.1:8080/amb), BUS_EXPECT_NO_WEBSOCKET=1 (skip
// the WebSocket case), BUS_TRACE=1 (print every message each client sends and receives).

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { adapt } from 'cometd-nodejs-client';
import { bypassProxyForLoopback, until, withTimeout } from './support.mjs';
import { AckExtension, CometD } from 'cometd';

const require = createRequire(import.meta.url);
const faye = require('faye');

const BUS_URL = (process.env.BUS_URL || 'http://127.0.0.1:8080/amb').replace(/\/+$/, '');
const NO_WEBSOCKET = process.env.BUS_EXPECT_NO_WEBSOCKET === '1';
const TRACE = process.env.BUS_TRACE === '1';

const TEST_TIMEOUT = 10_000;
const STEP_TIMEOUT = 5_000;
const GRACE = 500; // extra wait to catch duplicates

const busUrl = new URL(BUS_URL);
bypassProxyForLoopback(busUrl);

adapt();

// ------------------------------------------------------------------ helpers

/**
 * A TCP proxy in front of the server. `killWhen(text)` sees every chunk the server sends
 * (latin1); the first chunk it accepts is not forwarded: both sides of that connection are
 * destroyed, as when a network path dies mid-response. `cut()` destroys every connection and
 * refuses new ones (a client whose network went away). The client's `Sec-WebSocket-Extensions`
 * header is removed so that WebSocket frames stay uncompressed and readable here.
 */
class Proxy {
  constructor({ killWhen } = {}) {
    this.killWhen = killWhen;
    this.kills = 0;
    this.connections = 0;
    this.sockets = new Set();
    this.isCut = false;
  }

  async listen() {
    this.server = net.createServer((client) => this.#accept(client));
    await new Promise((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${this.server.address().port}${busUrl.pathname}`;
    return this;
  }

  #track(socket) {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => {});
  }

  #accept(client) {
    this.#track(client);
    if (this.isCut) {
      client.destroy();
      return;
    }
    this.connections += 1;
    const upstream = net.connect(Number(busUrl.port || 80), busUrl.hostname);
    this.#track(upstream);
    const kill = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());

    let head = Buffer.alloc(0);
    let headDone = false;
    client.on('data', (chunk) => {
      if (!headDone) {
        // The first request head of the connection (the upgrade, for a WebSocket).
        head = Buffer.concat([head, chunk]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) return;
        headDone = true;
        const text = head.subarray(0, end).toString('latin1')
          .split('\r\n').filter((line) => !/^sec-websocket-extensions:/i.test(line)).join('\r\n');
        chunk = Buffer.concat([Buffer.from(text, 'latin1'), head.subarray(end)]);
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk) => {
      if (this.killWhen && this.kills === 0 && this.killWhen(chunk.toString('latin1'))) {
        this.kills += 1;
        kill();
        return;
      }
      client.write(chunk);
    });
  }

  cut() {
    this.isCut = true;
    for (const s of this.sockets) s.destroy();
  }

  async close() {
    this.cut();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

/**
 * A CometD client recording deliveries per channel and every message it sends/receives.
 * mode: 'websocket' | 'long-polling'.
 */
class Client {
  constructor(name, { url = BUS_URL, mode = 'long-polling', ack = false, extensions = {} } = {}) {
    this.name = name;
    this.received = {};
    this.sent = [];
    this.incoming = [];
    const c = (this.cometd = new CometD(name));
    if (mode === 'websocket') {
      c.unregisterTransport('long-polling');
      c.unregisterTransport('callback-polling');
    } else {
      c.unregisterTransport('websocket');
    }
    // A quick retry after a failed connect (CometD's default backoff starts at 1 s).
    c.configure({ url, logLevel: 'warn', maxNetworkDelay: 3000, backoffIncrement: 100 });
    const self = this;
    c.registerExtension('probe', {
      outgoing(message) {
        if (TRACE) console.error(`[${name}] -> ${JSON.stringify(message)}`);
        self.sent.push(structuredClone(message));
        return message;
      },
      incoming(message) {
        if (TRACE) console.error(`[${name}] <- ${JSON.stringify(message)}`);
        self.incoming.push(message);
        return message;
      },
    });
    // After the probe: CometD runs outgoing extensions last-registered first, so the probe sees
    // messages as they go on the wire and as they come off it.
    if (ack) c.registerExtension('ack', new AckExtension());
    for (const [name, ext] of Object.entries(extensions)) c.registerExtension(name, ext);
  }

  async handshake() {
    return withTimeout(new Promise((resolve) => {
      this.cometd.handshake((reply) => { if (reply.successful) resolve(reply); });
    }), STEP_TIMEOUT, `${this.name} handshake`);
  }

  /** Subscribes; resolves with the subscribe reply (asserted successful). */
  async subscribe(channel, onMessage) {
    const reply = await withTimeout(new Promise((resolve) => {
      this.cometd.subscribe(channel, (m) => {
        (this.received[channel] ??= []).push(m.data);
        onMessage?.(m);
      }, resolve);
    }), STEP_TIMEOUT, `${this.name} subscribe ${channel}`);
    assert.equal(reply.successful, true, `${this.name} subscribe ${channel}: ${reply.error ?? JSON.stringify(reply.failure)}`);
    return reply;
  }

  async publish(channel, data) {
    const reply = await withTimeout(new Promise((resolve) => this.cometd.publish(channel, data, resolve)),
      STEP_TIMEOUT, `${this.name} publish on ${channel}`);
    assert.equal(reply.successful, true, `${this.name} publish on ${channel}: ${reply.error ?? JSON.stringify(reply.failure)}`);
  }

  async disconnect() {
    if (this.cometd.isDisconnected()) return;
    await withTimeout(new Promise((resolve) => this.cometd.disconnect(resolve)), STEP_TIMEOUT,
      `${this.name} disconnect`).catch(() => {});
  }

  /** Stops the client whatever state it is in (no reconnects, no timers). */
  async close() {
    await withTimeout(this.disconnect(), 1500, 'disconnect').catch(() => {});
    try { this.cometd.getTransport()?.abort(); } catch { /* already gone */ }
  }
}

const live = [];
const proxies = [];
function client(name, opts) {
  const c = new Client(name, opts);
  live.push(c);
  return c;
}
async function proxy(opts) {
  const p = await new Proxy(opts).listen();
  proxies.push(p);
  return p;
}

before(async () => {
  try {
    await fetch(BUS_URL, { signal: AbortSignal.timeout(3000) });
  } catch (e) {
    throw new Error(`no server answering at BUS_URL=${BUS_URL} (${e.cause?.message ?? e.message})`);
  }
});

afterEach(async () => {
  await Promise.all(live.splice(0).map((c) => c.close()));
  await Promise.all(proxies.splice(0).map((p) => p.close()));
});

after(() => {
  setTimeout(() => {
    console.error(`# still active 3 s after the tests (${process.getActiveResourcesInfo().join(', ')}): exiting`);
    process.exit();
  }, 3000).unref();
});

// ------------------------------------------------------------------ 1. ack

describe('ack extension: a /meta/connect reply lost on the wire is sent again', () => {
  for (const mode of ['long-polling', 'websocket']) {
    const skip = mode === 'websocket' && NO_WEBSOCKET && 'the server refuses WebSocket';
    test(`cometd ${mode}: the connection carrying the delivery is killed; the message arrives exactly once`,
      { timeout: TEST_TIMEOUT, skip }, async (t) => {
        const channel = `/ack/${mode}`;
        const mark = `ack-probe-${mode}-${Date.now()}`;
        const message = { mark, n: 1 };
        // The first server → client chunk that carries a /meta/connect reply and our message.
        const p = await proxy({ killWhen: (text) => text.includes(mark) && text.includes('"/meta/connect"') });
        const a = client(`A(${mode}, ack)`, { url: p.url, mode, ack: true });
        const b = client('B(publisher)');

        const hs = await a.handshake();
        assert.equal(hs.ext?.ack, true, `the server must accept the ack extension: ${JSON.stringify(hs)}`);
        await a.subscribe(channel);
        await b.handshake();
        await b.subscribe(channel);
        const connectionsBefore = p.connections;

        await b.publish(channel, message);
        await until(() => (a.received[channel] ?? []).length >= 1, STEP_TIMEOUT, 'A to receive the message after the kill');
        await sleep(GRACE);

        assert.equal(p.kills, 1, 'the proxy killed the connection carrying the first delivery');
        assert.deepEqual(a.received[channel], [message], 'A receives the message exactly once');
        if (mode === 'websocket') {
          // The killed WebSocket was replaced (over long-polling the retry may use the other
          // kept-alive HTTP connection).
          assert.ok(p.connections > connectionsBefore, `no new WebSocket after the kill (${p.connections})`);
        }
        // CometD acknowledged the batches it got: every /meta/connect after the handshake carries
        // ext.ack with a batch number, and the reply that brought the message back says which.
        const connects = a.sent.filter((m) => m.channel === '/meta/connect');
        assert.ok(connects.length >= 3, `A sent ${connects.length} /meta/connect`);
        assert.ok(connects.every((m) => typeof m.ext?.ack === 'number'), JSON.stringify(connects.map((m) => m.ext)));
        const carrier = a.incoming.findIndex((m) => m.data?.mark === mark);
        const reply = a.incoming.slice(carrier).find((m) => m.channel === '/meta/connect');
        assert.equal(typeof reply?.ext?.ack, 'number', `the connect reply carrying the message: ${JSON.stringify(reply)}`);
        // The lost batch was never acknowledged: the connect that fetched the message again
        // acknowledged an older batch than the one before the reply's (the lost one in between).
        const acks = connects.map((m) => m.ext.ack);
        const fetch = connects.find((m) => m.id === reply.id);
        assert.ok(fetch && fetch.ext.ack <= reply.ext.ack - 2,
          `connect ${JSON.stringify(fetch)} → batch ${reply.ext.ack}: no lost batch in between (acks ${acks})`);
        t.diagnostic(`${mode}: killed 1 connection; delivered in batch ${reply.ext.ack}; acks sent ${connects.map((m) => m.ext.ack).join(',')}`);
      });
  }
});

// ------------------------------------------------------------------ 2. replay

/**
 * The client side of wsbus's replay (see README.md, "Replay after a reconnect"): remembers the
 * highest `ext.offset` delivered, and asks for what came after it in every /meta/subscribe. A
 * real application would keep `lastOffset` in storage that survives a restart.
 */
class ReplayExtension {
  constructor(lastOffset = null) {
    this.lastOffset = lastOffset;
  }

  incoming(message) {
    const offset = message.ext?.offset;
    if (message.data !== undefined && Number.isInteger(offset) && (this.lastOffset === null || offset > this.lastOffset)) {
      this.lastOffset = offset;
    }
    return message;
  }

  outgoing(message) {
    if (message.channel === '/meta/subscribe' && this.lastOffset !== null) {
      message.ext = { ...message.ext, replay: this.lastOffset };
    }
    return message;
  }
}

describe('replay: a client that comes back as a new session gets what it missed', () => {
  test('cometd long-polling: cut off without /meta/disconnect, three messages missed, replayed in order',
    { timeout: TEST_TIMEOUT }, async (t) => {
      const channel = `/replay/room${Date.now()}`;
      const msg = (n) => ({ text: `message ${n}`, n });
      const p = await proxy();
      const replay1 = new ReplayExtension();
      const a1 = client('A(first life)', { url: p.url, extensions: { replay: replay1 } });
      const b = client('B(publisher)');
      await a1.handshake();
      await a1.subscribe(channel);
      await b.handshake();
      await b.subscribe(channel);

      await b.publish(channel, msg(1));
      await until(() => (a1.received[channel] ?? []).length === 1, STEP_TIMEOUT, 'A to receive message 1');
      const saved = replay1.lastOffset;
      assert.ok(Number.isInteger(saved), 'deliveries carry ext.offset');

      // A's network goes away: no /meta/disconnect reaches the server.
      p.cut();
      for (const n of [2, 3, 4]) await b.publish(channel, msg(n));

      // A comes back (a new process: a new CometD instance with the saved offset).
      const a2 = client('A(second life)', { extensions: { replay: new ReplayExtension(saved) } });
      await a2.handshake();
      assert.notEqual(a2.cometd.getClientId(), a1.cometd.getClientId(), 'a new session');
      const reply = await a2.subscribe(channel);
      assert.deepEqual(reply.ext?.replay, { after: saved, count: 3, complete: true }, JSON.stringify(reply));
      await until(() => (a2.received[channel] ?? []).length >= 3, STEP_TIMEOUT, 'the replayed messages');
      await b.publish(channel, msg(5));
      await until(() => (a2.received[channel] ?? []).length >= 4, STEP_TIMEOUT, 'the live message after the replay');
      await sleep(GRACE);
      assert.deepEqual(a2.received[channel], [msg(2), msg(3), msg(4), msg(5)],
        'exactly the missed messages, in order, then the live one');
      t.diagnostic(`replayed after offset ${saved}: ${JSON.stringify(reply.ext.replay)}`);
    });
});

// ------------------------------------------------------------------ 3. presence

describe('presence: another client sees joins and leaves', () => {
  test('cometd A watches /presence/chat/room1; faye B joins, leaves, joins, disconnects',
    { timeout: TEST_TIMEOUT }, async (t) => {
      const room = '/chat/room1';
      const watcher = client('A(watcher)');
      const early = client('C(already present)');
      await early.handshake();
      await early.subscribe(room);
      await watcher.handshake();
      const reply = await watcher.subscribe(`/presence${room}`);
      const members = reply.ext?.presence?.members?.map((m) => m.clientId) ?? [];
      assert.ok(members.includes(early.cometd.getClientId()), `the subscribe reply lists the members: ${JSON.stringify(reply.ext)}`);

      // B: faye, on its preferred transport (WebSocket when the server offers it).
      const b = new faye.Client(BUS_URL, { timeout: 30, retry: 1 });
      let bId = null;
      b.addExtension({
        incoming(message, callback) {
          if (message.channel === '/meta/handshake' && message.successful) bId = message.clientId;
          callback(message);
        },
      });
      try {
        const events = () => (watcher.received[`/presence${room}`] ?? []).filter((e) => e.clientId === bId);
        const waitFor = (n, what) => until(() => events().length >= n, STEP_TIMEOUT, what);
        const sub = b.subscribe(room, () => {});
        await withTimeout(new Promise((resolve, reject) => sub.then(resolve, reject)), STEP_TIMEOUT, 'B subscribe');
        await waitFor(1, 'B to be seen joining');
        sub.cancel();
        await waitFor(2, 'B to be seen leaving after its unsubscribe');
        const again = b.subscribe(room, () => {});
        await withTimeout(new Promise((resolve, reject) => again.then(resolve, reject)), STEP_TIMEOUT, 'B subscribe again');
        await waitFor(3, 'B to be seen joining again');
        const bye = b.disconnect();
        await withTimeout(new Promise((resolve, reject) => bye.then(resolve, reject)), STEP_TIMEOUT, 'B disconnect');
        await waitFor(4, 'B to be seen leaving when it disconnects');
        await sleep(GRACE);
        assert.deepEqual(events(), ['join', 'leave', 'join', 'leave'].map((action) => ({
          action, channel: room, clientId: bId, user: null,
        })));
        t.diagnostic(`B (faye, ${b._dispatcher.connectionType}) ${bId}: join, leave, join, leave`);
      } finally {
        b._advice.reconnect = 'none';
        b._dispatcher.close();
      }
    });
});
