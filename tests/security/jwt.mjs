// HS256 JSON Web Tokens (RFC 7519) minted by the tests themselves, with node:crypto: no
// JWT library, so that what is signed is exactly what the test says.

import { createHmac } from 'node:crypto';

/** The test configuration's token settings, from run.sh's environment. */
export const JWT = {
  secret: process.env.SEC_JWT_SECRET ?? '',
  issuer: process.env.SEC_JWT_ISSUER,
  audience: process.env.SEC_JWT_AUDIENCE,
};

const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/**
 * A token with the default claims (sub, name, iss and aud of the configuration, exp in an
 * hour) overridden by `claims`; a claim set to undefined is left out. `key` signs it
 * (default: the configured secret).
 */
export function mint(claims = {}, { key = JWT.secret } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const body = { sub: 'user-1', name: 'Test User', iss: JWT.issuer, aud: JWT.audience, iat: now, exp: now + 3600, ...claims };
  for (const k of Object.keys(body)) if (body[k] === undefined) delete body[k];
  const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url(body)}`;
  return `${input}.${createHmac('sha256', key).update(input).digest('base64url')}`;
}
