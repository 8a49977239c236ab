//! Frontend messages of protocol 3 as borrowed views of one whole frame (type byte and length
//! included), decoded once with [`Frontend::decode`] and written back with [`Frontend::encode`]:
//! what a module that must look into a client message (its statement text, a statement or portal
//! name) reads, instead of walking the bytes itself. Parts a reader rarely needs stay raw bytes
//! (a Bind's parameter formats and values, a Parse's parameter types), so that decoding copies
//! nothing and re-encoding with another statement name keeps them byte for byte.
//! Not for: splitting a stream into frames (see `frame`), or backend messages.

use crate::wire::frame::{self, HEADER_LEN};
use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

/// Whether a Describe or Close names a prepared statement or a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `S`
    Statement,
    /// `P`
    Portal,
}

impl Target {
    fn byte(self) -> u8 {
        match self {
            Target::Statement => b'S',
            Target::Portal => b'P',
        }
    }
}

/// One client message, borrowing from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend<'a> {
    /// `Q`: a simple-protocol query string.
    Query { sql: &'a [u8] },
    /// `P`: prepares `sql` as `name` (empty: the unnamed statement); `param_types` is the count
    /// (Int16) and the OIDs (Int32 each), raw.
    Parse {
        name: &'a [u8],
        sql: &'a [u8],
        param_types: &'a [u8],
    },
    /// `B`: binds `statement` into `portal`; `rest` is everything after the two names (parameter
    /// formats, values, result formats), raw.
    Bind {
        portal: &'a [u8],
        statement: &'a [u8],
        rest: &'a [u8],
    },
    /// `D`
    Describe { target: Target, name: &'a [u8] },
    /// `E`: runs `portal`, at most `max_rows` rows (0: all).
    Execute { portal: &'a [u8], max_rows: i32 },
    /// `C`
    Close { target: Target, name: &'a [u8] },
    /// `S`
    Sync,
    /// `H`
    Flush,
    /// `d`
    CopyData { data: &'a [u8] },
    /// `c`
    CopyDone,
    /// `f`
    CopyFail { message: &'a [u8] },
    /// `X`
    Terminate,
    /// Any other message (FunctionCall `F`, password messages, ...), its body raw.
    Other { tag: u8, body: &'a [u8] },
}

/// Why a frame is not a well-formed message of its type.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("{0:?} message is malformed")]
    Malformed(char),
    #[error("frame shorter than its header")]
    Short,
}

/// Reads the fields of a message body in order.
struct Fields<'a> {
    rest: &'a [u8],
    tag: u8,
}

impl<'a> Fields<'a> {
    fn bad(&self) -> DecodeError {
        DecodeError::Malformed(self.tag as char)
    }

    fn cstr(&mut self) -> Result<&'a [u8], DecodeError> {
        let (value, rest) = frame::cstr(self.rest).ok_or_else(|| self.bad())?;
        self.rest = rest;
        Ok(value)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let (&first, rest) = self.rest.split_first().ok_or_else(|| self.bad())?;
        self.rest = rest;
        Ok(first)
    }

    fn target(&mut self) -> Result<Target, DecodeError> {
        match self.byte()? {
            b'S' => Ok(Target::Statement),
            b'P' => Ok(Target::Portal),
            _ => Err(self.bad()),
        }
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<4>()
            .ok_or_else(|| self.bad())?;
        self.rest = rest;
        Ok(i32::from_be_bytes(*head))
    }

    /// Everything left; the message ends here.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.rest)
    }

    /// The message ends here: nothing may follow.
    fn end<T>(&self, message: T) -> Result<T, DecodeError> {
        if self.rest.is_empty() {
            Ok(message)
        } else {
            Err(self.bad())
        }
    }
}

impl<'a> Frontend<'a> {
    /// Decodes one whole frame (as the relay holds it: type byte, length, body).
    pub fn decode(frame: &'a [u8]) -> Result<Frontend<'a>, DecodeError> {
        if frame.len() < HEADER_LEN {
            return Err(DecodeError::Short);
        }
        let tag = frame[0];
        let mut f = Fields {
            rest: frame::body(frame),
            tag,
        };
        let message = match tag {
            b'Q' => {
                let sql = f.cstr()?;
                f.end(Frontend::Query { sql })?
            }
            b'P' => {
                let (name, sql) = (f.cstr()?, f.cstr()?);
                let param_types = f.rest();
                let count = param_types
                    .first_chunk::<2>()
                    .map(|c| i16::from_be_bytes(*c))
                    .ok_or_else(|| f.bad())?;
                if count < 0 || param_types.len() != 2 + 4 * count as usize {
                    return Err(f.bad());
                }
                Frontend::Parse {
                    name,
                    sql,
                    param_types,
                }
            }
            b'B' => Frontend::Bind {
                portal: f.cstr()?,
                statement: f.cstr()?,
                rest: f.rest(),
            },
            b'D' => {
                let target = f.target()?;
                let name = f.cstr()?;
                f.end(Frontend::Describe { target, name })?
            }
            b'E' => {
                let portal = f.cstr()?;
                let max_rows = f.i32()?;
                f.end(Frontend::Execute { portal, max_rows })?
            }
            b'C' => {
                let target = f.target()?;
                let name = f.cstr()?;
                f.end(Frontend::Close { target, name })?
            }
            b'S' => f.end(Frontend::Sync)?,
            b'H' => f.end(Frontend::Flush)?,
            b'd' => Frontend::CopyData { data: f.rest() },
            b'c' => f.end(Frontend::CopyDone)?,
            b'f' => Frontend::CopyFail { message: f.cstr()? },
            b'X' => f.end(Frontend::Terminate)?,
            _ => Frontend::Other {
                tag,
                body: f.rest(),
            },
        };
        Ok(message)
    }

    /// The message's type byte.
    pub fn tag(&self) -> u8 {
        match self {
            Frontend::Query { .. } => b'Q',
            Frontend::Parse { .. } => b'P',
            Frontend::Bind { .. } => b'B',
            Frontend::Describe { .. } => b'D',
            Frontend::Execute { .. } => b'E',
            Frontend::Close { .. } => b'C',
            Frontend::Sync => b'S',
            Frontend::Flush => b'H',
            Frontend::CopyData { .. } => b'd',
            Frontend::CopyDone => b'c',
            Frontend::CopyFail { .. } => b'f',
            Frontend::Terminate => b'X',
            Frontend::Other { tag, .. } => *tag,
        }
    }

    /// Appends the message as a whole frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_u8(self.tag());
        out.put_i32(0);
        let cstr = |out: &mut BytesMut, s: &[u8]| {
            out.put_slice(s);
            out.put_u8(0);
        };
        match *self {
            Frontend::Query { sql } => cstr(out, sql),
            Frontend::Parse {
                name,
                sql,
                param_types,
            } => {
                cstr(out, name);
                cstr(out, sql);
                out.put_slice(param_types);
            }
            Frontend::Bind {
                portal,
                statement,
                rest,
            } => {
                cstr(out, portal);
                cstr(out, statement);
                out.put_slice(rest);
            }
            Frontend::Describe { target, name } | Frontend::Close { target, name } => {
                out.put_u8(target.byte());
                cstr(out, name);
            }
            Frontend::Execute { portal, max_rows } => {
                cstr(out, portal);
                out.put_i32(max_rows);
            }
            Frontend::Sync | Frontend::Flush | Frontend::CopyDone | Frontend::Terminate => {}
            Frontend::CopyData { data } => out.put_slice(data),
            Frontend::CopyFail { message } => cstr(out, message),
            Frontend::Other { body, .. } => out.put_slice(body),
        }
        let len = (out.len() - start - 1) as i32;
        out[start + 1..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// The message as a whole frame.
    pub fn to_frame(&self) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out
    }

    /// The message as a whole frame, or `None` when it is longer than the protocol's length field
    /// can say (a message the proxy makes is then refused, never truncated).
    pub fn to_bytes(&self) -> Option<Bytes> {
        let frame = self.to_frame();
        i32::try_from(frame.len() - 1).ok()?;
        Some(frame.freeze())
    }

    /// The statement text of a Query or Parse.
    pub fn sql(&self) -> Option<&'a [u8]> {
        match *self {
            Frontend::Query { sql } | Frontend::Parse { sql, .. } => Some(sql),
            _ => None,
        }
    }
}

/// The part of a Bind after its two names ([`Frontend::Bind`]'s `rest`) taken apart, for a reader
/// of its parameter values: format codes and result format codes stay raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindValues<'a> {
    /// The parameter format codes: count (Int16) and codes, raw.
    formats: &'a [u8],
    /// The parameter values (`None`: NULL).
    pub params: Vec<Option<&'a [u8]>>,
    /// The result format codes: count and codes, raw.
    results: &'a [u8],
}

impl<'a> BindValues<'a> {
    /// Takes a Bind's `rest` apart (`None`: malformed).
    pub fn decode(rest: &'a [u8]) -> Option<BindValues<'a>> {
        let count = |at: &[u8]| {
            at.get(..2)
                .map(|n| u16::from_be_bytes([n[0], n[1]]) as usize)
        };
        let formats = rest.get(..2 + 2 * count(rest)?)?;
        let mut at = &rest[formats.len()..];
        let n = count(at)?;
        at = &at[2..];
        let mut params = Vec::with_capacity(n.min(at.len() / 4));
        for _ in 0..n {
            let (len, after) = at.split_first_chunk::<4>()?;
            let len = i32::from_be_bytes(*len);
            if len < 0 {
                params.push(None);
                at = after;
            } else {
                let (value, after) = after.split_at_checked(len as usize)?;
                params.push(Some(value));
                at = after;
            }
        }
        Some(BindValues {
            formats,
            params,
            results: at,
        })
    }

    /// A Bind's `rest` with the same format codes and `params` as the values (each at most
    /// `i32::MAX` bytes: they come from a frame or the proxy).
    pub fn encode_with(&self, params: &[Option<&[u8]>]) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_slice(self.formats);
        out.put_u16(params.len() as u16);
        for param in params {
            match param {
                Some(value) => {
                    out.put_i32(value.len() as i32);
                    out.put_slice(value);
                }
                None => out.put_i32(-1),
            }
        }
        out.put_slice(self.results);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::message::frontend as pg;

    #[test]
    fn bind_values_are_taken_apart_and_put_back() {
        let frame = reference(|out| {
            pg::bind(
                "p",
                "s1",
                [0i16, 1],
                [Some(&b"tok"[..]), None],
                |value, out| match value {
                    Some(value) => {
                        out.extend_from_slice(value);
                        Ok(postgres_protocol::IsNull::No)
                    }
                    None => Ok(postgres_protocol::IsNull::Yes),
                },
                [1i16],
                out,
            )
            .map_err(|_| ())
            .unwrap()
        });
        let Ok(Frontend::Bind { rest, .. }) = Frontend::decode(&frame) else {
            panic!("not a Bind");
        };
        let values = BindValues::decode(rest).unwrap();
        assert_eq!(values.params, vec![Some(&b"tok"[..]), None]);
        assert_eq!(&values.encode_with(&values.params)[..], rest);
        assert!(BindValues::decode(&rest[..rest.len() - 5]).is_none());
        assert!(BindValues::decode(&[0, 1]).is_none());
    }

    /// Frames as `postgres-protocol` (the client library) encodes them.
    fn reference(build: impl FnOnce(&mut BytesMut)) -> BytesMut {
        let mut out = BytesMut::new();
        build(&mut out);
        out
    }

    /// Decoding then encoding gives the same bytes back.
    fn round_trip(frame: &[u8]) -> Frontend<'_> {
        let message = Frontend::decode(frame).expect("decodes");
        assert_eq!(&message.to_frame()[..], frame, "{message:?}");
        message
    }

    #[test]
    fn every_message_kind_round_trips_byte_for_byte() {
        let query = reference(|o| pg::query("SELECT 1", o).unwrap());
        assert_eq!(round_trip(&query), Frontend::Query { sql: b"SELECT 1" });
        let parse = reference(|o| pg::parse("s1", "SELECT $1", [23], o).unwrap());
        let Frontend::Parse {
            name,
            sql,
            param_types,
        } = round_trip(&parse)
        else {
            panic!("not a Parse")
        };
        assert_eq!((name, sql), (&b"s1"[..], &b"SELECT $1"[..]));
        assert_eq!(param_types, [0, 1, 0, 0, 0, 23]);
        let bind = reference(|o| {
            pg::bind(
                "p",
                "s1",
                [0],
                [7i32],
                |v, buf| {
                    buf.put_slice(v.to_string().as_bytes());
                    Ok(postgres_protocol::IsNull::No)
                },
                [1],
                o,
            )
            .map_err(|_| ())
            .unwrap()
        });
        let Frontend::Bind {
            portal, statement, ..
        } = round_trip(&bind)
        else {
            panic!("not a Bind")
        };
        assert_eq!((portal, statement), (&b"p"[..], &b"s1"[..]));
        let describe = reference(|o| pg::describe(b'S', "s1", o).unwrap());
        assert_eq!(
            round_trip(&describe),
            Frontend::Describe {
                target: Target::Statement,
                name: b"s1"
            }
        );
        let execute = reference(|o| pg::execute("p", 10, o).unwrap());
        assert_eq!(
            round_trip(&execute),
            Frontend::Execute {
                portal: b"p",
                max_rows: 10
            }
        );
        let close = reference(|o| pg::close(b'P', "p", o).unwrap());
        assert_eq!(
            round_trip(&close),
            Frontend::Close {
                target: Target::Portal,
                name: b"p"
            }
        );
        assert_eq!(round_trip(&reference(pg::sync)), Frontend::Sync);
        assert_eq!(round_trip(&reference(pg::flush)), Frontend::Flush);
        assert_eq!(round_trip(&reference(pg::terminate)), Frontend::Terminate);
        assert_eq!(round_trip(&reference(pg::copy_done)), Frontend::CopyDone);
        let fail = reference(|o| pg::copy_fail("stop", o).unwrap());
        assert_eq!(round_trip(&fail), Frontend::CopyFail { message: b"stop" });
    }

    /// A Bind of one binary int4 parameter, binary results, as `postgres-protocol` encodes it.
    fn bind_one_int(statement: &str) -> BytesMut {
        reference(|o| {
            pg::bind(
                "",
                statement,
                [1],
                [42i32],
                |v, buf| {
                    buf.put_i32(v);
                    Ok(postgres_protocol::IsNull::No)
                },
                [1],
                o,
            )
            .map_err(|_| ())
            .unwrap()
        })
    }

    #[test]
    fn a_bind_renamed_keeps_its_parameters() {
        let bind = bind_one_int("client_name");
        let Frontend::Bind { portal, rest, .. } = Frontend::decode(&bind).unwrap() else {
            panic!("not a Bind")
        };
        let renamed = Frontend::Bind {
            portal,
            statement: b"server_name",
            rest,
        }
        .to_frame();
        assert_eq!(renamed, bind_one_int("server_name"));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for frame in [
            &b"Q\0\0\0\x05x"[..],       // no terminator
            b"Q\0\0\0\x07x\0y",         // something after the text
            b"P\0\0\0\x0bs\0q\0\0\x05", // 5 parameter types announced, none there
            b"D\0\0\0\x07Xs\0",         // neither S nor P
            b"E\0\0\0\x07p\0\0\0",      // row count cut short
            b"S\0\0\0\x05x",            // Sync with a body
            b"Q\0\0",                   // shorter than a header
        ] {
            assert!(Frontend::decode(frame).is_err(), "{frame:?}");
        }
    }
}
