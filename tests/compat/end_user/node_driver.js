// node-postgres with maschera-pg (integrations/node, RS256) as end users sam and tom through
// Maschera's application login: one pooled client for every call, end users alternating, a named
// (prepared) statement made under one end user and executed under the other.
// Usage: node node_driver.js URI SAM TOM KEY KID (the application login, sam's and tom's own logins
// to compare, the PEM private key and its kid). Prints one outcome line per operation, as client.js.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { Client, Pool } = require(path.join(__dirname, '..', 'node', 'node_modules', 'pg'));
const { EndUserSigner, withEndUser } = require(path.join(__dirname, '..', '..', '..', 'integrations', 'node'));
const { run, oneLine } = require('../outcome');

const [uri, samUri, tomUri, keyFile, kid] = process.argv.slice(2);
const COLUMNS = 'id, first_name, last_name, email, phone, city, region';
const ROWS = { name: 'contacts20', text: `SELECT ${COLUMNS} FROM contacts ORDER BY id LIMIT 20`, rowMode: 'array' };

const asText = (rows) => rows.map((row) => row.map((v) => String(v)));

async function directRows(own) {
  const client = new Client({ connectionString: own });
  await client.connect();
  try {
    return asText((await client.query(ROWS)).rows);
  } finally {
    await client.end();
  }
}

async function main() {
  const signer = new EndUserSigner({ key: fs.readFileSync(keyFile, 'utf8'), kid, algorithm: 'RS256', issuer: 'crm' });
  const pool = new Pool({ connectionString: uri, max: 1 });
  const clients = new Set();
  pool.on('connect', (client) => clients.add(client));
  const as = (name, fn) => withEndUser(pool, signer.token(name), fn);
  // pool.query would destroy the client on the refusal: keep it, as the application does.
  const noEndUser = async () => {
    const client = await pool.connect();
    try {
      return await client.query('SELECT email FROM contacts LIMIT 1');
    } finally {
      client.release();
    }
  };
  const expected = { sam: await directRows(samUri), tom: await directRows(tomUri) };
  const seen = { sam: [], tom: [] };

  await run('no_end_user', noEndUser);
  const alternated = await run('alternate', async () => {
    for (let i = 0; i < 6; i++) {
      for (const name of ['sam', 'tom']) {
        seen[name].push(await as(name, async (client) => ({
          rows: asText((await client.query(ROWS)).rows),
          regions: (await client.query('SELECT DISTINCT region FROM contacts ORDER BY 1')).rows.map((r) => r.region),
        })));
      }
    }
    return `calls=${seen.sam.length + seen.tom.length}`;
  });
  if (alternated) {
    for (const name of ['sam', 'tom']) {
      await run(`${name}_contacts`, () => {
        const same = seen[name].every((r) => JSON.stringify(r.rows) === JSON.stringify(expected[name])) && expected[name].length === 20;
        const emails = seen[name].flatMap((r) => r.rows.map((row) => row[3]));
        const kind = emails.every((e) => e.includes('***@')) ? 'masked' : emails.every((e) => !e.includes('***')) ? 'clear' : 'mixed';
        return `regions=${JSON.stringify(seen[name][0].regions)} same_as_own_login=${same} emails=${kind}`;
      });
    }
  }
  await run('sam_update_own_region', () => as('sam', async (client) => {
    await client.query('BEGIN');
    await client.query("UPDATE contacts SET city = 'Milano-sam' WHERE id = (SELECT id FROM contacts WHERE region = 'north' ORDER BY id OFFSET 2 LIMIT 1)");
    await client.query('COMMIT');
    return `updated=${(await client.query("SELECT count(*)::int AS n FROM contacts WHERE city = 'Milano-sam'")).rows[0].n}`;
  }));
  await run('sam_insert_other_region', () => as('sam', (client) => client.query(
    "INSERT INTO contacts (id, first_name, last_name, email, phone, region, city) VALUES (720001, 'Eve', 'South', 'eve3@example.it', '+39 000 720001', 'south', 'Lecce')")));
  await run('tom_update_contact', () => as('tom', (client) => client.query("UPDATE contacts SET city = 'Roma' WHERE id = 1")));
  await run('no_end_user_after', noEndUser);
  // A token signed with another key under the same kid: refused, the client goes on.
  const forger = new EndUserSigner({ key: crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }), kid, algorithm: 'RS256', issuer: 'crm' });
  await run('wrong_signature', () => withEndUser(pool, forger.token('sam'), (client) => client.query('SELECT 1')));
  await run('after_bad_token', () => as('tom', async (client) => `n=${(await client.query(ROWS)).rowCount}`));
  await run('one_connection', () => `connections=${clients.size}`);
  await pool.end();
  console.log('done');
}

main().catch((err) => {
  console.log(`main\tbroken\t${oneLine(err.stack)}`);
  process.exit(1);
});
