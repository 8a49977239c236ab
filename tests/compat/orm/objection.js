// Objection.js (on Knex and node-postgres) against the reference CRM through Maschera, as one user:
// its table metadata query (`fetchTableMetadata`: information_schema.columns of the current schema),
// queries with where/order/limit, `page()` (a count over the same query), relations fetched in separate
// queries (`withGraphFetched`) and joined (`withGraphJoined`), a JSON column built in SQL, insert ...
// returning, a multi-row insert, `insertGraph` (a contact with its interactions), an update of a loaded
// model with every column (the masked values written back unchanged), upsert (`onConflict().merge()`)
// and insert-or-ignore (`onConflict().ignore()`), get-or-create, a transaction with a nested one (a
// savepoint), a cursor in a transaction, delete.
// Usage: node objection.js URI USER BASE. Prints one `op<TAB>outcome<TAB>detail` line per operation
// (../outcome.js), then `done`.
'use strict';
const Knex = require('knex');
const { Model, raw } = require('objection');
const { columnsFor, ROLES } = require('./common');
const { run } = require('../outcome');

async function main() {
  const [uri, user, baseArg] = process.argv.slice(2);
  const role = ROLES[user];
  const base = Number(baseArg);
  const knex = Knex({ client: 'pg', connection: uri, pool: { min: 0, max: 2 } });
  Model.knex(knex);

  class Interaction extends Model {
    static get tableName() { return 'interactions'; }
  }
  class Ticket extends Model {
    static get tableName() { return 'tickets'; }
  }
  class Contact extends Model {
    static get tableName() { return 'contacts'; }
    static get relationMappings() {
      return {
        interactions: {
          relation: Model.HasManyRelation,
          modelClass: Interaction,
          join: { from: 'contacts.id', to: 'interactions.contact_id' },
        },
      };
    }
  }
  class HealthRecord extends Model {
    static get tableName() { return 'health_records'; }
  }
  let contact = 1;
  const row = (id, channel = 'call') => ({ id, contact_id: contact, channel });
  const mine = (q) => q.where('id', '>=', base).andWhere('id', '<', base + 100);

  await run('connect', async () => {
    const r = await knex.raw('SELECT current_user AS u');
    return `user=${r.rows[0].u}`;
  });
  await run('table_metadata', async () => {
    const meta = await Contact.fetchTableMetadata();
    return `columns=${meta.columns.length}`;
  });
  await run('select', async () => {
    const rows = await Contact.query().orderBy('id').limit(5);
    const north = await Contact.query().select('id').where('region', 'north').orderBy('id').first();
    contact = north.id;
    const first = rows[0];
    const shown = ['tax_code', 'email'].filter((k) => k in first).map((k) => `${k}=${first[k]}`);
    return `rows=${rows.length} columns=${Object.keys(first).length} ${shown.join(' ')}`;
  });
  await run('paginate', async () => {
    const page = await Contact.query().select('id', 'city').orderBy('id').page(1, 10);
    return `page=${page.results.length} total=${page.total}`;
  });
  await run('graph_fetched', async () => {
    const rows = await Contact.query().select('id', 'city').orderBy('id').limit(3).withGraphFetched('interactions(ordered)').modifiers({ ordered: (q) => q.select('id', 'contact_id', 'channel').orderBy('id') });
    return `contacts=${rows.length} interactions=${rows.reduce((n, r) => n + r.interactions.length, 0)}`;
  });
  await run('graph_joined', async () => {
    // Joined eagerly: Objection asks the table metadata of both tables, then one LEFT JOIN.
    const rows = await Contact.query().withGraphJoined('interactions').where('contacts.region', 'north').orderBy('contacts.id').limit(40);
    return `contacts=${rows.length} linked=${rows.every((r) => Array.isArray(r.interactions))}`;
  });
  await run('json', async () => {
    const r = await Contact.query().select(raw("jsonb_build_object('city', city, 'row', to_jsonb(contacts)) AS doc")).orderBy('id').first();
    const shown = ['tax_code', 'email'].filter((k) => k in r.doc.row).map((k) => `${k}=${r.doc.row[k]}`);
    return `keys=${Object.keys(r.doc.row).length} ${shown.join(' ')}`;
  });
  await run('insert_returning', async () => {
    const r = await Interaction.query().insert(row(base)).returning('*');
    return `id=${r.id} channel=${r.channel}`;
  });
  await run('bulk_insert', async () => {
    const rows = await Interaction.query().insert([1, 2, 3, 4, 5].map((i) => row(base + i))).returning('id');
    return `inserted=${rows.length}`;
  });
  await run('insert_graph', async () => {
    const id = base + 50;
    const graph = { id, first_name: 'Obj', last_name: 'Ection', email: `obj${id}@example.it`, phone: `+39 001 ${id}`, region: 'north', city: 'Asti', interactions: [{ id, channel: 'call' }] };
    const r = await Contact.query().insertGraph(graph);
    return `contact=${r.id} interactions=${r.interactions.length}`;
  });
  await run('insert_or_ignore', async () => {
    const rows = await Interaction.query().insert([row(base), row(base + 6)]).onConflict('id').ignore().returning('id');
    return `inserted=${rows.length}`;
  });
  await run('get_or_create', async () => {
    // No helper in Objection: find, insert when absent.
    const found = await Interaction.query().findById(base + 7);
    const r = found || (await Interaction.query().insert(row(base + 7, 'email')).returning('*'));
    return `channel=${r.channel}`;
  });
  await run('upsert', async () => {
    const r = await Interaction.query().insert(row(base)).onConflict('id').merge({ channel: 'meeting' }).returning('*');
    return `upserted=${Number(r.id) === base ? 1 : 0} channel=${r.channel}`;
  });
  await run('patch', async () => `updated=${await Interaction.query().findById(base + 1).patch({ channel: 'meeting' })}`);
  // The update of a loaded model with every column (`$query().update()`), one changed: contacts' city;
  // for support, which may not update contacts, a ticket's status.
  const Written = role === 'support' ? Ticket : Contact;
  const change = role === 'support' ? { status: 'pending' } : { city: 'Objcity' };
  const columns = Object.keys(columnsFor(role, Written.tableName)).filter((c) => c !== 'id');
  await run('save_loaded', async () => {
    const loaded = await Written.query().select('*').orderBy('id').first();
    const values = Object.fromEntries(columns.map((c) => [c, loaded[c]]));
    const n = await loaded.$query().update({ ...values, ...change });
    const saved = await Written.query().findById(loaded.id);
    const shown = ['tax_code', 'subject'].filter((k) => k in saved).map((k) => `${k}=${saved[k]}`);
    return `updated=${n} ${shown.join(' ')}`;
  });
  await run('save_changed_masked', async () => {
    // The last row (the unrestricted user's run changes it: the first rows are what the tests read).
    const loaded = await Written.query().orderBy('id', 'desc').first();
    const masked = role === 'support' ? { subject: 'A new subject' } : 'tax_code' in loaded ? { tax_code: 'XXXXXXXXXXXXXXXX' } : { city: 'Elsewhere' };
    return `updated=${await loaded.$query().patch(masked)}`;
  });
  await run('transaction_savepoint', async () => {
    await Model.transaction(async (trx) => {
      await Interaction.query(trx).insert(row(base + 8));
      await trx
        .transaction(async (inner) => {
          await Interaction.query(inner).insert(row(base + 9));
          throw new Error('roll back the savepoint');
        })
        .catch((err) => {
          if (err.message !== 'roll back the savepoint') throw err;
        });
    });
    const ids = await Interaction.query().select('id').whereIn('id', [base + 8, base + 9]);
    return `kept=${ids.map((r) => r.id - base).join(',')}`;
  });
  await run('cursor_in_transaction', async () => {
    let streamed = 0;
    await knex.transaction(async (trx) => {
      await trx.raw('DECLARE objection_cur CURSOR FOR SELECT id, city FROM contacts ORDER BY id');
      for (;;) {
        const r = await trx.raw('FETCH 25 FROM objection_cur');
        if (r.rows.length === 0) break;
        streamed += r.rows.length;
      }
    });
    return `streamed=${streamed}`;
  });
  await run('select_health_records', async () => `n=${(await HealthRecord.query().resultSize())}`);
  await run('after_refusal', async () => `n=${await Contact.query().where('region', 'north').resultSize()}`);
  await run('delete', async () => {
    const n = await mine(Interaction.query().delete());
    const c = await mine(Contact.query().delete());
    return `deleted=${n} contacts=${c}`;
  });
  await knex.destroy();
  console.log('done');
}

main().catch((err) => {
  console.log(`main\tbroken\t${String(err && err.stack ? err.stack : err).split(/\s+/).join(' ')}`);
  process.exit(1);
});
