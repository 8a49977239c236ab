//! What PostgreSQL runs in place of a message the proxy refuses, so that it fails right away the way
//! PostgreSQL fails any statement (the transaction aborts, extended-protocol messages are skipped up
//! to Sync) and its own log shows the refusal, not a syntax error; and how the relay recognises that
//! failure when it comes back, by a marker that is random per session and never reaches the client.
//!
//! - Query and FunctionCall: a `DO` block that raises the refusal's SQLSTATE and message, the marker
//!   in its DETAIL (PL/pgSQL is usable by every login unless an administrator revoked it).
//! - CopyData, CopyDone, CopyFail: a CopyFail whose text is the message and the marker (PostgreSQL
//!   logs `COPY from stdin failed: <message>` with its own SQLSTATE 57014).
//! - Parse, Bind, Describe, Execute, Close, Sync, Flush: the same `DO` block run through the extended
//!   protocol (Parse of the unnamed statement, Bind of the unnamed portal, Execute), since PostgreSQL
//!   runs a `DO` block only when a portal is executed. PostgreSQL answers ParseComplete and
//!   BindComplete before the marked error: the relay withholds exactly those two, recognised by
//!   [`answer_before_error`] (the client sent one message and gets one error, as PostgreSQL would
//!   answer it). The unnamed statement and portal are replaced, as PostgreSQL's own failed Parse of
//!   the unnamed statement would drop it; everything up to Sync is skipped after the error anyway.
//!
//! PostgreSQL's log therefore shows every refusal as an ERROR with its real SQLSTATE and message,
//! the marker only in its DETAIL.
//!
//! Not for: deciding what is refused (see `enforce`) or swapping the error (see `session`).

use crate::wire::backend::{Backend, ErrorFields};
use crate::wire::frontend::Frontend;
use bytes::BytesMut;

/// Marker prefix; the session adds random hex digits and the refusal's number.
pub const PREFIX: &str = "maschera_refused_";

/// The message(s) that make PostgreSQL fail in place of the client message `tag`.
pub fn failing_message(tag: u8, marker: &str, code: &str, message: &str) -> BytesMut {
    let mut failing = BytesMut::new();
    // The texts hold no NUL byte: `clean` removes them and `raise` checks the code.
    match tag {
        b'Q' | b'F' => {
            let sql = raise(marker, code, message);
            Frontend::Query {
                sql: sql.as_bytes(),
            }
            .encode(&mut failing);
        }
        b'd' | b'c' | b'f' => {
            let text = format!("{} ({marker})", clean(marker, message));
            Frontend::CopyFail {
                message: text.as_bytes(),
            }
            .encode(&mut failing);
        }
        _ => {
            let sql = raise(marker, code, message);
            let run = [
                Frontend::Parse {
                    name: b"",
                    sql: sql.as_bytes(),
                    param_types: NO_PARAMETER_TYPES,
                },
                Frontend::Bind {
                    portal: b"",
                    statement: b"",
                    rest: NO_PARAMETERS_NOR_RESULT_FORMATS,
                },
                Frontend::Execute {
                    portal: b"",
                    max_rows: 0,
                },
            ];
            for message in run {
                message.encode(&mut failing);
            }
        }
    }
    if tag == b'S' {
        Frontend::Sync.encode(&mut failing);
    }
    failing
}

/// A Parse's parameter types: none (a count of 0).
const NO_PARAMETER_TYPES: &[u8] = &[0, 0];

/// What follows a Bind's names: no parameter formats, no parameters, no result formats (three
/// counts of 0).
const NO_PARAMETERS_NOR_RESULT_FORMATS: &[u8] = &[0, 0, 0, 0, 0, 0];

/// ParseComplete then BindComplete: what PostgreSQL answers to a refused extended-protocol
/// message's failing Parse and Bind before its marked error.
const FAILING_ANSWER: &[u8] = &[b'1', 0, 0, 0, 4, b'2', 0, 0, 0, 4];

/// Whether the server frames at the start of `rest` (which begins with a ParseComplete) are the
/// answer to a refused extended-protocol message before its marked ErrorResponse: `Some(len)`, the
/// bytes to withhold, if they are ParseComplete, BindComplete and an error carrying one of
/// `markers`; `Some(0)` if they are not; `None` if `rest` ends before that can be told (the
/// relay then waits for more: PostgreSQL flushes an error together with what it answered before).
pub fn answer_before_error<'a>(
    rest: &[u8],
    mut markers: impl Iterator<Item = &'a str>,
) -> Option<usize> {
    let seen = rest.len().min(FAILING_ANSWER.len());
    if rest[..seen] != FAILING_ANSWER[..seen] {
        return Some(0);
    }
    let error = rest.get(FAILING_ANSWER.len()..)?;
    let header =
        match crate::wire::frame::peek_header(error, crate::wire::frame::POSTGRES_MAX_FRAME) {
            Ok(Some(header)) if header.tag == b'E' => header,
            Ok(Some(_)) | Err(_) => return Some(0),
            Ok(None) => return None,
        };
    let ours = match Backend::decode(error.get(..header.len)?) {
        Ok(Backend::ErrorResponse(fields)) => markers.any(|marker| carries(&fields, marker)),
        _ => false,
    };
    Some(if ours { FAILING_ANSWER.len() } else { 0 })
}

/// Whether the fields of an ErrorResponse carry `marker` (in its message or detail).
pub fn carries(fields: &ErrorFields<'_>, marker: &str) -> bool {
    fields
        .iter()
        .filter(|(field, _)| matches!(field, b'M' | b'D'))
        .any(|(_, text)| {
            text.windows(marker.len())
                .any(|window| window == marker.as_bytes())
        })
}

/// `DO` raising `code` and `message` with the marker as DETAIL. The message is dollar-quoted with a
/// tag made of the marker, which the client does not know, so no message can end the quote; the
/// code is checked to be a SQLSTATE before it goes between quotes.
fn raise(marker: &str, code: &str, message: &str) -> String {
    let code = if code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        code
    } else {
        "42501"
    };
    let message = clean(marker, message);
    format!(
        "DO ${marker}$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = ${marker}_m${message}${marker}_m$, \
         DETAIL = 'refused by the Maschera proxy ({marker})'; END${marker}$"
    )
}

/// The message without NUL bytes and never holding the marker (which would end its quote).
fn clean(marker: &str, message: &str) -> String {
    let message = message.replace('\0', "");
    if message.contains(marker) {
        return "refused by the Maschera proxy".to_owned();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_do_block_quotes_any_message_and_checks_the_code() {
        let marker = "maschera_refused_00ff_1";
        let sql = raise(marker, "42501", "table \"it's\" $$ quoted $x$");
        assert_eq!(
            sql,
            "DO $maschera_refused_00ff_1$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', \
             MESSAGE = $maschera_refused_00ff_1_m$table \"it's\" $$ quoted $x$$maschera_refused_00ff_1_m$, \
             DETAIL = 'refused by the Maschera proxy (maschera_refused_00ff_1)'; END$maschera_refused_00ff_1$"
        );
        assert!(raise(marker, "4'; x", "m").contains("ERRCODE = '42501'"));
        let forged = raise(marker, "0A000", "a $maschera_refused_00ff_1_m$ b");
        assert!(
            forged.contains("MESSAGE = $maschera_refused_00ff_1_m$refused by the Maschera proxy$")
        );
    }
}
