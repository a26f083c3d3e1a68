// Helpers shared by the bus tests (clients.test.mjs, wsbus.test.mjs).

import { setTimeout as sleep } from 'node:timers/promises';

/** Resolves or rejects as `promise` does, or rejects after `ms` naming `what`. */
export function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Resolves when pred() is true (polled), or rejects after ms. */
export async function until(pred, ms, what) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

/**
 * faye's Node transports honour http_proxy / HTTPS_PROXY; a loopback server must not go
 * through a proxy, so they are removed from the environment when `url` is on loopback.
 */
export function bypassProxyForLoopback(url) {
  if (['127.0.0.1', 'localhost', '[::1]', '::1'].includes(url.hostname)) {
    for (const k of ['http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY']) delete process.env[k];
  }
}
