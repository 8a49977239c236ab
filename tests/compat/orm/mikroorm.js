// MikroORM 6 (on Knex and node-postgres) against the reference CRM through Maschera, as one user: its
// start-up (`MikroORM.init` with entity schemas of the role's columns), its schema diff (it reads the
// catalog), find with order/limit, `findAndCount` (pagination), `populate` of a relation (select-in
// and joined), a JSON value built in SQL, an enum property, unit-of-work inserts (`persist` + `flush`:
// INSERT ... RETURNING, several rows in one statement), `insertMany`, `upsert` (ON CONFLICT DO
// UPDATE) and `upsertMany` with `onConflictAction: 'ignore'`, the change of a loaded entity (it writes
// the changed columns only), nested `transactional()` (a savepoint), a cursor in a transaction, delete.
// Usage: node mikroorm.js URI USER BASE. Prints one `op<TAB>outcome<TAB>detail` line per operation
// (../outcome.js), then `done`.
'use strict';
const { MikroORM, EntitySchema } = require('@mikro-orm/postgresql');
const { columnsFor, ROLES } = require('./common');
const { run } = require('../outcome');

const CHANNELS = ['call', 'email', 'meeting'];

/** The role's entity schema of `table` (null for a denied table); `relations` added as given. */
function schema(role, name, table, relations = {}) {
  const columns = columnsFor(role, table);
  if (!columns) return null;
  const types = {
    bigint: role === 'analyst' ? 'text' : 'bigint', text: 'text', date: 'string', timestamp: 'Date', numeric: 'decimal',
  };
  const properties = {};
  for (const [column, type] of Object.entries(columns)) {
    if (Object.values(relations).some((r) => r.fieldName === column)) continue;
    properties[column] = { type: types[type], primary: column === 'id', nullable: column !== 'id' };
    if (type === 'date') properties[column].columnType = 'date';
    if (type === 'timestamp') properties[column].columnType = 'timestamptz';
  }
  if (properties.channel) Object.assign(properties.channel, { enum: true, items: CHANNELS, type: undefined });
  return new EntitySchema({ name, tableName: table, properties: { ...properties, ...relations } });
}

async function main() {
  const [uri, user, baseArg] = process.argv.slice(2);
  const role = ROLES[user];
  const base = Number(baseArg);
  const Contact = schema(role, 'Contact', 'contacts', { interactions: { kind: '1:m', entity: 'Interaction', mappedBy: 'contact' } });
  const Interaction = schema(role, 'Interaction', 'interactions', { contact: { kind: 'm:1', entity: 'Contact', fieldName: 'contact_id' } });
  const Ticket = schema(role, 'Ticket', 'tickets');
  const HealthRecord = new EntitySchema({ name: 'HealthRecord', tableName: 'health_records', properties: { id: { type: 'bigint', primary: true } } });
  let orm;
  let contact;
  const id = (n) => (role === 'analyst' ? String(n) : String(n));
  const row = (em, n, channel = 'call') => em.create(Interaction, { id: id(base + n), contact, channel, occurred_at: new Date() });

  await run('connect', async () => {
    orm = await MikroORM.init({
      clientUrl: uri, entities: [Contact, Interaction, Ticket, HealthRecord].filter(Boolean),
      discovery: { disableDynamicFileAccess: true }, ensureDatabase: false, debug: false, pool: { min: 0, max: 2 },
      allowGlobalContext: true,
    });
    const [r] = await orm.em.getConnection().execute('SELECT current_user AS u');
    return `user=${r.u}`;
  });
  if (!orm) throw new Error('MikroORM did not start');
  const em = () => orm.em.fork();
  await run('schema_diff', async () => {
    // What `schema:update --dump` does: reads the catalog, compares it with the entities.
    const sql = await orm.schema.getUpdateSchemaSQL({ wrap: false });
    return `creates_contacts=${/create table "contacts"/i.test(sql)}`;
  });
  await run('select', async () => {
    const rows = await em().find(Contact, {}, { orderBy: { id: 'asc' }, limit: 5 });
    const north = await em().findOne(Contact, { region: 'north' }, { orderBy: { id: 'asc' } });
    contact = north.id;
    const first = rows[0];
    const shown = ['tax_code', 'email'].filter((k) => k in first).map((k) => `${k}=${first[k]}`);
    return `rows=${rows.length} columns=${Object.keys(columnsFor(role, 'contacts')).length} ${shown.join(' ')}`;
  });
  await run('paginate', async () => {
    const [page, total] = await em().findAndCount(Contact, {}, { orderBy: { id: 'asc' }, limit: 10, offset: 10 });
    return `page=${page.length} total=${total}`;
  });
  await run('populate', async () => {
    const selectIn = await em().find(Contact, {}, { populate: ['interactions'], orderBy: { id: 'asc' }, limit: 3 });
    const joined = await em().find(Contact, {}, { populate: ['interactions'], strategy: 'joined', orderBy: { id: 'asc' }, limit: 3 });
    const count = (list) => list.reduce((n, c) => n + c.interactions.length, 0);
    return `contacts=${selectIn.length} interactions=${count(selectIn)} joined=${count(joined)}`;
  });
  await run('json', async () => {
    const [r] = await orm.em.getConnection().execute('SELECT to_jsonb(c) AS doc FROM contacts c ORDER BY id LIMIT 1');
    const shown = ['tax_code', 'email'].filter((k) => k in r.doc).map((k) => `${k}=${r.doc[k]}`);
    return `keys=${Object.keys(r.doc).length} ${shown.join(' ')}`;
  });
  await run('enum_filter', async () => `n=${await em().count(Interaction, { channel: { $in: ['call', 'meeting'] } })}`);
  await run('persist_flush', async () => {
    const e = em();
    const created = row(e, 0);
    await e.flush();
    return `id=${created.id} channel=${created.channel}`;
  });
  await run('persist_many', async () => {
    const e = em();
    for (const n of [1, 2, 3, 4, 5]) row(e, n, 'email');
    await e.flush();
    return `inserted=${await em().count(Interaction, { id: { $gte: id(base + 1), $lte: id(base + 5) } })}`;
  });
  await run('insert_many', async () => {
    await em().insertMany(Interaction, [6, 7].map((n) => ({ id: id(base + n), contact, channel: 'meeting', occurred_at: new Date() })));
    return `inserted=${await em().count(Interaction, { id: { $in: [id(base + 6), id(base + 7)] } })}`;
  });
  await run('upsert_ignore', async () => {
    const rows = [0, 8].map((n) => ({ id: id(base + n), contact, channel: 'call', occurred_at: new Date() }));
    await em().upsertMany(Interaction, rows, { onConflictFields: ['id'], onConflictAction: 'ignore' });
    return `rows=${await em().count(Interaction, { id: { $gte: id(base), $lte: id(base + 8) } })}`;
  });
  await run('upsert', async () => {
    const saved = await em().upsert(Interaction, { id: id(base), contact, channel: 'meeting', occurred_at: new Date() });
    return `channel=${saved.channel}`;
  });
  // The change of a loaded entity: MikroORM writes the changed columns only (contacts' city; for
  // support, which may not update contacts, a ticket's status).
  const Written = role === 'support' ? Ticket : Contact;
  await run('change_loaded', async () => {
    const e = em();
    const [loaded] = await e.find(Written, {}, { orderBy: { id: 'asc' }, limit: 1 });
    if (role === 'support') loaded.status = 'pending';
    else loaded.city = 'Mikrocity';
    await e.flush();
    const saved = await em().findOne(Written, { id: loaded.id });
    const shown = ['tax_code', 'subject'].filter((k) => k in saved).map((k) => `${k}=${saved[k]}`);
    return `saved ${shown.join(' ')}`;
  });
  await run('change_masked', async () => {
    // The last row (the unrestricted user's run changes it: the first rows are what the tests read).
    const e = em();
    const [loaded] = await e.find(Written, {}, { orderBy: { id: 'desc' }, limit: 1 });
    if (role === 'support') loaded.subject = 'A new subject';
    else if ('tax_code' in columnsFor(role, 'contacts')) loaded.tax_code = 'XXXXXXXXXXXXXXXX';
    else loaded.city = 'Elsewhere';
    await e.flush();
    return 'saved';
  });
  await run('transaction_savepoint', async () => {
    await em().transactional(async (outer) => {
      row(outer, 9);
      await outer.flush();
      await outer
        .transactional(async (inner) => {
          row(inner, 10);
          await inner.flush();
          throw new Error('roll back the savepoint');
        })
        .catch((err) => {
          if (err.message !== 'roll back the savepoint') throw err;
        });
    });
    const kept = await em().find(Interaction, { id: { $in: [id(base + 9), id(base + 10)] } });
    return `kept=${kept.map((r) => Number(r.id) - base).join(',')}`;
  });
  await run('cursor_in_transaction', async () => {
    let streamed = 0;
    await em().transactional(async (t) => {
      const connection = t.getConnection();
      const ctx = t.getTransactionContext();
      await connection.execute('DECLARE mikro_cur CURSOR FOR SELECT id, city FROM contacts ORDER BY id', [], 'run', ctx);
      for (;;) {
        const rows = await connection.execute('FETCH 25 FROM mikro_cur', [], 'all', ctx);
        if (rows.length === 0) break;
        streamed += rows.length;
      }
    });
    return `streamed=${streamed}`;
  });
  await run('select_health_records', async () => `n=${await em().count(HealthRecord, {})}`);
  await run('after_refusal', async () => `n=${await em().count(Contact, { region: 'north' })}`);
  await run('delete', async () => `deleted=${await em().nativeDelete(Interaction, { id: { $gte: id(base), $lt: id(base + 100) } })}`);
  if (orm) await orm.close();
  console.log('done');
}

main().catch((err) => {
  console.log(`main\tbroken\t${String(err && err.stack ? err.stack : err).split(/\s+/).join(' ')}`);
  process.exit(1);
});
