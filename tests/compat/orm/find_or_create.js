// Sequelize's `findOrCreate` against the reference CRM through Maschera, as one user, with and without
// its PL/pgSQL wrapper. By default Sequelize (PostgreSQL dialect) wraps the INSERT of findOrCreate in
// `CREATE OR REPLACE FUNCTION pg_temp.testfunc(...) ... EXCEPTION WHEN unique_violation ...`, calls it
// and drops it: DDL, refused to a restricted role (42501, with the reason). With the dialect's
// `supports.EXCEPTION` off, findOrCreate sends the INSERT itself, in its own transaction, which the
// proxy rewrites for the role like any other (a duplicate key then ends that transaction, and
// findOrCreate finds the row after it, as it does on a race).
// Usage: node find_or_create.js URI USER BASE. Prints one `op<TAB>outcome<TAB>detail` line per
// operation (../outcome.js), then `done`.
'use strict';
const { Sequelize, DataTypes } = require('sequelize');
const { columnsFor, ROLES } = require('./common');
const { run } = require('../outcome');

async function main() {
  const [uri, user, baseArg] = process.argv.slice(2);
  const role = ROLES[user];
  const base = Number(baseArg);
  const sequelize = new Sequelize(uri, { dialect: 'postgres', logging: false, pool: { max: 2 } });
  const key = role === 'analyst' ? DataTypes.TEXT : DataTypes.BIGINT;
  const attributes = {};
  for (const name of Object.keys(columnsFor(role, 'interactions'))) {
    attributes[name] = { type: name === 'id' || name === 'contact_id' ? key : DataTypes.TEXT, primaryKey: name === 'id' };
  }
  delete attributes.occurred_at;
  const Interaction = sequelize.define('interactions', attributes, { tableName: 'interactions', timestamps: false });
  let contact = 1;
  await run('connect', async () => {
    const [[row]] = await sequelize.query("SELECT id FROM contacts WHERE region = 'north' ORDER BY id LIMIT 1");
    contact = row.id;
    return `contact=${contact}`;
  });
  // The analyst's ids are pseudonyms (text).
  const findOrCreate = async (n) => {
    const id = role === 'analyst' ? String(n) : n;
    const [row, created] = await Interaction.findOrCreate({ where: { id }, defaults: { contact_id: contact, channel: 'call' } });
    return `created=${created} channel=${row.channel}`;
  };
  await run('find_or_create', () => findOrCreate(base));
  await run('after_refusal', async () => `n=${await Interaction.count({ where: { channel: 'call' } })}`);
  // The dialect's flag, as an application sets it once after creating its Sequelize instance.
  sequelize.getDialect();
  sequelize.dialect.supports.EXCEPTION = false;
  await run('without_function', async () => `${await findOrCreate(base + 1)}; then ${await findOrCreate(base + 1)}`);
  await run('without_function_in_transaction', async () => {
    const result = await sequelize.transaction(async (t) => {
      const where = { id: role === 'analyst' ? String(base + 2) : base + 2 };
      const [, created] = await Interaction.findOrCreate({ where, defaults: { contact_id: contact, channel: 'email' }, transaction: t });
      const [, again] = await Interaction.findOrCreate({ where, defaults: { contact_id: contact, channel: 'email' }, transaction: t });
      return `created=${created} then=${again}`;
    });
    return `${result} stored=${await Interaction.count({ where: { id: role === 'analyst' ? String(base + 2) : base + 2 } })}`;
  });
  await sequelize.close();
  console.log('done');
}

main().catch((err) => {
  console.log(`main\tbroken\t${String(err && err.stack ? err.stack : err).split(/\s+/).join(' ')}`);
  process.exit(1);
});
