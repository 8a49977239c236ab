// Knex (with pg) against the reference CRM through Maschera: its migrations (the owner runs them;
// a restricted role is refused their DDL), the query builder (select, where, join, aggregates,
// insert ... returning, update, delete), transactions and schema introspection.
// Usage: node knex.js URI USER. Prints one outcome line per operation (../outcome.js).
'use strict';
const path = require('path');
const { run } = require('../outcome');

const [uri, user] = process.argv.slice(2);
const BASE_ID = { dora: 610000, sam: 620000, tom: 630000, ana: 640000 }[user] ?? 650000;

async function main() {
  const knex = require('knex')({
    client: 'pg',
    connection: uri,
    pool: { min: 0, max: 2 },
    migrations: { directory: path.join(__dirname, 'migrations') },
  });
  let contact = 1;
  await run('connect', async () => {
    const r = await knex.raw('SELECT current_user AS u');
    return `user=${r.rows[0].u}`;
  });
  await run('migrate_latest', async () => {
    const [batch, files] = await knex.migrate.latest();
    return `batch=${batch} files=${files.length}`;
  });
  await run('migrated_table', async () => {
    const [north] = await knex('contacts').select('id').where('region', 'north').orderBy('id').limit(1);
    const [row] = await knex('crm_notes').insert({ contact_id: north.id, body: 'first note' }).returning(['id', 'kind']);
    const n = await knex('crm_notes').count({ n: '*' });
    return `kind=${row.kind} notes=${n[0].n}`;
  });
  await run('migrate_rollback', async () => {
    const [batch, files] = await knex.migrate.rollback();
    const exists = await knex.schema.hasTable('crm_notes');
    return `batch=${batch} files=${files.length} exists=${exists}`;
  });
  await run('has_table', async () => `contacts=${await knex.schema.hasTable('contacts')}`);
  await run('column_info', async () => {
    const info = await knex('contacts').columnInfo();
    return `columns=${Object.keys(info).length} tax_code=${info.tax_code ? info.tax_code.type : 'none'}`;
  });
  await run('select', async () => {
    const rows = await knex('contacts').select('*').where('city', '<>', '-').orderBy('id').limit(5);
    const [north] = await knex('contacts').select('id').where({ region: 'north' }).orderBy('id').limit(1);
    if (/^[0-9]+$/.test(String(north.id))) contact = Number(north.id);
    const first = rows[0];
    const shown = ['tax_code', 'email'].filter((k) => k in first).map((k) => `${k}=${first[k]}`);
    return `rows=${rows.length} columns=${Object.keys(first).length} ${shown.join(' ')}`;
  });
  await run('join_aggregate', async () => {
    const rows = await knex('interactions as i')
      .join('contacts as c', 'c.id', 'i.contact_id')
      .select('i.channel')
      .count({ n: '*' })
      .groupBy('i.channel')
      .orderBy('i.channel');
    return `channels=${rows.map((r) => r.channel).join(',')}`;
  });
  await run('paginate', async () => {
    const rows = await knex('contacts').select('id', 'city').orderBy('id').limit(10).offset(10);
    return `page=${rows.length}`;
  });
  await run('insert_returning', async () => {
    const rows = await knex('interactions')
      .insert([0, 1, 2].map((i) => ({ id: BASE_ID + i, contact_id: contact, channel: 'call' })))
      .returning('id');
    return `inserted=${rows.length}`;
  });
  await run('transaction', async () => {
    await knex.transaction(async (trx) => {
      await trx('interactions').where({ id: BASE_ID + 3 }).del();
      await trx('interactions').insert({ id: BASE_ID + 3, contact_id: contact, channel: 'email' });
    });
    const n = await knex('interactions').where('id', '>=', BASE_ID).andWhere('id', '<', BASE_ID + 10).count({ n: '*' });
    return `rows=${n[0].n}`;
  });
  await run('transaction_rollback', async () => {
    await knex
      .transaction(async (trx) => {
        await trx('interactions').insert({ id: BASE_ID + 9, contact_id: contact, channel: 'meeting' });
        throw new Error('rollback on purpose');
      })
      .catch((err) => {
        if (err.message !== 'rollback on purpose') throw err;
      });
    const n = await knex('interactions').where({ id: BASE_ID + 9 }).count({ n: '*' });
    return `kept=${n[0].n}`;
  });
  await run('update', async () => `updated=${await knex('interactions').where({ id: BASE_ID }).update({ channel: 'meeting' })}`);
  await run('select_health_records', async () => {
    const n = await knex('health_records').count({ n: '*' });
    return `n=${n[0].n}`;
  });
  await run('after_refusal', async () => {
    const n = await knex('contacts').where({ region: 'north' }).count({ n: '*' });
    return `n=${n[0].n}`;
  });
  await run('delete', async () => `deleted=${await knex('interactions').where('id', '>=', BASE_ID).andWhere('id', '<', BASE_ID + 100).del()}`);
  await knex.destroy();
  console.log('done');
}

main().catch((err) => {
  console.log(`main\tbroken\t${String(err && err.stack ? err.stack : err).split(/\s+/).join(' ')}`);
  process.exit(1);
});
