// The harness of proxy.test.mjs: a self-signed certificate, `wsbus serve` processes with
// configuration files written here, one nginx terminating TLS in front of them, and raw
// WebSocket upgrades. Everything lives in one temporary directory and on loopback ports
// picked at run time; nothing of the machine's own nginx (service, configuration, logs)
// is used.
//
// Addresses: test clients connect from 127.0.0.1 (and 127.0.0.3 where a second client
// address is needed); nginx reaches wsbus from 127.0.0.2 (`proxy_bind`), the one
// address wsbus is told to trust.

import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const TIMEOUT = 10_000;
const REPO = fileURLToPath(new URL('../../', import.meta.url));

/** The address nginx connects to wsbus from (`proxy_bind`), the only trusted proxy. */
export const PROXY_ADDRESS = '127.0.0.2';
/** A second client address, to tell "per client" from "per proxy" and "for everyone". */
export const OTHER_CLIENT_ADDRESS = '127.0.0.3';

// ---------------------------------------------------------------- wsbus configuration

// The configuration keys of SPEC §8 these tests depend on, in one place: rename here if
// the server's names change.
export const KEYS = {
  section: 'limits',
  trustedProxies: 'trusted_proxies', // CIDR list: peers whose X-Forwarded-* / Forwarded count
  connectionsPerIp: 'connections_per_ip', // WebSocket connections per client address
};

const tomlString = (s) => JSON.stringify(s); // a TOML basic string is a JSON string here

/**
 * The TOML of a `wsbus serve` configuration: `listen`, and under [limits] the trusted
 * proxies and connections per IP (each left out when undefined, or when its key is in
 * `omit`: keys the server under test does not know yet, see startWsbus).
 */
export function wsbusConfig({ listen, trustedProxies, connectionsPerIp }, omit = new Set()) {
  const lines = [`listen = ${tomlString(listen)}`];
  const limits = [];
  if (trustedProxies !== undefined && !omit.has(KEYS.trustedProxies)) {
    limits.push(`${KEYS.trustedProxies} = [${trustedProxies.map(tomlString).join(', ')}]`);
  }
  if (connectionsPerIp !== undefined && !omit.has(KEYS.connectionsPerIp)) {
    limits.push(`${KEYS.connectionsPerIp} = ${connectionsPerIp}`);
  }
  if (limits.length > 0) lines.push('', `[${KEYS.section}]`, ...limits);
  return lines.join('\n') + '\n';
}

// ---------------------------------------------------------------- the temporary directory

/** A fresh temporary directory for certificate, configurations, logs and pid file. */
export function makeWorkDir() {
  const dir = mkdtempSync(join(tmpdir(), 'wsbus-proxy-'));
  // nginx, started as root, creates its temp directories owned by `nobody`; let them be
  // reached (not listed) through this directory.
  chmodSync(dir, 0o711);
  return dir;
}

export function removeWorkDir(dir) {
  if (!dir) return;
  if (process.env.WSBUS_PROXY_KEEP) {
    console.log(`kept ${dir}`);
    return;
  }
  rmSync(dir, { recursive: true, force: true });
}

/** A TCP port free on 127.0.0.1 right now (the kernel's pick). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/**
 * A self-signed certificate for 127.0.0.1 and localhost (P-256, valid two days), made
 * with the openssl CLI: { cert, key } paths and the certificate's PEM, which clients
 * use as their only CA.
 */
export function makeCertificate(dir) {
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  execFileSync(process.env.OPENSSL || 'openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    '-addext', 'basicConstraints=critical,CA:TRUE',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  return { cert, key, pem: readFileSync(cert, 'utf8') };
}

// ---------------------------------------------------------------- processes

// A spawned process whose output is kept (the last 50-100 kB) for failure messages.
function spawnLogged(bin, args, what, env = process.env) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  child.what = what;
  child.log = '';
  child.exited = null;
  child.spawnError = null;
  child.on('error', (e) => (child.spawnError = e));
  child.on('exit', (code, signal) => (child.exited = signal ?? code));
  for (const stream of [child.stdout, child.stderr]) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      child.log += chunk;
      if (child.log.length > 100_000) child.log = child.log.slice(-50_000);
    });
  }
  return child;
}

/** Stops a spawned process by its PID: SIGTERM, then SIGKILL after 3 s. */
export async function stopProcess(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null || child.spawnError) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Polls `probe` (resolves truthy when ready) until it is, the process exits, or TIMEOUT.
async function waitReady(child, probe, describe) {
  const deadline = Date.now() + TIMEOUT;
  let lastError;
  while (Date.now() < deadline) {
    if (child.spawnError) throw new Error(`could not start ${child.what}: ${child.spawnError.message}`);
    if (child.exited !== null) {
      const error = new Error(`${child.what} exited (${child.exited}) before answering; its output:\n${child.log}`);
      error.output = child.log;
      throw error;
    }
    try {
      if (await probe()) return;
    } catch (e) {
      lastError = e;
    }
    await sleep(100);
  }
  throw new Error(
    `${child.what} did not answer within ${TIMEOUT} ms (last error: ` +
      `${lastError?.cause?.message ?? lastError?.message}); ${describe()}`,
  );
}

/** GET `url` (http or https, trusting `ca`): { status, headers, body }. */
export function get(url, { ca, headers = {} } = {}) {
  return new Promise((resolve, reject) => {
    const client = url.startsWith('https:') ? https : http;
    const request = client.get(url, { ca, headers, agent: false, timeout: 2000 }, (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body }));
    });
    request.on('timeout', () => request.destroy(new Error('timed out')));
    request.on('error', reject);
  });
}

export function wsbusBinary() {
  const bin = process.env.WSBUS_BIN || `${REPO}target/release/wsbus`;
  if (!existsSync(bin)) {
    throw new Error(`no wsbus binary at ${bin}: build it (cargo build --release -p wsbus-server), or set WSBUS_BIN`);
  }
  return bin;
}

/**
 * Starts `wsbus serve --config <dir>/<name>.toml` on 127.0.0.1:<port> and waits until it
 * answers GET /api/me. When the server refuses the configuration because it does not
 * know one of the KEYS (a server from before trusted-proxy support), that key is left out
 * and the server started without it: the tests that need the feature then fail for what
 * the server does, not because it did not start; the left-out keys are in `unknownKeys`
 * (and the test of the configuration keys fails with the server's own words).
 */
export async function startWsbus(dir, name, options) {
  const bin = wsbusBinary();
  const port = await freePort();
  const listen = `127.0.0.1:${port}`;
  const known = new Set(Object.values(KEYS));
  const omit = new Set();
  const refusals = [];
  for (;;) {
    const configPath = join(dir, `${name}.toml`);
    writeFileSync(configPath, wsbusConfig({ listen, ...options }, omit));
    const child = spawnLogged(bin, ['serve', '--config', configPath], `wsbus serve --config ${configPath}`);
    try {
      await waitReady(child, async () => (await get(`http://${listen}/api/me`)).status === 200,
        () => `its output:\n${child.log}`);
    } catch (e) {
      await stopProcess(child);
      const unknown = /unknown field `(\w+)`/.exec(e.output ?? '')?.[1];
      if (unknown && known.has(unknown) && !omit.has(unknown)) {
        omit.add(unknown);
        refusals.push(e.output.trim());
        continue;
      }
      throw e;
    }
    if (omit.size > 0) {
      console.log(`NOTE: ${bin} does not know [${KEYS.section}] ${[...omit].join(', ')}; ` +
        `${name} runs without: ${refusals.join(' | ')}`);
    }
    return { child, port, url: `http://${listen}`, unknownKeys: [...omit], refusals };
  }
}

/**
 * nginx.conf: one TLS server per entry of `servers` ({ port, upstream }), each proxying
 * HTTP and WebSocket to its wsbus from PROXY_ADDRESS, with the forwarding headers of a
 * usual TLS-terminating setup. Logs, temp files and the pid file stay in `dir`.
 */
export function nginxConfig(dir, { cert, key }, servers) {
  const temp = (what) => `${what}_temp_path ${join(dir, `${what}_temp`)};`;
  const server = ({ port, upstream }) => `
    server {
        listen 127.0.0.1:${port} ssl;
        server_name localhost;
        ssl_certificate ${cert};
        ssl_certificate_key ${key};

        location / {
            proxy_pass http://127.0.0.1:${upstream};
            proxy_bind ${PROXY_ADDRESS};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout 60s;
        }
    }`;
  return `# Written by tests/proxy/harness.mjs; pid and daemon come from the command line.
# One process, no master/worker split: it runs as whoever starts it (no switch to
# \`nobody\`), and stopping its PID stops everything.
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

    # "Connection: upgrade" only for upgrade requests (the nginx WebSocket proxying guide).
    map $http_upgrade $connection_upgrade {
        default upgrade;
        ''      close;
    }
${servers.map(server).join('\n')}
}
`;
}

// nginx takes the variable NGINX for listening sockets inherited across a binary upgrade:
// never pass one on.
function nginxEnv() {
  const env = { ...process.env };
  delete env.NGINX;
  return env;
}

/**
 * Starts nginx -c <dir>/nginx.conf -p <dir> (not daemonised) with one TLS server per
 * entry of `upstreams` (wsbus ports), each on a free port; waits until each answers
 * GET /api/me over https. Returns { child, ports, urls }.
 */
export async function startNginx(dir, certificate, upstreams) {
  const bin = process.env.NGINX_BIN || '/usr/sbin/nginx';
  const servers = [];
  for (const upstream of upstreams) servers.push({ port: await freePort(), upstream });
  const conf = join(dir, 'nginx.conf');
  writeFileSync(conf, nginxConfig(dir, certificate, servers));
  const errorLog = join(dir, 'error.log');
  const child = spawnLogged(bin, [
    '-e', errorLog, '-c', conf, '-p', dir + '/',
    '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`,
  ], `nginx -c ${conf}`, nginxEnv());
  const urls = servers.map((s) => `https://127.0.0.1:${s.port}`);
  const errorLogText = () => (existsSync(errorLog) ? readFileSync(errorLog, 'utf8').slice(-5000) : '(no error log)');
  for (const url of urls) {
    await waitReady(child, async () => (await get(`${url}/api/me`, { ca: certificate.pem })).status === 200,
      () => `its output:\n${child.log}\nits error log:\n${errorLogText()}`);
  }
  return { child, ports: servers.map((s) => s.port), urls, errorLog: errorLogText };
}

// ---------------------------------------------------------------- raw WebSocket upgrades

/**
 * A WebSocket opening handshake (RFC 6455 §4.1) to `url` (http: or https:, trusting
 * `ca`), with extra `headers`, from `localAddress`. Resolves with { status: 101, headers,
 * socket } (the socket left open: close() it) or { status, headers, body } for a refusal.
 */
export function upgrade(url, { ca, headers = {}, localAddress = '127.0.0.1' } = {}) {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const client = target.protocol === 'https:' ? https : http;
    const request = client.request({
      host: target.hostname,
      port: target.port,
      path: target.pathname + target.search,
      localAddress,
      ca,
      agent: false,
      timeout: TIMEOUT,
      headers: {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
        ...headers,
      },
    });
    request.on('upgrade', (response, socket) => {
      socket.on('error', () => {});
      resolve({
        status: response.statusCode,
        headers: response.headers,
        socket,
        close: () => socket.destroy(),
      });
    });
    request.on('response', (response) => {
      let body = '';
      response.setEncoding('utf8');
      response.on('data', (chunk) => (body += chunk));
      response.on('end', () => resolve({ status: response.statusCode, headers: response.headers, body, close() {} }));
    });
    request.on('timeout', () => request.destroy(new Error(`no answer to the upgrade within ${TIMEOUT} ms`)));
    request.on('error', reject);
    request.end();
  });
}

/** "403 origin not allowed {headers}": an upgrade's outcome for failure messages. */
export const describeOutcome = (r) =>
  `${r.status} ${JSON.stringify(r.body ?? '')} ${JSON.stringify(r.headers)}`;

/**
 * Starts nginx with the configuration text `conf` (its logs, temp and pid files in `dir`,
 * written by the caller; see nginxConfig for the usual header) written to <dir>/<name>,
 * not daemonised, and waits until each of `urls` answers GET <url><readyPath> with 200
 * (https urls trusting `ca`). Returns { child, errorLog }.
 */
export async function startNginxWithConfig(dir, name, conf, urls, { ca, readyPath = '/api/me' } = {}) {
  const bin = process.env.NGINX_BIN || '/usr/sbin/nginx';
  const path = join(dir, name);
  writeFileSync(path, conf);
  const errorLog = join(dir, 'error.log');
  const child = spawnLogged(bin, [
    '-e', errorLog, '-c', path, '-p', dir + '/',
    '-g', `daemon off; pid ${join(dir, 'nginx.pid')};`,
  ], `nginx -c ${path}`, nginxEnv());
  const errorLogText = () => (existsSync(errorLog) ? readFileSync(errorLog, 'utf8').slice(-5000) : '(no error log)');
  for (const url of urls) {
    await waitReady(child, async () => (await get(`${url}${readyPath}`, { ca })).status === 200,
      () => `its output:\n${child.log}\nits error log:\n${errorLogText()}`);
  }
  return { child, errorLog: errorLogText };
}
