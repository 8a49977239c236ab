//! The read buffers of the relay, sized so that a session waiting for its next message holds no
//! buffer memory: an empty buffer gives its memory back and is filled through a per-thread scratch
//! area (borrowed only for the duration of one poll, so a parked session borrows nothing), and a
//! partial frame is completed by reading into the session's own buffer, sized to what the frame
//! still lacks. Memory is taken when bytes arrive and given back once they are forwarded.
//! Not for: splitting frames or deciding what to forward (see `frame` and `session`).

use bytes::BytesMut;
use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Most bytes a read into an empty buffer takes in (the size of the per-thread scratch area), and
/// the size above which the relay streams a frame through instead of buffering it whole.
pub const READ_CHUNK: usize = 64 * 1024;

/// Room a read into a non-empty buffer gets at least, so that a stream of small frames split
/// across reads is still read in large pieces.
const MIN_SPARE: usize = 8 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Reads what `reader` has into `buf` and gives how many bytes came (0 at the end of the stream),
/// as a poll function for the relay's hand-written poll loop: `Pending` means nothing was read and
/// the waker of `cx` is registered with `reader`. `missing` is how many bytes the partial frame at
/// the front of `buf` still lacks (0 if unknown): they are reserved at once, so a large frame is
/// not grown by doubling. Cancel-safe: the bytes of a read are in `buf` when it returns `Ready`, and
/// a read that has to wait has taken nothing.
pub fn poll_read_more<R>(
    cx: &mut Context<'_>,
    reader: &mut R,
    buf: &mut BytesMut,
    missing: usize,
) -> Poll<io::Result<usize>>
where
    R: AsyncRead + Unpin + ?Sized,
{
    if !buf.is_empty() {
        buf.reserve(missing.max(MIN_SPARE));
        // `read_buf` reads into the spare capacity; its future holds no state between polls.
        return pin!(reader.read_buf(buf)).poll(cx);
    }
    if buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
    SCRATCH.with_borrow_mut(|scratch| {
        let mut read = ReadBuf::new(scratch);
        ready!(Pin::new(&mut *reader).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::future::poll_fn;

    async fn read_more<R>(reader: &mut R, buf: &mut BytesMut, missing: usize) -> io::Result<usize>
    where
        R: AsyncRead + Unpin + ?Sized,
    {
        poll_fn(|cx| poll_read_more(cx, reader, buf, missing)).await
    }

    #[tokio::test]
    async fn an_empty_buffer_holds_no_memory_until_bytes_come() {
        let (mut writer, mut reader) = tokio::io::duplex(1024);
        let mut buf = BytesMut::with_capacity(4096);
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"hello")
            .await
            .unwrap();
        assert_eq!(read_more(&mut reader, &mut buf, 0).await.unwrap(), 5);
        assert_eq!(&buf[..], b"hello");
        assert!(
            buf.capacity() < 4096,
            "the empty buffer gave its memory back"
        );
    }

    #[tokio::test]
    async fn a_partial_frame_gets_room_for_what_it_lacks() {
        let (mut writer, mut reader) = tokio::io::duplex(1024);
        let mut buf = BytesMut::from(&b"D\0\x01\0\0"[..]);
        tokio::io::AsyncWriteExt::write_all(&mut writer, b"xyz")
            .await
            .unwrap();
        assert_eq!(read_more(&mut reader, &mut buf, 65_536).await.unwrap(), 3);
        assert!(buf.capacity() >= 65_536 + 5);
        drop(writer);
        let mut empty = BytesMut::new();
        assert_eq!(read_more(&mut reader, &mut empty, 0).await.unwrap(), 0);
    }
}
