// The connectivity test page (/websocket-test): runs the steps in order, reads back what the
// server recorded for each probe id (GET /websocket-test/probe/<id>), and names the hop that
// broke in plain words. Everything shown comes from the network, so it is set as text
// (textContent), never as HTML.
//
// Query parameters: idle=<seconds> (the idle hold and the held long-poll; default 70 s, longer
// than the 60 s idle timeout of nginx and most load balancers), record=1 (switch recording on).
'use strict';

(() => {
  const query = new URLSearchParams(location.search);

  // Limits, each with its reason.
  const DEFAULT_IDLE_S = 70; // above the 60 s of nginx's proxy_read_timeout and common balancers
  const MAX_IDLE_S = 600; // a diagnostic, not a soak test
  const OPEN_TIMEOUT_MS = 10_000; // a WebSocket that has not opened by then will not
  const REPLY_TIMEOUT_MS = 10_000; // an echo or a Bayeux reply on a working path takes milliseconds
  const CLOSE_TIMEOUT_MS = 5_000; // the closing handshake is one round trip
  const PINGS = 5; // enough round trips for a minimum and a spread
  const COMPRESSIBLE_BYTES = 64 * 1024; // well above the deflate threshold, well below limits
  const HELD_SLACK_MS = 2_000; // latency allowed between the server's answer and the browser's
  const MAX_LOG_ENTRIES = 2_000; // the recorded browser side stays a downloadable size
  const MAX_LOGGED_CHARS = 2_000; // per message (the 64 KiB compression message is cut)
  const PROBE_PROTOCOL = 'wsbus-probe';

  const idleSeconds = intParam('idle', 1, MAX_IDLE_S, DEFAULT_IDLE_S);
  const wsBase = (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host;

  const NGINX_WEBSOCKET =
    'nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; ' +
    'proxy_set_header Connection "upgrade";';

  const $ = (id) => document.getElementById(id);

  let report = null;
  let t0 = 0;

  function intParam(name, min, max, fallback) {
    const value = Number.parseInt(query.get(name) ?? '', 10);
    return Number.isFinite(value) ? Math.min(max, Math.max(min, value)) : fallback;
  }

  const elapsed = () => Math.round(performance.now() - t0);
  const seconds = (ms) => (ms / 1000).toFixed(ms < 10_000 ? 1 : 0);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ------------------------------------------------------------ recording the browser side

  function log(direction, channel, data) {
    if (!report || !report.settings.recording) return;
    if (report.browser_log.length >= MAX_LOG_ENTRIES) {
      report.browser_log_not_kept += 1;
      return;
    }
    let text = typeof data === 'string' ? data : JSON.stringify(data);
    if (text !== undefined && text.length > MAX_LOGGED_CHARS) {
      text = text.slice(0, MAX_LOGGED_CHARS) + `… (${text.length} characters)`;
    }
    report.browser_log.push({ at_ms: elapsed(), direction, channel, data: text });
  }

  // ------------------------------------------------------------ HTTP

  async function http(method, url, body) {
    log('out', `${method} ${url}`, body);
    const response = await fetch(url, {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    log('in', `${response.status} ${method} ${url}`, text);
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON: an error page of something between, kept as text below
    }
    return { status: response.status, json, text: text.slice(0, 500) };
  }

  async function newProbe(purpose) {
    const answer = await http('POST', '/websocket-test/probe');
    if (answer.status !== 201 || !answer.json || typeof answer.json.id !== 'string') {
      throw new Error(`POST /websocket-test/probe answered ${answer.status}: ${answer.text}`);
    }
    report.server = answer.json.server;
    report.probes.push({ id: answer.json.id, purpose, created_ms: elapsed() });
    const item = document.createElement('li');
    item.textContent = `${answer.json.id} — ${purpose}`;
    $('probes').append(item);
    return answer.json.id;
  }

  async function readRecord(id) {
    try {
      const answer = await http('GET', `/websocket-test/probe/${encodeURIComponent(id)}`);
      return answer.status === 200 ? answer.json : null;
    } catch {
      return null;
    }
  }

  // ------------------------------------------------------------ a WebSocket, awaited

  class Socket {
    constructor(url, protocols, label) {
      this.label = label;
      this.url = url;
      this.messages = [];
      this.waiters = [];
      this.closeInfo = null;
      this.opened = false;
      this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
      this.ws = new WebSocket(url, protocols);
      this.started = performance.now();
      this.ws.addEventListener('message', (event) => {
        const data = typeof event.data === 'string' ? event.data : '(binary)';
        log('in', `${label} message`, data);
        const waiter = this.waiters.shift();
        if (waiter) waiter(data);
        else this.messages.push(data);
      });
      this.ws.addEventListener('close', (event) => {
        this.closeInfo = {
          code: event.code,
          reason: event.reason,
          clean: event.wasClean,
          after_ms: Math.round(performance.now() - this.started),
          after_open_ms: this.openedAt ? Math.round(performance.now() - this.openedAt) : null,
        };
        log('in', `${label} close`, this.closeInfo);
        for (const waiter of this.waiters.splice(0)) waiter(null);
        this.resolveClosed(this.closeInfo);
      });
    }

    // Resolves true once open, false when it closes first or OPEN_TIMEOUT_MS passes.
    open() {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          this.timedOut = true;
          resolve(false);
          try {
            this.ws.close();
          } catch {
            // nothing to close
          }
        }, OPEN_TIMEOUT_MS);
        this.ws.addEventListener('open', () => {
          clearTimeout(timer);
          this.opened = true;
          this.openedAt = performance.now();
          this.openMs = Math.round(this.openedAt - this.started);
          log('in', `${this.label} open`, { protocol: this.ws.protocol, extensions: this.ws.extensions });
          resolve(true);
        });
        this.closedPromise.then(() => {
          clearTimeout(timer);
          resolve(false);
        });
      });
    }

    send(text) {
      log('out', `${this.label} message`, text);
      this.ws.send(text);
    }

    // The next message, or null on close or after timeoutMs.
    receive(timeoutMs = REPLY_TIMEOUT_MS) {
      if (this.messages.length > 0) return Promise.resolve(this.messages.shift());
      if (this.closeInfo) return Promise.resolve(null);
      return new Promise((resolve) => {
        const waiter = (data) => {
          clearTimeout(timer);
          resolve(data);
        };
        const timer = setTimeout(() => {
          const index = this.waiters.indexOf(waiter);
          if (index >= 0) this.waiters.splice(index, 1);
          resolve(null);
        }, timeoutMs);
        this.waiters.push(waiter);
      });
    }

    // Closes with `code` and resolves to how it closed (or null after CLOSE_TIMEOUT_MS).
    async close(code = 1000, reason = 'test done') {
      if (!this.closeInfo) {
        log('out', `${this.label} close`, { code, reason });
        try {
          this.ws.close(code, reason);
        } catch {
          // already closing
        }
      }
      return Promise.race([this.closedPromise, sleep(CLOSE_TIMEOUT_MS).then(() => null)]);
    }
  }

  const probeUrl = (id) => `${wsBase}/websocket-test/probe?id=${encodeURIComponent(id)}`;

  // ------------------------------------------------------------ findings

  function find(level, code, text) {
    report.findings.push({ level, code, text });
    const item = document.createElement('li');
    item.className = level;
    item.dataset.code = code;
    const verdict = document.createElement('span');
    verdict.className = 'verdict';
    verdict.textContent = { ok: 'OK: ', warn: 'Warning: ', fail: 'Problem: ' }[level];
    item.append(verdict, document.createTextNode(text));
    $('diagnosis').append(item);
  }

  // Why a WebSocket to the probe did not open, from the server's record and what the browser
  // saw. Returns [code, text].
  function whyNoSocket(record, socket, what) {
    const facts = record && record.websocket;
    const seen = socket.timedOut
      ? `it did not open within ${seconds(OPEN_TIMEOUT_MS)} s`
      : `the browser saw close code ${socket.closeInfo ? socket.closeInfo.code : '?'}`;
    if (!record) {
      return ['record-missing', `${what} failed (${seen}) and the server has no record of the probe.`];
    }
    if (!facts) {
      return ['never-reached',
        `${what} failed (${seen}) and the request never reached this server: something between ` +
        'the browser and the server (a proxy, firewall, VPN or security software) answered or ' +
        'dropped it.'];
    }
    if (!facts.upgrade && facts.websocket_key) {
      return ['upgrade-header-missing',
        `${what} failed (${seen}): the upgrade reached the server without its Upgrade header: ` +
        `a proxy is not configured for WebSocket (${NGINX_WEBSOCKET})`];
    }
    if (facts.upgrade && !facts.connection_upgrade) {
      return ['connection-header-missing',
        `${what} failed (${seen}): the upgrade reached the server with "Upgrade: ${facts.upgrade}" ` +
        `but without "Connection: upgrade" (it had "${facts.connection ?? 'nothing'}"): a proxy ` +
        `is not configured for WebSocket (${NGINX_WEBSOCKET})`];
    }
    if (facts.origin_refused) {
      return ['origin-refused',
        `${what} failed (${seen}): the server refused the page's origin (${facts.origin}) for host ` +
        `${facts.host}: a proxy changes the Host header, or the server does not trust the proxy's ` +
        'forwarding headers ([limits] trusted_proxies).'];
    }
    if (facts.status === 101) {
      return ['switched-not-seen',
        `${what} failed (${seen}): the server sent 101 Switching Protocols, but the browser saw ` +
        'something else: something between altered or ended the response (a proxy without ' +
        'WebSocket support, or security software inspecting traffic).'];
    }
    if (facts.status) {
      const notes = record.notes.length > 0 ? ` (${record.notes.join('; ')})` : '';
      return ['upgrade-refused',
        `${what} failed (${seen}): the server refused the upgrade with ${facts.status}${notes}.`];
    }
    return ['no-answer',
      `${what} failed (${seen}): the request reached the server, which had not answered it yet.`];
  }

  // ------------------------------------------------------------ steps

  function addStep(name, title) {
    const step = {
      name, title, status: 'running', summary: '', started_ms: elapsed(), duration_ms: null,
      probe: null, observations: {}, server_record: null,
    };
    report.steps.push(step);
    const item = document.createElement('li');
    item.dataset.step = name;
    step.element = item;
    renderStep(step);
    $('steps').append(item);
    return step;
  }

  function renderStep(step) {
    const item = step.element;
    item.className = { ok: 'ok', warn: 'warn', fail: 'fail', skipped: 'warn' }[step.status] ?? '';
    item.dataset.status = step.status;
    const verdict = document.createElement('span');
    verdict.className = 'verdict';
    verdict.textContent = `${step.title}: ${step.status}`;
    const detail = document.createElement('span');
    detail.className = 'detail';
    detail.textContent = step.summary;
    item.replaceChildren(verdict, detail);
  }

  function finish(step, status, summary) {
    step.status = status;
    step.summary = summary;
    step.duration_ms = elapsed() - step.started_ms;
    renderStep(step);
  }

  function setState(state, text) {
    $('state').dataset.state = state;
    $('state').textContent = text;
  }

  async function httpStep() {
    const step = addStep('http', 'HTTP reachability');
    const started = performance.now();
    try {
      const id = await newProbe('HTTP reachability');
      step.probe = id;
      step.observations.create_ms = Math.round(performance.now() - started);
      const readStarted = performance.now();
      const record = await readRecord(id);
      step.observations.read_ms = Math.round(performance.now() - readStarted);
      step.server_record = record;
      if (!record) throw new Error('the server did not give back the probe it had just created');
      finish(step, 'ok', `the server answers over HTTP (${step.observations.create_ms} ms, ` +
        `${step.observations.read_ms} ms)`);
      return true;
    } catch (e) {
      step.observations.error = e.message;
      finish(step, 'fail', e.message);
      find('fail', 'http-unreachable',
        `This page cannot reach the server over HTTP (${e.message}). The page itself loaded, so ` +
        'the server may have stopped, or something between blocks its POST and JSON requests.');
      return false;
    }
  }

  async function rawSocketStep() {
    const step = addStep('websocket', 'WebSocket');
    const id = await newProbe('WebSocket: upgrade, round trips, close');
    step.probe = id;
    const socket = new Socket(probeUrl(id), [PROBE_PROTOCOL], 'probe');
    const opened = await socket.open();
    const obs = step.observations;
    obs.opened = opened;
    if (!opened) {
      obs.close = socket.closeInfo;
      step.server_record = await readRecord(id);
      const [code, text] = whyNoSocket(step.server_record, socket, 'The WebSocket');
      finish(step, 'fail', text);
      find('fail', code, text);
      return false;
    }
    obs.open_ms = socket.openMs;
    obs.protocol = socket.ws.protocol;
    obs.extensions = socket.ws.extensions;
    const rtts = [];
    for (let n = 1; n <= PINGS; n++) {
      const ping = JSON.stringify({ ping: n });
      const sent = performance.now();
      socket.send(ping);
      const echo = await socket.receive();
      if (echo !== ping) break;
      rtts.push(Math.round((performance.now() - sent) * 10) / 10);
    }
    obs.round_trips_ms = rtts;
    obs.close = await socket.close(1000, 'test done');
    await sleep(100); // the server records the close on its side of the handshake
    step.server_record = await readRecord(id);
    const facts = step.server_record && step.server_record.websocket;
    const rtt = rtts.length > 0
      ? `round trip ${Math.min(...rtts)}–${Math.max(...rtts)} ms over ${rtts.length} messages`
      : 'no round trip';
    const described = `opened in ${obs.open_ms} ms; subprotocol ${obs.protocol || 'none'}; ` +
      `extensions ${obs.extensions || 'none'}; ${rtt}`;
    if (rtts.length < PINGS) {
      const text = `The WebSocket opened but ${PINGS - rtts.length} of ${PINGS} messages did not ` +
        `come back (the server received ${facts ? facts.messages_in : '?'}): something between ` +
        'drops WebSocket frames.';
      finish(step, 'fail', `${described}. ${text}`);
      find('fail', 'frames-lost', text);
      return false;
    }
    let status = 'ok';
    if (obs.protocol !== PROBE_PROTOCOL) {
      status = 'warn';
      find('warn', 'subprotocol-lost',
        `The subprotocol was not negotiated (the browser saw "${obs.protocol}", the server sent ` +
        `"${facts && facts.protocol}"): something between removes Sec-WebSocket-Protocol.`);
    }
    if (!obs.close || obs.close.code !== 1000) {
      status = 'warn';
      find('warn', 'unclean-close',
        `The WebSocket did not close cleanly (${obs.close ? `code ${obs.close.code}` : 'no close ' +
        'within 5 s'}; the server saw ${facts && facts.closed ? `${facts.closed.by} ${facts.closed.code}` : 'no close'}).`);
    }
    finish(step, status, `${described}; closed ${obs.close ? obs.close.code : '—'}` +
      (facts && facts.closed ? ` (server: ${facts.closed.by} ${facts.closed.code})` : ''));
    if (status === 'ok') {
      find('ok', 'websocket-ok', `WebSocket works: upgrade, ${rtt}, clean close.`);
    }
    return true;
  }

  // A small Bayeux client over one transport, enough for handshake, connect, subscribe,
  // publish, receive and disconnect; every message goes through log().
  class Bayeux {
    constructor(transport, probe) {
      this.transport = transport;
      this.probe = probe;
      // A probe's requests name it, so that the server records them for it.
      this.path = probe
        ? `${report.server.bus_path}?probe=${encodeURIComponent(probe)}`
        : report.server.bus_path;
      this.nextId = 1;
      this.clientId = null;
      this.pending = new Map();
      this.deliveries = [];
      this.deliveryWaiter = null;
      this.socket = null;
      this.posts = 0; // long-polling requests sent: the server records them in this order
    }

    dispatch(messages) {
      for (const m of Array.isArray(messages) ? messages : [messages]) {
        if (m && m.id !== undefined && this.pending.has(m.id)) {
          const resolve = this.pending.get(m.id);
          this.pending.delete(m.id);
          resolve(m);
        } else if (m && m.data !== undefined && !String(m.channel).startsWith('/meta/')) {
          if (this.deliveryWaiter) this.deliveryWaiter(m);
          else this.deliveries.push(m);
        }
      }
    }

    async openSocket(label = 'bus') {
      this.socket = new Socket(wsBase + this.path, undefined, label);
      const opened = await this.socket.open();
      if (opened) this.pump();
      return opened;
    }

    async pump() {
      for (;;) {
        const text = await this.socket.receive(24 * 3600 * 1000);
        if (text === null) return;
        try {
          this.dispatch(JSON.parse(text));
        } catch {
          // not Bayeux: ignored
        }
      }
    }

    // Sends `message` and resolves to its reply (null after timeoutMs). Over long-polling the
    // HTTP outcome is kept in `this.lastHttp`.
    async request(message, timeoutMs = REPLY_TIMEOUT_MS) {
      message.id = String(this.nextId++);
      if (this.clientId) message.clientId = this.clientId;
      const reply = new Promise((resolve) => {
        this.pending.set(message.id, resolve);
        setTimeout(() => {
          if (this.pending.delete(message.id)) resolve(null);
        }, timeoutMs);
      });
      if (this.transport === 'websocket') {
        this.socket.send(JSON.stringify([message]));
      } else {
        const started = performance.now();
        this.posts += 1;
        try {
          const answer = await http('POST', this.path, [message]);
          this.lastHttp = { status: answer.status, ms: Math.round(performance.now() - started) };
          if (answer.status === 200 && answer.json) this.dispatch(answer.json);
          else this.lastHttp.body = answer.text;
        } catch (e) {
          this.lastHttp = { status: null, error: e.message, ms: Math.round(performance.now() - started) };
        }
        if (this.pending.delete(message.id)) return null;
      }
      return reply;
    }

    delivery(timeoutMs = REPLY_TIMEOUT_MS) {
      if (this.deliveries.length > 0) return Promise.resolve(this.deliveries.shift());
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          this.deliveryWaiter = null;
          resolve(null);
        }, timeoutMs);
        this.deliveryWaiter = (m) => {
          clearTimeout(timer);
          this.deliveryWaiter = null;
          resolve(m);
        };
      });
    }

    connect(advice) {
      const message = { channel: '/meta/connect', connectionType: this.transport };
      if (advice) message.advice = advice;
      return this.request(message, (advice && advice.timeout !== undefined ? advice.timeout : 0) + REPLY_TIMEOUT_MS);
    }
  }

  // Handshake and a first connect (answered at once); returns what failed, or null.
  async function busStart(bus, obs) {
    const handshake = { channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: [bus.transport] };
    if (bus.probe) handshake.ext = { probe: bus.probe };
    const reply = await bus.request(handshake);
    obs.handshake = reply ? (reply.successful ? 'ok' : reply.error) : 'no reply';
    if (!reply || !reply.successful) return `handshake: ${obs.handshake}`;
    bus.clientId = reply.clientId;
    const first = await bus.connect({ timeout: 0 });
    obs.connect = first ? (first.successful ? 'ok' : first.error) : 'no reply';
    if (!first || !first.successful) return `connect: ${obs.connect}`;
    if (bus.transport === 'websocket') {
      // Keep a connect outstanding, as a client does; it is answered at disconnect.
      bus.connect();
    }
    return null;
  }

  // Handshake, connect, subscribe, publish to the page's own channel, receive; returns what
  // failed, or null. The bus does not echo a message to its publisher, so a second client
  // of this page on the same transport publishes, and the first receives.
  async function busExchange(bus, obs) {
    const channel = `/websocket-test/${bus.probe}`;
    const started = await busStart(bus, obs);
    if (started) return started;
    const subscribed = await bus.request({ channel: '/meta/subscribe', subscription: channel });
    obs.subscribe = subscribed ? (subscribed.successful ? 'ok' : subscribed.error) : 'no reply';
    if (!subscribed || !subscribed.successful) return `subscribe: ${obs.subscribe}`;
    const sender = new Bayeux(bus.transport, null);
    try {
      if (sender.transport === 'websocket' && !(await sender.openSocket('bus sender'))) {
        return 'a second WebSocket to the bus (the sender) did not open';
      }
      const senderObs = {};
      const senderFailed = await busStart(sender, senderObs);
      if (senderFailed) return `the sender's ${senderFailed}`;
      // A channel's default rule lets its subscribers publish.
      const joined = await sender.request({ channel: '/meta/subscribe', subscription: channel });
      if (!joined || !joined.successful) return `the sender's subscribe: ${joined ? joined.error : 'no reply'}`;
      const sent = performance.now();
      const published = await sender.request({ channel, data: { probe: bus.probe, text: 'to myself' } });
      obs.publish = published ? (published.successful ? 'ok' : published.error) : 'no reply';
      if (!published || !published.successful) return `publish: ${obs.publish}`;
      if (bus.transport === 'long-polling' && bus.deliveries.length === 0) {
        // Long-polling: deliveries come with the next connect (at once: one is waiting).
        await bus.connect({ timeout: 5_000 });
      }
      const delivered = await bus.delivery();
      obs.receive = delivered ? 'ok' : 'nothing arrived';
      if (!delivered) return 'receive: the message published to the page\'s channel did not arrive';
      obs.publish_to_receive_ms = Math.round(performance.now() - sent);
      return null;
    } finally {
      if (sender.clientId) await sender.request({ channel: '/meta/disconnect' }, 2_000);
      if (sender.socket) await sender.socket.close(1000, 'test done');
    }
  }

  async function busSocketStep(rawWorked) {
    const step = addStep('bus-websocket', 'Bus over WebSocket');
    const obs = step.observations;
    if (report.server.bus_websocket === false) {
      finish(step, 'skipped', 'the server offers the bus over long-polling only (bus.websocket_enabled = false)');
      find('warn', 'bus-websocket-off',
        'The server has WebSocket switched off for the bus (bus.websocket_enabled = false): the bus uses long-polling.');
      return false;
    }
    const id = await newProbe('bus over WebSocket');
    step.probe = id;
    const bus = new Bayeux('websocket', id);
    const opened = await bus.openSocket();
    obs.opened = opened;
    if (!opened) {
      obs.close = bus.socket.closeInfo;
      const why = rawWorked
        ? `The bus's WebSocket at ${report.server.bus_path} failed (close ${obs.close ? obs.close.code : '?'}) ` +
          'while the probe\'s worked: a proxy rule for the bus path differs from the rest (check its location block).'
        : 'The bus\'s WebSocket failed too, for the same reason as the WebSocket above.';
      finish(step, 'fail', why);
      if (rawWorked) find('fail', 'bus-websocket-path', why);
      return false;
    }
    const failed = await busExchange(bus, obs);
    await bus.request({ channel: '/meta/disconnect' }, 2_000);
    obs.close = await bus.socket.close(1000, 'test done');
    if (failed) {
      finish(step, 'fail', failed);
      find('fail', 'bus-websocket-exchange', `The bus over WebSocket opened but failed at ${failed}.`);
      return false;
    }
    finish(step, 'ok', `handshake, subscribe, publish and receive in ${obs.publish_to_receive_ms} ms`);
    return true;
  }

  async function busLongPollStep() {
    const step = addStep('bus-long-polling', 'Bus over long-polling');
    const obs = step.observations;
    const id = await newProbe('bus over long-polling, held connect');
    step.probe = id;
    const bus = new Bayeux('long-polling', id);
    const failed = await busExchange(bus, obs);
    if (failed) {
      await bus.request({ channel: '/meta/disconnect' }, 2_000);
      step.server_record = await readRecord(id);
      const http = bus.lastHttp ? ` (last answer: ${bus.lastHttp.status ?? bus.lastHttp.error})` : '';
      const reached = step.server_record && step.server_record.long_polls.length > 0;
      finish(step, 'fail', `${failed}${http}`);
      find('fail', reached ? 'bus-long-polling' : 'long-poll-never-reached',
        reached
          ? `The bus over long-polling failed at ${failed}${http}.`
          : `The bus over long-polling failed${http}: its requests never reached this server.`);
      return { works: false };
    }
    // The held connect: nothing to deliver, so the server holds it for the time asked.
    const hold = query.has('idle') ? idleSeconds * 1000 : report.server.bus_hold_ms;
    obs.held_connect = { asked_hold_ms: hold };
    const heldIndex = bus.posts;
    const started = performance.now();
    const reply = await bus.connect({ timeout: hold });
    const held = obs.held_connect;
    held.browser_ms = Math.round(performance.now() - started);
    held.http_status = bus.lastHttp ? bus.lastHttp.status : null;
    held.error = bus.lastHttp && bus.lastHttp.error;
    held.successful = Boolean(reply && reply.successful);
    await bus.request({ channel: '/meta/disconnect' }, 2_000);
    step.server_record = await readRecord(id);
    const polls = step.server_record ? step.server_record.long_polls : [];
    const server = polls[heldIndex] ?? null;
    held.server = server;
    const base = `handshake, subscribe, publish and receive in ${obs.publish_to_receive_ms} ms`;
    if (held.successful) {
      const serverHeld = server && server.answered_ms !== null ? server.answered_ms - server.arrived_ms : null;
      if (serverHeld !== null && held.browser_ms - serverHeld > HELD_SLACK_MS) {
        const text = `Long-polling responses were held back: the server answered a held connect after ` +
          `${seconds(serverHeld)} s, the browser got it after ${seconds(held.browser_ms)} s: a buffering ` +
          'proxy holds responses back (nginx: proxy_buffering off; for the bus path).';
        finish(step, 'warn', `${base}; ${text}`);
        find('warn', 'long-poll-held-back', text);
        return { works: true };
      }
      finish(step, 'ok', `${base}; a connect held ${seconds(hold)} s came back after ${seconds(held.browser_ms)} s`);
      return { works: true };
    }
    const what = held.http_status ? `answered ${held.http_status}` : `failed (${held.error || 'no reply'})`;
    const serverSide = !server
      ? 'the server never saw it'
      : server.answered_ms !== null
        ? `the server held it ${seconds(server.answered_ms - server.arrived_ms)} s and answered ${server.status}`
        : server.abandoned_ms !== null
          ? `the server was still holding it when the connection was closed after ${seconds(server.abandoned_ms - server.arrived_ms)} s`
          : 'the server was still holding it';
    if (held.browser_ms < hold - 500 && server) {
      const text = `Long-polling responses were cut: a connect the server holds ${seconds(hold)} s ${what} ` +
        `after ${seconds(held.browser_ms)} s (${serverSide}): a proxy's read timeout is shorter than ` +
        `the server's hold (nginx: proxy_read_timeout above ${seconds(report.server.bus_hold_ms)} s).`;
      finish(step, 'fail', `${base}; ${text}`);
      find('fail', 'long-poll-cut', text);
    } else {
      const text = `A held long-polling connect ${what} after ${seconds(held.browser_ms)} s (${serverSide}).`;
      finish(step, 'fail', `${base}; ${text}`);
      find('fail', 'long-poll-failed', text);
    }
    // Short requests work: the bus still runs over long-polling, reconnecting more often.
    return { works: true, held: false };
  }

  async function idleStep() {
    const step = addStep('idle', `Idle hold (${idleSeconds} s)`);
    const obs = step.observations;
    const id = await newProbe(`WebSocket idle for ${idleSeconds} s`);
    step.probe = id;
    const socket = new Socket(probeUrl(id), [PROBE_PROTOCOL], 'idle');
    if (!(await socket.open())) {
      finish(step, 'skipped', 'no WebSocket (see above)');
      return;
    }
    const hold = idleSeconds * 1000;
    const cut = await Promise.race([socket.closedPromise, sleep(hold).then(() => null)]);
    const ping = report.server.keepalive_interval_ms;
    if (cut) {
      obs.cut = cut;
      step.server_record = await readRecord(id);
      const facts = step.server_record && step.server_record.websocket;
      const server = facts && facts.closed
        ? (facts.closed.by === 'dropped'
          ? `; the server saw the connection end without a close frame after ${seconds(facts.closed.at_ms - facts.opened_ms)} s`
          : `; the server saw it closed by the ${facts.closed.by} with ${facts.closed.code}`)
        : '';
      const byServer = facts && facts.closed && facts.closed.by === 'server';
      const after = Math.round(cut.after_open_ms / 1000);
      const text = byServer
        ? `The server closed the idle connection after ${after} s (code ${facts.closed.code}).`
        : `The connection was cut after ${after} s idle by something between (the server pings ` +
          `every ${seconds(ping)} s)${server}: a proxy or load balancer closes idle connections ` +
          `sooner; raise its timeout above ${seconds(ping)} s (nginx: proxy_read_timeout) or lower ` +
          'the server\'s [keepalive] interval below it.';
      finish(step, 'fail', `closed with ${cut.code} after ${seconds(cut.after_open_ms)} s idle`);
      find('fail', 'idle-cut', text);
      return;
    }
    const message = JSON.stringify({ after_idle_s: idleSeconds });
    socket.send(message);
    const echo = await socket.receive();
    obs.echo_after_idle = echo === message;
    obs.close = await socket.close(1000, 'test done');
    if (!obs.echo_after_idle) {
      finish(step, 'fail', 'open, but nothing came back after the idle time');
      find('fail', 'idle-silent',
        `After ${idleSeconds} s idle the WebSocket stayed open but a message sent then did not come back: ` +
        'something between silently dropped the connection.');
      return;
    }
    finish(step, 'ok', `held ${idleSeconds} s idle, then a message came back (the server pings every ${seconds(ping)} s)`);
  }

  async function compressionStep() {
    const step = addStep('compression', 'Compression');
    const obs = step.observations;
    const id = await newProbe('WebSocket compression');
    step.probe = id;
    const socket = new Socket(probeUrl(id), [PROBE_PROTOCOL], 'compression');
    if (!(await socket.open())) {
      finish(step, 'skipped', 'no WebSocket (see above)');
      return;
    }
    obs.extensions = socket.ws.extensions;
    const unit = '{"compress":"me","repeat":true} ';
    const text = unit.repeat(Math.ceil(COMPRESSIBLE_BYTES / unit.length)).slice(0, COMPRESSIBLE_BYTES);
    const sent = performance.now();
    socket.send(text);
    const echo = await socket.receive();
    obs.round_trip_ms = Math.round(performance.now() - sent);
    obs.intact = echo === text;
    obs.close = await socket.close(1000, 'test done');
    step.server_record = await readRecord(id);
    const facts = step.server_record && step.server_record.websocket;
    const deflate = /permessage-deflate/.test(obs.extensions);
    if (!obs.intact) {
      finish(step, 'fail', `a ${COMPRESSIBLE_BYTES / 1024} KiB message did not come back intact`);
      find('fail', 'large-message-lost',
        `A ${COMPRESSIBLE_BYTES / 1024} KiB message did not come back intact (extensions: ${obs.extensions || 'none'}).`);
      return;
    }
    const size = `a ${COMPRESSIBLE_BYTES / 1024} KiB message came back intact in ${obs.round_trip_ms} ms`;
    if (deflate) {
      finish(step, 'ok', `permessage-deflate negotiated; ${size}`);
    } else if (report.server.compression === false) {
      finish(step, 'ok', `compression is off on this server ([deflate] enabled = false); ${size}`);
    } else if (facts && !/permessage-deflate/.test(facts.offered_extensions || '')) {
      finish(step, 'warn', `not compressed; ${size}`);
      find('warn', 'compression-offer-lost',
        'The browser\'s offer of compression did not reach the server: something between removes ' +
        'Sec-WebSocket-Extensions. Messages travel uncompressed.');
    } else {
      finish(step, 'warn', `not compressed; ${size}`);
      find('warn', 'compression-answer-lost',
        `The server agreed to compression (${facts && facts.extensions}) but the browser did not see it: ` +
        'something between removes Sec-WebSocket-Extensions. Messages travel uncompressed.');
    }
  }

  // ------------------------------------------------------------ the run

  async function run() {
    $('run').disabled = true;
    $('download').disabled = true;
    $('steps').replaceChildren();
    $('diagnosis').replaceChildren();
    $('probes').replaceChildren();
    $('transport').textContent = '';
    t0 = performance.now();
    report = {
      tool: 'wsbus connectivity test',
      format: 1,
      page: location.origin + location.pathname + location.search,
      started_at: new Date().toISOString(),
      finished_at: null,
      user_agent: navigator.userAgent,
      settings: { idle_s: idleSeconds, recording: $('record').checked },
      server: null,
      probes: [],
      steps: [],
      findings: [],
      bus_transport: null,
      fallback_works: null,
      browser_log: [],
      browser_log_not_kept: 0,
    };
    setState('running', 'Running…');
    try {
      if (await httpStep()) {
        const rawWorked = await rawSocketStep();
        const busSocket = await busSocketStep(rawWorked);
        const busPolling = await busLongPollStep();
        await idleStep();
        await compressionStep();
        report.bus_transport = busSocket ? 'websocket' : busPolling.works ? 'long-polling' : 'none';
        report.fallback_works = busPolling.works;
        $('transport').textContent = busSocket
          ? `The bus would use WebSocket${busPolling.works ? '; its fallback, long-polling, works too' : '; its fallback, long-polling, does not work (see below)'}.`
          : busPolling.works
            ? 'The bus would use long-polling: WebSocket does not work here, and the fallback works.'
            : 'The bus cannot connect over either transport.';
      }
      if (!report.findings.some((f) => f.level !== 'ok')) {
        find('ok', 'all-ok', 'Everything works between this browser and the server.');
      }
      setState('done', 'Done.');
    } catch (e) {
      find('fail', 'page-error', `The test stopped: ${e.message}`);
      setState('done', 'Stopped by an error.');
    } finally {
      report.finished_at = new Date().toISOString();
      $('run').disabled = false;
      $('download').disabled = false;
    }
  }

  function download() {
    const steps = report.steps.map(({ element, ...step }) => step);
    const json = JSON.stringify({ ...report, steps }, null, 2);
    const link = document.createElement('a');
    link.href = URL.createObjectURL(new Blob([json], { type: 'application/json' }));
    const first = report.probes.length > 0 ? report.probes[0].id : 'no-probe';
    link.download = `websocket-test-${first}.json`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }

  $('record').checked = query.get('record') === '1';
  $('run').addEventListener('click', run);
  $('download').addEventListener('click', download);
  run();
})();
