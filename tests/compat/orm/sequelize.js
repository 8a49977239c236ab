// Sequelize 6 (with pg) against the reference CRM through Maschera, as one user: what an application
// does with its models (list, find, count, include, create, save, update, delete, upsert, managed and
// unmanaged transactions, raw queries with binds), Sequelize's own start-up and introspection
// (`authenticate`, `sync`, `describeTable`) and a read of its migration table `SequelizeMeta`.
// Usage: node sequelize.js URI USER BASE TARGET OUTSIDE (BASE: the first id it writes; TARGET: the
// contact, or for support the ticket, it saves, `-` for the first it lists; OUTSIDE: a contact the user's row filter hides).
// Prints one JSON line per operation (see common.js), then `done`.
'use strict';
const { Sequelize, DataTypes, Op, Transaction } = require('sequelize');
const { columnsFor, plain, run, args } = require('./common');

const TYPES = { bigint: DataTypes.BIGINT, text: DataTypes.TEXT, date: DataTypes.DATEONLY, timestamp: DataTypes.DATE, numeric: DataTypes.DECIMAL(12, 2) };

function define(sequelize, role, table) {
  const columns = columnsFor(role, table);
  if (!columns) return null;
  const attributes = {};
  for (const [name, type] of Object.entries(columns)) {
    attributes[name] = { type: TYPES[type], primaryKey: name === 'id', allowNull: name !== 'id' };
  }
  return sequelize.define(table, attributes, { tableName: table, timestamps: false });
}

async function main() {
  const { uri, role, base } = args();
  const [targetArg, outside] = process.argv.slice(5);
  const sequelize = new Sequelize(uri, { dialect: 'postgres', logging: false, pool: { max: 2 } });
  const Contact = define(sequelize, role, 'contacts');
  const Deal = define(sequelize, role, 'deals');
  const Interaction = define(sequelize, role, 'interactions');
  const Ticket = define(sequelize, role, 'tickets');
  Contact.hasMany(Interaction, { foreignKey: 'contact_id' });
  if (Deal) Contact.hasMany(Deal, { foreignKey: 'contact_id' });
  const analyst = role === 'analyst';

  await run('connect', async () => {
    await sequelize.authenticate();
    const [[row]] = await sequelize.query('SELECT current_user AS u');
    return { user: row.u };
  });
  await run('sync', async () => {
    // What many applications call at start-up: CREATE TABLE IF NOT EXISTS for every model.
    await sequelize.sync();
    return {};
  });
  await run('describe', async () => ({ columns: Object.keys(await sequelize.getQueryInterface().describeTable('contacts')).sort() }));
  let listed = [];
  await run('list', async () => {
    const where = analyst ? { region: 'centre' } : { id: { [Op.lte]: 40 } };
    listed = await Contact.findAll({ where, order: [['id', 'ASC']], limit: analyst ? 1000 : 25 });
    return { rows: listed.map(plain) };
  });
  await run('full_model', async () => {
    // The model an application written for the unrestricted role maps: every column.
    const Full = define(sequelize, 'dpo', 'contacts');
    return { row: plain(await Full.findOne({ order: [['created_at', 'ASC']] })) };
  });
  const first = listed.length ? listed[0].id : '1';
  const target = targetArg === '-' ? first : targetArg;
  await run('find_pk', async () => ({ row: plain(await Contact.findByPk(first)) }));
  await run('find_pk_outside', async () => ({ row: plain(await Contact.findByPk(outside)) }));
  await run('count', async () => ({ n: String(await Contact.count({ where: { region: ['north', 'centre'] } })) }));
  await run('include', async () => {
    const include = Deal ? [Interaction, Deal] : [Interaction];
    const row = await Contact.findByPk(first, { include, order: [[Interaction, 'id', 'ASC']] });
    return { row: plain(row) };
  });
  await run('include_page', async () => {
    // A page of contacts with their interactions: Sequelize pages in a subquery and joins outside it.
    const where = analyst ? { region: 'centre' } : { id: { [Op.lte]: 40 } };
    const page = await Contact.findAndCountAll({ where, include: [Interaction], order: [['id', 'ASC']], limit: 5, distinct: true });
    return { count: String(page.count), rows: page.rows.map(plain) };
  });
  await run('raw_bind', async () => {
    const [rows] = await sequelize.query('SELECT count(*)::int AS n FROM contacts WHERE region = $1 AND city IS NOT NULL', { bind: ['north'] });
    return { n: String(rows[0].n) };
  });
  await run('migrations_read', async () => {
    const [rows] = await sequelize.query('SELECT name FROM "SequelizeMeta" ORDER BY name');
    return { names: rows.map((r) => r.name) };
  });

  const writesTickets = role === 'support';
  const newContact = (id) => ({ id, first_name: 'Orm', last_name: 'Tester', email: `orm${id}@example.it`, phone: `+39 000 ${id}`, region: 'north', city: 'Torino' });
  const newTicket = (id) => ({ id, contact_id: first, subject: 'Orm subject', body: 'Call me at +39 333 1234567', status: 'open' });
  const Written = writesTickets ? Ticket : Contact;
  const fresh = writesTickets ? newTicket : (id) => Object.fromEntries(Object.entries(newContact(id)).filter(([k]) => k in Contact.getAttributes()));

  await run('create', async () => {
    const row = await Written.create(fresh(base));
    if (Deal && !analyst) await Deal.create({ id: base, contact_id: base, amount: '10.00', stage: 'open' });
    return { row: plain(row) };
  });
  await run('save_full', async () => {
    const row = await Written.findByPk(target);
    if (!row) return { row: null };
    for (const key of Object.keys(Written.getAttributes())) row.changed(key, true);
    row.set(writesTickets ? 'status' : 'city', writesTickets ? 'pending' : 'Ormcity');
    await row.save();
    return { row: plain(await Written.findByPk(target)) };
  });
  await run('update_masked', async () => {
    const row = await Written.findByPk(target);
    if (!row) return { row: null };
    const key = writesTickets ? 'subject' : Contact.getAttributes().tax_code ? 'tax_code' : 'city';
    row.set(key, writesTickets ? 'A new subject' : 'XXXXXXXXXXXXXXXX');
    await row.save();
    return { row: plain(await Written.findByPk(target)) };
  });
  await run('upsert', async () => {
    const row = await Written.findByPk(target);
    const values = row ? row.get({ plain: true }) : fresh(target);
    const [saved] = await Written.upsert(values);
    return { row: plain(saved) };
  });
  await run('save_outside', async () => {
    // The application believes the row is there and saves it by id: an UPDATE ... WHERE id = outside.
    const row = Written.build(fresh(outside), { isNewRecord: false });
    for (const key of Object.keys(row.get())) row.changed(key, true);
    await row.save();
    return {};
  });
  await run('tx_managed_rollback', async () => {
    await sequelize.transaction(async (t) => {
      await Written.create(fresh(base + 1), { transaction: t });
      throw Object.assign(new Error('roll back'), { rollback: true });
    }).catch((err) => { if (!err.rollback) throw err; });
    return { row: plain(await Written.findByPk(base + 1)) };
  });
  await run('tx_unmanaged_commit', async () => {
    const t = await sequelize.transaction();
    try {
      await Written.create(fresh(base + 2), { transaction: t });
      await t.commit();
    } catch (err) {
      await t.rollback();
      throw err;
    }
    return { row: plain(await Written.findByPk(base + 2)) };
  });
  await run('tx_unmanaged_rollback', async () => {
    const t = await sequelize.transaction();
    try {
      await Written.create(fresh(base + 3), { transaction: t });
    } finally {
      await t.rollback();
    }
    return { row: plain(await Written.findByPk(base + 3)) };
  });
  await run('find_or_create', async () => {
    // Sequelize wraps this insert in a function it creates in pg_temp (to catch a unique violation).
    const [, created] = await Written.findOrCreate({ where: { id: base + 4 }, defaults: fresh(base + 4) });
    return { created: String(created) };
  });
  await run('find_create_find', async () => {
    const [, created] = await Written.findCreateFind({ where: { id: base + 5 }, defaults: fresh(base + 5) });
    const [, again] = await Written.findCreateFind({ where: { id: base + 5 }, defaults: fresh(base + 5) });
    return { created: `${created},${again}` };
  });
  await run('bulk_ignore', async () => {
    // INSERT ... VALUES (..), (..) ON CONFLICT DO NOTHING: the first row exists.
    await Written.bulkCreate([fresh(base + 5), fresh(base + 6)], { ignoreDuplicates: true });
    return { n: String(await Written.count({ where: { id: [base + 5, base + 6] } })) };
  });
  await run('serializable', async () => {
    const n = await sequelize.transaction({ isolationLevel: Transaction.ISOLATION_LEVELS.SERIALIZABLE }, (t) => Contact.count({ transaction: t }));
    return { n: String(n) };
  });
  await run('lock', async () => {
    const id = await sequelize.transaction(async (t) => (await Written.findOne({ where: { id: target }, lock: t.LOCK.UPDATE, transaction: t })).id);
    return { id: String(id) };
  });
  if (!writesTickets) {
    await run('cleanup', async () => ({ deleted: String(await Written.destroy({ where: { id: [base + 4, base + 5, base + 6] } })) }));
  }
  await run('delete', async () => {
    let deleted = 0;
    if (Deal && !analyst) deleted += await Deal.destroy({ where: { contact_id: base } });
    deleted += await Written.destroy({ where: { id: [base, base + 2] } });
    return { deleted: String(deleted) };
  });
  await run('after_refusals', async () => ({ n: String(await Contact.count()) }));
  await sequelize.close();
  console.log('done');
}

main().catch((err) => { console.log(JSON.stringify({ op: 'main', outcome: 'broken', message: String(err.stack || err) })); process.exit(1); });
