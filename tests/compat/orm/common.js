// What the Sequelize and TypeORM scripts share: the reference CRM's columns and what each role's
// application maps of them (a column the matrix drops does not exist for the role, so the role's
// application leaves it out of its model), the ids each run writes, and the output: one JSON object a
// line, `{"op", "outcome": "pass"|"refused"|"broken", ...}`, then `done`. Not for: the operations
// themselves (one script per ORM) or what a role must get (tests/tests/e2e/orm_node.rs holds that).
'use strict';

const ROLES = { dora: 'dpo', sam: 'sales', mia: 'marketing', tom: 'support', ana: 'analyst' };

// Every column of the tables the scripts model, with its type: bigint, text, date, timestamp, numeric.
const COLUMNS = {
  contacts: {
    id: 'bigint', first_name: 'text', last_name: 'text', email: 'text', phone: 'text', birth_date: 'date',
    tax_code: 'text', street_address: 'text', city: 'text', region: 'text', created_at: 'timestamp',
    last_activity_at: 'timestamp',
  },
  deals: { id: 'bigint', contact_id: 'bigint', amount: 'numeric', stage: 'text', created_at: 'timestamp', closed_at: 'timestamp' },
  interactions: { id: 'bigint', contact_id: 'bigint', channel: 'text', notes: 'text', occurred_at: 'timestamp' },
  tickets: { id: 'bigint', contact_id: 'bigint', subject: 'text', body: 'text', status: 'text', created_at: 'timestamp' },
  consents: { id: 'bigint', contact_id: 'bigint', purpose: 'text', granted_at: 'timestamp', withdrawn_at: 'timestamp', source: 'text' },
};

// The columns the matrix drops for a role (or the whole table, `*`).
const DROPPED = {
  marketing: { contacts: ['phone', 'tax_code', 'street_address'], interactions: ['notes'], deals: '*', tickets: '*' },
  support: { contacts: ['birth_date', 'tax_code', 'street_address'], deals: '*' },
  analyst: {
    contacts: ['first_name', 'last_name', 'email', 'phone', 'tax_code', 'street_address'],
    interactions: ['notes'], tickets: ['subject', 'body'],
  },
};

/** The columns (name → type) of `table` that `role`'s application maps, or null for a denied table. */
function columnsFor(role, table) {
  const dropped = (DROPPED[role] || {})[table] || [];
  if (dropped === '*') return null;
  return Object.fromEntries(Object.entries(COLUMNS[table]).filter(([name]) => !dropped.includes(name)));
}

/** A row as JSON the test compares: every value a string (dates as ISO text) or null, keys sorted. */
function plain(row) {
  if (row == null) return null;
  const values = typeof row.get === 'function' ? row.get({ plain: true }) : row;
  const out = {};
  for (const key of Object.keys(values).sort()) {
    const value = values[key];
    if (Array.isArray(value)) out[key] = value.map(plain);
    else if (value == null) out[key] = null;
    else if (value instanceof Date) out[key] = value.toISOString();
    else if (typeof value === 'object') out[key] = plain(value);
    else out[key] = String(value);
  }
  return out;
}

/** The SQLSTATE of a database error as the ORM wraps it, or undefined. */
function sqlstate(err) {
  for (const e of [err, err && err.parent, err && err.original, err && err.driverError]) {
    if (e && typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)) return [e.code, e.message];
  }
  return undefined;
}

/** Runs one operation and prints its outcome line; `fn` returns the facts to print. */
async function run(op, fn) {
  let line;
  try {
    line = { op, outcome: 'pass', ...(await fn()) };
  } catch (err) {
    const state = sqlstate(err);
    line = state
      ? { op, outcome: 'refused', code: state[0], message: String(state[1]) }
      : { op, outcome: 'broken', message: String(err && err.stack ? err.stack : err) };
  }
  console.log(JSON.stringify(line));
}

/** The user, its role and the first id this run writes (`base`), from `node SCRIPT URI USER BASE`. */
function args() {
  const [uri, user, base] = process.argv.slice(2);
  const role = ROLES[user];
  if (!uri || !role || !base) throw new Error('usage: node SCRIPT URI USER BASE_ID');
  return { uri, user, role, base: Number(base) };
}

module.exports = { ROLES, COLUMNS, columnsFor, plain, run, args };
