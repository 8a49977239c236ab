// Shared by every Node.js client script of tests/compat/ (node/, jsmore/, orm/ drizzle and objection,
// end_user/): runs one operation and prints one line saying how it ended,
// `op<TAB>pass|refused|broken<TAB>detail` (refused: the server's ErrorResponse, with its SQLSTATE, as
// the driver or the ORM wrapping it reports it; broken: anything else). The Rust tests
// (tests/tests/e2e/compat*.rs) read these lines. outcome.py is the same for the Python scripts.
// Not for: the JSON lines of the Sequelize and TypeORM scripts (orm/common.js).
'use strict';

function oneLine(text) {
  return String(text).split(/\s+/).join(' ').slice(0, 300);
}

/** The server's error inside `err`: pg's DatabaseError (`severity`), postgres.js's PostgresError, or
 * one an ORM wraps (`cause`, `nativeError`, `parent`, `original`). */
function serverError(err) {
  const seen = new Set();
  let e = err;
  while (e && typeof e === 'object' && !seen.has(e)) {
    seen.add(e);
    if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code) && (e.severity || e.name === 'PostgresError')) return e;
    e = e.cause || e.nativeError || e.parent || e.original;
  }
  return undefined;
}

/** Runs `fn`, prints its outcome line; true when it passed. */
async function run(op, fn) {
  try {
    const detail = await fn();
    console.log(`${op}\tpass\t${oneLine(detail ?? '')}`);
    return true;
  } catch (err) {
    const server = serverError(err);
    if (server) {
      console.log(`${op}\trefused\t${server.code} ${oneLine(server.message)}`);
    } else {
      console.log(`${op}\tbroken\t${oneLine(err && err.stack ? err.stack : err)}`);
    }
    return false;
  }
}

module.exports = { run, oneLine };
