// node-postgres against the reference CRM through Maschera: plain queries, parameterised queries and
// named (prepared) statements, transactions, as the user in the URI.
// Usage: node client.js URI USER. Prints one line per operation: `op<TAB>pass|refused|broken<TAB>detail`
// (refused: the server's ErrorResponse, with its SQLSTATE; broken: anything else).
'use strict';
const { Client } = require('pg');
const { run, oneLine } = require('../outcome');

const [uri, user] = process.argv.slice(2);
const BASE_ID = user === 'dora' ? 700000 : 600000;

async function main() {
  const client = new Client({ connectionString: uri, statement_timeout: 30000 });
  await run('connect', async () => {
    await client.connect();
    return (await client.query('select current_user as u')).rows[0].u;
  });
  await run('plain_select', async () => {
    const r = await client.query('SELECT id, email, tax_code, birth_date FROM contacts ORDER BY id LIMIT 5');
    return `rows=${r.rowCount} tax=${r.rows[0].tax_code}`;
  });
  await run('parameterised', async () => {
    const r = await client.query('SELECT count(*)::int AS n FROM contacts WHERE region = $1 AND id > $2', ['north', 0]);
    return `n=${r.rows[0].n}`;
  });
  await run('named_prepared', async () => {
    let total = 0;
    for (let i = 1; i <= 8; i++) {
      const r = await client.query({
        name: 'contact_by_id',
        text: 'SELECT id, first_name, email FROM contacts WHERE id = $1',
        values: [i],
      });
      total += r.rowCount;
    }
    return `rows=${total}`;
  });
  await run('join_aggregate', async () => {
    const r = await client.query({
      name: 'deals_by_stage',
      text: `SELECT d.stage, count(*)::int AS n, sum(d.amount) AS total
             FROM deals d JOIN contacts c ON c.id = d.contact_id
             WHERE c.city IS NOT NULL GROUP BY d.stage ORDER BY d.stage`,
    });
    return `stages=${r.rows.map((x) => x.stage).join(',')}`;
  });
  await run('rows_mode_array', async () => {
    const r = await client.query({ text: 'SELECT id, notes FROM interactions ORDER BY id LIMIT $1', values: [3], rowMode: 'array' });
    return `rows=${r.rows.length}`;
  });
  await run('transaction_write', async () => {
    await client.query('BEGIN');
    try {
      await client.query(
        'INSERT INTO contacts (id, first_name, last_name, email, phone, region, city) VALUES ($1, $2, $3, $4, $5, $6, $7)',
        [BASE_ID, 'Node', 'Tester', `node${BASE_ID}@example.it`, `+39 002 ${BASE_ID}`, 'north', 'Torino']);
      await client.query({ name: 'new_deal', text: 'INSERT INTO deals (id, contact_id, amount, stage) VALUES ($1, $1, $2, $3)', values: [BASE_ID, '10.00', 'open'] });
      await client.query({ name: 'set_city', text: 'UPDATE contacts SET city = $2 WHERE id = $1', values: [BASE_ID, 'Genova'] });
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    }
    const r = await client.query('SELECT city FROM contacts WHERE id = $1', [BASE_ID]);
    return `city=${r.rows[0].city}`;
  });
  await run('savepoint_rollback', async () => {
    await client.query('BEGIN');
    await client.query('SAVEPOINT s1');
    await client.query('UPDATE deals SET stage = $1 WHERE id = $2', ['lost', BASE_ID]);
    await client.query('ROLLBACK TO SAVEPOINT s1');
    await client.query('COMMIT');
    const r = await client.query('SELECT stage FROM deals WHERE id = $1', [BASE_ID]);
    return `stage=${r.rows[0].stage}`;
  });
  await run('delete', async () => {
    await client.query('DELETE FROM deals WHERE id = $1', [BASE_ID]);
    const r = await client.query('DELETE FROM contacts WHERE id = $1', [BASE_ID]);
    return `deleted=${r.rowCount}`;
  });
  await run('insert_other_region', async () => {
    await client.query(
      'INSERT INTO contacts (id, first_name, last_name, email, phone, region) VALUES ($1, $2, $3, $4, $5, $6)',
      [BASE_ID + 1, 'Other', 'Region', `o${BASE_ID}@example.it`, `+39 003 ${BASE_ID}`, 'south']);
    await client.query('DELETE FROM contacts WHERE id = $1', [BASE_ID + 1]);
  });
  await run('select_health_records', async () => {
    const r = await client.query({ name: 'health', text: 'SELECT count(*)::int AS n FROM health_records' });
    return `n=${r.rows[0].n}`;
  });
  await run('after_refusal', async () => {
    const r = await client.query({ name: 'contact_by_id', text: 'SELECT id, first_name, email FROM contacts WHERE id = $1', values: [1] });
    return `rows=${r.rowCount}`;
  });
  await client.end().catch(() => {});
  console.log('done');
}

main().catch((err) => {
  console.log(`main\tbroken\t${oneLine(err.stack || err)}`);
  process.exit(1);
});
