// Drizzle ORM (on node-postgres) against the reference CRM through Maschera, as one user: what an
// application does with it (select with where/order/limit, pagination, joins, the relational query API
// `db.query.*.findMany({ with })` whose relations come back as JSON built by PostgreSQL, insert ...
// returning, a multi-row insert, an update of a loaded row with every column (the masked values written
// back unchanged), upsert (`onConflictDoUpdate`) and insert-or-ignore (`onConflictDoNothing`),
// get-or-create, nested transactions (savepoints), a cursor in a transaction, delete). Drizzle reads no
// catalog on connect: its schema is the application's (common.js's columns of the role).
// Usage: node drizzle.js URI USER BASE. Prints one `op<TAB>outcome<TAB>detail` line per operation
// (../outcome.js), then `done`.
'use strict';
const { Pool } = require('pg');
const { drizzle } = require('drizzle-orm/node-postgres');
const { pgTable, bigint, text, date, timestamp, numeric } = require('drizzle-orm/pg-core');
const { relations, eq, and, gte, lt, inArray, asc, desc, count, sql, TransactionRollbackError } = require('drizzle-orm');
const { columnsFor, ROLES } = require('./common');
const { run } = require('../outcome');

const CHANNELS = ['call', 'email', 'meeting'];

/** The role's table as Drizzle declares it (null for a denied table). The analyst's ids are text. */
function table(role, name) {
  const columns = columnsFor(role, name);
  if (!columns) return null;
  const builders = {
    bigint: (c) => (role === 'analyst' ? text(c) : bigint(c, { mode: 'number' })),
    text: (c) => (c === 'channel' ? text(c, { enum: CHANNELS }) : text(c)),
    date: (c) => date(c),
    timestamp: (c) => timestamp(c, { withTimezone: true }),
    numeric: (c) => numeric(c, { precision: 12, scale: 2 }),
  };
  const defs = {};
  for (const [column, type] of Object.entries(columns)) {
    defs[column] = builders[type](column);
    if (column === 'id') defs[column] = defs[column].primaryKey();
  }
  return pgTable(name, defs);
}

async function main() {
  const [uri, user, baseArg] = process.argv.slice(2);
  const role = ROLES[user];
  const base = Number(baseArg);
  const contacts = table(role, 'contacts');
  const interactions = table(role, 'interactions');
  const tickets = table(role, 'tickets');
  const health = pgTable('health_records', { id: bigint('id', { mode: 'number' }).primaryKey() });
  const schema = {
    contacts, interactions,
    contactsRelations: relations(contacts, ({ many }) => ({ interactions: many(interactions) })),
    interactionsRelations: relations(interactions, ({ one }) => ({
      contact: one(contacts, { fields: [interactions.contact_id], references: [contacts.id] }),
    })),
  };
  const pool = new Pool({ connectionString: uri, max: 2 });
  const db = drizzle(pool, { schema });
  let contact = 1;
  const mine = and(gte(interactions.id, base), lt(interactions.id, base + 100));
  const row = (id, channel = 'call') => ({ id, contact_id: contact, channel });

  await run('connect', async () => {
    const r = await db.execute(sql`SELECT current_user AS u`);
    return `user=${r.rows[0].u}`;
  });
  await run('select', async () => {
    const rows = await db.select().from(contacts).orderBy(asc(contacts.id)).limit(5);
    const [north] = await db.select({ id: contacts.id }).from(contacts).where(eq(contacts.region, 'north')).orderBy(asc(contacts.id)).limit(1);
    contact = north.id;
    const first = rows[0];
    const shown = ['tax_code', 'email'].filter((k) => k in first).map((k) => `${k}=${first[k]}`);
    return `rows=${rows.length} columns=${Object.keys(first).length} ${shown.join(' ')}`;
  });
  await run('paginate', async () => {
    const page = await db.select({ id: contacts.id, city: contacts.city }).from(contacts).orderBy(asc(contacts.id)).limit(10).offset(10);
    const [{ n }] = await db.select({ n: count() }).from(contacts);
    return `page=${page.length} total=${n}`;
  });
  await run('join', async () => {
    const rows = await db
      .select({ channel: interactions.channel, n: count() })
      .from(interactions)
      .innerJoin(contacts, eq(contacts.id, interactions.contact_id))
      .groupBy(interactions.channel)
      .orderBy(interactions.channel);
    return `channels=${rows.map((r) => r.channel).join(',')}`;
  });
  await run('relational_json', async () => {
    // Drizzle's relational queries build each contact's interactions as JSON in PostgreSQL.
    const rows = await db.query.contacts.findMany({
      columns: { id: true, city: true },
      with: { interactions: { columns: { id: true, channel: true }, orderBy: (i, { asc: a }) => [a(i.id)] } },
      orderBy: (c, { asc: a }) => [a(c.id)],
      limit: 3,
    });
    const children = rows.reduce((sum, r) => sum + r.interactions.length, 0);
    const linked = rows.every((r) => Array.isArray(r.interactions));
    return `contacts=${rows.length} interactions=${children} linked=${linked}`;
  });
  await run('json', async () => {
    const [r] = await db
      .select({ doc: sql`jsonb_build_object('city', ${contacts.city}, 'row', to_jsonb(${contacts}))` })
      .from(contacts)
      .orderBy(asc(contacts.id))
      .limit(1);
    const shown = ['tax_code', 'email'].filter((k) => k in r.doc.row).map((k) => `${k}=${r.doc.row[k]}`);
    return `keys=${Object.keys(r.doc.row).length} ${shown.join(' ')}`;
  });
  await run('enum_filter', async () => {
    const [r] = await db.select({ n: count() }).from(interactions).where(inArray(interactions.channel, ['call', 'meeting']));
    return `n=${r.n}`;
  });
  await run('insert_returning', async () => {
    const [r] = await db.insert(interactions).values(row(base)).returning({ id: interactions.id, channel: interactions.channel });
    return `id=${r.id} channel=${r.channel}`;
  });
  await run('bulk_insert', async () => {
    const rows = await db.insert(interactions).values([1, 2, 3, 4, 5].map((i) => row(base + i, CHANNELS[i % 3]))).returning({ id: interactions.id });
    return `inserted=${rows.length}`;
  });
  await run('insert_or_ignore', async () => {
    const rows = await db.insert(interactions).values([row(base), row(base + 6)]).onConflictDoNothing().returning({ id: interactions.id });
    return `inserted=${rows.length}`;
  });
  await run('get_or_create', async () => {
    // Drizzle has no helper: insert or ignore, then select.
    await db.insert(interactions).values(row(base + 7, 'email')).onConflictDoNothing();
    const [r] = await db.select({ channel: interactions.channel }).from(interactions).where(eq(interactions.id, base + 7));
    return `channel=${r.channel}`;
  });
  await run('upsert', async () => {
    const rows = await db.insert(interactions).values(row(base)).onConflictDoUpdate({ target: interactions.id, set: { channel: 'meeting' } }).returning({ id: interactions.id });
    return `upserted=${rows.length}`;
  });
  await run('update', async () => {
    const rows = await db.update(interactions).set({ channel: 'meeting' }).where(eq(interactions.id, base + 1)).returning({ id: interactions.id });
    return `updated=${rows.length}`;
  });
  // The write-back of a loaded row: every column as read, one changed (contacts' city; for support,
  // which may not update contacts, a ticket's status).
  const written = role === 'support' ? tickets : contacts;
  const change = role === 'support' ? { status: 'pending' } : { city: 'Drizzlecity' };
  await run('save_loaded', async () => {
    const [loaded] = await db.select().from(written).orderBy(asc(written.id)).limit(1);
    const { id, ...rest } = loaded;
    const rows = await db.update(written).set({ ...rest, ...change }).where(eq(written.id, id)).returning();
    const saved = rows[0] || {};
    const shown = ['tax_code', 'subject'].filter((k) => k in saved).map((k) => `${k}=${saved[k]}`);
    return `updated=${rows.length} ${shown.join(' ')}`;
  });
  await run('save_changed_masked', async () => {
    // The last row (the unrestricted user's run changes it: the first rows are what the tests read).
    const [loaded] = await db.select().from(written).orderBy(desc(written.id)).limit(1);
    const masked = role === 'support' ? { subject: 'A new subject' } : 'tax_code' in loaded ? { tax_code: 'XXXXXXXXXXXXXXXX' } : { city: 'Elsewhere' };
    const rows = await db.update(written).set(masked).where(eq(written.id, loaded.id)).returning({ id: written.id });
    return `updated=${rows.length}`;
  });
  await run('transaction_savepoint', async () => {
    await db.transaction(async (tx) => {
      await tx.insert(interactions).values(row(base + 8));
      await tx
        .transaction(async (inner) => {
          await inner.insert(interactions).values(row(base + 9));
          inner.rollback();
        })
        .catch((err) => {
          if (!(err instanceof TransactionRollbackError)) throw err;
        });
    });
    const ids = await db.select({ id: interactions.id }).from(interactions).where(inArray(interactions.id, [base + 8, base + 9]));
    return `kept=${ids.map((r) => r.id - base).join(',')}`;
  });
  await run('cursor_in_transaction', async () => {
    let streamed = 0;
    await db.transaction(async (tx) => {
      await tx.execute(sql`DECLARE drizzle_cur CURSOR FOR SELECT id, city FROM contacts ORDER BY id`);
      for (;;) {
        const r = await tx.execute(sql`FETCH 25 FROM drizzle_cur`);
        if (r.rows.length === 0) break;
        streamed += r.rows.length;
      }
    });
    return `streamed=${streamed}`;
  });
  await run('select_health_records', async () => {
    const [r] = await db.select({ n: count() }).from(health);
    return `n=${r.n}`;
  });
  await run('after_refusal', async () => {
    const [r] = await db.select({ n: count() }).from(contacts).where(eq(contacts.region, 'north'));
    return `n=${r.n}`;
  });
  await run('delete', async () => {
    const rows = await db.delete(interactions).where(mine).returning({ id: interactions.id });
    return `deleted=${rows.length}`;
  });
  await pool.end();
  console.log('done');
}

main().catch((err) => {
  console.log(`main\tbroken\t${String(err && err.stack ? err.stack : err).split(/\s+/).join(' ')}`);
  process.exit(1);
});
