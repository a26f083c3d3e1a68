// Security of wsbus's message bus (SPEC §5) with real, unmodified npm Bayeux clients —
// `faye` and `cometd` (+ `cometd-nodejs-client`) — each forced onto WebSocket and onto
// long-polling, as in tests/bus: the access token in the handshake's `ext.access_token`,
// the `401::<reason>` refusals, the `claim` channel policy (the token's `channels` claim)
// and the JSON Schema of a channel. Run by run.sh:
//
//   SEC_URL=http://127.0.0.1:PORT SEC_JWT_SECRET=… SEC_JWT_ISSUER=… SEC_JWT_AUDIENCE=… \
//     node --test bus.test.mjs
//
// The server's configuration (run.sh writes it): [auth] required, HS256 secret, issuer and
// audience; /secure/** subscribe = publish = "claim"; /typed/** anyone, with a schema
// {"type":"object","required":["text"],"properties":{"text":{"type":"string",…}},
// "additionalProperties":false}; 20 messages/s per session (the tests stay well below it).
// BUS_TRACE=1 prints every Bayeux message each client sends and receives.
//
// The replies are read raw, by an extension of each client (the error strings are the
// contract; faye would parse them into Error objects). faye's Node client always
// handshakes over long-polling and then moves to WebSocket (see tests/bus/README.md), so
// its handshake refusals are seen over HTTP in both modes.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { adapt } from 'cometd-nodejs-client';
import { CometD } from 'cometd';
import { WebSocket as WS } from 'ws';
import { bypassProxyForLoopback, until, withTimeout } from '../bus/support.mjs';
import { mint } from './jwt.mjs';

const require = createRequire(import.meta.url);
const faye = require('faye');

const BUS_URL = `${(process.env.SEC_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '')}/amb`;
const TRACE = process.env.BUS_TRACE === '1';
const TEST_TIMEOUT = 10_000;
const STEP_TIMEOUT = 5_000;

bypassProxyForLoopback(new URL(BUS_URL));
adapt(); // CometD in Node: window.XMLHttpRequest and window.WebSocket

// ------------------------------------------------------------------ clients

/**
 * One Bayeux client of either library. `token`, if any, goes in the handshake's
 * `ext.access_token`. `received[channel]` lists the data delivered on each channel;
 * `replies` every message from the server without `data` (meta replies, publish acks).
 */
class Client {
  constructor(lib, mode, name, token) {
    Object.assign(this, { lib, mode, name, token });
    this.received = {};
    this.replies = [];
    this.waiters = [];
    this.closed = false;
  }

  _outgoing(message) {
    if (message.channel === '/meta/handshake' && this.token !== undefined) {
      message.ext = { ...message.ext, access_token: this.token };
    }
    if (TRACE) console.error(`[${this.lib}/${this.mode}/${this.name}] -> ${JSON.stringify(message)}`);
    return message;
  }

  _incoming(message) {
    if (TRACE) console.error(`[${this.lib}/${this.mode}/${this.name}] <- ${JSON.stringify(message)}`);
    if (message.data === undefined) {
      this.replies.push(message);
      for (const w of this.waiters.slice()) {
        if (w.match(message)) {
          this.waiters.splice(this.waiters.indexOf(w), 1);
          w.resolve(message);
        }
      }
    } else if (!message.channel.startsWith('/meta/')) {
      (this.received[message.channel] ??= []).push(message.data);
    }
    return message;
  }

  /** The next reply that `match`es, from the server. */
  _reply(match, what) {
    return withTimeout(new Promise((resolve) => this.waiters.push({ match, resolve })), STEP_TIMEOUT,
      `${this.name}: the server's reply to ${what}`);
  }

  /** The server's handshake reply, successful or not. */
  handshake() {
    const reply = this._reply((m) => m.channel === '/meta/handshake', '/meta/handshake');
    this._startHandshake();
    return reply;
  }

  subscribe(channel) {
    const reply = this._reply((m) => m.channel === '/meta/subscribe' && [].concat(m.subscription).includes(channel),
      `/meta/subscribe ${channel}`);
    this._subscribe(channel);
    return reply;
  }

  /** The publish's acknowledgement (`successful`, `error`). */
  publish(channel, data) {
    const reply = this._reply((m) => m.channel === channel, `a publish on ${channel}`);
    this._publish(channel, data);
    return reply;
  }

  count(channel) {
    return (this.received[channel] ?? []).length;
  }

  describe() {
    return `${this.name}: transport=${this.transport()} replies=${JSON.stringify(this.replies.map((r) =>
      [r.channel, r.successful, r.error].filter((x) => x !== undefined).join(' ')))}`;
  }
}

class FayeClient extends Client {
  constructor(mode, name, token) {
    super('faye', mode, name, token);
    this.client = new faye.Client(BUS_URL, { timeout: 30, retry: 1 });
    if (mode === 'long-polling') this.client.disable('websocket');
    // (websocket: faye handshakes over long-polling, then moves to WebSocket by itself)
    const self = this;
    this.client.addExtension({
      outgoing(message, callback) { callback(self._outgoing(message)); },
      incoming(message, callback) { callback(self._incoming(message)); },
    });
  }

  transport() {
    return this.client._dispatcher.connectionType ?? null;
  }

  _startHandshake() {
    this.client.connect(() => {});
  }

  _subscribe(channel) {
    this.client.subscribe(channel, (data) => { /* recorded by the extension */ void data; });
  }

  _publish(channel, data) {
    this.client.publish(channel, data);
  }

  async forceClose() {
    if (!this.closed && this.client._state === 3 /* CONNECTED */) {
      const p = this.client.disconnect();
      if (p) await withTimeout(new Promise((resolve) => p.then(resolve, resolve)), 1500, 'disconnect').catch(() => {});
    }
    // faye retries unanswered messages forever: stop it and drop its timers (tests/bus does the same).
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

class CometDClient extends Client {
  constructor(mode, name, token) {
    super('cometd', mode, name, token);
    const c = (this.cometd = new CometD(`${name}-${mode}`));
    if (mode === 'websocket') {
      c.unregisterTransport('long-polling');
      c.unregisterTransport('callback-polling');
    } else {
      c.unregisterTransport('websocket');
    }
    c.configure({ url: BUS_URL, logLevel: 'warn', maxNetworkDelay: 5000 });
    const self = this;
    c.registerExtension('security-test', {
      outgoing: (message) => self._outgoing(message),
      incoming: (message) => self._incoming(message),
    });
  }

  transport() {
    return this.cometd.getTransport()?.type ?? null;
  }

  /**
   * The server's handshake reply, from CometD's callback (called once CometD has acted on
   * it, so that a subscribe may follow at once). Local failures (no reply from the server,
   * e.g. a WebSocket that did not open) are kept for the timeout's message.
   */
  handshake() {
    const failures = [];
    return withTimeout(new Promise((resolve) => {
      this.cometd.handshake((reply) => {
        if (reply.successful || reply.error !== undefined) resolve(reply);
        else failures.push(JSON.stringify(reply.failure, (k, v) => (v instanceof Error ? v.message : v)));
      });
    }), STEP_TIMEOUT, `${this.name}: the server's reply to /meta/handshake`).catch((e) => {
      throw new Error(`${e.message}; CometD's local failures: ${JSON.stringify(failures)}`);
    });
  }

  _subscribe(channel) {
    this.cometd.subscribe(channel, () => { /* recorded by the extension */ });
  }

  _publish(channel, data) {
    this.cometd.publish(channel, data);
  }

  async forceClose() {
    if (!this.closed && !this.cometd.isDisconnected()) {
      await withTimeout(new Promise((resolve) => this.cometd.disconnect(resolve)), 1500, 'disconnect').catch(() => {});
    }
    try { this.cometd.getTransport()?.abort(); } catch { /* already gone */ }
    this.closed = true;
  }
}

/**
 * A test body `fn(t, client)`, where client(lib, mode, name, token) makes a client that is
 * closed when the test ends (each test closes its own, even when it failed or timed out);
 * on failure each client's transport and replies are reported.
 */
function scenario(fn) {
  return async (t) => {
    const mine = [];
    const client = (lib, mode, name, token) => {
      const c = lib === 'faye' ? new FayeClient(mode, name, token) : new CometDClient(mode, name, token);
      mine.push(c);
      return c;
    };
    try {
      await fn(t, client);
    } catch (e) {
      for (const c of mine) t.diagnostic(c.describe());
      throw e;
    } finally {
      await Promise.all(mine.map((c) => c.forceClose().catch(() => {})));
    }
  };
}

/** Handshakes and asserts it succeeded. */
async function connected(c) {
  const reply = await c.handshake();
  assert.equal(reply.successful, true, `${c.name}: handshake refused: ${reply.error}`);
  return c;
}

async function subscribed(c, channel) {
  const reply = await c.subscribe(channel);
  assert.equal(reply.successful, true, `${c.name}: subscribe ${channel} refused: ${reply.error}`);
}

// ------------------------------------------------------------------ tests

before(async () => {
  try {
    await fetch(BUS_URL, { signal: AbortSignal.timeout(3000) });
  } catch (e) {
    throw new Error(`no server answering at ${BUS_URL} (${e.cause?.message ?? e.message}); use run.sh`);
  }
});

after(() => {
  setTimeout(() => {
    console.error(`# still active 3 s after the tests (${process.getActiveResourcesInfo().join(', ')}): exiting`);
    process.exit();
  }, 3000).unref();
});

describe('the WebSocket upgrade at /amb', () => {
  // The bus's token travels in the handshake's ext (a browser cannot set headers on a
  // WebSocket, and CometD sends its handshake over the socket): the upgrade itself needs none.
  test('is accepted (101) without a token', { timeout: TEST_TIMEOUT }, async () => {
    const ws = new WS(BUS_URL.replace(/^http/, 'ws'));
    let outcome;
    try {
      outcome = await withTimeout(new Promise((resolve) => {
        ws.once('open', () => resolve({ open: true }));
        ws.once('unexpected-response', (req, res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (chunk) => { body += chunk; });
          res.on('end', () => resolve({ status: res.statusCode, 'www-authenticate': res.headers['www-authenticate'], body }));
        });
        ws.on('error', (e) => resolve({ error: e.message }));
      }), STEP_TIMEOUT, 'the upgrade');
    } finally {
      if (ws.readyState === WS.OPEN) ws.close(1000);
      else ws.terminate();
    }
    assert.deepEqual(outcome, { open: true });
  });
});

const SECURE = '/secure/a';
const TYPED = '/typed/x';
const now = () => Math.floor(Date.now() / 1000);

for (const lib of ['faye', 'cometd']) {
  for (const mode of ['websocket', 'long-polling']) {
    describe(`${lib} over ${mode}`, () => {
      const opts = { timeout: TEST_TIMEOUT };

      test('a handshake with ext.access_token succeeds, on the forced transport', opts, scenario(async (t, client) => {
        const a = await connected(client(lib, mode, 'A', mint({ sub: 'alice', name: 'Alice' })));
        await subscribed(a, TYPED); // a round trip over the transport in use
        await until(() => a.transport() === mode, STEP_TIMEOUT, `${a.name} to be on ${mode} (is ${a.transport()})`);
      }));

      for (const [what, token, error] of [
        ['without a token', undefined, '401::Missing token'],
        ['with a bad signature', mint({}, { key: 'a different secret of the same length, 32+ bytes' }), '401::Bad signature'],
        ['with an expired token', mint({ exp: now() - 3600 }), '401::Token expired'],
        ['with a token of another issuer', mint({ iss: 'https://elsewhere.example' }), '401::Wrong issuer'],
        ['with a token not a JWT', 'not-a-jwt', '401::Malformed token'],
      ]) {
        test(`a handshake ${what} fails with ${error} and advice reconnect: none`, opts, scenario(async (t, client) => {
          const a = client(lib, mode, 'A', token);
          const reply = await a.handshake();
          assert.equal(reply.successful, false, `${a.name}: the handshake succeeded`);
          assert.equal(reply.error, error);
          assert.equal(reply.advice?.reconnect, 'none', `advice ${JSON.stringify(reply.advice)}`);
          assert.equal(reply.clientId, undefined, 'a refused handshake got a clientId');
        }));
      }

      test(`the channels claim: ${SECURE} for holders of "/secure/**", 403 for others`, opts, scenario(async (t, client) => {
        const claim = { channels: ['/secure/**'] };
        const a = await connected(client(lib, mode, 'A', mint({ sub: 'alice', name: 'Alice', ...claim })));
        const b = await connected(client(lib, mode, 'B', mint({ sub: 'bob', name: 'Bob', ...claim })));
        await subscribed(a, SECURE);
        await subscribed(b, SECURE);
        const ack = await a.publish(SECURE, { text: 'for claim holders' });
        assert.equal(ack.successful, true, `A's publish on ${SECURE}: ${ack.error}`);
        await until(() => b.count(SECURE) === 1, STEP_TIMEOUT, `B to receive A's message on ${SECURE}`);

        const c = await connected(client(lib, mode, 'C', mint({ sub: 'carol', name: 'Carol', channels: ['/other/**'] })));
        const sub = await c.subscribe(SECURE);
        assert.equal(sub.successful, false, `C (no claim on ${SECURE}) was allowed to subscribe`);
        assert.equal(sub.error, '403::Subscribe denied');
        const pub = await c.publish(SECURE, { text: 'from outside' });
        assert.equal(pub.successful, false, `C (no claim on ${SECURE}) was allowed to publish`);
        assert.equal(pub.error, '403::Publish denied');

        // C's message reached nobody: B's next message is A's marker.
        await a.publish(SECURE, { text: 'marker' });
        await until(() => b.count(SECURE) === 2, STEP_TIMEOUT, `B to receive A's marker on ${SECURE}`);
        assert.deepEqual(b.received[SECURE], [{ text: 'for claim holders' }, { text: 'marker' }]);
        assert.equal(c.count(SECURE), 0);
      }));

      test(`the schema of ${TYPED}: valid data is relayed, invalid gets 400::<pointer> and reaches no one`, opts, scenario(async (t, client) => {
        const a = await connected(client(lib, mode, 'A', mint({ sub: 'alice', name: 'Alice' })));
        const b = await connected(client(lib, mode, 'B', mint({ sub: 'bob', name: 'Bob' })));
        await subscribed(a, TYPED);
        await subscribed(b, TYPED);

        const ok = await a.publish(TYPED, { text: 'ok' });
        assert.equal(ok.successful, true, `{"text":"ok"} on ${TYPED}: ${ok.error}`);
        await until(() => b.count(TYPED) === 1, STEP_TIMEOUT, `B to receive {"text":"ok"} on ${TYPED}`);

        const bad = await a.publish(TYPED, { bad: 1 });
        assert.equal(bad.successful, false, `{"bad":1} on ${TYPED} was accepted`);
        // 400::<JSON pointer>: <reason> — the pointer of the object itself is "".
        assert.match(bad.error ?? '', /^400::(\/[^:\s]*)?: \S/, 'the error names a JSON pointer and a reason');
        const typed = await a.publish(TYPED, { text: 42 });
        assert.equal(typed.successful, false, `{"text":42} on ${TYPED} was accepted`);
        assert.match(typed.error ?? '', /^400::\/text: \S/, 'the error names the pointer /text');

        await a.publish(TYPED, { text: 'marker' });
        await until(() => b.count(TYPED) === 2, STEP_TIMEOUT, `B to receive the marker on ${TYPED}`);
        assert.deepEqual(b.received[TYPED], [{ text: 'ok' }, { text: 'marker' }], 'B received an invalid message');
      }));
    });
  }
}
