// TypeORM against the reference CRM through Maschera, as one user: what an application does with its
// repositories (find with where/order/take, findOneBy, count, relations, save of a new and of a changed
// entity, update of every column, delete, upsert, insert or ignore, managed and unmanaged
// transactions, raw queries with parameters), TypeORM's own start-up (`initialize` with
// `synchronize: false`) and metadata queries (`QueryRunner.getTable`), and its migrations table
// (`showMigrations`, and a read of `migrations`).
// Usage: node typeorm.js URI USER BASE TARGET OUTSIDE (as sequelize.js). Prints one JSON line per
// operation (see common.js), then `done`.
'use strict';
require('reflect-metadata');
const { DataSource, EntitySchema, In, LessThanOrEqual } = require('typeorm');
const { columnsFor, plain, run, args } = require('./common');

const TYPES = { bigint: 'bigint', text: 'text', date: 'date', timestamp: 'timestamptz', numeric: 'numeric' };

function entity(role, table, relations, name = table) {
  const columns = columnsFor(role, table);
  if (!columns) return null;
  const defs = {};
  for (const [name, type] of Object.entries(columns)) {
    defs[name] = { type: TYPES[type], primary: name === 'id', nullable: name !== 'id' };
  }
  return new EntitySchema({ name, tableName: table, columns: defs, relations });
}

async function main() {
  const { uri, role, base } = args();
  const [targetArg, outside] = process.argv.slice(5);
  const analyst = role === 'analyst';
  const child = { contact: { type: 'many-to-one', target: 'contacts', joinColumn: { name: 'contact_id' }, createForeignKeyConstraints: false } };
  const hasDeals = columnsFor(role, 'deals') !== null;
  const contactRelations = { interactions: { type: 'one-to-many', target: 'interactions', inverseSide: 'contact' } };
  if (hasDeals) contactRelations.deals = { type: 'one-to-many', target: 'deals', inverseSide: 'contact' };
  const entities = [
    entity(role, 'contacts', contactRelations), entity(role, 'interactions', child),
    entity('dpo', 'contacts', {}, 'contacts_full'),
  ];
  for (const table of ['deals', 'tickets']) {
    const e = entity(role, table, child);
    if (e) entities.push(e);
  }
  const ds = new DataSource({
    type: 'postgres', url: uri, entities, synchronize: false, logging: false, poolSize: 2,
    migrations: [], migrationsTableName: 'migrations',
  });
  const Contact = () => ds.getRepository('contacts');

  await run('connect', async () => {
    await ds.initialize();
    const [row] = await ds.query('SELECT current_user AS u');
    return { user: row.u };
  });
  await run('describe', async () => {
    const runner = ds.createQueryRunner();
    try {
      const table = await runner.getTable('contacts');
      return { columns: table ? table.columns.map((c) => c.name).sort() : null };
    } finally {
      await runner.release();
    }
  });
  let listed = [];
  await run('list', async () => {
    const where = analyst ? { region: 'centre' } : { id: LessThanOrEqual(40) };
    listed = await Contact().find({ where, order: { id: 'ASC' }, take: analyst ? 1000 : 25 });
    return { rows: listed.map(plain) };
  });
  await run('full_model', async () => {
    // The entity an application written for the unrestricted role maps: every column.
    const [row] = await ds.getRepository('contacts_full').find({ order: { created_at: 'ASC' }, take: 1 });
    return { row: plain(row) };
  });
  const first = listed.length ? listed[0].id : '1';
  const target = targetArg === '-' ? first : targetArg;
  await run('find_pk', async () => ({ row: plain(await Contact().findOneBy({ id: first })) }));
  await run('find_pk_outside', async () => ({ row: plain(await Contact().findOneBy({ id: outside })) }));
  await run('count', async () => ({ n: String(await Contact().count({ where: { region: In(['north', 'centre']) } })) }));
  await run('include', async () => {
    const relations = hasDeals ? { interactions: true, deals: true } : { interactions: true };
    const row = await Contact().findOne({ where: { id: first }, relations, order: { interactions: { id: 'ASC' } } });
    return { row: plain(row) };
  });
  await run('include_page', async () => {
    // A page of contacts with their interactions: TypeORM pages the distinct ids first, then joins.
    const where = analyst ? { region: 'centre' } : { id: LessThanOrEqual(40) };
    const [rows, count] = await Contact().findAndCount({ where, relations: { interactions: true }, order: { id: 'ASC' }, take: 5 });
    return { count: String(count), rows: rows.map(plain) };
  });
  await run('raw_bind', async () => {
    const rows = await ds.query('SELECT count(*)::int AS n FROM contacts WHERE region = $1 AND city IS NOT NULL', ['north']);
    return { n: String(rows[0].n) };
  });
  await run('migrations_read', async () => {
    const rows = await ds.query('SELECT name FROM "migrations" ORDER BY name');
    return { names: rows.map((r) => r.name) };
  });
  await run('migrations_show', async () => ({ pending: String(await ds.showMigrations()) }));

  const writesTickets = role === 'support';
  const Written = () => ds.getRepository(writesTickets ? 'tickets' : 'contacts');
  const mapped = Object.keys(columnsFor(role, writesTickets ? 'tickets' : 'contacts'));
  const newContact = (id) => ({ id: String(id), first_name: 'Orm', last_name: 'Tester', email: `orm${id}@example.it`, phone: `+39 000 ${id}`, region: 'north', city: 'Torino' });
  const newTicket = (id) => ({ id: String(id), contact_id: first, subject: 'Orm subject', body: 'Call me at +39 333 1234567', status: 'open' });
  const fresh = (id) => Object.fromEntries(Object.entries(writesTickets ? newTicket(id) : newContact(id)).filter(([k]) => mapped.includes(k)));
  const columnsOf = (row) => Object.fromEntries(mapped.map((k) => [k, row[k]]));

  await run('create', async () => {
    const row = await Written().save(Written().create(fresh(base)));
    if (hasDeals && !analyst) await ds.getRepository('deals').save({ id: String(base), contact_id: String(base), amount: '10.00', stage: 'open' });
    return { row: plain(columnsOf(await Written().findOneBy({ id: row.id }))) };
  });
  await run('save_changed', async () => {
    const row = await Written().findOneBy({ id: target });
    if (!row) return { row: null };
    row[writesTickets ? 'status' : 'last_activity_at'] = writesTickets ? 'waiting' : new Date('2026-01-02T03:04:05Z');
    await Written().save(row);
    return { row: plain(await Written().findOneBy({ id: target })) };
  });
  await run('save_full', async () => {
    const row = await Written().findOneBy({ id: target });
    if (!row) return { row: null };
    const values = columnsOf(row);
    values[writesTickets ? 'status' : 'city'] = writesTickets ? 'pending' : 'Ormcity';
    await Written().update({ id: target }, values);
    return { row: plain(await Written().findOneBy({ id: target })) };
  });
  await run('update_masked', async () => {
    const row = await Written().findOneBy({ id: target });
    if (!row) return { row: null };
    const key = writesTickets ? 'subject' : mapped.includes('tax_code') ? 'tax_code' : 'city';
    row[key] = writesTickets ? 'A new subject' : 'XXXXXXXXXXXXXXXX';
    await Written().save(row);
    return { row: plain(await Written().findOneBy({ id: target })) };
  });
  await run('upsert', async () => {
    const row = await Written().findOneBy({ id: target });
    await Written().upsert(row ? columnsOf(row) : fresh(target), ['id']);
    return { row: plain(await Written().findOneBy({ id: target })) };
  });
  await run('insert_or_ignore', async () => {
    const result = await Written().createQueryBuilder().insert().values(fresh(target)).orIgnore().execute();
    return { inserted: String(result.identifiers.filter(Boolean).length) };
  });
  await run('save_outside', async () => {
    // The application saves an entity by id: TypeORM looks the id up, finds nothing (the row filter
    // hides it) and inserts.
    await Written().save(fresh(outside));
    return {};
  });
  await run('tx_managed_rollback', async () => {
    await ds.transaction(async (manager) => {
      await manager.getRepository(Written().metadata.target).insert(fresh(base + 1));
      throw Object.assign(new Error('roll back'), { rollback: true });
    }).catch((err) => { if (!err.rollback) throw err; });
    return { row: plain(await Written().findOneBy({ id: String(base + 1) })) };
  });
  await run('tx_unmanaged_commit', async () => {
    const runner = ds.createQueryRunner();
    await runner.connect();
    await runner.startTransaction();
    try {
      await runner.manager.getRepository(Written().metadata.target).insert(fresh(base + 2));
      await runner.commitTransaction();
    } catch (err) {
      await runner.rollbackTransaction();
      throw err;
    } finally {
      await runner.release();
    }
    return { row: plain(columnsOf(await Written().findOneBy({ id: String(base + 2) }))) };
  });
  await run('tx_unmanaged_rollback', async () => {
    const runner = ds.createQueryRunner();
    await runner.connect();
    await runner.startTransaction();
    try {
      await runner.manager.getRepository(Written().metadata.target).insert(fresh(base + 3));
    } finally {
      await runner.rollbackTransaction();
      await runner.release();
    }
    return { row: plain(await Written().findOneBy({ id: String(base + 3) })) };
  });
  await run('exists_by', async () => ({ exists: String(await Contact().existsBy({ id: first })) }));
  await run('insert_many', async () => {
    await Written().insert([fresh(base + 5), fresh(base + 6)]);
    return { n: String(await Written().countBy({ id: In([String(base + 5), String(base + 6)]) })) };
  });
  await run('serializable', async () => ({ n: String(await ds.transaction('SERIALIZABLE', (m) => m.getRepository('contacts').count())) }));
  await run('lock', async () => {
    const row = await ds.transaction((m) => m.getRepository(Written().metadata.target).findOne({ where: { id: target }, lock: { mode: 'pessimistic_write' } }));
    return { id: String(row.id) };
  });
  if (!writesTickets) {
    await run('cleanup', async () => ({ deleted: String((await Written().delete({ id: In([String(base + 5), String(base + 6)]) })).affected) }));
  }
  await run('delete', async () => {
    let deleted = 0;
    if (hasDeals && !analyst) deleted += (await ds.getRepository('deals').delete({ contact_id: String(base) })).affected;
    deleted += (await Written().delete({ id: In([String(base), String(base + 2)]) })).affected;
    return { deleted: String(deleted) };
  });
  await run('after_refusals', async () => ({ n: String(await Contact().count()) }));
  await ds.destroy();
  console.log('done');
}

main().catch((err) => { console.log(JSON.stringify({ op: 'main', outcome: 'broken', message: String(err.stack || err) })); process.exit(1); });
