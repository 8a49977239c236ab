//! What PostgreSQL runs in place of a message the proxy refuses, so that it fails right away the way
//! PostgreSQL fails any statement (the transaction aborts, extended-protocol messages are skipped up
//! to Sync) and its own log shows the refusal, not a syntax error; and how the relay recognises that
//! failure when it comes back, by a marker that is random per session and never reaches the client.
//!
//! - Query and FunctionCall: a `DO` block that raises the refusal's SQLSTATE and message, the marker
//!   in its DETAIL (PL/pgSQL is usable by every login unless an administrator revoked it).
//! - CopyData, CopyDone, CopyFail: a CopyFail whose text is the message and the marker (PostgreSQL
//!   logs `COPY from stdin failed: <message>` with its own SQLSTATE 57014).
//! - Parse, Bind, Describe, Execute, Close, Sync, Flush: a Parse of the bare marker after a comment
//!   holding the refusal's SQLSTATE and message, which fails as a syntax error naming the marker.
//!   Nothing else fails at Parse: PostgreSQL runs a `DO` block or a function only when a portal is
//!   executed, so PostgreSQL's log shows these refusals as `syntax error at or near
//!   "maschera_refused_..."`, with the refusal itself in the `STATEMENT:` line that follows.
//!
//! Not for: deciding what is refused (see `enforce`) or swapping the error (see `session`).

use bytes::BytesMut;
use postgres_protocol::message::frontend;

/// Marker prefix; the session adds random hex digits and the refusal's number.
pub const PREFIX: &str = "maschera_refused_";

/// The message(s) that make PostgreSQL fail in place of the client message `tag`.
pub fn failing_message(tag: u8, marker: &str, code: &str, message: &str) -> BytesMut {
    let mut failing = BytesMut::new();
    // Encoding cannot fail: the texts hold no NUL byte and are far below 1 GiB.
    let _ = match tag {
        b'Q' | b'F' => frontend::query(&raise(marker, code, message), &mut failing),
        b'd' | b'c' | b'f' => frontend::copy_fail(
            &format!("{} ({marker})", clean(marker, message)),
            &mut failing,
        ),
        _ => frontend::parse(
            marker,
            &commented_marker(marker, code, message),
            std::iter::empty(),
            &mut failing,
        ),
    };
    if tag == b'S' {
        frontend::sync(&mut failing);
    }
    failing
}

/// Whether the fields of an ErrorResponse `body` carry `marker` (in its message or detail).
pub fn carries(body: &[u8], marker: &str) -> bool {
    crate::frame::error_fields(body)
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

/// The text of the failing Parse: a comment with the refusal's SQLSTATE and message (PostgreSQL's log
/// prints it as the failed statement, so the refusal reads there in full), then the bare marker, the
/// syntax error. The comment cannot be closed early: `*/` and `/*` in the message are broken up.
fn commented_marker(marker: &str, code: &str, message: &str) -> String {
    let message = clean(marker, message)
        .replace("*/", "* /")
        .replace("/*", "/ *");
    let code: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(5)
        .collect();
    format!("/* refused by the Maschera proxy: {code} {message} */ {marker}")
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
    fn the_failing_parse_carries_the_refusal_in_a_comment_that_cannot_be_closed() {
        let marker = "maschera_refused_00ff_2";
        let text = commented_marker(marker, "42501", "table */ x; /* y");
        assert_eq!(
            text,
            "/* refused by the Maschera proxy: 42501 table * / x; / * y */ maschera_refused_00ff_2"
        );
        assert!(
            commented_marker(marker, "4'*/", "m")
                .starts_with("/* refused by the Maschera proxy: 4 m")
        );
    }

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
