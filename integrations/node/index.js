// maschera-pg: node-postgres queries served by Maschera as an end user, through the one database
// login of the application (a Maschera application user).
//
// For: signing end-user tokens (JWT: header `kid`; claims `sub`, optional `role` and `attributes`,
// `iat`, `exp`, and `iss`/`aud` when the proxy checks them) with node's own crypto (EdDSA, ES256,
// RS256, HS256), and `withEndUser(pool, token, fn)`, which runs `fn(client)` on a pooled client
// served as that end user.
// Not for: verifying tokens (the proxy does), or deciding who the end user is (the application does).
//
// Why the end user is set at session level before `fn` and reset after, not with
// `set_config(..., true)` inside a transaction: Maschera serves a transaction as the end user it
// began with (its BEGIN included), so the end user must be set before `fn` opens one. A client whose
// reset fails is destroyed, never returned to the pool with the identity set. Named (prepared)
// statements `fn` made are deallocated before the reset (Maschera refuses a statement prepared for
// one end user when it is executed for another), and node-postgres forgets them, so the next end
// user prepares its own.
'use strict';

const crypto = require('node:crypto');

const ALGORITHMS = ['EdDSA', 'ES256', 'RS256', 'HS256'];
const KEY_TYPES = { EdDSA: 'ed25519', ES256: 'ec', RS256: 'rsa' };
// The proxy's default `[end_users] max_lifetime_seconds`.
const MAX_LIFETIME = 3600;
// The statements the proxy routes (exactly these forms).
const SET_CONFIG = "SELECT set_config('maschera.end_user', $1, false)";
const RESET = 'RESET maschera.end_user';
const DEALLOCATE = 'DEALLOCATE ALL';

const base64url = (data) => Buffer.from(data).toString('base64url');

/** Signs end-user tokens with one key; a token is reused until a quarter of its lifetime is left. */
class EndUserSigner {
  /**
   * @param {object} options `key`: the HS256 secret, or the PEM of the private key (EdDSA, ES256,
   *   RS256); `kid`: its name in the proxy's `[[end_users.keys]]`; `algorithm` (default HS256);
   *   `lifetime` seconds (default 300); `issuer`, `audience`; `clock` (seconds, for tests).
   */
  constructor({ key, kid, algorithm = 'HS256', lifetime = 300, issuer, audience, clock } = {}) {
    if (!ALGORITHMS.includes(algorithm)) {
      throw new Error(`algorithm must be one of ${ALGORITHMS.join(', ')}`);
    }
    if (!kid) throw new Error("kid names the key in the proxy's [[end_users.keys]]");
    if (!Number.isInteger(lifetime) || lifetime < 1 || lifetime > MAX_LIFETIME) {
      throw new Error(`lifetime must be 1 to ${MAX_LIFETIME} seconds`);
    }
    if (!key) throw new Error('no signing key');
    if (algorithm === 'HS256') {
      if (String(key).includes('PRIVATE KEY')) {
        throw new Error('HS256 takes a shared secret, not a private key');
      }
      this.key = key;
    } else {
      this.key = crypto.createPrivateKey(key);
      if (this.key.asymmetricKeyType !== KEY_TYPES[algorithm]) {
        throw new Error(`${algorithm} needs a ${KEY_TYPES[algorithm]} private key`);
      }
    }
    Object.assign(this, { kid, algorithm, lifetime, issuer, audience });
    this.clock = clock || (() => Date.now() / 1000);
    this.cache = new Map();
  }

  /** The token of end user `sub` (with `role` and `attributes` when the application asserts them). */
  token(sub, { role, attributes } = {}) {
    if (typeof sub !== 'string' || sub === '') throw new Error('the end user (sub) must be a non-empty string');
    if (role !== undefined && (typeof role !== 'string' || role === '')) throw new Error('role must be a non-empty string');
    const attrs = Object.entries(attributes || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    if (attrs.some(([, value]) => typeof value !== 'string')) throw new Error('attributes map strings to strings');
    const identity = JSON.stringify([sub, role ?? null, attrs]);
    const now = Math.floor(this.clock());
    const cached = this.cache.get(identity);
    if (cached && cached.exp - now > Math.floor(this.lifetime / 4)) return cached.token;
    const claims = { sub, iat: now, exp: now + this.lifetime };
    if (role !== undefined) claims.role = role;
    if (attrs.length) claims.attributes = Object.fromEntries(attrs);
    if (this.issuer !== undefined) claims.iss = this.issuer;
    if (this.audience !== undefined) claims.aud = this.audience;
    const header = { alg: this.algorithm, typ: 'JWT', kid: this.kid };
    const input = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`;
    const token = `${input}.${base64url(this.sign(input))}`;
    if (this.cache.size > 10000) this.cache.clear();
    this.cache.set(identity, { token, exp: claims.exp });
    return token;
  }

  sign(input) {
    const data = Buffer.from(input);
    switch (this.algorithm) {
      case 'HS256':
        return crypto.createHmac('sha256', this.key).update(data).digest();
      case 'EdDSA':
        return crypto.sign(null, data, this.key);
      case 'ES256':
        return crypto.sign('sha256', data, { key: this.key, dsaEncoding: 'ieee-p1363' });
      default:
        return crypto.sign('sha256', data, this.key);
    }
  }
}

/**
 * Runs `fn(client)` on a client of `pool` served as the end user of `token`, and resets the end user
 * before the client goes back to the pool. `fn` may open and end its own transactions.
 */
async function withEndUser(pool, token, fn) {
  const client = await pool.connect();
  let broken;
  try {
    await client.query(SET_CONFIG, [token]);
    return await fn(client);
  } finally {
    try {
      const connection = client.connection || {};
      if (Object.keys(connection.parsedStatements || {}).length) {
        await client.query(DEALLOCATE);
        connection.parsedStatements = {};
        connection.submittedNamedStatements = {};
      }
      await client.query(RESET);
    } catch (err) {
      broken = err;
    }
    client.release(broken);
  }
}

module.exports = { EndUserSigner, withEndUser, ALGORITHMS, SET_CONFIG, RESET };
