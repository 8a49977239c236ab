//! The opening of a client connection, before authentication: SSLRequest (answered `S` with a rustls
//! handshake, or `N`), direct TLS (first byte 0x16, ALPN `postgresql`), GSSENCRequest (answered `N`),
//! CancelRequest, and the StartupMessage with its protocol version and parameters.
//! Untyped startup packets are read exactly, never ahead: bytes a client sends after SSLRequest but
//! before the handshake are refused (CVE-2021-23214).
//! Not for: authentication (see `client_auth`) or anything after it.

#![allow(
    unsafe_code,
    reason = "libc::recv(MSG_PEEK) tells whether the client sent bytes before the TLS handshake"
)]

use crate::config::ClientTlsMode;
use crate::net::cancel::CancelKey;
use crate::net::tls::{ALPN_POSTGRESQL, BoxStream};
use crate::wire::frame;
use pgwire::messages::startup::NegotiateProtocolVersion;
use std::os::fd::AsRawFd;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
const PROTOCOL_3: i32 = 3 << 16;
/// Largest startup packet PostgreSQL accepts (MAX_STARTUP_PACKET_LENGTH).
const MAX_STARTUP_PACKET: usize = 10000;
/// First byte of a TLS ClientHello record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Client-side TLS as configured.
#[derive(Clone)]
pub struct ClientTlsSetup {
    pub mode: ClientTlsMode,
    pub acceptor: Option<TlsAcceptor>,
}

/// What a new connection turned out to be.
pub enum Opening {
    /// A client that wants a session.
    Session(Startup),
    /// A CancelRequest for the given proxy key (the connection ends after it).
    Cancel(CancelKey),
}

/// A client that sent its StartupMessage.
pub struct Startup {
    pub stream: BoxStream,
    /// Startup parameters in the order the client sent them (`user`, `database`, settings ...).
    pub params: Vec<(String, String)>,
    pub encrypted: bool,
}

impl Startup {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Error)]
pub enum StartupError {
    #[error("connection closed or failed during startup: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// Reported to the client as a FATAL ErrorResponse with this SQLSTATE.
    #[error("{message}")]
    Refused { code: &'static str, message: String },
}

impl StartupError {
    fn refused(code: &'static str, message: impl Into<String>) -> StartupError {
        StartupError::Refused {
            code,
            message: message.into(),
        }
    }
}

/// Runs the opening of a connection. Refusals are sent to the client as FATAL ErrorResponses before
/// the error is returned.
pub async fn negotiate(tcp: TcpStream, tls: &ClientTlsSetup) -> Result<Opening, StartupError> {
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Err(StartupError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        let Some(acceptor) = &tls.acceptor else {
            return Err(StartupError::Tls("direct TLS while TLS is off".into()));
        };
        return after_handshake(handshake(acceptor, tcp, true).await?).await;
    }
    let mut tcp = tcp;
    // A client may try GSSENC, then SSL, then start; more attempts than that are not a real client.
    for _ in 0..3 {
        let (code, body) = match read_packet(&mut tcp).await {
            Ok(packet) => packet,
            Err(err) => return Err(report(&mut tcp, err).await),
        };
        match code {
            SSL_REQUEST => {
                let Some(acceptor) = &tls.acceptor else {
                    tcp.write_all(b"N").await?;
                    continue;
                };
                if has_pending_bytes(&tcp) {
                    let err = StartupError::refused(
                        "08P01",
                        "received unencrypted data after SSL request",
                    );
                    return Err(report(&mut tcp, err).await);
                }
                tcp.write_all(b"S").await?;
                return after_handshake(handshake(acceptor, tcp, false).await?).await;
            }
            GSSENC_REQUEST => tcp.write_all(b"N").await?,
            _ => {
                let mut stream: BoxStream = Box::new(tcp);
                if tls.mode == ClientTlsMode::Required && code != CANCEL_REQUEST {
                    let err = StartupError::refused(
                        "28000",
                        "this server requires an encrypted connection (connect with sslmode=require)",
                    );
                    return Err(report(&mut stream, err).await);
                }
                return finish(stream, code, body, false).await;
            }
        }
    }
    let err = StartupError::refused("08P01", "too many negotiation requests");
    Err(report(&mut tcp, err).await)
}

/// Whether the client has sent bytes we have not read yet (checked before answering `S`).
fn has_pending_bytes(tcp: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv on a valid socket fd with a one-byte buffer we own; MSG_PEEK leaves the data.
    let n = unsafe {
        libc::recv(
            tcp.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n > 0
}

async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    direct: bool,
) -> Result<BoxStream, StartupError> {
    let stream = acceptor
        .accept(tcp)
        .await
        .map_err(|e| StartupError::Tls(e.to_string()))?;
    if direct && stream.get_ref().1.alpn_protocol() != Some(ALPN_POSTGRESQL) {
        return Err(StartupError::Tls(
            "direct TLS without ALPN \"postgresql\"".into(),
        ));
    }
    Ok(Box::new(stream))
}

/// After TLS: the next packet must be a StartupMessage or CancelRequest.
async fn after_handshake(mut stream: BoxStream) -> Result<Opening, StartupError> {
    match read_packet(&mut stream).await {
        Ok((SSL_REQUEST | GSSENC_REQUEST, _)) => {
            let err = StartupError::refused(
                "08P01",
                "encryption requested inside an encrypted connection",
            );
            Err(report(&mut stream, err).await)
        }
        Ok((code, body)) => finish(stream, code, body, true).await,
        Err(err) => Err(report(&mut stream, err).await),
    }
}

async fn finish(
    mut stream: BoxStream,
    code: i32,
    body: Vec<u8>,
    encrypted: bool,
) -> Result<Opening, StartupError> {
    if code == CANCEL_REQUEST {
        return match body.as_slice() {
            [a, b, c, d, e, f, g, h] => Ok(Opening::Cancel(CancelKey {
                pid: i32::from_be_bytes([*a, *b, *c, *d]),
                secret: i32::from_be_bytes([*e, *f, *g, *h]),
            })),
            _ => Err(StartupError::refused("08P01", "invalid cancel request")),
        };
    }
    let major = (code >> 16) as u16;
    let minor = (code & 0xffff) as u16;
    if major != 3 {
        let err = StartupError::refused(
            "0A000",
            format!("unsupported frontend protocol {major}.{minor}: server supports 3.0"),
        );
        return Err(report(&mut stream, err).await);
    }
    let params = match parse_params(&body) {
        Some(params) => params,
        None => {
            return Err(report(
                &mut stream,
                StartupError::refused("08P01", "invalid startup packet layout"),
            )
            .await);
        }
    };
    let unsupported: Vec<String> = params
        .iter()
        .filter(|(k, _)| k.starts_with("_pq_."))
        .map(|(k, _)| k.clone())
        .collect();
    if code != PROTOCOL_3 || !unsupported.is_empty() {
        stream
            .write_all(&frame::encode(&NegotiateProtocolVersion::new(
                0,
                unsupported,
            )))
            .await?;
    }
    let params: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| !k.starts_with("_pq_."))
        .collect();
    if !params.iter().any(|(k, v)| k == "user" && !v.is_empty()) {
        let err = StartupError::refused(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        );
        return Err(report(&mut stream, err).await);
    }
    Ok(Opening::Session(Startup {
        stream,
        params,
        encrypted,
    }))
}

/// Startup parameters: pairs of null-terminated strings ending with an empty name. Public for the
/// fuzz target (`fuzz/fuzz_targets/startup.rs`); `None` when the body is malformed.
pub fn parse_params(mut body: &[u8]) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    loop {
        let (name, rest) = frame::cstr(body)?;
        if name.is_empty() {
            return Some(params);
        }
        let (value, rest) = frame::cstr(rest)?;
        params.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        body = rest;
    }
}

/// Reads one untyped packet (length, code, body) exactly, without reading ahead.
async fn read_packet<S: AsyncRead + Unpin>(stream: &mut S) -> Result<(i32, Vec<u8>), StartupError> {
    let len = stream.read_i32().await?;
    if !(8..=MAX_STARTUP_PACKET as i32).contains(&len) {
        return Err(StartupError::refused(
            "08P01",
            "invalid length of startup packet",
        ));
    }
    let code = stream.read_i32().await?;
    let mut body = vec![0u8; len as usize - 8];
    stream.read_exact(&mut body).await?;
    Ok((code, body))
}

/// Sends a refusal to the client (best effort) and hands the error back.
async fn report<S: tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    err: StartupError,
) -> StartupError {
    if let StartupError::Refused { code, message } = &err {
        frame::send_fatal(stream, code, message).await;
    }
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_and_malformed_ones_fail() {
        let params = parse_params(b"user\0alice\0database\0crm\0\0").unwrap();
        assert_eq!(
            params,
            vec![
                ("user".into(), "alice".into()),
                ("database".into(), "crm".into())
            ]
        );
        assert!(parse_params(b"user\0alice").is_none());
    }
}
