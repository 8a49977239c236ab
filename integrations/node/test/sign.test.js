// The signing part of maschera-pg, without the proxy: what a token carries per algorithm, how long
// it is reused, and the signers the proxy would refuse.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const crypto = require('node:crypto');
const { EndUserSigner, SET_CONFIG } = require('..');

const SECRET = 'a shared secret of at least 32 bytes';
const PAIRS = {
  EdDSA: () => crypto.generateKeyPairSync('ed25519'),
  ES256: () => crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }),
  RS256: () => crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }),
};
const pem = (key) => key.export({ type: 'pkcs8', format: 'pem' });

function parts(token) {
  const [header, claims, signature] = token.split('.');
  return {
    input: `${header}.${claims}`,
    header: JSON.parse(Buffer.from(header, 'base64url')),
    claims: JSON.parse(Buffer.from(claims, 'base64url')),
    signature: Buffer.from(signature, 'base64url'),
  };
}

function verifies(algorithm, publicKey, token) {
  const { input, signature } = parts(token);
  const data = Buffer.from(input);
  if (algorithm === 'EdDSA') return crypto.verify(null, data, publicKey, signature);
  if (algorithm === 'ES256') return crypto.verify('sha256', data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature);
  return crypto.verify('sha256', data, publicKey, signature);
}

for (const algorithm of Object.keys(PAIRS)) {
  test(`${algorithm} signs what its public key verifies, and only that`, () => {
    const { privateKey, publicKey } = PAIRS[algorithm]();
    const signer = new EndUserSigner({ key: pem(privateKey), kid: 'app-1', algorithm, lifetime: 120, clock: () => 1800000000 });
    const token = signer.token('sam', { role: 'sales', attributes: { region: 'north' } });
    const { header, claims } = parts(token);
    assert.deepStrictEqual(header, { alg: algorithm, typ: 'JWT', kid: 'app-1' });
    assert.deepStrictEqual(claims, { sub: 'sam', iat: 1800000000, exp: 1800000120, role: 'sales', attributes: { region: 'north' } });
    assert.ok(verifies(algorithm, publicKey, token));
    assert.ok(!verifies(algorithm, PAIRS[algorithm]().publicKey, token), 'another key does not verify it');
  });
}

test('HS256 with issuer and audience', () => {
  const token = new EndUserSigner({ key: SECRET, kid: 'k1', issuer: 'crm', audience: 'maschera' }).token('tom');
  const { input, claims, signature } = parts(token);
  assert.deepStrictEqual(Object.keys(claims).sort(), ['aud', 'exp', 'iat', 'iss', 'sub']);
  assert.strictEqual(claims.exp - claims.iat, 300);
  assert.ok(signature.equals(crypto.createHmac('sha256', SECRET).update(input).digest()));
});

test('a token is reused until a quarter of its lifetime is left', () => {
  let now = 1800000000;
  const signer = new EndUserSigner({ key: SECRET, kid: 'k1', lifetime: 400, clock: () => now });
  const first = signer.token('sam');
  now += 299;
  assert.strictEqual(signer.token('sam'), first);
  assert.notStrictEqual(signer.token('sam', { role: 'sales' }), first);
  now += 1;
  assert.notStrictEqual(signer.token('sam'), first);
});

test('signers and identities the proxy would refuse are not made', () => {
  const ed = pem(PAIRS.EdDSA().privateKey);
  for (const options of [
    { key: SECRET, kid: 'k1', lifetime: 3601 },
    { key: SECRET, kid: '' },
    { key: SECRET, kid: 'k1', algorithm: 'none' },
    { key: '', kid: 'k1' },
    { key: ed, kid: 'k1', algorithm: 'HS256' },
    { key: ed, kid: 'k1', algorithm: 'ES256' },
  ]) {
    assert.throws(() => new EndUserSigner(options), undefined, JSON.stringify(options));
  }
  const signer = new EndUserSigner({ key: SECRET, kid: 'k1' });
  assert.throws(() => signer.token(''));
  assert.throws(() => signer.token('sam', { role: '' }));
  assert.throws(() => signer.token('sam', { attributes: { region: 1 } }));
});

test('the statement is the form the proxy routes', () => {
  assert.strictEqual(SET_CONFIG, "SELECT set_config('maschera.end_user', $1, false)");
});
