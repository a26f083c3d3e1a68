// The admin page of `wsbus serve`. No framework and nothing the page's
// Content-Security-Policy forbids: no inline code or styles. Every value
// from the server (user names, paths, channel names: data clients chose)
// is put in the page with textContent, never parsed as HTML.
//
// The token is kept in sessionStorage (this tab, until it closes) and sent
// only as `Authorization: Bearer`, never in a URL.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = 'wsbus-admin-token';
  // Often enough to follow a reproduction, rarely enough to cost nothing.
  const AUTO_REFRESH_MS = 5000;
  const signin = $('signin');
  const panel = $('panel');
  const error = $('error');

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function showError(message) {
    error.textContent = message;
    error.hidden = !message;
  }

  // One API call: JSON in and out; a 401 forgets the token.
  async function api(method, path, body) {
    const headers = { Authorization: 'Bearer ' + token() };
    const init = { method, headers, cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch('/admin/api/' + path, init);
    let json = null;
    try {
      json = await response.json();
    } catch (_) {
      // Not JSON: reported below by status.
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      show();
    }
    if (!response.ok) {
      throw new Error((json && json.message) || ('HTTP ' + response.status));
    }
    return json;
  }

  function cell(row, text) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined ? '' : String(text);
    row.appendChild(td);
    return td;
  }

  function fill(tbody, items, render) {
    tbody.replaceChildren();
    for (const item of items) {
      const row = document.createElement('tr');
      render(row, item);
      tbody.appendChild(row);
    }
  }

  async function loadInfo() {
    const info = await api('GET', 'info');
    $('server').textContent = info.name + ' ' + info.version + ', node ' + info.node +
      ', up ' + info.uptime_seconds + ' s';
  }

  async function loadConnections() {
    const list = await api('GET', 'connections');
    $('connections-count').textContent = '(' + list.total + (list.truncated ? ', first ' + list.connections.length + ' shown' : '') + ')';
    fill(document.querySelector('#connections tbody'), list.connections, (row, c) => {
      row.dataset.id = c.id;
      cell(row, c.id);
      cell(row, c.address);
      cell(row, c.user);
      cell(row, c.path);
      cell(row, c.subprotocol);
      cell(row, c.extensions);
      cell(row, c.tls ? 'yes' : 'no');
      cell(row, Math.round(c.age_seconds));
      cell(row, c.queued_bytes);
      const td = cell(row, '');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'disconnect';
      button.textContent = 'Disconnect';
      button.addEventListener('click', () => disconnect(c.id));
      td.appendChild(button);
    });
  }

  async function disconnect(id) {
    try {
      await api('DELETE', 'connections/' + encodeURIComponent(id));
      // The socket leaves the list once its closing handshake ends (at most
      // the server's close timeout): look again a few times.
      for (const delay of [200, 1000, 3000]) setTimeout(refresh, delay);
    } catch (e) {
      showError('disconnect ' + id + ': ' + e.message);
    }
  }

  async function loadGroups() {
    const list = await api('GET', 'groups');
    fill(document.querySelector('#groups tbody'), list.groups, (row, g) => {
      cell(row, g.name);
      cell(row, g.size);
    });
  }

  async function loadBus() {
    const bus = await api('GET', 'bus');
    $('bus-sessions').textContent = 'Sessions: ' + bus.sessions.total + ' (WebSocket ' +
      bus.sessions.websocket + ', long-polling ' + bus.sessions.long_polling + '); held connects ' +
      bus.held_connects + (bus.websocket_enabled ? '' : '; WebSocket transport off');
    fill(document.querySelector('#channels tbody'), bus.channels, (row, ch) => {
      cell(row, ch.pattern);
      cell(row, ch.subscribers);
      cell(row, ch.presence === null ? '' : ch.presence.map((m) => m.user || m.client_id).join(', '));
    });
  }

  function showLog(state) {
    $('log-filter').textContent = state.filter;
    $('log-revert').textContent = state.revert_at
      ? 'reverts to “' + state.base + '” in ' + state.revert_in_seconds + ' s'
      : (state.directive ? 'until changed' : '');
  }

  async function loadLog() {
    showLog(await api('GET', 'log'));
  }

  async function loadCaptures() {
    const list = await api('GET', 'capture');
    fill(document.querySelector('#captures tbody'), list.captures, (row, c) => {
      row.dataset.id = c.id;
      for (const v of [c.id, c.selector, c.value, c.started, c.ends, c.running ? 'yes' : 'no',
        c.bytes, c.records, c.dropped]) cell(row, v);
      const td = cell(row, '');
      const get = document.createElement('button');
      get.type = 'button';
      get.className = 'capture-download';
      get.textContent = 'Download';
      get.addEventListener('click', () => downloadCapture(c.id));
      td.appendChild(get);
      if (c.running) {
        const stop = document.createElement('button');
        stop.type = 'button';
        stop.className = 'capture-stop';
        stop.textContent = 'Stop';
        stop.addEventListener('click', async () => {
          try {
            await api('DELETE', 'capture/' + encodeURIComponent(c.id));
            refresh();
          } catch (e) {
            showError('stop capture ' + c.id + ': ' + e.message);
          }
        });
        td.appendChild(stop);
      }
    });
  }

  // The download needs the token in a header: fetched here, then saved.
  async function downloadCapture(id) {
    try {
      const response = await fetch('/admin/api/capture/' + encodeURIComponent(id), {
        headers: { Authorization: 'Bearer ' + token() },
        cache: 'no-store',
      });
      if (!response.ok) throw new Error('HTTP ' + response.status);
      const blob = await response.blob();
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      a.download = 'wsbus-capture-' + id + '.jsonl';
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 10000);
    } catch (e) {
      showError('download capture ' + id + ': ' + e.message);
    }
  }

  async function refresh() {
    if (!token()) return;
    try {
      await Promise.all([loadInfo(), loadConnections(), loadGroups(), loadBus(), loadLog(), loadCaptures()]);
      showError('');
    } catch (e) {
      showError(e.message);
    }
  }

  function show() {
    const signedIn = token() !== null;
    signin.hidden = signedIn;
    panel.hidden = !signedIn;
    if (signedIn) refresh();
  }

  $('token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token').value.trim();
    $('token').value = '';
    if (value) sessionStorage.setItem(TOKEN_KEY, value);
    show();
  });

  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    show();
  });

  $('refresh').addEventListener('click', refresh);

  $('log-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { directive: $('directive').value.trim() };
    const ttl = $('ttl').value.trim();
    if (ttl) body.ttl = ttl;
    try {
      showLog(await api('PUT', 'log', body));
      showError('');
    } catch (e) {
      showError(e.message);
    }
  });

  $('log-reset').addEventListener('click', async () => {
    try {
      showLog(await api('DELETE', 'log'));
    } catch (e) {
      showError(e.message);
    }
  });

  // Keep the lists current while the panel is open.
  setInterval(() => { if (!panel.hidden) refresh(); }, AUTO_REFRESH_MS);

  show();
  $('capture-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { duration: $('capture-duration').value.trim() };
    body[$('capture-kind').value] = $('capture-value').value.trim();
    try {
      await api('POST', 'capture', body);
      showError('');
      refresh();
    } catch (e) {
      showError('capture: ' + e.message);
    }
  });
})();
