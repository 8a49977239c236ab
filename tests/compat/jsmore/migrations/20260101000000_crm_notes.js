// A Knex migration the compatibility test runs as the owner through the proxy: a new table, then a
// column added to it (and both undone by the rollback).
exports.up = async (knex) => {
  await knex.schema.createTable('crm_notes', (t) => {
    t.increments('id');
    t.bigInteger('contact_id').notNullable().references('id').inTable('contacts').onDelete('CASCADE');
    t.text('body');
    t.timestamps(true, true);
  });
  await knex.schema.alterTable('crm_notes', (t) => {
    t.string('kind', 20).defaultTo('note');
  });
};

exports.down = async (knex) => {
  await knex.schema.dropTable('crm_notes');
};
