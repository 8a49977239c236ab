// withEndUser against a plain PostgreSQL (no proxy; PostgreSQL takes `maschera.end_user` as a custom
// setting, so a query can read what the helper set). Needs MASCHERA_TEST_POSTGRES (a postgres:// URI)
// and node-postgres (MASCHERA_PG_MODULE names its folder when it is not installed here); the e2e test
// end_user_integrations gives both. Skipped without them.
'use strict';

const test = require('node:test');
const assert = require('node:assert');
const { withEndUser } = require('..');

const uri = process.env.MASCHERA_TEST_POSTGRES;
const skip = uri ? false : 'MASCHERA_TEST_POSTGRES is not set';
const SETTING = "SELECT current_setting('maschera.end_user', true) AS token, pg_backend_pid() AS pid";
const TOKEN = 'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzYW0ifQ.c2lnbmF0dXJl';

function pool() {
  const { Pool } = require(process.env.MASCHERA_PG_MODULE || 'pg');
  return new Pool({ connectionString: uri, max: 1 });
}

test('the end user is set for fn and reset after, on one pooled client', { skip }, async () => {
  const p = pool();
  try {
    const inside = await withEndUser(p, TOKEN, async (client) => (await client.query(SETTING)).rows[0]);
    assert.strictEqual(inside.token, TOKEN);
    const after = (await p.query(SETTING)).rows[0];
    assert.strictEqual(after.token, '');
    assert.strictEqual(after.pid, inside.pid, 'the same client, back in the pool');
  } finally {
    await p.end();
  }
});

test('an error of fn is thrown, and the end user is reset all the same', { skip }, async () => {
  const p = pool();
  try {
    await assert.rejects(withEndUser(p, TOKEN, async () => { throw new Error('view failed'); }), /view failed/);
    assert.strictEqual((await p.query(SETTING)).rows[0].token, '');
  } finally {
    await p.end();
  }
});

test("fn's named statements are deallocated and forgotten", { skip }, async () => {
  const p = pool();
  try {
    await withEndUser(p, TOKEN, (client) => client.query({ name: 'one', text: 'SELECT 1 AS n' }));
    const client = await p.connect();
    try {
      assert.deepStrictEqual(client.connection.parsedStatements, {});
      assert.strictEqual((await client.query('SELECT count(*)::int AS n FROM pg_prepared_statements')).rows[0].n, 0);
      assert.strictEqual((await client.query({ name: 'one', text: 'SELECT 1 AS n' })).rows[0].n, 1, 'prepared again');
    } finally {
      client.release();
    }
  } finally {
    await p.end();
  }
});

test('a client whose reset fails is destroyed, not returned with the end user set', { skip }, async () => {
  const p = pool();
  try {
    const pid = await withEndUser(p, TOKEN, async (client) => {
      await client.query('BEGIN');
      await client.query('SELECT 1/0').catch(() => {});
      return (await client.query('SELECT pg_backend_pid() AS pid').catch(() => ({ rows: [{ pid: client.processID }] }))).rows[0].pid;
    });
    const after = (await p.query(SETTING)).rows[0];
    assert.ok(!after.token, 'a new backend has none');
    assert.notStrictEqual(after.pid, pid, 'another client');
  } finally {
    await p.end();
  }
});
