//! What a client is told when the proxy refuses a statement or a login, or ends a session: one
//! [`ClientError`], an SQLSTATE and a message, and what of them a client may see is decided here
//! and nowhere else:
//! - the SQLSTATE is five characters `0-9`/`A-Z` (PostgreSQL's shape), else the client gets `XX000`
//!   (a malformed code would make drivers misreport the error class);
//! - the message is the proxy's own wording (why it refused, which bound or limit, what to do): the
//!   callers build it from the policy's refusals and the proxy's limits, which name objects and
//!   bounds, never a value of the data or a literal of the statement. Here it becomes one line
//!   without NUL (a NUL would cut the ErrorResponse field short) and at most [`MAX_MESSAGE`] bytes.
//!
//! Severity (ERROR: the session goes on; FATAL: it closes) is the sender's choice
//! ([`ClientError::frame`]). The shapes that carried `{code, message}` before convert into it:
//! `policy::rewrite::Refusal`, `enforce::LoginRefusal` and
//! `admission::Refused` (beside them, which use this module); `session::Decision::Refuse` carries
//! it.
//!
//! Not for: deciding to refuse (the policy, the limits), logging the refusal (the relay does, with
//! the SQLSTATE only) or PostgreSQL's own errors (they pass, through `error_scrub` for restricted
//! roles).

use crate::wire::frame::{self, Severity};
use bytes::BytesMut;
use std::fmt;

/// Longest message a client gets, in bytes (longer ones end with `...`).
pub const MAX_MESSAGE: usize = 2000;

/// The SQLSTATE of an error the proxy itself has no better code for.
const INTERNAL: [u8; 5] = *b"XX000";

/// An error as the client sees it: SQLSTATE and message.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientError {
    code: [u8; 5],
    message: String,
}

impl ClientError {
    /// An error with SQLSTATE `code` (`XX000` if it is not five characters `0-9`/`A-Z`) and
    /// `message` (one line, no NUL, at most [`MAX_MESSAGE`] bytes).
    pub fn new(code: &str, message: impl Into<String>) -> ClientError {
        let code = <[u8; 5]>::try_from(code.as_bytes())
            .ok()
            .filter(|c| {
                c.iter()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
            })
            .unwrap_or(INTERNAL);
        ClientError {
            code,
            message: shown(message.into()),
        }
    }

    /// The SQLSTATE.
    pub fn code(&self) -> &str {
        // Checked ASCII at construction.
        std::str::from_utf8(&self.code).unwrap_or("XX000")
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The ErrorResponse that carries it.
    pub fn frame(&self, severity: Severity) -> BytesMut {
        frame::error_response(severity, self.code(), &self.message)
    }
}

/// The message as a client may see it.
fn shown(message: String) -> String {
    let clean = |c: char| match c {
        '\0' => None,
        '\n' | '\r' | '\t' => Some(' '),
        c => Some(c),
    };
    let mut out: String = match message.chars().all(|c| clean(c) == Some(c)) {
        true => message,
        false => message.chars().filter_map(clean).collect(),
    };
    if out.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push_str("...");
    }
    out
}

impl fmt::Debug for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message may name the user's objects: debug output shows the code only.
        f.debug_struct("ClientError")
            .field("code", &self.code())
            .finish_non_exhaustive()
    }
}

impl From<policy::rewrite::Refusal> for ClientError {
    fn from(refusal: policy::rewrite::Refusal) -> Self {
        ClientError::new(refusal.sqlstate.code(), refusal.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use policy::rewrite::{Refusal, SqlState};

    #[test]
    fn a_malformed_sqlstate_becomes_xx000() {
        for code in ["", "4250", "425011", "42s01", "42 01", "ÄÄÄ"] {
            assert_eq!(ClientError::new(code, "m").code(), "XX000", "{code:?}");
        }
        for code in ["42501", "0A000", "53300", "XX000"] {
            assert_eq!(ClientError::new(code, "m").code(), code);
        }
    }

    #[test]
    fn the_message_is_one_bounded_line_without_nul() {
        let error = ClientError::new("42501", "refused:\nthe column\0 \"email\"\tis hidden");
        assert_eq!(error.message(), "refused: the column \"email\" is hidden");
        let long = ClientError::new("54001", "é".repeat(MAX_MESSAGE));
        assert!(
            long.message().len() <= MAX_MESSAGE,
            "{}",
            long.message().len()
        );
        assert!(
            long.message().ends_with("é..."),
            "cut at a character boundary"
        );
    }

    #[test]
    fn the_frame_carries_the_code_and_message_and_debug_hides_the_message() {
        let refusal = Refusal {
            sqlstate: SqlState::InsufficientPrivilege,
            message: "role sales may not read health_records".into(),
            tables: Vec::new(),
            statement_index: 0,
        };
        let error = ClientError::from(refusal);
        let frame = error.frame(Severity::Error);
        let body = frame::body(&frame);
        assert_eq!(frame::sqlstate(body), Some("42501"));
        let message = frame::error_fields(body).find(|(code, _)| *code == b'M');
        assert_eq!(
            message.map(|(_, m)| m),
            Some(&b"role sales may not read health_records"[..])
        );
        assert!(!format!("{error:?}").contains("health_records"));
    }
}
