//! End users behind one application login (issue 22): an application user of the users file sends
//! `SET maschera.end_user = '<token>'` (or `SET LOCAL`, `RESET`, `set_config` with a bound
//! parameter) and the proxy verifies the signed token, checks it against the application's bounds
//! and serves the following statements as that end user.
//!
//! - `token`: verifying tokens (and their cache);
//! - `sign`: signing tokens (`maschera end-user token`);
//! - `application`: the end user a token names, within the application's bounds (kept in the
//!   users file, see `users::application`);
//! - `route`: recognising the statements that set the end user;
//! - `state`: which end user is in force, with PostgreSQL's transaction semantics;
//! - `held`: a `BEGIN` held back until the transaction's end user is known;
//! - `failures`: bad tokens counted per application and client address;
//! - `hook`: the application user's session hook;
//! - `source`: its upstream connections, one per end-user upstream it used;
//! - `cmd`: the `maschera end-user` command.
//!
//! Not for: the users file (see `users`), the `[end_users]` section (see `config::end_users`) or
//! serving a role (see `enforce`).

pub mod application;
pub mod cmd;
pub mod failures;
pub mod held;
pub mod hook;
pub mod route;
pub mod sign;
pub mod source;
pub mod state;
pub mod token;
