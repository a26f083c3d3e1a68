// The connectivity test page (/websocket-test, SPEC §6) in headless Chromium through a real
// nginx in three configurations, asserting the diagnosis each one shows and the JSON report
// the page downloads: `tests/proxy/run.sh`, or `node --test tests/proxy/websocket-test.test.mjs`
// once `npm ci` has run here and nginx is installed.
//
// One `wsbus serve` (WSBUS_BIN, default target/release/wsbus); one nginx (NGINX_BIN) with a
// plain-HTTP server per configuration, all proxying to it:
//   websocket:     WebSocket proxied as nginx's guide says (Upgrade and Connection forwarded);
//   no-upgrade:    `Upgrade` and `Connection: upgrade` not forwarded (the usual mistake);
//   short-timeout: as `websocket`, with proxy_read_timeout 3s, shorter than the page's idle
//                  hold and held long-poll (?idle=6).
// The page runs in short mode (?idle=6) so that the three runs take seconds, not minutes.
// DEV_PAGE_JS=path serves the page's script from that file instead of the binary's copy
// (working on the page without rebuilding the server).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import {
  freePort, get, makeWorkDir, removeWorkDir, startNginxWithConfig, startWsbus, stopProcess,
} from './harness.mjs';

const IDLE_S = 6; // the page's idle hold and held long-poll, in its short mode
const READ_TIMEOUT_S = 3; // nginx's proxy_read_timeout in `short-timeout`: below IDLE_S
const PAGE_TIMEOUT = 60_000; // a whole page run: about 2 × IDLE_S plus round trips
const PROBE_ID = /^[0-9a-f]{32}$/;

// What each nginx server block does besides proxy_pass.
const VARIANTS = {
  websocket: `
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 60s;`,
  // proxy_http_version 1.1 keeps long-polling sound; nginx drops the hop-by-hop Upgrade and
  // sends its own "Connection: close", as when the WebSocket lines are forgotten.
  'no-upgrade': `
            proxy_http_version 1.1;
            proxy_read_timeout 60s;`,
  'short-timeout': `
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout ${READ_TIMEOUT_S}s;`,
};

function nginxConf(dir, servers) {
  const temp = (what) => `${what}_temp_path ${join(dir, `${what}_temp`)};`;
  const server = ({ port, upstream, variant }) => `
    server {  # ${variant}
        listen 127.0.0.1:${port};
        server_name localhost;
        location / {
            proxy_pass http://127.0.0.1:${upstream};
            proxy_set_header Host $http_host;
            ${VARIANTS[variant]}
        }
    }`;
  return `# Written by tests/proxy/websocket-test.test.mjs; pid and daemon come from the command line.
master_process off;
error_log ${join(dir, 'error.log')} info;
events {
    worker_connections 256;
}
http {
    access_log ${join(dir, 'access.log')};
    ${temp('client_body')}
    ${temp('proxy')}
    ${temp('fastcgi')}
    ${temp('uwsgi')}
    ${temp('scgi')}
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }
${servers.map(server).join('\n')}
}
`;
}

let dir;
let wsbus;
let nginx;
let browser;
const sites = {}; // variant -> http://127.0.0.1:<port>

function logs() {
  return [
    wsbus && `---- wsbus (${wsbus.url}):\n${wsbus.child.log.slice(-4000)}`,
    nginx && `---- nginx error log:\n${nginx.errorLog()}`,
  ].filter(Boolean).join('\n');
}

// Runs the page at `site` and returns { findings, steps, report, transport }.
async function runPage(site) {
  const context = await browser.newContext({ acceptDownloads: true });
  const page = await context.newPage();
  if (process.env.DEV_PAGE_JS) {
    await page.route('**/websocket-test.js', (route) => route.fulfill({
      contentType: 'text/javascript', body: readFileSync(process.env.DEV_PAGE_JS, 'utf8'),
    }));
  }
  try {
    await page.goto(`${site}/websocket-test?idle=${IDLE_S}&record=1`);
    try {
      await page.waitForSelector('#state[data-state="done"]', { timeout: PAGE_TIMEOUT });
    } catch (e) {
      const text = await page.evaluate(() => document.body.innerText).catch(() => '(unreadable)');
      throw new Error(`the page did not finish within ${PAGE_TIMEOUT} ms: ${e.message}\n${text}\n${logs()}`);
    }
    const shown = await page.evaluate(() => ({
      findings: [...document.querySelectorAll('#diagnosis > li')].map((li) => ({
        level: li.className, code: li.dataset.code, text: li.textContent,
      })),
      steps: Object.fromEntries([...document.querySelectorAll('#steps > li')].map((li) => [li.dataset.step, li.dataset.status])),
      transport: document.getElementById('transport').textContent,
    }));
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    const report = JSON.parse(readFileSync(await download.path(), 'utf8'));
    console.log(`${site}: ${shown.transport}\n  ${shown.findings.map((f) => f.text).join('\n  ')}`);
    return { ...shown, report, filename: download.suggestedFilename() };
  } finally {
    await context.close();
  }
}

const describeRun = (run) => JSON.stringify({ findings: run.findings, steps: run.steps, transport: run.transport }, null, 2);
const finding = (run, code) => run.findings.find((f) => f.code === code);
const step = (run, name) => run.report.steps.find((s) => s.name === name);

// What every report carries, whatever the configuration.
function assertReport(run, site) {
  const { report } = run;
  assert.equal(report.tool, 'wsbus connectivity test');
  assert.equal(report.page, `${site}/websocket-test?idle=${IDLE_S}&record=1`);
  assert.equal(report.settings.idle_s, IDLE_S);
  assert.equal(report.settings.recording, true);
  assert.ok(report.probes.length >= 4, `probe ids: ${JSON.stringify(report.probes)}`);
  for (const probe of report.probes) assert.match(probe.id, PROBE_ID);
  assert.equal(run.filename, `websocket-test-${report.probes[0].id}.json`);
  assert.deepEqual(report.findings.map((f) => f.code), run.findings.map((f) => f.code),
    'the report carries the findings shown');
  assert.equal(report.server.keepalive_interval_ms, 30_000);
  assert.equal(report.server.bus_path, '/amb');
  // Recording: the browser side of every exchange.
  assert.ok(report.browser_log.some((e) => e.direction === 'in' && e.channel === '201 POST /websocket-test/probe'),
    'the recorded browser side has the probes created');
  assert.ok(report.browser_log.some((e) => e.channel.startsWith('POST /amb')),
    'the recorded browser side has the bus requests');
  for (const s of report.steps) {
    if (s.probe) assert.ok(report.probes.some((p) => p.id === s.probe), `step ${s.name}'s probe is listed`);
  }
}

describe('the connectivity test page through nginx', { timeout: 240_000 }, () => {
  before(async () => {
    dir = makeWorkDir();
    wsbus = await startWsbus(dir, 'wsbus', {});
    const servers = [];
    for (const variant of Object.keys(VARIANTS)) {
      const port = await freePort();
      servers.push({ port, upstream: wsbus.port, variant });
      sites[variant] = `http://127.0.0.1:${port}`;
    }
    nginx = await startNginxWithConfig(dir, 'nginx.conf', nginxConf(dir, servers), Object.values(sites));
    browser = await chromium.launch({
      executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
      timeout: 30_000,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    console.log(`nginx ${JSON.stringify(sites)} -> wsbus ${wsbus.url}; files in ${dir}`);
  });

  after(async () => {
    await browser?.close();
    await stopProcess(nginx?.child);
    await stopProcess(wsbus?.child);
    removeWorkDir(dir);
  });

  test('bad probe ids get a clear 400 or 404 and no record', async () => {
    const base = `${wsbus.url}/websocket-test/probe`;
    const long = await get(`${base}/${'a'.repeat(10 * 1024)}`);
    assert.equal(long.status, 400);
    assert.match(JSON.parse(long.body).error, /10240 bytes long/);
    assert.equal((await get(`${base}/not-a-probe-id`)).status, 404);
    assert.equal((await get(`${base}/bad%20id!x`)).status, 400);
    assert.equal((await get(`${base}?id=never-created-1`)).status, 404);
    assert.equal((await get(`${base}?id=short`)).status, 400);
  });

  test('WebSocket proxied correctly: everything works, the bus uses WebSocket', async () => {
    const run = await runPage(sites.websocket);
    const context = `${describeRun(run)}\n${logs()}`;
    assertReport(run, sites.websocket);
    assert.deepEqual(run.findings.filter((f) => f.level !== 'ok'), [], context);
    assert.ok(finding(run, 'websocket-ok'), context);
    assert.ok(finding(run, 'all-ok'), context);
    for (const name of ['http', 'websocket', 'bus-websocket', 'bus-long-polling', 'idle', 'compression']) {
      assert.equal(run.steps[name], 'ok', `step ${name}\n${context}`);
    }
    assert.equal(run.report.bus_transport, 'websocket');
    assert.equal(run.report.fallback_works, true);
    assert.match(run.transport, /would use WebSocket/);
    const socket = step(run, 'websocket');
    assert.equal(socket.observations.protocol, 'wsbus-probe');
    assert.equal(socket.observations.round_trips_ms.length, 5);
    const facts = socket.server_record.websocket;
    assert.equal(facts.upgrade, 'websocket');
    assert.equal(facts.connection_upgrade, true);
    assert.equal(facts.status, 101);
    assert.equal(facts.messages_in, 5);
    assert.deepEqual({ by: facts.closed.by, code: facts.closed.code }, { by: 'client', code: 1000 });
    assert.match(step(run, 'compression').observations.extensions, /permessage-deflate/);
    const pings = run.report.browser_log.filter((e) => e.channel === 'probe message');
    assert.equal(pings.length, 10, 'the recorded browser side has the 5 pings and their echoes');
    const held = step(run, 'bus-long-polling').observations.held_connect;
    assert.equal(held.successful, true, context);
    assert.ok(held.server.answered_ms - held.server.arrived_ms >= IDLE_S * 1000 - 100,
      `the server held the connect: ${JSON.stringify(held)}`);
    // The server's own answer for the same probe id, as an operator would read it.
    const record = JSON.parse((await get(`${wsbus.url}/websocket-test/probe/${socket.probe}`)).body);
    assert.deepEqual(record.websocket, facts);
  });

  test('Upgrade not forwarded: the page says so, with the nginx lines; the bus falls back', async () => {
    const run = await runPage(sites['no-upgrade']);
    const context = `${describeRun(run)}\n${logs()}`;
    assertReport(run, sites['no-upgrade']);
    const missing = finding(run, 'upgrade-header-missing');
    assert.ok(missing, context);
    assert.equal(missing.level, 'fail');
    assert.match(missing.text, /the upgrade reached the server without its Upgrade header: a proxy is not configured for WebSocket/);
    assert.match(missing.text, /proxy_http_version 1\.1; proxy_set_header Upgrade \$http_upgrade; proxy_set_header Connection "upgrade";/);
    assert.equal(run.steps.websocket, 'fail');
    assert.equal(run.steps['bus-websocket'], 'fail');
    assert.equal(run.steps['bus-long-polling'], 'ok', context);
    assert.equal(run.report.bus_transport, 'long-polling');
    assert.equal(run.report.fallback_works, true);
    assert.match(run.transport, /would use long-polling.*fallback works/);
    const facts = step(run, 'websocket').server_record.websocket;
    assert.equal(facts.upgrade, null);
    assert.equal(facts.websocket_key, true);
    assert.equal(facts.status, 400);
    assert.equal(facts.accepted, false);
  });

  test('a proxy read timeout shorter than the idle hold: idle cut and long-polls cut', async () => {
    const run = await runPage(sites['short-timeout']);
    const context = `${describeRun(run)}\n${logs()}`;
    assertReport(run, sites['short-timeout']);
    assert.ok(finding(run, 'websocket-ok'), context);
    const idle = finding(run, 'idle-cut');
    assert.ok(idle, context);
    const after = Number(/the connection was cut after (\d+) s idle by something between \(the server pings every 30 s\)/i.exec(idle.text)?.[1]);
    assert.ok(after >= READ_TIMEOUT_S - 1 && after <= READ_TIMEOUT_S + 2, `cut after ${after} s: ${idle.text}`);
    const cut = finding(run, 'long-poll-cut');
    assert.ok(cut, context);
    assert.match(cut.text, /Long-polling responses were cut.*proxy's read timeout is shorter than the server's hold/);
    assert.equal(run.steps.idle, 'fail');
    assert.equal(run.steps['bus-websocket'], 'ok', context);
    assert.equal(run.report.bus_transport, 'websocket');
    const held = step(run, 'bus-long-polling').observations.held_connect;
    assert.equal(held.http_status, 504, JSON.stringify(held));
    assert.ok(held.browser_ms < IDLE_S * 1000, JSON.stringify(held));
    assert.ok(held.server, 'the server recorded the held connect');
    const idleFacts = step(run, 'idle').server_record.websocket;
    assert.equal(idleFacts.status, 101);
    assert.equal(idleFacts.closed?.by, 'dropped', JSON.stringify(idleFacts));
  });
});
