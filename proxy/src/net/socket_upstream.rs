//! The proxy's end of PostgreSQL's Unix-domain socket, watched by the reactor for reading only
//! until a write has to wait.
//!
//! Why not tokio's `UnixStream`: it registers edge-triggered read *and* write interest, and the
//! kernel reports a Unix-domain socket writable again each time the peer reads from it. So every
//! statement PostgreSQL read woke the session's worker for nothing: one more `epoll_wait` return
//! and context switch per statement (three instead of two at one client), paid partly by
//! PostgreSQL, whose read did the waking (bench/profile-notes.md). This stream asks for write
//! readiness only once a write found the socket's buffer full, and keeps both from then on.
//! (TCP sockets report write space only after a write found the buffer full, so they need no
//! such care.)
//! Not for: TCP or TLS transports, or choosing the transport (see `upstream`).

#![allow(
    unsafe_code,
    reason = "reads PostgreSQL's Unix socket with libc::recv into tokio's ReadBuf and registers the raw socket with AsyncFd"
)]

use std::io::{self, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A connected Unix-domain socket to PostgreSQL, registered with the current runtime.
pub struct SocketUpstream {
    /// None only after registering the socket again failed (every later call then fails).
    fd: Option<AsyncFd<UnixStream>>,
    /// Whether the reactor also reports write readiness.
    watching_writes: bool,
}

impl SocketUpstream {
    /// Connects to the socket at `path` and registers it for reading.
    pub async fn connect(path: &Path) -> io::Result<SocketUpstream> {
        let stream = tokio::net::UnixStream::connect(path).await?.into_std()?;
        Ok(SocketUpstream {
            fd: Some(register(stream, Interest::READABLE)?),
            watching_writes: false,
        })
    }

    fn fd(&self) -> io::Result<&AsyncFd<UnixStream>> {
        self.fd.as_ref().ok_or_else(not_registered)
    }

    /// Registers the socket again with write interest added (an `AsyncFd`'s interest is fixed
    /// when it is registered). Bytes already waiting to be read are reported again by the new
    /// registration; a task waiting to read must poll again to wait on it (see `poll_write`).
    fn watch_writes(&mut self) -> io::Result<()> {
        let registered = self.fd.take().ok_or_else(not_registered)?;
        self.fd = Some(register(
            registered.into_inner(),
            Interest::READABLE | Interest::WRITABLE,
        )?);
        self.watching_writes = true;
        Ok(())
    }
}

/// Registers `stream` with the current runtime's reactor for `interest`.
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `AsyncFd` owns `stream`, so its descriptor stays open and refers to the same
    // socket until the `AsyncFd` is dropped or gives the stream back (`into_inner`).
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

fn not_registered() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the socket to PostgreSQL could not be registered for writing",
    )
}

impl AsyncRead for SocketUpstream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let fd = self.get_mut().fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            // SAFETY: `recv` writes at most `wanted` bytes into the unfilled part through a raw
            // pointer (no reference to uninitialised bytes is made), and only the bytes it reports
            // are marked initialised.
            let unfilled = unsafe { buf.unfilled_mut() };
            let wanted = unfilled.len();
            // SAFETY: the pointer and length describe `unfilled`, which lives for the call.
            let read =
                unsafe { libc::recv(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), wanted, 0) };
            if read < 0 {
                let err = io::Error::last_os_error();
                match err.kind() {
                    io::ErrorKind::WouldBlock => guard.clear_ready(),
                    io::ErrorKind::Interrupted => {}
                    _ => return Poll::Ready(Err(err)),
                }
                continue;
            }
            let read = read as usize;
            // SAFETY: `recv` reported `read` bytes written into the unfilled part.
            unsafe { buf.assume_init(read) };
            buf.advance(read);
            // A short read emptied the socket: the next read waits for the reactor instead of
            // trying first and failing (as tokio's own streams do).
            if read > 0 && read < wanted {
                guard.clear_ready();
            }
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for SocketUpstream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.watching_writes {
                match this.fd()?.get_ref().write(data) {
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                        this.watch_writes()?;
                        // A read waiting on the old registration lost its waker with it: the
                        // task is polled again, so that it waits on the new one.
                        cx.waker().wake_by_ref();
                    }
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    result => return Poll::Ready(result),
                }
                continue;
            }
            let fd = this.fd()?;
            let mut guard = ready!(fd.poll_write_ready(cx))?;
            if let Ok(result) = guard.try_io(|fd| fd.get_ref().write(data)) {
                return Poll::Ready(result);
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.get_mut().fd()?.get_ref().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    async fn pair() -> (SocketUpstream, tokio::net::UnixStream, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".s.PGSQL.5432");
        let listener = UnixListener::bind(&path).unwrap();
        let (ours, theirs) = tokio::join!(SocketUpstream::connect(&path), listener.accept());
        (ours.unwrap(), theirs.unwrap().0, dir)
    }

    #[tokio::test]
    async fn bytes_go_both_ways_and_shutdown_ends_the_peers_stream() {
        let (mut ours, mut theirs, _dir) = pair().await;
        ours.write_all(b"query").await.unwrap();
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"query");
        theirs.write_all(b"answer").await.unwrap();
        let mut got = [0u8; 6];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"answer");
        ours.shutdown().await.unwrap();
        let mut rest = Vec::new();
        theirs.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        drop(theirs);
        assert_eq!(ours.read(&mut [0u8; 8]).await.unwrap(), 0, "end of stream");
    }

    #[tokio::test]
    async fn a_write_that_must_wait_arrives_whole_and_unread_bytes_are_not_lost() {
        let (mut ours, mut theirs, _dir) = pair().await;
        // The peer has something for us before our write fills the socket's buffer, so the
        // socket is registered again (with write interest) while bytes wait to be read.
        theirs.write_all(b"notice").await.unwrap();
        let big: Vec<u8> = (0..8 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
        let expected = big.clone();
        let reader = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let mut got = vec![0u8; expected.len()];
            theirs.read_exact(&mut got).await.unwrap();
            assert!(got == expected, "the bytes arrived whole and in order");
            theirs
        });
        tokio::time::timeout(Duration::from_secs(20), ours.write_all(&big))
            .await
            .expect("the write finished once the peer read")
            .unwrap();
        assert!(ours.watching_writes, "the write had to wait");
        let mut got = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(5), ours.read_exact(&mut got))
            .await
            .expect("the bytes that waited were still reported")
            .unwrap();
        assert_eq!(&got, b"notice");
        let mut theirs = reader.await.unwrap();
        theirs.write_all(b"later").await.unwrap();
        let mut got = [0u8; 5];
        ours.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"later");
    }

    #[tokio::test]
    async fn a_read_waiting_when_a_write_blocks_is_still_woken() {
        let (mut ours, mut theirs, _dir) = pair().await;
        let peer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Writes, and never reads what the proxy sent.
            theirs.write_all(b"hello").await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(theirs);
        });
        // One task waits to read and writes until the write must wait, as the relay does. (A task
        // of its own: a timeout around the future itself would poll it again at the deadline.)
        let reader = tokio::spawn(async move {
            let big = vec![7u8; 8 * 1024 * 1024];
            let mut written = 0;
            let mut got = [0u8; 5];
            let n = std::future::poll_fn(|cx| {
                let mut buf = ReadBuf::new(&mut got);
                if let Poll::Ready(result) = Pin::new(&mut ours).poll_read(cx, &mut buf) {
                    result.unwrap();
                    return Poll::Ready(buf.filled().len());
                }
                while written < big.len() {
                    match Pin::new(&mut ours).poll_write(cx, &big[written..]) {
                        Poll::Ready(result) => written += result.unwrap(),
                        Poll::Pending => break,
                    }
                }
                Poll::Pending
            })
            .await;
            (got[..n].to_vec(), ours.watching_writes)
        });
        let (got, watching_writes) = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("the read was woken after the socket was registered again")
            .unwrap();
        assert!(
            !got.is_empty() && got[..] == b"hello"[..got.len()],
            "{got:?}"
        );
        assert!(watching_writes, "the write had to wait");
        peer.abort();
    }
}
