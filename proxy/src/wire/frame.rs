//! The frame codec of protocol 3: a message is a type byte, a 4-byte big-endian length that counts
//! itself, and a body. This module splits a byte buffer into whole frames by their header only (the
//! relay never decodes what it merely forwards), enforces the maximum frame size, and builds the few
//! backend messages the proxy itself sends (ErrorResponse, ReadyForQuery, ...) with pgwire's encoders.
//! Not for: deciding what to do with a message (see `session`), or the untyped startup packets
//! (see `startup`).

use bytes::{BufMut, Bytes, BytesMut};
use pgwire::messages::Message;
use pgwire::messages::response::{ErrorResponse, ReadyForQuery, TransactionStatus};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes of a frame header: type byte and length.
pub const HEADER_LEN: usize = 5;

/// PostgreSQL's own limit for one message (MaxAllocHugeSize is larger, but no message exceeds 1 GiB).
pub const POSTGRES_MAX_FRAME: usize = 1 << 30;

/// The header of a frame at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Total bytes of the frame, type byte included.
    pub len: usize,
}

#[derive(Debug, Error)]
pub enum FrameError {
    #[error("invalid message length {0}")]
    BadLength(i32),
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("connection closed in the middle of a message")]
    Truncated,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The header at the start of `buf`, or `None` if fewer than five bytes are there.
pub fn peek_header(buf: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let declared = i32::from_be_bytes([head[1], head[2], head[3], head[4]]);
    if declared < 4 {
        return Err(FrameError::BadLength(declared));
    }
    let len = declared as usize + 1;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(Some(Header { tag: head[0], len }))
}

/// How many bytes the frame at the start of `buf` still lacks: 0 when it is whole, when its header
/// is not complete yet, or when the header is invalid (the caller reports that when it splits).
pub fn missing(buf: &[u8]) -> usize {
    match peek_header(buf, POSTGRES_MAX_FRAME) {
        Ok(Some(header)) => header.len.saturating_sub(buf.len()),
        _ => 0,
    }
}

/// Takes one whole frame off the front of `buf`, if it is complete.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    match peek_header(buf, max)? {
        Some(header) if buf.len() >= header.len => Ok(Some(buf.split_to(header.len).freeze())),
        Some(header) => {
            buf.reserve(header.len - buf.len());
            Ok(None)
        }
        None => Ok(None),
    }
}

/// Reads until one whole frame is buffered and returns it; `None` on a clean end of stream.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    loop {
        if let Some(frame) = split_frame(buf, max)? {
            return Ok(Some(frame));
        }
        if reader.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(FrameError::Truncated)
            };
        }
    }
}

/// The body of a whole frame (after the header).
pub fn body(frame: &[u8]) -> &[u8] {
    frame.get(HEADER_LEN..).unwrap_or_default()
}

/// A null-terminated string at the start of `bytes`, and the rest after the terminator.
pub fn cstr(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// A message the proxy builds from parts: tag, length (counting itself), then the parts as given
/// (e.g. a rewritten Query or Parse, a renamed CommandComplete). `None` when it would exceed the
/// protocol's length field.
pub fn build(tag: u8, parts: &[&[u8]]) -> Option<Bytes> {
    let len = 4 + parts.iter().map(|p| p.len()).sum::<usize>();
    let len = i32::try_from(len).ok()?;
    let mut out = BytesMut::with_capacity(len as usize + 1);
    out.put_u8(tag);
    out.put_i32(len);
    for part in parts {
        out.put_slice(part);
    }
    Some(out.freeze())
}

/// Severity of an ErrorResponse the proxy generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The statement failed; the session goes on.
    Error,
    /// The connection closes after this message.
    Fatal,
}

/// An ErrorResponse frame with severity, SQLSTATE and message.
pub fn error_response(severity: Severity, code: &str, message: &str) -> BytesMut {
    let severity = match severity {
        Severity::Error => "ERROR",
        Severity::Fatal => "FATAL",
    };
    let fields = vec![
        (b'S', severity.to_owned()),
        (b'V', severity.to_owned()),
        (b'C', code.to_owned()),
        (b'M', message.to_owned()),
    ];
    encode(&ErrorResponse::new(fields))
}

/// Sends a FATAL ErrorResponse, best effort: the connection closes next either way.
pub async fn send_fatal<W: AsyncWrite + Unpin + ?Sized>(stream: &mut W, code: &str, message: &str) {
    let _ = stream
        .write_all(&error_response(Severity::Fatal, code, message))
        .await;
    let _ = stream.flush().await;
}

/// A ReadyForQuery frame with the given transaction status byte (`I`, `T` or `E`).
pub fn ready_for_query(status: u8) -> BytesMut {
    let status = match status {
        b'T' => TransactionStatus::Transaction,
        b'E' => TransactionStatus::Error,
        _ => TransactionStatus::Idle,
    };
    encode(&ReadyForQuery::new(status))
}

/// Encodes one pgwire message. The messages the proxy builds are small and well formed, so encoding
/// cannot fail; should it ever, the result is an empty buffer rather than a panic.
pub fn encode<M: Message>(message: &M) -> BytesMut {
    let mut buf = BytesMut::with_capacity(message.message_length() + 1);
    if message.encode(&mut buf).is_err() {
        buf.clear();
    }
    buf
}

/// Fields of an ErrorResponse or NoticeResponse body: (code, value) pairs.
pub fn error_fields(body: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (&code, after) = rest.split_first()?;
        if code == 0 {
            return None;
        }
        let (value, tail) = cstr(after)?;
        rest = tail;
        Some((code, value))
    })
}

/// The SQLSTATE of an ErrorResponse body.
pub fn sqlstate(body: &[u8]) -> Option<&str> {
    error_fields(body)
        .find(|(code, _)| *code == b'C')
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_whole_frames_and_waits_for_partial_ones() {
        let mut buf = BytesMut::from(&b"Z\0\0\0\x05IQ\0\0\0\x0bsel"[..]);
        let frame = split_frame(&mut buf, 100).unwrap().unwrap();
        assert_eq!(&frame[..], b"Z\0\0\0\x05I");
        assert!(split_frame(&mut buf, 100).unwrap().is_none());
        buf.extend_from_slice(b"ect\0");
        assert_eq!(
            &split_frame(&mut buf, 100).unwrap().unwrap()[..],
            b"Q\0\0\0\x0bselect\0"
        );
    }

    #[test]
    fn rejects_bad_and_oversized_lengths() {
        assert!(matches!(
            peek_header(b"Q\0\0\0\x02", 100),
            Err(FrameError::BadLength(2))
        ));
        assert!(matches!(
            peek_header(b"Q\xff\xff\xff\xff", 100),
            Err(FrameError::BadLength(_))
        ));
        assert!(matches!(
            peek_header(b"Q\0\0\x10\0", 100),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn error_response_carries_sqlstate() {
        let frame = error_response(Severity::Fatal, "28P01", "nope");
        assert_eq!(frame[0], b'E');
        assert_eq!(sqlstate(body(&frame)), Some("28P01"));
    }
}
