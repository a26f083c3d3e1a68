// The browser side of `wsbus serve`'s chat demo. No framework, no external
// resources, and nothing the page's Content-Security-Policy forbids: no inline
// code or styles, and every piece of text from the server or the user is put in
// the page with textContent, never parsed as HTML.
'use strict';

// The record switch (SPEC §6, seed 000: "client-side logging"): while it is
// on, every WebSocket message this page sends or receives (the chat socket
// and the bus) is kept in memory, bounded, and "Download" saves them as JSON
// lines in the shape of the server's capture (`GET /admin/api/capture/<id>`),
// so that both halves of a reproduction can be laid side by side. Here
// `direction` is the page's: `out` sent, `in` received (the server's capture
// says the opposite), and each line has `"side": "browser"`. Access tokens,
// `Authorization`, cookies and `password` fields are masked as the server's
// capture masks them. `WebSocket` is wrapped once, before any socket opens;
// the wrapper does nothing while recording is off.
(function () {
  // Records kept at most, and their bytes (a tab must not grow without end).
  const MAX_RECORDS = 10000;
  const MAX_BYTES = 16 * 1024 * 1024;
  // Binary payloads: base64 of at most this many bytes.
  const MAX_BINARY = 4096;
  const REDACTED = '<redacted>';
  const SECRET_FIELDS = new Set(['access_token', 'authorization', 'cookie', 'set-cookie', 'password']);

  const recorder = { on: false, lines: [], bytes: 0, dropped: 0, nextSocket: 1 };

  function redactText(s) {
    return s.replace(/(access_token=)[^&;"\s]*/gi, '$1' + REDACTED);
  }

  function redact(value) {
    if (Array.isArray(value)) return value.map(redact);
    if (value !== null && typeof value === 'object') {
      const out = {};
      for (const [k, v] of Object.entries(value)) {
        out[k] = SECRET_FIELDS.has(k.toLowerCase()) ? REDACTED : redact(v);
      }
      return out;
    }
    return typeof value === 'string' ? redactText(value) : value;
  }

  function push(line) {
    const text = JSON.stringify(line);
    if (recorder.lines.length >= MAX_RECORDS || recorder.bytes + text.length + 1 > MAX_BYTES) {
      recorder.dropped += 1;
      return;
    }
    recorder.lines.push(text);
    recorder.bytes += text.length + 1;
  }

  function base64(bytes) {
    let binary = '';
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary);
  }

  function record(ws, direction, data) {
    if (!recorder.on) return;
    const base = {
      time: new Date().toISOString(),
      side: 'browser',
      socket: String(ws.recordId),
      url: redactText(ws.url),
      direction,
    };
    if (typeof data === 'string') {
      let parsed;
      try { parsed = /^\s*[[{]/.test(data) ? JSON.parse(data) : undefined; } catch (e) { parsed = undefined; }
      const payload = parsed === undefined ? redactText(data) : JSON.stringify(redact(parsed));
      push(Object.assign({}, base, { opcode: 'text', size: new TextEncoder().encode(data).length, payload, truncated: false }));
      // Bayeux: one line per message of the batch, with its channel.
      const batch = Array.isArray(parsed) ? parsed : (parsed && typeof parsed === 'object' ? [parsed] : []);
      for (const m of batch) {
        if (m && typeof m.channel === 'string') {
          push(Object.assign({}, base, { channel: m.channel, clientId: m.clientId === undefined ? null : m.clientId, bayeux: redact(m) }));
        }
      }
      return;
    }
    let bytes = null;
    if (data instanceof ArrayBuffer) bytes = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const size = bytes ? bytes.length : (data && data.size) || 0;
    push(Object.assign({}, base, {
      opcode: 'binary',
      size,
      // A Blob would have to be read asynchronously: its size only.
      payload: bytes ? base64(bytes.subarray(0, MAX_BINARY)) : null,
      truncated: bytes ? bytes.length > MAX_BINARY : size > 0,
    }));
  }

  const Native = window.WebSocket;
  class RecordingWebSocket extends Native {
    constructor(url, protocols) {
      super(url, protocols);
      this.recordId = recorder.nextSocket++;
      this.addEventListener('message', (event) => record(this, 'in', event.data));
    }

    send(data) {
      record(this, 'out', data);
      super.send(data);
    }
  }
  window.WebSocket = RecordingWebSocket;

  function ready() {
    const toggle = document.getElementById('record');
    const download = document.getElementById('record-download');
    const count = document.getElementById('record-count');
    if (!toggle || !download || !count) return;
    const show = () => {
      count.textContent = recorder.lines.length + ' messages' +
        (recorder.dropped ? ', ' + recorder.dropped + ' dropped (limit reached)' : '');
      download.disabled = recorder.lines.length === 0;
    };
    toggle.addEventListener('change', () => {
      recorder.on = toggle.checked;
      show();
    });
    download.addEventListener('click', () => {
      const blob = new Blob([recorder.lines.join('\n') + '\n'], { type: 'application/x-ndjson' });
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = 'wsbus-browser-' + new Date().toISOString().replace(/[:.]/g, '-') + '.jsonl';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    });
    setInterval(show, 1000);
    show();
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', ready);
  else ready();
})();

(function () {
  const $ = (id) => document.getElementById(id);
  const loading = $('loading');
  const login = $('login');
  const account = $('account');
  const chat = $('chat');
  const me = $('me');
  const status = $('status');
  const messages = $('messages');
  const sendForm = $('send');
  const text = $('text');
  const sendButton = $('send-button');
  const error = $('error');

  let socket = null;

  // An access token handed to the page in its address: /#access_token=<JWT>.
  // The fragment is never sent to a server (nor written in its access log);
  // it is read once and removed from the address bar at once, so that it is
  // not bookmarked, shared or kept in the history. The token then lives in
  // this page's memory only: a reload needs a new one. With a token, the chat
  // socket and the bus handshake carry it (the server verifies it and names
  // the user); without one, the page uses the demo login as before.
  const accessToken = takeAccessToken();

  function takeAccessToken() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const token = fragment.get('access_token');
    if (token === null) return null;
    fragment.delete('access_token');
    const rest = fragment.toString();
    history.replaceState(history.state, '', location.pathname + location.search + (rest ? '#' + rest : ''));
    return token === '' ? null : token;
  }

  // The token's `name` claim (else `sub`), to show who is signed in. Display
  // only: the page cannot verify the token; the server does, and its welcome
  // names the user it verified.
  function tokenName(token) {
    try {
      const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      const binary = atob(part.padEnd(Math.ceil(part.length / 4) * 4, '='));
      const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
      for (const claim of [claims.name, claims.sub]) {
        if (typeof claim === 'string' && claim !== '') return claim;
      }
    } catch (e) {
      // Not a JWT the page can read: the server will say (it refuses the socket).
    }
    return 'token holder';
  }

  function setStatus(s) {
    status.textContent = s;
  }

  function showError(s) {
    error.textContent = s;
    error.hidden = false;
  }

  function setConnected(open) {
    text.disabled = !open;
    sendButton.disabled = !open;
  }

  // The user's session as the server sees it: the name, or null.
  async function whoAmI() {
    const response = await fetch('/api/me', {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' },
    });
    if (!response.ok) throw new Error('GET /api/me answered ' + response.status);
    const body = await response.json();
    return typeof body.user === 'string' ? body.user : null;
  }

  function showSignedOut() {
    account.hidden = true;
    login.hidden = false;
  }

  function showSignedIn(user) {
    me.textContent = user;
    login.hidden = true;
    account.hidden = false;
    chat.hidden = false;
    $('bus').hidden = false;
  }

  function addMessage(s) {
    const li = document.createElement('li');
    li.textContent = s;
    // Follow the conversation unless the reader has scrolled up.
    const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 8;
    messages.appendChild(li);
    if (atBottom) messages.scrollTop = messages.scrollHeight;
  }

  function chatUrl() {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    // A browser cannot set an Authorization header on a WebSocket: the token
    // goes in the access_token query parameter (which the server reads and
    // keeps out of its logs).
    const query = accessToken === null ? '' : '?access_token=' + encodeURIComponent(accessToken);
    return scheme + '//' + location.host + '/chat' + query;
  }

  function connect() {
    setStatus('connecting');
    setConnected(false);
    const ws = new WebSocket(chatUrl());
    socket = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      opened = true;
      setStatus('connected');
      setConnected(true);
      text.focus();
    });
    ws.addEventListener('message', (event) => {
      if (typeof event.data === 'string') addMessage(event.data);
    });
    ws.addEventListener('close', (event) => {
      if (socket !== ws) return;
      socket = null;
      setConnected(false);
      if (!opened) {
        // Refused at the upgrade (e.g. 401: no token, or a token the server
        // does not accept) or unreachable: a page cannot see the HTTP status.
        setStatus('could not connect' + (accessToken === null ? '' : ' with this access token'));
        return;
      }
      setStatus(('disconnected: ' + event.code + ' ' + event.reason).trim());
      // The server ends the socket with 1008 when the HTTP session ends
      // (sign-out in another tab, idle expiry), or when the token expires.
      // Without a token, offer to sign in again.
      if (event.code === 1008 && accessToken === null) {
        whoAmI().then((user) => { if (user === null) showSignedOut(); }, () => {});
      }
    });
  }

  sendForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const s = text.value;
    if (s === '' || socket === null || socket.readyState !== WebSocket.OPEN) return;
    // Sent as typed; it shows in the list when the server relays it back.
    socket.send(s);
    text.value = '';
    text.focus();
  });

  async function start() {
    if (accessToken !== null) {
      loading.hidden = true;
      showSignedIn(tokenName(accessToken));
      // Signing out is for the demo login's cookie session; a token is
      // dropped by closing the page.
      $('logout').form.hidden = true;
      connect();
      return;
    }
    let user;
    try {
      user = await whoAmI();
    } catch (e) {
      showError('Could not reach the server: ' + e.message);
      return;
    } finally {
      loading.hidden = true;
    }
    if (user === null) {
      showSignedOut();
      $('user').focus();
    } else {
      showSignedIn(user);
      connect();
    }
  }

  // ------------------------------------------------ rooms on the message bus

  const busStatus = $('bus-status');
  const presence = $('presence');
  const busMessages = $('bus-messages');
  const busText = $('bus-text');
  const busSendButton = $('bus-send-button');
  const joinButton = $('join');
  const leaveButton = $('leave');
  // ?bus=long-polling (or websocket) forces a transport.
  const busTransport = new URLSearchParams(location.search).get('bus') || 'auto';
  let bus = null; // {client, room, user, members}

  function setJoined(joined) {
    busText.disabled = !joined;
    busSendButton.disabled = !joined;
    leaveButton.disabled = !joined;
    joinButton.disabled = joined;
    $('room').disabled = joined;
  }

  // Who is in the room, by session: {clientId: user}.
  function renderPresence() {
    presence.replaceChildren();
    const names = Object.values(bus ? bus.members : {}).map((u) => u ?? 'anonymous').sort();
    for (const name of names) {
      const li = document.createElement('li');
      li.textContent = name;
      presence.appendChild(li);
    }
  }

  function addBusMessage(s) {
    const li = document.createElement('li');
    li.textContent = s;
    busMessages.appendChild(li);
    busMessages.scrollTop = busMessages.scrollHeight;
  }

  async function join(room) {
    const user = me.textContent;
    const client = new BayeuxClient('/amb', {
      transport: busTransport,
      accessToken,
      onState: (s) => { busStatus.textContent = s; },
    });
    bus = { client, room, user, members: {} };
    setJoined(true);
    try {
      await client.start();
      // Presence first, so this session's own join is seen too.
      const reply = await client.subscribe('/presence/chat/' + room, (change) => {
        if (change.action === 'join') bus.members[change.clientId] = change.user;
        if (change.action === 'leave') delete bus.members[change.clientId];
        renderPresence();
      });
      for (const m of (reply.ext && reply.ext.presence && reply.ext.presence.members) || []) {
        bus.members[m.clientId] = m.user;
      }
      renderPresence();
      await client.subscribe('/chat/' + room, (data) => {
        if (data && typeof data.text === 'string') addBusMessage(String(data.user) + ': ' + data.text);
      });
      busStatus.textContent = 'in ' + room + ' over ' + client.transport;
      busText.focus();
    } catch (e) {
      // Leave first: it reports "left <room>", which would hide why.
      await leave();
      busStatus.textContent = 'could not join: ' + e.message;
    }
  }

  async function leave() {
    const current = bus;
    bus = null;
    setJoined(false);
    renderPresence();
    if (current) {
      try { await current.client.disconnect(); } catch (e) { /* already gone */ }
      busStatus.textContent = 'left ' + current.room;
    }
  }

  $('room-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const room = $('room').value;
    if (bus === null && /^[a-z0-9-]{1,32}$/.test(room)) join(room);
  });
  leaveButton.addEventListener('click', () => { leave(); });

  $('bus-send').addEventListener('submit', async (event) => {
    event.preventDefault();
    const s = busText.value;
    if (s === '' || bus === null) return;
    busText.value = '';
    // The bus relays to the other members (seed 001), so show our own here.
    // The name is what this page claims; a real application would have the
    // server stamp it (an Authorizer or a /service handler).
    try {
      await bus.client.publish('/chat/' + bus.room, { user: bus.user, text: s });
      addBusMessage(bus.user + ': ' + s);
    } catch (e) {
      busStatus.textContent = 'not sent: ' + e.message;
    }
    busText.focus();
  });

  start();
})();
