// postgres.js (npm `postgres`) against the reference CRM through Maschera. It fetches the array
// types on connect, prepares every statement under a name by default, pipelines the queries it is
// given at once on one connection, and reads cursors inside a transaction.
// Usage: node postgresjs.js URI USER. Prints one outcome line per operation (../outcome.js).
'use strict';
const postgres = require('postgres').default;
const { run } = require('../outcome');

const [uri, user] = process.argv.slice(2);
const BASE_ID = { dora: 710000, sam: 720000, tom: 730000, ana: 740000 }[user] ?? 750000;

async function main() {
  const sql = postgres(uri, { max: 1, connect_timeout: 30, idle_timeout: 5, onnotice: () => {} });
  let contact = 1;
  await run('connect', async () => {
    const [row] = await sql`SELECT current_user AS u, current_schema() AS s`;
    return `user=${row.u} schema=${row.s}`;
  });
  await run('select', async () => {
    const rows = await sql`SELECT * FROM contacts ORDER BY id LIMIT 5`;
    const [north] = await sql`SELECT id FROM contacts WHERE region = ${'north'} ORDER BY id LIMIT 1`;
    if (/^[0-9]+$/.test(String(north.id))) contact = Number(north.id);
    const first = rows[0];
    const shown = ['tax_code', 'email'].filter((k) => k in first).map((k) => `${k}=${first[k]}`);
    return `rows=${rows.length} columns=${Object.keys(first).length} ${shown.join(' ')}`;
  });
  await run('prepared_repeat', async () => {
    const counts = [];
    for (const region of ['north', 'centre', 'south', 'north', 'centre', 'south']) {
      const [r] = await sql`SELECT count(*)::int AS n FROM contacts WHERE region = ${region}`;
      counts.push(r.n);
    }
    return `counts=${counts.slice(0, 3).join(',')} executions=${counts.length}`;
  });
  await run('pipelined', async () => {
    // Given at once, postgres.js writes them all before reading the first answer.
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) => sql`SELECT count(*)::int AS n FROM interactions WHERE channel = ${['call', 'email', 'meeting'][i % 3]}`),
    );
    return `answers=${results.length}`;
  });
  await run('array_types', async () => {
    const [r] = await sql`SELECT ${[1, 2, 3]}::int[] AS a, ARRAY['x','y'] AS t`;
    return `a=${r.a.join(',')} t=${r.t.join(',')}`;
  });
  await run('unsafe_with_params', async () => {
    const rows = await sql.unsafe('SELECT stage, count(*)::int AS n FROM deals WHERE amount > $1 GROUP BY stage ORDER BY stage', [0]);
    return `stages=${rows.map((r) => r.stage).join(',')}`;
  });
  await run('cursor_in_transaction', async () => {
    let seen = 0;
    await sql.begin(async (tx) => {
      await tx`SELECT id, city FROM contacts ORDER BY id`.cursor(25, (rows) => {
        seen += rows.length;
      });
    });
    return `streamed=${seen}`;
  });
  await run('insert_helper', async () => {
    const rows = Array.from({ length: 5 }, (_, i) => ({ id: BASE_ID + i, contact_id: contact, channel: 'call' }));
    await sql`INSERT INTO interactions ${sql(rows, 'id', 'contact_id', 'channel')}`;
    const [r] = await sql`SELECT count(*)::int AS n FROM interactions WHERE id >= ${BASE_ID} AND id < ${BASE_ID + 5}`;
    return `inserted=${r.n}`;
  });
  await run('copy_writable', async () => {
    // COPY ... FROM STDIN through postgres.js's writable stream.
    const stream = await sql`COPY interactions (id, contact_id, channel) FROM STDIN`.writable();
    await new Promise((resolve, reject) => {
      stream.on('error', reject);
      stream.on('finish', resolve);
      stream.write(`${BASE_ID + 50}\t${contact}\tcall\n${BASE_ID + 51}\t${contact}\temail\n`);
      stream.end();
    });
    const [r] = await sql`SELECT count(*)::int AS n FROM interactions WHERE id >= ${BASE_ID + 50} AND id < ${BASE_ID + 52}`;
    return `copied=${r.n}`;
  });
  await run('transaction_pipeline', async () => {
    // sql.begin with an array: the statements are pipelined inside one transaction.
    const [, , check] = await sql.begin((tx) => [
      tx`UPDATE interactions SET channel = ${'meeting'} WHERE id = ${BASE_ID}`,
      tx`UPDATE interactions SET channel = ${'email'} WHERE id = ${BASE_ID + 1}`,
      tx`SELECT channel FROM interactions WHERE id = ${BASE_ID}`,
    ]);
    return `channel=${check[0] && check[0].channel}`;
  });
  await run('select_health_records', async () => {
    const [r] = await sql`SELECT count(*)::int AS n FROM health_records`;
    return `n=${r.n}`;
  });
  await run('after_refusal', async () => {
    const [r] = await sql`SELECT count(*)::int AS n FROM contacts WHERE region = ${'north'}`;
    return `n=${r.n}`;
  });
  await run('delete', async () => {
    const r = await sql`DELETE FROM interactions WHERE id >= ${BASE_ID} AND id < ${BASE_ID + 100}`;
    return `deleted=${r.count}`;
  });
  await sql.end({ timeout: 5 });
  console.log('done');
}

main().catch((err) => {
  console.log(`main\tbroken\t${String(err && err.stack ? err.stack : err).split(/\s+/).join(' ')}`);
  process.exit(1);
});
