//! Plan caching for the client's unnamed statements (`[upstream] plan_cache`): most drivers send
//! every statement as an unnamed Parse + Bind + Execute (pgjdbc below its `prepareThreshold`,
//! node-postgres, psycopg, `pgbench -M extended`), so PostgreSQL parses, rewrites and plans it
//! each time. With the cache, an unnamed Parse of a plannable statement (`SELECT`, `WITH`,
//! `INSERT`, `UPDATE`, `DELETE`, `VALUES`, `TABLE`: never transaction control, `SET`, DDL or any
//! other utility statement) is prepared on the upstream connection under the same digest name
//! `prepared` gives named statements of transaction mode (so a statement already prepared there
//! under that name is not prepared twice), and the client's Bind and Describe of the unnamed
//! statement name it. PostgreSQL's plan cache then decides, per statement, between custom plans
//! and a generic plan (after five executions, as for any named statement, e.g. pgjdbc's): with
//! skewed parameters it keeps planning per execution when the generic plan would cost more.
//!
//! When the connection already holds the statement, the client's Parse is sent as a Parse of an
//! empty unnamed statement (its ParseComplete is the client's; PostgreSQL does no analysis for
//! it). The connection's statements are bounded and evicted as in `prepared` (`[pool]
//! prepared_statements_per_connection`).
//!
//! A held statement is used only where a failure of it can be undone unseen: the Parse is the
//! first message of its cycle, the next message binds it, nothing is in flight and the session is
//! idle (autocommit; inside a transaction block the Parse passes as it came). Such a cycle is
//! recorded (up to `MAX_RECORDING` bytes) until its Sync. If its Bind fails because the
//! statement went stale (another session's DDL changed its result type: "cached plan must not
//! change result type"; or the statement was deallocated), PostgreSQL has run nothing of the
//! cycle (no BindComplete came) and skipped the rest up to Sync: the error and that
//! ReadyForQuery are withheld, and the recorded cycle is sent again with the statement prepared
//! afresh (its ParseComplete withheld, the client already has one), so the client sees the
//! answers it would have had without the cache. A changed `search_path` needs nothing: PostgreSQL
//! re-analyses a cached statement under the current path (and a changed result type is the case
//! above). If the client sent anything after that cycle's Sync before the error came, nothing is
//! sent again and the client sees the error (a pipelining client after a concurrent DDL).
//!
//! A client that changes `client_encoding` (PostgreSQL reports it with a ParameterStatus) could send
//! the same bytes meaning another text; from then on nothing more is cached for it (its held
//! statements stay, unused by new Parses).
//!
//! Not for: the client's named statements (`prepared`), or what the statement text says (the
//! session hook's).

use super::{Prepared, Statement, server_name};
use crate::net::tls::BoxStream;
use crate::session::upstream_source::{Acquiring, UpstreamKey, UpstreamSource};
use crate::wire::{Backend, ErrorFields, Frontend};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

use super::ServerStatements;

/// The largest cycle recorded to be sent again.
const MAX_RECORDING: usize = 1 << 20;

/// What the error of a stale statement says (in English), and the routine that raises it (in any
/// `lc_messages`).
const RESULT_TYPE_CHANGED: &[u8] = b"cached plan must not change result type";
const REVALIDATE: &[u8] = b"RevalidateCachedQuery";

/// The unnamed statement's state on one session (see the module doc).
#[derive(Debug, Default)]
pub(super) struct UnnamedCache {
    /// The server-side statement the client's unnamed statement is now, if it is one.
    current: Option<Statement>,
    /// The cycle that may be sent again.
    recording: Option<Recording>,
    /// A cycle to send again, for the relay to take.
    injection: Option<BytesMut>,
    /// The next unnamed Parse is the one sent again: prepared afresh, its answer withheld.
    replaying: bool,
    /// The ReadyForQuery of the failed cycle is withheld.
    withhold_ready: bool,
    /// A frame of the current cycle went upstream already.
    in_cycle: bool,
    /// The client changed `client_encoding`: nothing more is cached (see the module doc).
    off: bool,
}

#[derive(Debug)]
struct Recording {
    /// The cycle (cycle-ending messages written before it).
    cycle: u64,
    /// Its frames, as the hook decided them.
    bytes: BytesMut,
    /// The statement its Bind uses.
    server: Bytes,
    state: State,
    /// A BindComplete of the cycle came: something may have run.
    bound: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// The hit's Parse was recorded; its Bind must come next.
    ExpectBind,
    Open,
    /// Its Sync was recorded.
    Complete,
}

/// Whether `sql` is a statement PostgreSQL plans: its first word (after blanks, comments and
/// opening parentheses) is one of the plannable ones.
pub(super) fn cacheable(sql: &[u8]) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_ascii_start();
        if let Some(after) = rest.strip_prefix(b"(") {
            rest = after;
        } else if let Some(after) = rest.strip_prefix(b"--") {
            let end = after
                .iter()
                .position(|&b| b == b'\n')
                .unwrap_or(after.len());
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix(b"/*") {
            // Nested comments are rare in a statement's head: such a statement is just not cached.
            let Some(end) = after.windows(2).position(|w| w == b"*/") else {
                return false;
            };
            if after[..end].windows(2).any(|w| w == b"/*") {
                return false;
            }
            rest = &after[end + 2..];
        } else {
            break;
        }
    }
    let word_end = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    let word = &rest[..word_end];
    [
        "select", "with", "insert", "update", "delete", "values", "table",
    ]
    .iter()
    .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
}

/// Whether an ErrorResponse says `server` went stale (see the module doc).
fn stale(fields: &ErrorFields<'_>, server: &[u8]) -> bool {
    let field = |name: u8| fields.get(name).unwrap_or_default();
    let message = field(b'M');
    match fields.sqlstate().unwrap_or_default() {
        "0A000" => message == RESULT_TYPE_CHANGED || field(b'R') == REVALIDATE,
        "26000" => message.windows(server.len()).any(|w| w == server),
        _ => false,
    }
}

impl Prepared {
    /// Caches the plans of the client's unnamed statements (see the module doc).
    pub fn with_plan_cache(mut self, on: bool) -> Prepared {
        self.unnamed = on.then(UnnamedCache::default);
        self
    }

    /// Session mode: the client's named statements pass unchanged (only the cache renames).
    pub fn passing_named(mut self) -> Prepared {
        self.pass_named = true;
        self
    }

    /// Whether the cache must see the frames of `bytes` (a Query forgets the unnamed statement; a
    /// cycle being recorded takes every frame).
    pub(super) fn cache_wants(&self, bytes: &[u8]) -> bool {
        self.unnamed.as_ref().is_some_and(|cache| {
            cache.recording.is_some() || super::frames(bytes).any(|f| f[0] == b'Q')
        })
    }

    /// Before `frame` is rewritten: records it if its cycle may be sent again.
    pub(super) fn record(&mut self, frame: &[u8]) {
        let Some(cache) = self.unnamed.as_mut() else {
            return;
        };
        if frame[0] == b'Q' {
            cache.current = None;
        }
        let Some(recording) = cache.recording.as_mut() else {
            return;
        };
        let keep = match recording.state {
            State::ExpectBind => matches!(Frontend::decode(frame),
                Ok(Frontend::Bind { statement, .. }) if statement.is_empty()),
            State::Open => recording.bytes.len() + frame.len() <= MAX_RECORDING,
            // Something after the cycle went upstream before its answer.
            State::Complete => false,
        };
        if !keep {
            cache.recording = None;
            return;
        }
        recording.bytes.extend_from_slice(frame);
        recording.state = match frame[0] {
            b'S' => State::Complete,
            _ => State::Open,
        };
        if matches!(frame[0], b'Q' | b'F') {
            cache.recording = None;
        }
    }

    /// After `frame` was rewritten: whether the next frame starts a cycle.
    pub(super) fn framed(&mut self, frame: &[u8]) {
        if let Some(cache) = self.unnamed.as_mut() {
            cache.in_cycle = !super::ends_cycle(frame[0]);
        }
    }

    /// A Parse of the unnamed statement (`frame`).
    pub(super) fn parse_unnamed(
        &mut self,
        server: &mut ServerStatements,
        frame: &[u8],
        sql: &[u8],
        param_types: &[u8],
        out: &mut BytesMut,
    ) {
        let idle = self.answered == self.written && self.status == b'I';
        let written = self.written;
        let Some(cache) = self.unnamed.as_mut() else {
            out.extend_from_slice(frame);
            self.expect(false, None);
            return;
        };
        cache.current = None;
        let replay = std::mem::take(&mut cache.replaying);
        let in_cycle = cache.in_cycle || cache.off;
        if !replay && (in_cycle || !idle || !cacheable(sql)) {
            out.extend_from_slice(frame);
            self.expect(false, None);
            return;
        }
        let name = server_name(sql, param_types);
        let statement = Statement {
            parse: Frontend::Parse {
                name: &name,
                sql,
                param_types,
            }
            .to_frame()
            .freeze(),
            server: name,
        };
        if !replay && self.held(server, &statement.server) {
            server.touch(&statement.server);
            // The client's ParseComplete, from an empty unnamed statement.
            Frontend::Parse {
                name: b"",
                sql: b"",
                param_types: b"\0\0",
            }
            .encode(out);
            self.expect(false, None);
            if let Some(cache) = self.unnamed.as_mut() {
                cache.recording = Some(Recording {
                    cycle: written,
                    bytes: BytesMut::from(frame),
                    server: statement.server.clone(),
                    state: State::ExpectBind,
                    bound: false,
                });
            }
        } else {
            self.close_then_parse(server, &statement, replay, out);
        }
        if let Some(cache) = self.unnamed.as_mut() {
            cache.current = Some(statement);
        }
    }

    /// The server-side statement the client's unnamed statement is, if the cache made it one.
    pub(super) fn unnamed_statement(&self) -> Option<Statement> {
        self.unnamed.as_ref()?.current.clone()
    }

    /// The client closed its unnamed statement.
    pub(super) fn close_unnamed(&mut self) {
        if let Some(cache) = self.unnamed.as_mut() {
            cache.current = None;
        }
    }

    /// An answer from PostgreSQL (see `incoming`): whether the client must not see it.
    pub fn answer(&mut self, server: &mut ServerStatements, message: &Backend<'_>) -> bool {
        let cycle = self.answered;
        let tag = message.tag();
        if let Some(cache) = self.unnamed.as_mut() {
            match message {
                Backend::Other { tag: b'2', .. } => {
                    if let Some(recording) = cache.recording.as_mut()
                        && recording.cycle == cycle
                    {
                        recording.bound = true;
                    }
                }
                Backend::ErrorResponse(fields) => {
                    let retry = cache.recording.take_if(|r| {
                        r.cycle == cycle
                            && r.state == State::Complete
                            && !r.bound
                            && stale(fields, &r.server)
                    });
                    if let Some(recording) = retry {
                        server.remove(&recording.server);
                        cache.current = None;
                        cache.injection = Some(recording.bytes);
                        cache.replaying = true;
                        cache.withhold_ready = true;
                        self.incoming(server, tag);
                        return true;
                    }
                }
                Backend::ReadyForQuery { status } => {
                    self.status = *status;
                    cache.recording.take_if(|r| r.cycle <= cycle);
                    if std::mem::take(&mut cache.withhold_ready) {
                        self.incoming(server, tag);
                        return true;
                    }
                }
                _ => {}
            }
        }
        self.incoming(server, tag)
    }

    /// A new connection was attached (transaction mode): no cycle is in flight on it.
    pub(super) fn cache_attached(&mut self) {
        if let Some(cache) = self.unnamed.as_mut() {
            cache.in_cycle = false;
            cache.recording = None;
            cache.withhold_ready = false;
        }
    }

    /// A ParameterStatus (`body` without type and length): a changed `client_encoding` stops the
    /// cache for the rest of the session (see the module doc).
    pub fn parameter_reported(&mut self, body: &[u8]) {
        if let Some(cache) = self.unnamed.as_mut()
            && crate::wire::frame::cstr(body).is_some_and(|(name, _)| name == b"client_encoding")
        {
            cache.off = true;
        }
    }

    /// A cycle to send again (see the module doc), once.
    pub fn injection(&mut self) -> Option<BytesMut> {
        self.unnamed.as_mut()?.injection.take()
    }

    /// `DEALLOCATE ALL` or `DISCARD ALL` ran: the connection holds no prepared statement.
    pub fn deallocated(&mut self, server: &mut ServerStatements) {
        *server = ServerStatements::default();
        self.quiet = 0;
        if let Some(cache) = self.unnamed.as_mut() {
            cache.current = None;
        }
    }
}

/// Session mode with `[upstream] plan_cache`: the session's one connection, attached from the
/// start and never given back, with the client's unnamed statements cached (see the module doc).
pub struct CachedSession {
    prepared: Prepared,
    statements: ServerStatements,
}

impl CachedSession {
    /// A connection holding at most `cap` statements (0: no limit).
    pub fn new(cap: usize) -> CachedSession {
        CachedSession {
            prepared: Prepared::new(cap).passing_named().with_plan_cache(true),
            statements: ServerStatements::default(),
        }
    }
}

impl UpstreamSource for CachedSession {
    type Conn = BoxStream;
    const POOLED: bool = false;
    const REWRITES: bool = true;

    fn stream(conn: &mut BoxStream) -> &mut BoxStream {
        conn
    }

    fn acquire(&mut self, _key: Option<Arc<UpstreamKey>>) -> Acquiring<BoxStream> {
        crate::session::upstream_source::never_acquired()
    }

    fn release(&mut self, _conn: BoxStream, _reusable: bool) {}

    fn outgoing(&mut self, _conn: &mut BoxStream, bytes: &[u8]) -> Option<BytesMut> {
        self.prepared.outgoing(&mut self.statements, bytes)
    }

    fn incoming(&mut self, _conn: &mut BoxStream, message: &Backend<'_>) -> bool {
        self.prepared.answer(&mut self.statements, message)
    }

    fn injection(&mut self) -> Option<BytesMut> {
        self.prepared.injection()
    }

    fn observe_parameter(&mut self, body: &[u8]) {
        self.prepared.parameter_reported(body);
    }

    fn observe_completion(&mut self, tag: &str) {
        if matches!(tag, "DEALLOCATE ALL" | "DISCARD ALL") {
            self.prepared.deallocated(&mut self.statements);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> BytesMut {
        Frontend::Parse {
            name: b"",
            sql: sql.as_bytes(),
            param_types: b"\0\0",
        }
        .to_frame()
    }

    fn bind() -> BytesMut {
        Frontend::Bind {
            portal: b"",
            statement: b"",
            rest: b"\0\0\0\0\0\0",
        }
        .to_frame()
    }

    fn execute() -> BytesMut {
        Frontend::Execute {
            portal: b"",
            max_rows: 0,
        }
        .to_frame()
    }

    fn cycle(sql: &str) -> Vec<u8> {
        [parse(sql), bind(), execute(), Frontend::Sync.to_frame()]
            .iter()
            .flat_map(|p| p.to_vec())
            .collect()
    }

    /// The messages of `bytes` as `P name sql`, `B statement`, `C name`, `E`, `S`.
    fn messages(bytes: &[u8]) -> Vec<String> {
        super::super::frames(bytes)
            .map(|f| match Frontend::decode(f).unwrap() {
                Frontend::Parse { name, sql, .. } => format!(
                    "P {} {}",
                    String::from_utf8_lossy(name),
                    String::from_utf8_lossy(sql)
                ),
                Frontend::Bind { statement, .. } => {
                    format!("B {}", String::from_utf8_lossy(statement))
                }
                Frontend::Close { name, .. } => format!("C {}", String::from_utf8_lossy(name)),
                other => (other.tag() as char).to_string(),
            })
            .collect()
    }

    fn error(code: &str, message: &str) -> Vec<u8> {
        use crate::wire::frame;
        frame::error_response(frame::Severity::Error, code, message)[5..].to_vec()
    }

    /// PostgreSQL's message of type `tag` with `body`.
    fn reply(tag: u8, body: &[u8]) -> Backend<'_> {
        Backend::from_body(tag, body).unwrap()
    }

    /// Answers `tags` (ReadyForQuery with status `I`); what the client is not shown.
    fn answer(client: &mut Prepared, server: &mut ServerStatements, tags: &[u8]) -> Vec<bool> {
        tags.iter()
            .map(|&tag| {
                let body: &[u8] = if tag == b'Z' { b"I" } else { b"" };
                client.answer(server, &reply(tag, body))
            })
            .collect()
    }

    #[test]
    fn a_repeated_unnamed_statement_is_bound_to_its_prepared_copy() {
        let mut client = Prepared::new(10).passing_named().with_plan_cache(true);
        let mut server = ServerStatements::default();
        let name = String::from_utf8_lossy(&server_name(b"SELECT 1", b"\0\0")).into_owned();
        let sent = client.outgoing(&mut server, &cycle("SELECT 1")).unwrap();
        assert_eq!(
            messages(&sent),
            [
                format!("C {name}"),
                format!("P {name} SELECT 1"),
                format!("B {name}"),
                "E".into(),
                "S".into()
            ]
        );
        assert_eq!(
            answer(&mut client, &mut server, b"312Z"),
            [true, false, false, false]
        );
        // Held now: the client's Parse becomes an empty one, its Bind names the statement.
        let sent = client.outgoing(&mut server, &cycle("SELECT 1")).unwrap();
        assert_eq!(
            messages(&sent),
            ["P  ", &format!("B {name}"), "E", "S"].map(String::from)
        );
        assert_eq!(answer(&mut client, &mut server, b"12Z"), [false; 3]);
        // Not plannable: passes as it came.
        let sent = client.outgoing(&mut server, &cycle("BEGIN")).unwrap();
        assert_eq!(
            messages(&sent),
            ["P  BEGIN", "B ", "E", "S"].map(String::from)
        );
        assert!(!client.answer(&mut server, &reply(b'Z', b"T")));
        // Inside a transaction block the cache is not used.
        let sent = client.outgoing(&mut server, &cycle("SELECT 1")).unwrap();
        assert_eq!(
            messages(&sent),
            ["P  SELECT 1", "B ", "E", "S"].map(String::from)
        );
    }

    #[test]
    fn nothing_more_is_cached_once_the_client_changes_client_encoding() {
        let mut client = Prepared::new(10).passing_named().with_plan_cache(true);
        let mut server = ServerStatements::default();
        client.outgoing(&mut server, &cycle("SELECT 1"));
        answer(&mut client, &mut server, b"312Z");
        // Another setting changes nothing: the held statement is used.
        client.parameter_reported(b"TimeZone\0UTC\0");
        let sent = client.outgoing(&mut server, &cycle("SELECT 1")).unwrap();
        assert_eq!(messages(&sent)[0], "P  ");
        answer(&mut client, &mut server, b"12Z");
        client.parameter_reported(b"client_encoding\0LATIN1\0");
        for sql in ["SELECT 1", "SELECT 2"] {
            let sent = client.outgoing(&mut server, &cycle(sql)).unwrap();
            assert_eq!(
                messages(&sent),
                [format!("P  {sql}"), "B ".into(), "E".into(), "S".into()]
            );
            answer(&mut client, &mut server, b"12Z");
        }
    }

    #[test]
    fn a_stale_statement_is_prepared_again_and_its_cycle_sent_again_unseen() {
        let mut client = Prepared::new(10).passing_named().with_plan_cache(true);
        let mut server = ServerStatements::default();
        let name = String::from_utf8_lossy(&server_name(b"SELECT * FROM t", b"\0\0")).into_owned();
        client.outgoing(&mut server, &cycle("SELECT * FROM t"));
        answer(&mut client, &mut server, b"312Z");
        client.outgoing(&mut server, &cycle("SELECT * FROM t"));
        // The client sees the ParseComplete; the Bind fails: withheld with its ReadyForQuery.
        assert!(!client.answer(&mut server, &reply(b'1', b"")));
        let stale = error("0A000", "cached plan must not change result type");
        assert!(client.answer(&mut server, &reply(b'E', &stale)));
        assert!(client.answer(&mut server, &reply(b'Z', b"I")));
        let again = client.injection().unwrap();
        assert!(client.injection().is_none());
        let sent = client.outgoing(&mut server, &again).unwrap();
        assert_eq!(
            messages(&sent),
            [
                format!("C {name}"),
                format!("P {name} SELECT * FROM t"),
                format!("B {name}"),
                "E".into(),
                "S".into()
            ]
        );
        // Close and Parse answered unseen (the client has its ParseComplete), then as usual.
        assert_eq!(
            answer(&mut client, &mut server, b"312Z"),
            [true, true, false, false]
        );
        // An error after something ran, or of another kind, is the client's.
        client.outgoing(&mut server, &cycle("SELECT * FROM t"));
        assert_eq!(answer(&mut client, &mut server, b"12"), [false, false]);
        assert!(!client.answer(&mut server, &reply(b'E', &stale)));
        client.answer(&mut server, &reply(b'Z', b"I"));
        client.outgoing(&mut server, &cycle("SELECT * FROM t"));
        client.answer(&mut server, &reply(b'1', b""));
        assert!(!client.answer(
            &mut server,
            &reply(b'E', &error("22012", "division by zero"))
        ));
        client.answer(&mut server, &reply(b'Z', b"I"));
        assert!(client.injection().is_none());
        // Something sent after the cycle before its answer: not sent again.
        client.outgoing(&mut server, &cycle("SELECT * FROM t"));
        client.outgoing(&mut server, &cycle("SELECT 2"));
        client.answer(&mut server, &reply(b'1', b""));
        assert!(!client.answer(&mut server, &reply(b'E', &stale)));
        assert!(client.injection().is_none());
    }

    #[test]
    fn in_session_mode_named_statements_pass_as_they_came_but_the_proxys_names_do_not() {
        let mut client = Prepared::new(10).passing_named().with_plan_cache(true);
        let mut server = ServerStatements::default();
        let frames = |statement: &str| -> Vec<u8> {
            let parse = Frontend::Parse {
                name: b"s1",
                sql: b"SELECT 1",
                param_types: b"\0\0",
            };
            let bind = Frontend::Bind {
                portal: b"",
                statement: statement.as_bytes(),
                rest: b"\0\0\0\0\0\0",
            };
            [parse.to_frame(), bind.to_frame(), Frontend::Sync.to_frame()]
                .iter()
                .flat_map(|p| p.to_vec())
                .collect()
        };
        let named = frames("s1");
        let sent = client.outgoing(&mut server, &named).unwrap();
        assert_eq!(&sent[..], &named[..]);
        answer(&mut client, &mut server, b"12Z");
        let sent = client
            .outgoing(&mut server, &frames("maschera_ps_1"))
            .unwrap();
        assert_eq!(
            messages(&sent),
            ["P s1 SELECT 1", "B maschera_ps_none", "S"].map(String::from)
        );
    }

    #[test]
    fn a_stale_statement_is_known_by_its_code_and_routine_in_any_language() {
        let translated = b"SERROR\0C0A000\0Mder Plan darf den Ergebnistyp nicht aendern\0\
            RRevalidateCachedQuery\0\0";
        let stale = |body: &[u8], server: &[u8]| match reply(b'E', body) {
            Backend::ErrorResponse(fields) => stale(&fields, server),
            other => panic!("{other:?}"),
        };
        assert!(stale(translated, b"maschera_ps_1"));
        let other = b"SERROR\0C0A000\0Mnot supported\0Rsomething_else\0\0";
        assert!(!stale(other, b"maschera_ps_1"));
        let gone = error(
            "26000",
            "prepared statement \"maschera_ps_1\" does not exist",
        );
        assert!(stale(&gone, b"maschera_ps_1"));
        assert!(!stale(&gone, b"maschera_ps_2"));
    }

    #[test]
    fn only_plannable_statements_are_cached() {
        for sql in [
            "SELECT 1",
            "  select * from t",
            "(SELECT 1) UNION (SELECT 2)",
            "-- a comment\nWITH x AS (SELECT 1) SELECT * FROM x",
            "/* c */ INSERT INTO t VALUES (1)",
            "update t set a = 1",
            "DELETE FROM t",
            "VALUES (1)",
            "TABLE t",
        ] {
            assert!(cacheable(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "BEGIN",
            "SET search_path = a",
            "COMMIT",
            "CREATE TABLE t (a int)",
            "DO $$BEGIN END$$",
            "selectx",
            "",
            "/* unterminated",
            "/* /* nested */ */ SELECT 1",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "COPY t FROM STDIN",
            "DISCARD ALL",
        ] {
            assert!(!cacheable(sql.as_bytes()), "{sql}");
        }
    }
}
