//! Prepared statements in transaction mode, as pgbouncer (≥ 1.21) and pgdog do them: a client's
//! named statement is prepared on whichever pooled connection serves the message that uses it.
//!
//! What goes upstream is rewritten just before it is written to the connection, after the session
//! hook decided (so the statement prepared is the hook's rewritten text):
//! - Parse of a named statement `N`: remembered for the client as the server-side name `S`, a
//!   digest of its text and parameter types (equal statements of the clients of one pool share
//!   one server-side statement), and sent as `Close S` + `Parse S` (the CloseComplete withheld),
//!   so the client's ParseComplete comes from PostgreSQL whatever the connection already holds.
//! - Bind, or Describe of a statement, naming `N`: sent naming `S`, preceded by `Close S` +
//!   `Parse S` (both answers withheld) when the connection does not hold `S` yet.
//! - Close of `N`: forgotten for the client and sent as a Close of a name no statement has, so
//!   PostgreSQL answers CloseComplete and other clients' use of `S` goes on.
//! - A name the client did not prepare passes unchanged (PostgreSQL answers 26000 as it would),
//!   except one in the proxy's own namespace, which is sent as a name no statement has.
//! - A batch of named Parses and a Sync that comes between transactions (the session holds no
//!   connection) is answered by the proxy itself (ParseComplete each, ReadyForQuery `I`): the
//!   statements are remembered and prepared where their first Bind or Describe runs, and an error
//!   in their text comes from PostgreSQL there (as pgcat does). Waiting for a connection only to
//!   prepare would stall a client that prepares synchronously while it holds other sessions'
//!   transactions open on the same thread (pgbench `-M prepared` with more clients than threads:
//!   its `PQprepare` blocks the thread, whose other clients hold every connection of the pool).
//!
//! What the connection holds is learnt from PostgreSQL's answers: a statement counts as prepared on
//! it once its ParseComplete arrived; the answers of messages PostgreSQL skipped after an error (up
//! to Sync) are never expected. SQL-level `PREPARE`/`EXECUTE` are not handled here (they pin the
//! session: see `pinning`).
//!
//! A connection holds at most `[pool] prepared_statements_per_connection` statements: before a
//! `Parse S` that would pass the cap, the statement the connection used least recently is closed
//! (`Close`, its CloseComplete withheld), in the stream of the client the connection serves, so no
//! other client's messages are involved. Only a statement not used since the connection was last
//! quiet (nothing in flight) is closed, so no message on its way needs it; a client that uses it
//! later has it prepared again, as on any connection that lacks it.
//!
//! Unnamed statements pass unchanged unless `[upstream] plan_cache` is on (see `plan_cache`,
//! which also serves session mode).
//!
//! Not for: the pools (see `pool`), or the statement text (the session hook's).

pub mod plan_cache;

use crate::wire::frame::{self, POSTGRES_MAX_FRAME};
use crate::wire::{Frontend, Target};
use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};

pub use super::statement_cache::ServerStatements;

/// The prefix of the server-side names of pooled statements.
const PREFIX: &[u8] = b"maschera_ps_";
/// A name no statement has (Close of it is answered with CloseComplete).
const NO_STATEMENT: &[u8] = b"maschera_ps_none";

/// A client's named statement.
#[derive(Debug, Clone)]
struct Statement {
    server: Bytes,
    /// The Parse that prepares it under `server`.
    parse: Bytes,
}

/// What becomes of one answer (ParseComplete or CloseComplete) still to come.
#[derive(Debug)]
struct Expected {
    /// The cycle (count of cycle-ending messages written before the message) it belongs to.
    cycle: u64,
    withhold: bool,
    /// The server-side statement its ParseComplete confirms.
    prepares: Option<Bytes>,
    /// The server-side statement its CloseComplete closes (evicted: see the module doc).
    closes: Option<Bytes>,
}

/// One client session's statements and the answers expected on its connection.
#[derive(Debug, Default)]
pub struct Prepared {
    statements: HashMap<Vec<u8>, Statement>,
    expected: VecDeque<Expected>,
    /// Cycle-ending messages (Query, Sync, FunctionCall) written to the connection.
    written: u64,
    /// ReadyForQuery answers seen.
    answered: u64,
    /// Statements per connection (`[pool] prepared_statements_per_connection`; 0: no limit).
    cap: usize,
    /// The connection's clock (`ServerStatements::now`) when it was last quiet: nothing in flight.
    quiet: u64,
    /// Session mode: the client's named statements pass unchanged.
    pass_named: bool,
    /// The cache of unnamed statements' plans, when on (see `plan_cache`).
    unnamed: Option<plan_cache::UnnamedCache>,
    /// The transaction status of the last ReadyForQuery (`I` before any).
    status: u8,
}

impl Statement {
    /// The statement of `sql` with `param_types`, under its server-side name.
    fn new(sql: &[u8], param_types: &[u8]) -> Statement {
        let server = server_name(sql, param_types);
        let parse = Frontend::Parse {
            name: &server,
            sql,
            param_types,
        }
        .to_frame()
        .freeze();
        Statement { server, parse }
    }
}

/// ParseComplete.
const PARSE_COMPLETE: &[u8] = &[b'1', 0, 0, 0, 4];

fn server_name(sql: &[u8], param_types: &[u8]) -> Bytes {
    let mut digest = Sha256::new();
    digest.update((sql.len() as u64).to_be_bytes());
    digest.update(sql);
    digest.update(param_types);
    let mut name = PREFIX.to_vec();
    name.extend_from_slice(hex::encode(&digest.finalize()[..16]).as_bytes());
    Bytes::from(name)
}

/// Whether any frame in `bytes` may need a rewrite (cheap: tags only).
fn may_rewrite(bytes: &[u8]) -> bool {
    frames(bytes).any(|f| matches!(f[0], b'P' | b'B' | b'D' | b'C'))
}

fn frames(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        let header = frame::peek_header(rest, POSTGRES_MAX_FRAME).ok()??;
        let (frame, after) = rest.split_at_checked(header.len)?;
        rest = after;
        Some(frame)
    })
}

fn ends_cycle(tag: u8) -> bool {
    matches!(tag, b'Q' | b'S' | b'F')
}

impl Prepared {
    /// A client's statements on connections holding at most `cap` statements (0: no limit).
    pub fn new(cap: usize) -> Prepared {
        Prepared {
            cap,
            status: b'I',
            ..Prepared::default()
        }
    }

    /// The bytes to write instead of `bytes` (whole frames) to a connection holding `server`;
    /// `None`: `bytes` unchanged.
    pub fn outgoing(&mut self, server: &mut ServerStatements, bytes: &[u8]) -> Option<BytesMut> {
        if !may_rewrite(bytes) && !self.cache_wants(bytes) {
            self.written += frames(bytes).filter(|f| ends_cycle(f[0])).count() as u64;
            return None;
        }
        let mut out = BytesMut::with_capacity(bytes.len());
        for frame in frames(bytes) {
            self.record(frame);
            self.rewrite(server, frame, &mut out);
            self.framed(frame);
            if ends_cycle(frame[0]) {
                self.written += 1;
            }
        }
        Some(out)
    }

    fn expect(&mut self, withhold: bool, prepares: Option<Bytes>) {
        self.expected.push_back(Expected {
            cycle: self.written,
            withhold,
            prepares,
            closes: None,
        });
    }

    /// Closes statements of the connection, least recently used first, until one more fits
    /// under the cap.
    fn make_room(&mut self, server: &mut ServerStatements, out: &mut BytesMut) {
        if self.cap == 0 {
            return;
        }
        let coming = self
            .expected
            .iter()
            .filter(|e| e.prepares.is_some())
            .count();
        while server.len() + coming >= self.cap {
            let Some(victim) = server.evict(self.quiet) else {
                return;
            };
            Frontend::Close {
                target: Target::Statement,
                name: &victim,
            }
            .encode(out);
            self.expected.push_back(Expected {
                cycle: self.written,
                withhold: true,
                prepares: None,
                closes: Some(victim),
            });
        }
    }

    /// Forgets the expected answers `gone` selects (they will not come); a Close among them did
    /// not run, so its statement is still on the connection.
    fn drop_expected(&mut self, server: &mut ServerStatements, gone: impl Fn(&Expected) -> bool) {
        self.expected.retain(|e| {
            if !gone(e) {
                return true;
            }
            if let Some(name) = &e.closes {
                server.restore(name.clone());
            }
            false
        });
    }

    /// Whether `name` is prepared on the connection or on its way there.
    fn held(&self, server: &ServerStatements, name: &Bytes) -> bool {
        server.contains(name)
            || self
                .expected
                .iter()
                .any(|e| e.prepares.as_ref() == Some(name))
    }

    /// `Close S` + `Parse S` before a message that uses `S`, unless the connection holds it.
    fn ensure(&mut self, server: &mut ServerStatements, statement: &Statement, out: &mut BytesMut) {
        if self.held(server, &statement.server) {
            server.touch(&statement.server);
            return;
        }
        self.close_then_parse(server, statement, true, out);
    }

    /// `Close S` + `Parse S`: the connection holds `S` again once the ParseComplete comes.
    fn close_then_parse(
        &mut self,
        server: &mut ServerStatements,
        statement: &Statement,
        withhold_parse: bool,
        out: &mut BytesMut,
    ) {
        server.remove(&statement.server);
        self.make_room(server, out);
        Frontend::Close {
            target: Target::Statement,
            name: &statement.server,
        }
        .encode(out);
        self.expect(true, None);
        out.extend_from_slice(&statement.parse);
        self.expect(withhold_parse, Some(statement.server.clone()));
    }

    /// The name to send for the client's statement `name`, after what prepares it on the
    /// connection if it is not there yet: its server-side name, or the name itself when the client
    /// did not prepare it (a name in the proxy's namespace: one no statement has).
    fn use_statement(
        &mut self,
        server: &mut ServerStatements,
        name: &[u8],
        out: &mut BytesMut,
    ) -> Bytes {
        let statement = if name.is_empty() {
            self.unnamed_statement()
        } else if self.pass_named {
            None
        } else {
            self.statements.get(name).cloned()
        };
        match statement {
            Some(statement) => {
                self.ensure(server, &statement, out);
                statement.server
            }
            None if name.starts_with(PREFIX) => Bytes::from_static(NO_STATEMENT),
            None => Bytes::copy_from_slice(name),
        }
    }

    /// Whether a Bind, Describe or Close naming `name` is sent under another name: the client's
    /// named statements (unless they pass: session mode), the proxy's namespace, and the unnamed
    /// statement when the cache made it one of the connection's.
    fn renames(&self, name: &[u8]) -> bool {
        if name.is_empty() {
            self.unnamed_statement().is_some()
        } else {
            !self.pass_named || name.starts_with(PREFIX)
        }
    }

    fn rewrite(&mut self, server: &mut ServerStatements, frame: &[u8], out: &mut BytesMut) {
        let Ok(message) = Frontend::decode(frame) else {
            out.extend_from_slice(frame);
            return;
        };
        match message {
            Frontend::Parse {
                name: [],
                sql,
                param_types,
            } => self.parse_unnamed(server, frame, sql, param_types, out),
            Frontend::Parse { .. } if self.pass_named => {
                out.extend_from_slice(frame);
                self.expect(false, None);
            }
            Frontend::Parse {
                name,
                sql,
                param_types,
            } => {
                let statement = Statement::new(sql, param_types);
                self.close_then_parse(server, &statement, false, out);
                self.statements.insert(name.to_vec(), statement);
            }
            Frontend::Bind {
                portal,
                statement,
                rest,
            } if self.renames(statement) => {
                let name = self.use_statement(server, statement, out);
                Frontend::Bind {
                    portal,
                    statement: &name,
                    rest,
                }
                .encode(out);
            }
            Frontend::Describe {
                target: Target::Statement,
                name,
            } if self.renames(name) => {
                let name = self.use_statement(server, name, out);
                Frontend::Describe {
                    target: Target::Statement,
                    name: &name,
                }
                .encode(out);
            }
            Frontend::Close {
                target: Target::Statement,
                name,
            } if !name.is_empty() && self.renames(name) => {
                self.statements.remove(name);
                Frontend::Close {
                    target: Target::Statement,
                    name: NO_STATEMENT,
                }
                .encode(out);
                self.expect(false, None);
            }
            Frontend::Close { target, name } => {
                if target == Target::Statement && name.is_empty() {
                    self.close_unnamed();
                }
                out.extend_from_slice(frame);
                self.expect(false, None);
            }
            _ => out.extend_from_slice(frame),
        }
    }

    /// An answer from PostgreSQL (`1` ParseComplete, `3` CloseComplete, `E` ErrorResponse, `Z`
    /// ReadyForQuery): whether the client must not see it (it answers a message the proxy added).
    pub fn incoming(&mut self, server: &mut ServerStatements, tag: u8) -> bool {
        let cycle = self.answered;
        match tag {
            b'1' | b'3' => {
                while self.expected.front().is_some_and(|e| e.cycle < cycle) {
                    self.expected.pop_front();
                }
                let Some(expected) = self.expected.pop_front() else {
                    return false;
                };
                if let Some(name) = expected.prepares {
                    server.insert(name);
                }
                expected.withhold
            }
            b'E' => {
                // PostgreSQL skips the rest of the cycle up to Sync: those answers never come.
                self.drop_expected(server, |e| e.cycle == cycle);
                false
            }
            b'Z' => {
                self.answered += 1;
                let answered = self.answered;
                self.drop_expected(server, |e| e.cycle < answered);
                if self.answered == self.written {
                    self.quiet = server.now();
                }
                false
            }
            _ => false,
        }
    }

    /// The answer to `bytes` (whole frames, as the hook decided them) when the session holds no
    /// connection, if it needs none: named Parses and a Sync, remembered as the client's
    /// statements and answered with a ParseComplete each and ReadyForQuery `I` (see the module
    /// doc). `None`: the batch needs a connection.
    pub fn answer_alone(&mut self, bytes: &[u8]) -> Option<BytesMut> {
        if self.pass_named {
            return None;
        }
        let mut parses = Vec::new();
        let mut covered = 0;
        let mut synced = false;
        for frame in frames(bytes) {
            covered += frame.len();
            match Frontend::decode(frame) {
                Ok(Frontend::Parse {
                    name,
                    sql,
                    param_types,
                }) if !name.is_empty() && !synced => parses.push((name, sql, param_types)),
                Ok(Frontend::Sync) if !synced => synced = true,
                _ => return None,
            }
        }
        if !synced || covered != bytes.len() {
            return None;
        }
        let mut answer = BytesMut::with_capacity(PARSE_COMPLETE.len() * parses.len() + 6);
        for (name, sql, param_types) in parses {
            self.statements
                .insert(name.to_vec(), Statement::new(sql, param_types));
            answer.extend_from_slice(PARSE_COMPLETE);
        }
        answer.extend_from_slice(&frame::ready_for_query(b'I'));
        Some(answer)
    }

    /// The client discarded its session (`DISCARD ALL`): its named statements are gone.
    pub fn forget_all(&mut self) {
        self.statements.clear();
    }

    /// A new connection, holding `server`, was attached: what was expected on the previous one is
    /// gone with it, and nothing is in flight on this one.
    pub fn attached(&mut self, server: &ServerStatements) {
        self.expected.clear();
        self.written = 0;
        self.answered = 0;
        self.quiet = server.now();
        self.status = b'I';
        self.cache_attached();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, sql: &str) -> BytesMut {
        Frontend::Parse {
            name: name.as_bytes(),
            sql: sql.as_bytes(),
            param_types: b"\0\0",
        }
        .to_frame()
    }

    fn bind(statement: &str) -> BytesMut {
        Frontend::Bind {
            portal: b"",
            statement: statement.as_bytes(),
            rest: b"\0\0\0\0\0\0",
        }
        .to_frame()
    }

    fn sync() -> BytesMut {
        Frontend::Sync.to_frame()
    }

    /// The messages of `bytes` as `P name`, `B statement`, `C name`, `S`.
    fn messages(bytes: &[u8]) -> Vec<String> {
        frames(bytes)
            .map(|f| match Frontend::decode(f).unwrap() {
                Frontend::Parse { name, .. } => format!("P {}", String::from_utf8_lossy(name)),
                Frontend::Bind { statement, .. } => {
                    format!("B {}", String::from_utf8_lossy(statement))
                }
                Frontend::Close { name, .. } => format!("C {}", String::from_utf8_lossy(name)),
                other => (other.tag() as char).to_string(),
            })
            .collect()
    }

    fn join(parts: &[BytesMut]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.to_vec()).collect()
    }

    #[test]
    fn a_statement_parsed_on_one_connection_is_prepared_lazily_on_another() {
        let mut client = Prepared::default();
        let mut first = ServerStatements::default();
        let name = server_name(b"SELECT 1", b"\0\0");
        let name = String::from_utf8_lossy(&name).into_owned();
        let prepared_then_bound = [
            format!("C {name}"),
            format!("P {name}"),
            format!("B {name}"),
            "S".into(),
        ];
        let sent = client
            .outgoing(
                &mut first,
                &join(&[parse("s1", "SELECT 1"), bind("s1"), sync()]),
            )
            .unwrap();
        assert_eq!(messages(&sent), prepared_then_bound);
        // CloseComplete withheld, ParseComplete passed; the statement is now on `first`.
        assert!(client.incoming(&mut first, b'3'));
        assert!(!client.incoming(&mut first, b'1'));
        assert!(!client.incoming(&mut first, b'Z'));
        // The next transaction is served by another connection: prepared there before the Bind,
        // with both answers withheld.
        let mut second = ServerStatements::default();
        client.attached(&second);
        let sent = client
            .outgoing(&mut second, &join(&[bind("s1"), sync()]))
            .unwrap();
        assert_eq!(messages(&sent), prepared_then_bound);
        assert!(client.incoming(&mut second, b'3'));
        assert!(client.incoming(&mut second, b'1'));
        client.incoming(&mut second, b'Z');
        // Once there, a Bind goes alone.
        let sent = client
            .outgoing(&mut second, &join(&[bind("s1"), sync()]))
            .unwrap();
        assert_eq!(messages(&sent), [format!("B {name}"), "S".into()]);
    }

    #[test]
    fn named_parses_and_a_sync_are_answered_alone_and_prepared_where_first_used() {
        let mut client = Prepared::default();
        let answer = client
            .answer_alone(&join(&[
                parse("s1", "SELECT 1"),
                parse("s2", "SELEC"),
                sync(),
            ]))
            .unwrap();
        assert_eq!(&answer[..], b"1\0\0\0\x041\0\0\0\x04Z\0\0\0\x05I");
        // Anything else needs a connection: a Bind, an unnamed Parse, a batch without its Sync
        // or with more after it, a partial frame.
        for batch in [
            join(&[parse("s3", "SELECT 3"), bind("s3"), sync()]),
            join(&[parse("", "SELECT 3"), sync()]),
            join(&[parse("s3", "SELECT 3")]),
            join(&[
                parse("s3", "SELECT 3"),
                sync(),
                parse("s4", "SELECT 4"),
                sync(),
            ]),
            join(&[parse("s3", "SELECT 3"), sync()])[..8].to_vec(),
        ] {
            assert!(client.answer_alone(&batch).is_none());
        }
        let mut server = ServerStatements::default();
        client.attached(&server);
        let sent = client
            .outgoing(&mut server, &join(&[bind("s1"), sync()]))
            .unwrap();
        let name = String::from_utf8_lossy(&server_name(b"SELECT 1", b"\0\0")).into_owned();
        assert_eq!(
            messages(&sent),
            [
                format!("C {name}"),
                format!("P {name}"),
                format!("B {name}"),
                "S".into()
            ]
        );
        // Session mode: named statements pass, so they are PostgreSQL's to answer.
        let mut session = Prepared::new(0).with_plan_cache(true).passing_named();
        assert!(
            session
                .answer_alone(&join(&[parse("s1", "SELECT 1"), sync()]))
                .is_none()
        );
    }

    #[test]
    fn a_failed_prepare_is_not_taken_as_prepared_and_unknown_names_pass() {
        let mut client = Prepared::default();
        let mut server = ServerStatements::default();
        client.outgoing(&mut server, &join(&[parse("bad", "SELEC 1"), sync()]));
        assert!(client.incoming(&mut server, b'3'));
        assert!(!client.incoming(&mut server, b'E'));
        client.incoming(&mut server, b'Z');
        assert_eq!(server.len(), 0);
        let sent = client
            .outgoing(&mut server, &join(&[bind("other"), sync()]))
            .unwrap();
        assert_eq!(messages(&sent), ["B other", "S"]);
        // Another client's server-side name is not reachable by naming it.
        let theirs = String::from_utf8_lossy(&server_name(b"SELECT 1", b"\0\0")).into_owned();
        let sent = client
            .outgoing(&mut server, &join(&[bind(&theirs), sync()]))
            .unwrap();
        assert_eq!(messages(&sent), ["B maschera_ps_none", "S"]);
        // Unnamed statements and plain queries pass as they are.
        let plain = join(&[parse("", "SELECT 2"), bind(""), sync()]);
        let sent = client.outgoing(&mut server, &plain).unwrap();
        assert_eq!(&sent[..], &plain[..]);
        let query = Frontend::Query { sql: b"SELECT 3" }.to_frame();
        assert!(client.outgoing(&mut server, &query).is_none());
    }

    #[test]
    fn a_connection_holds_at_most_the_cap_closing_the_statement_used_least_recently() {
        let mut client = Prepared::new(2);
        let mut server = ServerStatements::default();
        let name =
            |sql: &str| String::from_utf8_lossy(&server_name(sql.as_bytes(), b"\0\0")).into_owned();
        for (statement, sql) in [("s1", "SELECT 1"), ("s2", "SELECT 2")] {
            client.outgoing(&mut server, &join(&[parse(statement, sql), sync()]));
            assert!(client.incoming(&mut server, b'3'));
            assert!(!client.incoming(&mut server, b'1'));
            client.incoming(&mut server, b'Z');
        }
        client.outgoing(&mut server, &join(&[bind("s1"), sync()]));
        client.incoming(&mut server, b'Z');
        // A third statement: s2, used least recently, is closed first; both Closes' answers are
        // withheld, the client sees its ParseComplete.
        let sent = client
            .outgoing(&mut server, &join(&[parse("s3", "SELECT 3"), sync()]))
            .unwrap();
        let (n1, n2, n3) = (name("SELECT 1"), name("SELECT 2"), name("SELECT 3"));
        assert_eq!(
            messages(&sent),
            [
                format!("C {n2}"),
                format!("C {n3}"),
                format!("P {n3}"),
                "S".into()
            ]
        );
        assert!(client.incoming(&mut server, b'3'));
        assert!(client.incoming(&mut server, b'3'));
        assert!(!client.incoming(&mut server, b'1'));
        client.incoming(&mut server, b'Z');
        assert_eq!(server.len(), 2);
        // s2 again: prepared again in place of s1.
        let sent = client
            .outgoing(&mut server, &join(&[bind("s2"), sync()]))
            .unwrap();
        assert_eq!(
            messages(&sent),
            [
                format!("C {n1}"),
                format!("C {n2}"),
                format!("P {n2}"),
                format!("B {n2}"),
                "S".into()
            ]
        );
        for answer in [b'3', b'3', b'1'] {
            assert!(client.incoming(&mut server, answer));
        }
        client.incoming(&mut server, b'Z');
        assert_eq!(server.len(), 2);
        // An error before the evicting Close: PostgreSQL skips it, the statement is still there.
        client.outgoing(
            &mut server,
            &join(&[parse("", "SELEC"), parse("s4", "SELECT 4"), sync()]),
        );
        assert!(!client.incoming(&mut server, b'E'));
        client.incoming(&mut server, b'Z');
        assert_eq!(server.len(), 2);
        assert!(server.contains(&Bytes::from(n3.into_bytes())));
    }
}
