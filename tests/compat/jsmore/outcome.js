// Shared by the postgres.js and Knex scripts: runs one operation and prints one line saying how it
// ended, `op<TAB>pass|refused|broken<TAB>detail` (refused: the server's ErrorResponse, with its
// SQLSTATE; broken: anything else). tests/tests/e2e/compat_more.rs reads these lines.
'use strict';

function oneLine(text) {
  return String(text).split(/\s+/).join(' ').slice(0, 300);
}

async function run(op, fn) {
  try {
    const detail = await fn();
    console.log(`${op}\tpass\t${oneLine(detail ?? '')}`);
    return true;
  } catch (err) {
    // postgres.js: PostgresError with `code`; pg (under Knex): DatabaseError with `code` and `severity`.
    if (err && typeof err.code === 'string' && /^[0-9A-Z]{5}$/.test(err.code) && (err.severity || err.name === 'PostgresError')) {
      console.log(`${op}\trefused\t${err.code} ${oneLine(err.message)}`);
    } else {
      console.log(`${op}\tbroken\t${oneLine(err && err.stack ? err.stack : err)}`);
    }
    return false;
  }
}

module.exports = { run, oneLine };
