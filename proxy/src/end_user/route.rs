//! Recognising exactly the statements that set the end user, and the harmless statements the proxy
//! sends PostgreSQL in their place (so that PostgreSQL's own transaction semantics answer them:
//! an aborted transaction refuses them, `SET LOCAL` outside a transaction warns):
//! - `SET [SESSION | LOCAL] maschera.end_user { = | TO } '<token>'` (Query);
//! - `RESET maschera.end_user` (Query);
//! - `SELECT set_config('maschera.end_user', $1, true | false)` (Parse; the token comes in Bind);
//! - the first two as the text of a Parse too (drivers that send every statement in the extended
//!   protocol, pgjdbc): the switch happens at its Bind.
//!
//! Anything else that names the setting is not a route and goes where every statement goes (the
//! rewrite refuses the reserved namespace). The token never reaches PostgreSQL: the substitutes
//! carry its digest (a `SET LOCAL` of the proxy's own setting `maschera_end_user.token`, or the
//! digest as the `set_config` statement's result). They leave nothing on the connection past the
//! transaction, so a pool may hand it to another client (no session-level `SET` pins it).
//!
//! Not for: verifying the token (see `token`) or what a switch does (see `state`).

use crate::wire::{BindValues, Frontend};
use bytes::Bytes;

/// The setting the routes set.
pub const SETTING: &str = "maschera.end_user";
/// The setting the substitutes set upstream (never read by a policy).
const UPSTREAM_SETTING: &str = "maschera_end_user.token";

/// A statement that sets the end user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `SET [LOCAL] maschera.end_user = '<token>'`.
    Set { local: bool, token: String },
    /// `RESET maschera.end_user`.
    Reset,
}

/// Whether `text` may be a route at all (cheap: most statements are not looked at further).
pub fn mentions(text: &[u8]) -> bool {
    text.len() >= 8 && text.windows(8).any(|w| w.eq_ignore_ascii_case(b"end_user"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Token {
    Word(String),
    Quoted(String),
    Str(String),
    Param(u32),
    Punct(u8),
}

/// The tokens of a statement, comments skipped; `None` for anything a route never contains
/// (E'' strings, dollar quotes, unterminated text).
pub(super) fn tokens(text: &str) -> Option<Vec<Token>> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => at += 1,
            b'-' if bytes.get(at + 1) == Some(&b'-') => {
                while at < bytes.len() && bytes[at] != b'\n' {
                    at += 1;
                }
            }
            b'/' if bytes.get(at + 1) == Some(&b'*') => {
                let end = text[at + 2..].find("*/")?;
                if text[at + 2..at + 2 + end].contains("/*") {
                    return None;
                }
                at += end + 4;
            }
            b'\'' | b'"' => {
                let mut value = String::new();
                at += 1;
                loop {
                    let next = text[at..].find(b as char)? + at;
                    value.push_str(&text[at..next]);
                    at = next + 1;
                    if bytes.get(at) == Some(&b) {
                        value.push(b as char);
                        at += 1;
                    } else {
                        break;
                    }
                }
                out.push(if b == b'\'' {
                    Token::Str(value)
                } else {
                    Token::Quoted(value)
                });
            }
            b'$' => {
                let end = at
                    + 1
                    + bytes[at + 1..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .count();
                out.push(Token::Param(text[at + 1..end].parse().ok()?));
                at = end;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                let end = at
                    + bytes[at..]
                        .iter()
                        .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'$')
                        .count();
                out.push(Token::Word(text[at..end].to_ascii_lowercase()));
                at = end;
            }
            b'=' | b'.' | b',' | b'(' | b')' | b';' => {
                out.push(Token::Punct(b));
                at += 1;
            }
            _ => return None,
        }
    }
    while out.last() == Some(&Token::Punct(b';')) {
        out.pop();
    }
    Some(out)
}

/// A word or a double-quoted identifier equal to `name`.
fn is_name(token: Option<&Token>, name: &str) -> bool {
    match token {
        Some(Token::Word(word)) | Some(Token::Quoted(word)) => word == name,
        _ => false,
    }
}

/// `maschera . end_user` at the start of `tokens`.
fn names_setting(tokens: &[Token]) -> bool {
    is_name(tokens.first(), "maschera")
        && tokens.get(1) == Some(&Token::Punct(b'.'))
        && is_name(tokens.get(2), "end_user")
}

/// The route a Query's text is, if it is one.
pub fn query_route(text: &str) -> Option<Route> {
    let tokens = tokens(text)?;
    let word = |i: usize| match tokens.get(i) {
        Some(Token::Word(word)) => word.as_str(),
        _ => "",
    };
    match word(0) {
        "reset" if tokens.len() == 4 && names_setting(&tokens[1..]) => Some(Route::Reset),
        "set" => {
            let (local, at) = match word(1) {
                "local" => (true, 2),
                "session" => (false, 2),
                _ => (false, 1),
            };
            let rest = &tokens[at..];
            let assigns = matches!(rest.get(3), Some(Token::Punct(b'=')))
                || matches!(rest.get(3), Some(Token::Word(w)) if w == "to");
            match rest.get(4) {
                Some(Token::Str(token)) if rest.len() == 5 && assigns && names_setting(rest) => {
                    Some(Route::Set {
                        local,
                        token: token.clone(),
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// Whether a Parse's text is `SELECT set_config('maschera.end_user', $1, true|false)`, and if so
/// whether it is local.
pub fn set_config_route(text: &str) -> Option<bool> {
    let tokens = tokens(text)?;
    let mut rest = tokens.as_slice();
    if !is_name(rest.first(), "select") {
        return None;
    }
    rest = &rest[1..];
    if is_name(rest.first(), "pg_catalog") && rest.get(1) == Some(&Token::Punct(b'.')) {
        rest = &rest[2..];
    }
    let expected_start = [
        Token::Word("set_config".into()),
        Token::Punct(b'('),
        Token::Str(SETTING.into()),
        Token::Punct(b','),
        Token::Param(1),
        Token::Punct(b','),
    ];
    if rest.len() != 8 || rest[..6] != expected_start || rest[7] != Token::Punct(b')') {
        return None;
    }
    match &rest[6] {
        Token::Word(word) if word == "true" => Some(true),
        Token::Word(word) if word == "false" => Some(false),
        _ => None,
    }
}

/// The statement sent upstream in place of a route: the same kind of statement on the proxy's own
/// setting, with the token's digest (`id`: hex digits and `:` only) instead of the token.
fn substitute_sql(route: &Route, id: &str) -> String {
    match route {
        Route::Set { local: true, .. } => format!("SET LOCAL {UPSTREAM_SETTING} = '{id}'"),
        Route::Set { local: false, .. } => format!("SET {UPSTREAM_SETTING} = '{id}'"),
        // Answered as RESET (see the session hook): a RESET upstream would leave session state.
        Route::Reset => format!("SET LOCAL {UPSTREAM_SETTING} = ''"),
    }
}

/// The Query sent upstream in place of a route (see `substitute_sql`).
pub fn substitute_query(route: &Route, id: &str) -> Bytes {
    let sql = substitute_sql(route, id);
    Frontend::Query {
        sql: sql.as_bytes(),
    }
    .to_frame()
    .freeze()
}

/// The Parse sent upstream in place of a Parse of a `SET` or `RESET` route (pgjdbc sends every
/// statement so), name and parameter types kept: always `SET LOCAL` (see `substitute_query`).
pub fn substitute_route_parse(name: &[u8], param_types: &[u8], route: &Route, id: &str) -> Bytes {
    let local = match route {
        Route::Set { .. } => Route::Set {
            local: true,
            token: String::new(),
        },
        Route::Reset => Route::Reset,
    };
    let sql = substitute_sql(&local, id);
    Frontend::Parse {
        name,
        sql: sql.as_bytes(),
        param_types,
    }
    .to_frame()
    .freeze()
}

/// The Parse sent upstream in place of a `set_config` route (name and parameter types kept): its
/// result is the parameter (the token's id), as `set_config` returns the value it set.
pub fn substitute_parse(name: &[u8], param_types: &[u8]) -> Bytes {
    Frontend::Parse {
        name,
        sql: b"SELECT CAST($1 AS text)",
        param_types,
    }
    .to_frame()
    .freeze()
}

/// The Bind of a `set_config` route with its one parameter (the token) replaced by `value` (text).
pub fn bind_with_param(portal: &[u8], statement: &[u8], values: &BindValues, value: &str) -> Bytes {
    let rest = values.encode_with(&[Some(value.as_bytes())]);
    Frontend::Bind {
        portal,
        statement,
        rest: &rest,
    }
    .to_frame()
    .freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_routes_are_recognised() {
        let set = |local: bool| Route::Set {
            local,
            token: "a.b-c_d".into(),
        };
        for (text, expected) in [
            ("SET maschera.end_user = 'a.b-c_d'", Some(set(false))),
            (
                "set SESSION Maschera.End_User TO 'a.b-c_d';",
                Some(set(false)),
            ),
            (
                "/* req 7 */ SET LOCAL \"maschera\".\"end_user\" = 'a.b-c_d'",
                Some(set(true)),
            ),
            ("-- note\nRESET maschera.end_user ;", Some(Route::Reset)),
            ("SET maschera.end_user = 'a.b-c_d'; SELECT 1", None),
            ("SET maschera.region = 'north'", None),
            ("SET maschera.end_user = E'a.b-c_d'", None),
            ("SET maschera.end_user = $$a.b-c_d$$", None),
            ("SET maschera.end_user TO DEFAULT", None),
            ("SET \"Maschera\".end_user = 'x'", None),
            ("SET maschera.end_user = 'unterminated", None),
            ("RESET ALL", None),
            ("SELECT set_config('maschera.end_user', 'x', false)", None),
        ] {
            assert_eq!(query_route(text), expected, "{text}");
        }
        assert_eq!(
            query_route("SET maschera.end_user = 'it''s'"),
            Some(Route::Set {
                local: false,
                token: "it's".into()
            })
        );
        for (text, expected) in [
            (
                "SELECT set_config('maschera.end_user', $1, false)",
                Some(false),
            ),
            (
                "select pg_catalog.set_config('maschera.end_user', $1, TRUE);",
                Some(true),
            ),
            ("SELECT set_config('maschera.end_user', 'x', false)", None),
            ("SELECT set_config('maschera.end_user', $2, false)", None),
            ("SELECT set_config('maschera.region', $1, false)", None),
            ("SELECT set_config('maschera.end_user', $1, $2)", None),
            ("SELECT set_config('maschera.end_user', $1, false), 1", None),
        ] {
            assert_eq!(set_config_route(text), expected, "{text}");
        }
        assert!(mentions(b"SET maschera.END_USER = 'x'"));
        assert!(!mentions(b"SELECT 1"));
    }

    /// A Bind of portal `p` to statement `s1` with one text parameter.
    fn bind_of(value: &[u8]) -> bytes::BytesMut {
        let mut out = bytes::BytesMut::new();
        postgres_protocol::message::frontend::bind(
            "p",
            "s1",
            [0i16],
            [value],
            |value, out| {
                out.extend_from_slice(value);
                Ok(postgres_protocol::IsNull::No)
            },
            [0i16],
            &mut out,
        )
        .map_err(|_| ())
        .unwrap();
        out
    }

    #[test]
    fn substitutes_never_carry_the_token_and_keep_the_bind_layout() {
        let route = query_route("SET LOCAL maschera.end_user = 'secret.token.here'").unwrap();
        let query = substitute_query(&route, "sha256:0011");
        let text = std::str::from_utf8(&query[5..]).unwrap();
        assert_eq!(text, "SET LOCAL maschera_end_user.token = 'sha256:0011'\0");
        let mut expected = bytes::BytesMut::new();
        postgres_protocol::message::frontend::parse(
            "s1",
            "SELECT CAST($1 AS text)",
            [25u32],
            &mut expected,
        )
        .unwrap();
        assert_eq!(
            &substitute_parse(b"s1", &[0, 1, 0, 0, 0, 25])[..],
            &expected[..]
        );
        let bind_frame = bind_of(b"secret.token.here");
        let Ok(Frontend::Bind {
            portal,
            statement,
            rest,
        }) = Frontend::decode(&bind_frame)
        else {
            panic!("not a Bind");
        };
        let values = BindValues::decode(rest).unwrap();
        assert_eq!(values.params, vec![Some(&b"secret.token.here"[..])]);
        assert_eq!(
            &bind_with_param(portal, statement, &values, "sha256:0011")[..],
            &bind_of(b"sha256:0011")[..]
        );
    }
}
