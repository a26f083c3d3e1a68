// The browser side of `wsbus serve`'s chat demo. No framework, no external
// resources, and nothing the page's Content-Security-Policy forbids: no inline
// code or styles, and every piece of text from the server or the user is put in
// the page with textContent, never parsed as HTML.
'use strict';

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
    return scheme + '//' + location.host + '/chat';
  }

  function connect() {
    setStatus('connecting');
    setConnected(false);
    const ws = new WebSocket(chatUrl());
    socket = ws;
    ws.addEventListener('open', () => {
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
      setStatus(('disconnected: ' + event.code + ' ' + event.reason).trim());
      // The server ends the socket with 1008 when the HTTP session ends
      // (sign-out in another tab, idle expiry): offer to sign in again.
      if (event.code === 1008) {
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

  start();
})();
