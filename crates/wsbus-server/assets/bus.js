// A small Bayeux client for the demo page's channel chat: enough of the
// protocol to show the bus at work (handshake, connect, subscribe,
// unsubscribe, publish) over WebSocket, with long-polling when WebSocket is
// not offered or does not open. Applications with more needs use the CometD
// or Faye clients, which talk to the same endpoint unmodified.
'use strict';

// eslint-disable-next-line no-unused-vars
class BayeuxClient {
  // url: the bus path ('/amb'); transport: 'auto', 'websocket' or
  // 'long-polling'; accessToken: a JWT sent in the handshake's
  // ext.access_token (the session is its user's until it expires), or null;
  // onState(text) reports the connection state.
  constructor(url, { transport = 'auto', accessToken = null, onState = () => {} } = {}) {
    this.url = url;
    this.wanted = transport;
    this.accessToken = accessToken;
    this.onState = onState;
    this.transport = null; // the one in use
    this.clientId = null;
    this.nextId = 1;
    this.pending = new Map(); // message id -> {resolve, reject}
    this.listeners = new Map(); // channel -> callback
    this.socket = null;
    this.stopped = false;
  }

  // Handshake, choose the transport, start connecting.
  async start() {
    this.stopped = false;
    this.onState('handshaking');
    const handshake = {
      channel: '/meta/handshake',
      version: '1.0',
      supportedConnectionTypes: ['websocket', 'long-polling'],
    };
    if (this.accessToken !== null) handshake.ext = { access_token: this.accessToken };
    const [reply] = await this.post([handshake]);
    if (!reply || !reply.successful) throw new Error('handshake refused: ' + (reply && reply.error));
    this.clientId = reply.clientId;
    const offered = reply.supportedConnectionTypes || [];
    if (this.wanted !== 'long-polling' && offered.includes('websocket') && await this.openSocket()) {
      this.transport = 'websocket';
    } else if (this.wanted === 'websocket') {
      throw new Error('WebSocket is not available');
    } else {
      this.transport = 'long-polling';
    }
    this.onState('connected over ' + this.transport);
    this.connectLoop();
  }

  // Resolves to true once a WebSocket to the bus is open, false if it fails.
  openSocket() {
    return new Promise((resolve) => {
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const ws = new WebSocket(scheme + '//' + location.host + this.url);
      let opened = false;
      ws.addEventListener('open', () => { opened = true; this.socket = ws; resolve(true); });
      ws.addEventListener('message', (event) => this.receive(JSON.parse(event.data)));
      ws.addEventListener('close', () => {
        if (!opened) { resolve(false); return; }
        if (this.socket === ws) this.socket = null;
        if (!this.stopped) this.onState('WebSocket closed; reconnect by rejoining');
      });
    });
  }

  // Over long-polling: one POST per batch. Resolves to the reply messages
  // (also dispatched).
  async post(messages) {
    const response = await fetch(this.url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(messages),
    });
    if (!response.ok) throw new Error('POST ' + this.url + ' answered ' + response.status);
    const replies = await response.json();
    this.receive(replies);
    return replies;
  }

  // Send a batch over the transport in use; resolves to the reply of the
  // message with `id` (meta replies and publish acknowledgements).
  request(message) {
    message.id = String(this.nextId++);
    message.clientId = this.clientId;
    const reply = new Promise((resolve, reject) => this.pending.set(message.id, { resolve, reject }));
    if (this.transport === 'websocket' && this.socket) {
      this.socket.send(JSON.stringify([message]));
    } else {
      this.post([message]).catch((e) => this.fail(message.id, e));
    }
    return reply;
  }

  fail(id, error) {
    const waiter = this.pending.get(id);
    if (waiter) { this.pending.delete(id); waiter.reject(error); }
  }

  receive(messages) {
    for (const m of Array.isArray(messages) ? messages : [messages]) {
      if (m.id !== undefined && this.pending.has(m.id)) {
        const waiter = this.pending.get(m.id);
        this.pending.delete(m.id);
        waiter.resolve(m);
      }
      if (m.channel === '/meta/connect') {
        this.connected(m);
      } else if (m.data !== undefined && this.listeners.has(m.channel)) {
        this.listeners.get(m.channel)(m.data, m);
      }
    }
  }

  connectMessage() {
    return [{ channel: '/meta/connect', clientId: this.clientId, connectionType: this.transport }];
  }

  // Keep one /meta/connect outstanding: over WebSocket the next one goes
  // when the server answers the last; over long-polling in a loop.
  async connectLoop() {
    if (this.transport === 'websocket') {
      this.socket.send(JSON.stringify(this.connectMessage()));
      return;
    }
    while (!this.stopped && this.transport === 'long-polling') {
      try {
        await this.post(this.connectMessage());
      } catch (e) {
        this.onState('long-poll failed: ' + e.message);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  connected(reply) {
    if (!reply.successful) {
      this.stopped = true;
      this.onState('disconnected: ' + reply.error);
      return;
    }
    if (this.transport === 'websocket' && this.socket && !this.stopped) {
      this.socket.send(JSON.stringify(this.connectMessage()));
    }
  }

  // Subscribe; resolves to the server's reply (its `ext.presence` lists the
  // members of a /presence channel).
  async subscribe(channel, callback) {
    this.listeners.set(channel, callback);
    const reply = await this.request({ channel: '/meta/subscribe', subscription: channel });
    if (!reply.successful) {
      this.listeners.delete(channel);
      throw new Error(reply.error || 'subscribe refused');
    }
    return reply;
  }

  async unsubscribe(channel) {
    this.listeners.delete(channel);
    return this.request({ channel: '/meta/unsubscribe', subscription: channel });
  }

  async publish(channel, data) {
    const reply = await this.request({ channel, data });
    if (!reply.successful) throw new Error(reply.error || 'publish refused');
    return reply;
  }

  async disconnect() {
    this.stopped = true;
    try {
      await this.request({ channel: '/meta/disconnect' });
    } finally {
      if (this.socket) this.socket.close(1000);
      this.socket = null;
    }
  }
}
