//! Backend (PostgreSQL) messages of protocol 3 as borrowed views of one whole frame, decoded once
//! with [`Backend::decode`]: what a module that looks into an answer of PostgreSQL (a command tag, an
//! error's SQLSTATE and fields, the transaction status, a row description, a parameter) reads,
//! instead of walking the bytes itself. Decoding checks the whole message (an ErrorResponse's
//! fields are all terminated, a RowDescription has as many columns as it says) and copies nothing;
//! the relay decodes only the messages its hooks look at (see `session`), everything else passes
//! as bytes.
//! Not for: splitting a stream into frames or building the messages the proxy sends (see `frame`),
//! or client messages (see `frontend`).

use crate::wire::frame::{self, HEADER_LEN};
use crate::wire::frontend::DecodeError;

/// One message of PostgreSQL, borrowing from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend<'a> {
    /// `C`: the command tag, e.g. `SELECT 12` or `INSERT 0 1`.
    CommandComplete { tag: &'a str },
    /// `E`
    ErrorResponse(ErrorFields<'a>),
    /// `N`
    NoticeResponse(ErrorFields<'a>),
    /// `Z`: the transaction status after the cycle: `I` idle, `T` in a transaction, `E` in a
    /// failed one.
    ReadyForQuery { status: u8 },
    /// `T`
    RowDescription(Columns<'a>),
    /// `S`: a run-time parameter PostgreSQL reports (at login, and when a client changes it).
    ParameterStatus { name: &'a [u8], value: &'a [u8] },
    /// `K`: what a CancelRequest for this connection must carry.
    BackendKeyData { pid: i32, secret: i32 },
    /// Any other message (DataRow, ParseComplete, CopyData, ...), its body raw.
    Other { tag: u8, body: &'a [u8] },
}

/// The fields of an ErrorResponse or NoticeResponse, each a one-byte code and a text, checked to
/// be well formed when decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    body: &'a [u8],
}

impl<'a> ErrorFields<'a> {
    /// `(code, value)` in the order PostgreSQL sent them (`S` severity, `C` SQLSTATE, `M` message,
    /// `D` detail, `t` table, ...).
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> + use<'a> {
        frame::error_fields(self.body)
    }

    /// The first field with `code`.
    pub fn get(&self, code: u8) -> Option<&'a [u8]> {
        self.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    /// The SQLSTATE (`C`), when present and text.
    pub fn sqlstate(&self) -> Option<&'a str> {
        self.get(b'C').and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The body as PostgreSQL sent it.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

/// The columns of a RowDescription, checked when decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns<'a> {
    count: u16,
    /// The column descriptions after the count.
    rest: &'a [u8],
}

/// One column of a RowDescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column<'a> {
    pub name: &'a [u8],
    /// The table's OID, 0 when the column is no table's.
    pub table_oid: u32,
    /// The column's attribute number in its table, 0 when none.
    pub attribute: i16,
    pub type_oid: u32,
    /// Negative for variable-width types.
    pub type_size: i16,
    pub type_modifier: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

/// Bytes of a column description after its name.
const COLUMN_FIXED: usize = 4 + 2 + 4 + 2 + 4 + 2;

impl<'a> Columns<'a> {
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn iter(&self) -> impl Iterator<Item = Column<'a>> + use<'a> {
        let mut rest = self.rest;
        std::iter::from_fn(move || {
            let (column, after) = column(rest)?;
            rest = after;
            Some(column)
        })
        .take(self.len())
    }
}

/// The column description at the start of `bytes`, and what follows it.
fn column(bytes: &[u8]) -> Option<(Column<'_>, &[u8])> {
    let (name, rest) = frame::cstr(bytes)?;
    let (fixed, rest) = rest.split_first_chunk::<COLUMN_FIXED>()?;
    let u32_at =
        |at: usize| u32::from_be_bytes([fixed[at], fixed[at + 1], fixed[at + 2], fixed[at + 3]]);
    let i16_at = |at: usize| i16::from_be_bytes([fixed[at], fixed[at + 1]]);
    let column = Column {
        name,
        table_oid: u32_at(0),
        attribute: i16_at(4),
        type_oid: u32_at(6),
        type_size: i16_at(10),
        type_modifier: u32_at(12) as i32,
        format: i16_at(16),
    };
    Some((column, rest))
}

impl<'a> Backend<'a> {
    /// Decodes one whole frame (as the relay holds it: type byte, length, body).
    pub fn decode(frame: &'a [u8]) -> Result<Backend<'a>, DecodeError> {
        if frame.len() < HEADER_LEN {
            return Err(DecodeError::Short);
        }
        Backend::from_body(frame[0], frame::body(frame))
    }

    /// Decodes the body of a message of type `tag`.
    pub fn from_body(tag: u8, body: &'a [u8]) -> Result<Backend<'a>, DecodeError> {
        let bad = DecodeError::Malformed(tag as char);
        let message = match tag {
            b'C' => match frame::cstr(body) {
                Some((tag, [])) => Backend::CommandComplete {
                    tag: std::str::from_utf8(tag).map_err(|_| bad)?,
                },
                _ => return Err(bad),
            },
            b'E' | b'N' => {
                let fields = error_fields(body).ok_or(bad)?;
                match tag {
                    b'E' => Backend::ErrorResponse(fields),
                    _ => Backend::NoticeResponse(fields),
                }
            }
            b'Z' => match body {
                [status @ (b'I' | b'T' | b'E')] => Backend::ReadyForQuery { status: *status },
                _ => return Err(bad),
            },
            b'T' => Backend::RowDescription(columns(body).ok_or(bad)?),
            b'S' => {
                match frame::cstr(body).and_then(|(name, rest)| Some((name, frame::cstr(rest)?))) {
                    Some((name, (value, []))) => Backend::ParameterStatus { name, value },
                    _ => return Err(bad),
                }
            }
            b'K' => match body {
                [p0, p1, p2, p3, s0, s1, s2, s3] => Backend::BackendKeyData {
                    pid: i32::from_be_bytes([*p0, *p1, *p2, *p3]),
                    secret: i32::from_be_bytes([*s0, *s1, *s2, *s3]),
                },
                _ => return Err(bad),
            },
            _ => Backend::Other { tag, body },
        };
        Ok(message)
    }

    /// The message type byte.
    pub fn tag(&self) -> u8 {
        match self {
            Backend::CommandComplete { .. } => b'C',
            Backend::ErrorResponse(_) => b'E',
            Backend::NoticeResponse(_) => b'N',
            Backend::ReadyForQuery { .. } => b'Z',
            Backend::RowDescription(_) => b'T',
            Backend::ParameterStatus { .. } => b'S',
            Backend::BackendKeyData { .. } => b'K',
            Backend::Other { tag, .. } => *tag,
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse body, when each has its terminator and a zero
/// byte ends the list with nothing after it.
fn error_fields(body: &[u8]) -> Option<ErrorFields<'_>> {
    let mut rest = body;
    loop {
        match rest.split_first()? {
            (0, []) => return Some(ErrorFields { body }),
            (0, _) => return None,
            (_, after) => rest = frame::cstr(after)?.1,
        }
    }
}

/// The columns of a RowDescription body, when there are as many as its count says and nothing after.
fn columns(body: &[u8]) -> Option<Columns<'_>> {
    let (count, rest) = body.split_first_chunk::<2>()?;
    let count = u16::try_from(i16::from_be_bytes(*count)).ok()?;
    let mut walk = rest;
    for _ in 0..count {
        walk = column(walk)?.1;
    }
    walk.is_empty().then_some(Columns { count, rest })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::messages::data::{FieldDescription, RowDescription};
    use pgwire::messages::response::{CommandComplete, NoticeResponse};
    use pgwire::messages::startup::{BackendKeyData, ParameterStatus, SecretKey};

    #[test]
    fn every_message_the_proxy_reads_decodes_from_what_an_encoder_writes() {
        let complete = frame::encode(&CommandComplete::new("INSERT 0 1".into()));
        assert_eq!(
            Backend::decode(&complete),
            Ok(Backend::CommandComplete { tag: "INSERT 0 1" })
        );
        let ready = frame::ready_for_query(b'T');
        assert_eq!(
            Backend::decode(&ready),
            Ok(Backend::ReadyForQuery { status: b'T' })
        );
        let error = frame::error_response(frame::Severity::Error, "42501", "denied");
        let Ok(Backend::ErrorResponse(fields)) = Backend::decode(&error) else {
            panic!("an ErrorResponse");
        };
        assert_eq!(fields.sqlstate(), Some("42501"));
        assert_eq!(fields.get(b'M'), Some(&b"denied"[..]));
        assert_eq!(fields.iter().count(), 4);
        assert_eq!(fields.body(), frame::body(&error));
        let notice = frame::encode(&NoticeResponse::new(vec![(b'C', "01000".into())]));
        let Ok(Backend::NoticeResponse(fields)) = Backend::decode(&notice) else {
            panic!("a NoticeResponse");
        };
        assert_eq!(fields.sqlstate(), Some("01000"));
        let status = frame::encode(&ParameterStatus::new("TimeZone".into(), "UTC".into()));
        assert_eq!(
            Backend::decode(&status),
            Ok(Backend::ParameterStatus {
                name: b"TimeZone",
                value: b"UTC"
            })
        );
        let key = frame::encode(&BackendKeyData::new(42, SecretKey::I32(-7)));
        assert_eq!(
            Backend::decode(&key),
            Ok(Backend::BackendKeyData {
                pid: 42,
                secret: -7
            })
        );
        let description = frame::encode(&RowDescription::new(vec![
            FieldDescription::new("id".into(), 16384, 1, 20, 8, -1, 0),
            FieldDescription::new("email".into(), 16384, 3, 25, -1, -1, 1),
        ]));
        let Ok(Backend::RowDescription(columns)) = Backend::decode(&description) else {
            panic!("a RowDescription");
        };
        let got: Vec<Column<'_>> = columns.iter().collect();
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[1],
            Column {
                name: b"email",
                table_oid: 16384,
                attribute: 3,
                type_oid: 25,
                type_size: -1,
                type_modifier: -1,
                format: 1,
            }
        );
        assert_eq!(got[0].type_oid, 20);
        let row = b"D\0\0\0\x06\0\0";
        assert_eq!(
            Backend::decode(row),
            Ok(Backend::Other {
                tag: b'D',
                body: b"\0\0"
            })
        );
        for frame in [
            &complete[..],
            &ready,
            &error,
            &notice,
            &status,
            &key,
            &description,
            row,
        ] {
            assert_eq!(Backend::decode(frame).map(|m| m.tag()), Ok(frame[0]));
        }
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let bad = |tag: u8| Err(DecodeError::Malformed(tag as char));
        for (tag, body) in [
            (b'C', &b"SELECT 1"[..]),
            (b'C', b"SELECT 1\0x"),
            (b'C', b"\xff\0"),
            (b'E', b""),
            (b'E', b"Cabc"),
            (b'E', b"C42501\0"),
            (b'E', b"C42501\0\0M"),
            (b'N', b"Mhello"),
            (b'Z', b""),
            (b'Z', b"IT"),
            (b'Z', b"X"),
            (b'T', b"\0"),
            (b'T', b"\0\x01id\0"),
            (b'T', b"\xff\xff"),
            (b'T', b"\0\0extra"),
            (b'S', b"TimeZone\0"),
            (b'S', b"a\0b\0c"),
            (b'K', b"\0\0\0\x01"),
        ] {
            assert_eq!(
                Backend::from_body(tag, body),
                bad(tag),
                "{:?} {body:?}",
                tag as char
            );
        }
        assert_eq!(Backend::decode(b"Z\0\0"), Err(DecodeError::Short));
        assert_eq!(
            Backend::from_body(b'E', b"\0"),
            Ok(Backend::ErrorResponse(ErrorFields { body: b"\0" }))
        );
        assert_eq!(
            Backend::from_body(b'T', b"\0\0"),
            Ok(Backend::RowDescription(Columns {
                count: 0,
                rest: b""
            }))
        );
    }
}
