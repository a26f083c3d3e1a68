// Interop tests of a Bayeux 1.0 server (wsbus's bus at /amb, SPEC §4) with real,
// unmodified npm Bayeux clients, run by Node's test runner:
//
//   BUS_URL=http://127.0.0.1:8080/amb node --test clients.test.mjs     (or ./run.sh)
//
// Clients: `faye` (its Node client) and `cometd` (the CometD JavaScript client, run in Node
// through `cometd-nodejs-client`'s XMLHttpRequest / WebSocket shims). For each library and
// transport mode — forced `websocket`, forced `long-polling`, and left to negotiate — clients
// A and B handshake, both subscribe, A publishes {text: "hello", n: 1}, B must get it exactly
// once, B unsubscribes, A publishes {text: "hello", n: 2}, B must not get it, all disconnect
// cleanly. (A third subscriber C, which never unsubscribes, shows when n: 2 has been fanned
// out.) Per seed 001 a client publishes only on channels it is subscribed to and the server
// relays to the other subscribers; whether A gets its own publish back is server policy: it is
// reported, not asserted. The transport each client ended up on is reported (t.diagnostic) and
// asserted. Also: faye and cometd clients on one bus, and a raw WebSocket upgrade at BUS_URL.
//
// Environment:
//   BUS_URL                    the Bayeux endpoint (default http://127.0.0.1:8080/amb)
//   BUS_EXPECT_NO_WEBSOCKET=1  the server refuses WebSocket (e.g. wsbus with
//                              websocket.enabled = false, or `faye_server.mjs --no-websocket`):
//                              forced-websocket tests are skipped, a raw upgrade must be
//                              refused, and negotiating clients must fall back to long-polling
//                              (test "websocket refused → falls back to long-polling")
//   BUS_EXTENDED_CHANNEL=0     skip the channels with CometD's extended characters
//                              (`/record/aW5jaWRlbnQ+x.y-z`, `/record/a.b_c~d!e$f(g)h+i@j{k}l#m`);
//                              needed against plain Faye, whose channel grammar (Bayeux 1.0
//                              §2.2.1) has no `+ . # { }` (faye_server.mjs --extended-channels
//                              widens it)
//   BUS_TRACE=1                print every Bayeux message each client sends and receives
//   BUS_DEBUG=1                CometD logLevel "debug"
//
// Library quirks these tests work around (see README.md):
//   - faye's Node client always handshakes over HTTP long-polling (POST BUS_URL); only after
//     the handshake does it switch to WebSocket. `client.disable('long-polling')` makes it
//     throw "Could not find a usable connection type", so "faye forced to websocket" leaves
//     long-polling enabled for the handshake and asserts that every /meta/connect went over
//     the WebSocket.
//   - faye's client cannot use channel names outside the Bayeux 1.0 grammar (its
//     Channel.expand returns null and delivery throws), so the extended-character channel is
//     exercised with CometD only.

import { after, afterEach, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { setTimeout as sleep } from 'node:timers/promises';
import { isDeepStrictEqual } from 'node:util';
import { adapt } from 'cometd-nodejs-client';
import { bypassProxyForLoopback, until, withTimeout } from './support.mjs';
import { CometD } from 'cometd';
import { WebSocket as WS } from 'ws';

const require = createRequire(import.meta.url);
const faye = require('faye');

// ------------------------------------------------------------------ configuration

const BUS_URL = (process.env.BUS_URL || 'http://127.0.0.1:8080/amb').replace(/\/+$/, '');
const NO_WEBSOCKET = process.env.BUS_EXPECT_NO_WEBSOCKET === '1';
const EXTENDED_CHANNEL = process.env.BUS_EXTENDED_CHANNEL !== '0';
const TRACE = process.env.BUS_TRACE === '1';
const DEBUG = process.env.BUS_DEBUG === '1';

const TEST_TIMEOUT = 10_000; // per test
const STEP_TIMEOUT = 5_000; // one handshake / ack / delivery
const GRACE = 500; // extra wait to catch duplicate or unwanted deliveries

const CHAT = '/chat/room1';
// CometD's JS client validates channel names (Client.js #isValidChannel): letters, digits and
// ` ! # $ ( ) * + - . / @ _ { ~ }` only, so base64 padding `=` is refused client-side
// ("Illegal argument: invalid channel"). Between them, these two use every other character
// it accepts except the space and the wildcard `*`.
const RECORD = '/record/aW5jaWRlbnQ+x.y-z';
const PUNCT = '/record/a.b_c~d!e$f(g)h+i@j{k}l#m';
const HELLO_1 = { text: 'hello', n: 1 };
const HELLO_2 = { text: 'hello', n: 2 };

const busUrl = new URL(BUS_URL);
bypassProxyForLoopback(busUrl);

// CometD in Node: installs window.XMLHttpRequest (node:http) and window.WebSocket (`ws`).
adapt();

// ------------------------------------------------------------------ helpers

// Deep equality, not JSON text: a server may re-serialise the data with its keys in another order.
const sameData = (a, b) => isDeepStrictEqual(a, b);

/**
 * One Bayeux client of either library, behind a small common interface.
 * `received[channel]` lists the data of every message delivered on that channel.
 */
class BusClient {
  constructor(lib, mode, name) {
    this.lib = lib;
    this.mode = mode; // 'websocket' | 'long-polling' | 'negotiated'
    this.name = name;
    this.received = {};
    this.connectTypes = []; // connectionType of every /meta/connect sent
    this.metaFailures = []; // unsuccessful meta replies (e.g. a handshake over a refused WebSocket)
    this.handshakeTransport = null;
    this.closed = false;
  }

  _record(channel, data) {
    (this.received[channel] ??= []).push(data);
  }

  _trace(dir, message) {
    if (TRACE) console.error(`[${this.lib}/${this.mode}/${this.name}] ${dir} ${JSON.stringify(message)}`);
  }

  count(channel, data) {
    return (this.received[channel] ?? []).filter((d) => sameData(d, data)).length;
  }

  /** A one-line description for the test report. */
  describe() {
    const types = [...new Set(this.connectTypes)].join(',') || 'none';
    const failures = this.metaFailures.length
      ? `; unsuccessful: ${this.metaFailures.map((m) => {
        const why = m.error ?? [m.failure?.connectionType, m.failure?.websocketCode, m.failure?.reason].filter((x) => x != null).join(' ');
        return `${m.channel} (${why})`;
      }).join(' | ')}`
      : '';
    return `${this.name}: transport=${this.finalTransport ?? this.transport()} handshake-over=${this.handshakeTransport} /meta/connect connectionType=${types}${failures}`;
  }
}

class FayeBusClient extends BusClient {
  constructor(mode, name) {
    super('faye', mode, name);
    this.client = new faye.Client(BUS_URL, { timeout: 30, retry: 1 });
    // Node registers only in-process, websocket and long-polling; the others are no-ops here.
    if (mode === 'websocket') {
      for (const t of ['in-process', 'eventsource', 'callback-polling', 'cross-origin-long-polling']) {
        this.client.disable(t);
      }
    } else if (mode === 'long-polling') {
      this.client.disable('websocket');
    }
    this.replyWaiters = [];
    this.transportDowns = 0;
    this.client.on('transport:down', () => { this.transportDowns += 1; });
    const self = this;
    this.client.addExtension({
      outgoing(message, callback) {
        self._trace('->', message);
        if (message.channel === '/meta/connect') self.connectTypes.push(message.connectionType);
        callback(message);
      },
      incoming(message, callback) {
        self._trace('<-', message);
        if (message.channel?.startsWith('/meta/') && message.successful === false) self.metaFailures.push(message);
        if (message.channel === '/meta/handshake' && message.successful) {
          self.handshakeTransport = self.client._dispatcher.connectionType;
        }
        for (const w of self.replyWaiters.slice()) {
          if (w.match(message)) {
            self.replyWaiters.splice(self.replyWaiters.indexOf(w), 1);
            w.resolve(message);
          }
        }
        callback(message);
      },
    });
    this.subs = {};
  }

  _waitReply(match) {
    return new Promise((resolve) => this.replyWaiters.push({ match, resolve }));
  }

  /** faye exposes the transport only internally: Dispatcher#connectionType. */
  transport() {
    return this.client._dispatcher.connectionType ?? null;
  }

  async handshake() {
    // connect() handshakes first when unconnected; its callback runs once connected.
    await withTimeout(new Promise((resolve) => this.client.connect(resolve)), STEP_TIMEOUT, `${this.name} handshake`);
  }

  async subscribe(channel) {
    const sub = this.client.subscribe(channel, (data) => this._record(channel, data));
    this.subs[channel] = sub;
    await withTimeout(new Promise((resolve, reject) => sub.then(resolve, reject)), STEP_TIMEOUT,
      `${this.name} /meta/subscribe ${channel}`);
  }

  async unsubscribe(channel) {
    const reply = this._waitReply((m) => m.channel === '/meta/unsubscribe' && [].concat(m.subscription).includes(channel));
    this.subs[channel].cancel(); // faye gives no callback for the unsubscribe reply
    const m = await withTimeout(reply, STEP_TIMEOUT, `${this.name} /meta/unsubscribe ${channel}`);
    assert.equal(m.successful, true, `${this.name} unsubscribe ${channel}: ${m.error}`);
  }

  async publish(channel, data) {
    const pub = this.client.publish(channel, data);
    await withTimeout(new Promise((resolve, reject) => pub.then(resolve, reject)), STEP_TIMEOUT,
      `${this.name} publish ack on ${channel}`);
  }

  async disconnect() {
    this.finalTransport = this.transport();
    const p = this.client.disconnect(); // a Publication; undefined if not connected
    this.closed = true;
    if (!p) return;
    await withTimeout(new Promise((resolve, reject) => p.then(resolve, reject)), STEP_TIMEOUT,
      `${this.name} /meta/disconnect`);
  }

  async forceClose() {
    if (!this.closed) {
      try { await withTimeout(this.disconnect(), 1500, 'disconnect'); } catch { /* below */ }
    }
    // faye retries unanswered messages forever (every `retry` s): after a failed test, stop it
    // reconnecting and drop the pending envelopes' timers so this file can exit.
    const d = this.client._dispatcher;
    this.client._advice.reconnect = 'none';
    for (const env of d._envelopes.values()) {
      clearTimeout(env.timer);
      env.request?.then((r) => r?.abort?.(), () => {});
    }
    d._envelopes.clear();
    d.close();
    this.closed = true;
  }
}

class CometDBusClient extends BusClient {
  constructor(mode, name) {
    super('cometd', mode, name);
    const c = (this.cometd = new CometD(`${name}-${mode}`));
    if (mode === 'websocket') {
      c.unregisterTransport('long-polling');
      c.unregisterTransport('callback-polling');
    } else if (mode === 'long-polling') {
      c.unregisterTransport('websocket');
    }
    c.configure({ url: BUS_URL, logLevel: DEBUG ? 'debug' : 'warn', maxNetworkDelay: 5000 });
    const self = this;
    c.registerExtension('probe', {
      outgoing(message) {
        self._trace('->', message);
        if (message.channel === '/meta/connect') self.connectTypes.push(message.connectionType);
        return message;
      },
      incoming(message) {
        self._trace('<-', message);
        if (message.channel?.startsWith('/meta/') && message.successful === false) self.metaFailures.push(message);
        return message;
      },
    });
    this.subs = {};
  }

  /** CometD: the transport object's `type`. */
  transport() {
    return this.cometd.getTransport()?.type ?? null;
  }

  async handshake() {
    // The handshake callback also sees failed attempts (e.g. the handshake sent over a
    // WebSocket the server refused, before CometD renegotiates long-polling): wait for success.
    await withTimeout(new Promise((resolve) => {
      this.cometd.handshake((reply) => {
        if (reply.successful) {
          this.handshakeTransport = this.transport();
          resolve(reply);
        } else {
          // A local failure (no server reply) has no error, only `failure`.
          this.metaFailures.push(reply);
        }
      });
    }), STEP_TIMEOUT, `${this.name} handshake`);
  }

  async subscribe(channel) {
    const reply = await withTimeout(new Promise((resolve) => {
      this.subs[channel] = this.cometd.subscribe(channel, (m) => this._record(m.channel, m.data), resolve);
    }), STEP_TIMEOUT, `${this.name} /meta/subscribe ${channel}`);
    assert.equal(reply.successful, true, `${this.name} subscribe ${channel}: ${reply.error ?? JSON.stringify(reply.failure)}`);
  }

  async unsubscribe(channel) {
    const reply = await withTimeout(new Promise((resolve) => {
      this.cometd.unsubscribe(this.subs[channel], resolve);
    }), STEP_TIMEOUT, `${this.name} /meta/unsubscribe ${channel}`);
    assert.equal(reply.successful, true, `${this.name} unsubscribe ${channel}: ${reply.error ?? JSON.stringify(reply.failure)}`);
  }

  async publish(channel, data) {
    const reply = await withTimeout(new Promise((resolve) => {
      this.cometd.publish(channel, data, resolve);
    }), STEP_TIMEOUT, `${this.name} publish ack on ${channel}`);
    assert.equal(reply.successful, true, `${this.name} publish on ${channel}: ${reply.error ?? JSON.stringify(reply.failure)}`);
  }

  async disconnect() {
    this.finalTransport = this.transport();
    this.closed = true;
    if (this.cometd.isDisconnected()) return;
    const reply = await withTimeout(new Promise((resolve) => this.cometd.disconnect(resolve)), STEP_TIMEOUT,
      `${this.name} /meta/disconnect`);
    assert.equal(reply.successful, true, `${this.name} disconnect: ${reply.error ?? JSON.stringify(reply.failure)}`);
  }

  async forceClose() {
    if (!this.closed) {
      try { await withTimeout(this.disconnect(), 1500, 'disconnect'); } catch { /* below */ }
    }
    // Aborts pending requests / closes the WebSocket, cancels timers.
    try { this.cometd.getTransport()?.abort(); } catch { /* already gone */ }
    this.closed = true;
  }
}

const LIBS = {
  faye: (mode, name) => new FayeBusClient(mode, name),
  cometd: (mode, name) => new CometDBusClient(mode, name),
};

// Every client created by a test, closed by afterEach even when the test failed.
const live = [];
function makeClient(lib, mode, name) {
  const c = LIBS[lib](mode, name);
  live.push(c);
  return c;
}

async function closeAll() {
  const clients = live.splice(0);
  await Promise.all(clients.map((c) => c.forceClose().catch(() => {})));
}

// ------------------------------------------------------------------ the scenario

/**
 * A, B (and the control C) handshake and subscribe to every channel; for each channel A
 * publishes HELLO_1, B gets it exactly once; B unsubscribes, A publishes HELLO_2, B does not
 * get it; all disconnect. Then checks the transport each ended on.
 */
async function chatScenario(t, opts) {
  const libB = opts.libB ?? opts.libA;
  const a = makeClient(opts.libA, opts.mode, `A(${opts.libA})`);
  const b = makeClient(libB, opts.mode, `B(${libB})`);
  // C: a third subscriber that stays subscribed, so that "B did not get HELLO_2" is checked
  // after HELLO_2 has demonstrably been fanned out (A's own copy only exists if the server
  // echoes to the publisher).
  const c = makeClient(libB, opts.mode, `C(${libB})`);
  try {
    await runScenario(t, a, b, c, opts);
  } catch (e) {
    // Say where each client got to: transport, connect types, unsuccessful meta replies.
    for (const x of [a, b, c]) t.diagnostic(`at failure: ${x.describe()}; received ${JSON.stringify(x.received)}`);
    throw e;
  }
}

async function runScenario(t, a, b, c, { mode, channels, expectTransport }) {
  await Promise.all([a.handshake(), b.handshake(), c.handshake()]);
  for (const ch of channels) {
    await Promise.all([a.subscribe(ch), b.subscribe(ch), c.subscribe(ch)]);
  }

  for (const ch of channels) {
    await a.publish(ch, HELLO_1);
    await until(() => b.count(ch, HELLO_1) >= 1, STEP_TIMEOUT, `B to receive ${JSON.stringify(HELLO_1)} on ${ch}`);
    await until(() => c.count(ch, HELLO_1) >= 1, STEP_TIMEOUT, `C to receive ${JSON.stringify(HELLO_1)} on ${ch}`);
    await sleep(GRACE); // duplicates, and A's own copy if the server echoes to the publisher
    assert.deepEqual(b.received[ch], [HELLO_1], `B must receive exactly one message on ${ch}`);
    assert.deepEqual(c.received[ch], [HELLO_1], `C must receive exactly one message on ${ch}`);
    const echo = a.count(ch, HELLO_1);
    t.diagnostic(`${ch}: B received 1; A received its own publish back ${echo} time(s) (server policy, not asserted)`);
    assert.ok(echo <= 1, `A received its own publish ${echo} times on ${ch}`);
  }

  for (const ch of channels) {
    await b.unsubscribe(ch);
    await a.publish(ch, HELLO_2);
    // C's copy shows HELLO_2 has been fanned out; then give B's a little longer to show up.
    await until(() => c.count(ch, HELLO_2) >= 1, STEP_TIMEOUT, `C to receive ${JSON.stringify(HELLO_2)} on ${ch}`);
    await sleep(GRACE);
    assert.equal(b.count(ch, HELLO_2), 0, `B received a message on ${ch} after unsubscribing`);
    assert.deepEqual(b.received[ch], [HELLO_1], `B's messages on ${ch} after unsubscribing`);
  }

  await Promise.all([a.disconnect(), b.disconnect(), c.disconnect()]);
  for (const x of [a, b, c]) t.diagnostic(x.describe());

  if (expectTransport) {
    for (const x of [a, b, c]) {
      if (NO_WEBSOCKET && x.lib === 'cometd' && mode === 'negotiated') {
        // CometD prefers websocket: its first handshake goes over the refused WebSocket and
        // fails locally before it renegotiates long-polling.
        const tried = x.metaFailures.some((m) => m.channel === '/meta/handshake' && m.failure?.connectionType === 'websocket');
        assert.ok(tried, `${x.name} never tried websocket (${x.describe()})`);
      }
      assert.equal(x.finalTransport, expectTransport, `${x.name} ended on ${x.finalTransport}, expected ${expectTransport}`);
      assert.ok(x.connectTypes.length > 0, `${x.name} sent no /meta/connect`);
      // faye may send its very first /meta/connect before the WebSocket is selected; every
      // later one must be on the expected transport.
      const later = x.lib === 'faye' ? x.connectTypes.slice(1) : x.connectTypes;
      for (const ct of later) {
        assert.equal(ct, expectTransport, `${x.name} sent /meta/connect with connectionType ${ct}: ${x.connectTypes}`);
      }
    }
  }
}

// ------------------------------------------------------------------ tests

before(async () => {
  try {
    await fetch(BUS_URL, { signal: AbortSignal.timeout(3000) });
  } catch (e) {
    throw new Error(`no server answering at BUS_URL=${BUS_URL} (${e.cause?.message ?? e.message}); ` +
      'start one or use run.sh');
  }
});

afterEach(closeAll);

after(() => {
  // The clients are closed after each test, so normally nothing is left and this file exits by
  // itself. Against a server that never answers, a client's in-flight request or half-open
  // WebSocket can stay open (neither library can cancel those from outside): do not hang.
  if (DEBUG) console.error(`# active after the tests: ${process.getActiveResourcesInfo().join(', ')}`);
  setTimeout(() => {
    console.error(`# still active 3 s after the tests (${process.getActiveResourcesInfo().join(', ')}): exiting`);
    process.exit();
  }, 3000).unref();
});

const MODES = [
  { mode: 'websocket', expect: 'websocket', skip: NO_WEBSOCKET && 'the server refuses WebSocket (BUS_EXPECT_NO_WEBSOCKET=1)' },
  { mode: 'long-polling', expect: 'long-polling' },
  { mode: 'negotiated', expect: NO_WEBSOCKET ? 'long-polling' : 'websocket' },
];

for (const lib of ['faye', 'cometd']) {
  describe(`${lib} client`, () => {
    for (const { mode, expect, skip } of MODES) {
      const name = mode === 'negotiated' && NO_WEBSOCKET
        ? 'websocket refused → falls back to long-polling'
        : `${mode === 'negotiated' ? 'negotiated' : `forced ${mode}`}: publish / receive / unsubscribe on ${CHAT}`;
      test(name, { timeout: TEST_TIMEOUT, skip }, async (t) => {
        await chatScenario(t, { libA: lib, mode, channels: [CHAT], expectTransport: expect });
      });
    }

    if (lib === 'cometd') {
      for (const { mode, expect, skip } of MODES) {
        const why = skip || (!EXTENDED_CHANNEL && 'BUS_EXTENDED_CHANNEL=0');
        test(`${mode === 'negotiated' ? 'negotiated' : `forced ${mode}`}: extended-character channels ${RECORD} ${PUNCT}`,
          { timeout: TEST_TIMEOUT, skip: why }, async (t) => {
            await chatScenario(t, { libA: lib, mode, channels: [RECORD, PUNCT], expectTransport: expect });
          });
      }
    }
  });
}

describe('faye and cometd on one bus', () => {
  test(`faye A → cometd B and cometd → faye, negotiated, on ${CHAT}`, { timeout: TEST_TIMEOUT }, async (t) => {
    const expect = NO_WEBSOCKET ? 'long-polling' : 'websocket';
    await chatScenario(t, { libA: 'faye', libB: 'cometd', mode: 'negotiated', channels: [CHAT], expectTransport: expect });
    await chatScenario(t, { libA: 'cometd', libB: 'faye', mode: 'negotiated', channels: [CHAT], expectTransport: expect });
  });
});

describe('raw WebSocket upgrade at BUS_URL', () => {
  const wsUrl = BUS_URL.replace(/^http/, 'ws');
  test(NO_WEBSOCKET ? 'is refused with an HTTP error (400)' : 'is accepted (101)', { timeout: TEST_TIMEOUT }, async (t) => {
    const ws = new WS(wsUrl);
    let outcome;
    try {
      outcome = await withTimeout(new Promise((resolve) => {
        ws.once('open', () => resolve({ open: true }));
        ws.once('unexpected-response', (req, res) => {
          resolve({ status: res.statusCode });
          res.resume();
          req.destroy();
        });
        ws.on('error', (e) => resolve({ error: e.message }));
      }), STEP_TIMEOUT, `the upgrade at ${wsUrl}`);
    } finally {
      if (ws.readyState === WS.OPEN) ws.close(1000);
      else ws.terminate();
    }
    t.diagnostic(`upgrade ${wsUrl}: ${JSON.stringify(outcome)}`);
    if (NO_WEBSOCKET) {
      assert.ok(outcome.status >= 400, `expected the upgrade to be refused, got ${JSON.stringify(outcome)}`);
      t.diagnostic(outcome.status === 400 ? 'refused with 400 (as the seed)' : `refused with ${outcome.status}`);
    } else {
      assert.deepEqual(outcome, { open: true });
    }
  });
});
