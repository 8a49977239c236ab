//! Client authentication on the wire: the SCRAM-SHA-256 exchange (AuthenticationSASL, SASLContinue,
//! SASLFinal, AuthenticationOk) against the proxy's users file, with the lockout checked before and
//! updated after each attempt. A wrong password and an unknown user get the same FATAL 28P01.
//! Not for: the SCRAM arithmetic (see `scram`), the users file (`users`) or lockout bookkeeping (`lockout`).

use crate::metrics as m;
use crate::net::lockout::{LockedOut, Lockout};
use crate::net::scram::{ScramError, ScramServer};
use crate::net::tls::BoxStream;
use crate::users::{User, UserStore};
use crate::wire::frame::{self, FrameError};
use bytes::BytesMut;
use pgwire::messages::startup::Authentication;
use std::net::IpAddr;
use thiserror::Error;
use tokio::io::AsyncWriteExt;

/// Largest authentication message a client may send.
const MAX_AUTH_FRAME: usize = 8192;
const MECHANISM: &str = "SCRAM-SHA-256";

#[derive(Debug, Error)]
pub enum AuthError {
    #[error("wrong password or unknown user")]
    Failed,
    /// A failure that started a lockout of the user or the address.
    #[error("wrong password or unknown user; further attempts are blocked for {}s", .0.retry_after.as_secs())]
    FailedLocking(LockedOut),
    #[error("login temporarily blocked after too many failures")]
    LockedOut,
    #[error("authentication protocol violation: {0}")]
    Protocol(String),
    #[error("connection failed during authentication: {0}")]
    Io(#[from] std::io::Error),
}

impl From<FrameError> for AuthError {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Io(io) => AuthError::Io(io),
            other => AuthError::Protocol(other.to_string()),
        }
    }
}

/// Authenticates `user_name` from `addr`. On success AuthenticationOk has been sent and the user is
/// returned; on failure the client has been sent a FATAL ErrorResponse.
pub async fn authenticate(
    stream: &mut BoxStream,
    user_name: &str,
    addr: IpAddr,
    users: &UserStore,
    lockout: &Lockout,
) -> Result<User, AuthError> {
    if lockout.check(user_name, addr).is_err() {
        metrics::counter!(m::AUTH_TOTAL, m::LABEL_RESULT => m::RESULT_LOCKED).increment(1);
        return Err(refuse(stream, AuthError::LockedOut, user_name).await);
    }
    let user = users.get(user_name);
    match exchange(stream, user_name, user).await {
        Ok(()) => {
            lockout.record_success(user_name, addr);
            metrics::counter!(m::AUTH_TOTAL, m::LABEL_RESULT => m::RESULT_OK).increment(1);
            // `exchange` only succeeds against a real verifier, so the user exists.
            user.cloned().ok_or(AuthError::Failed)
        }
        Err(mut err) => {
            if matches!(err, AuthError::Failed) {
                metrics::counter!(m::AUTH_TOTAL, m::LABEL_RESULT => m::RESULT_FAILED).increment(1);
                if let Some(lock) = lockout.record_failure(user_name, addr) {
                    metrics::counter!(m::LOCKOUTS_TOTAL).increment(1);
                    tracing::warn!(
                        retry_after_s = lock.retry_after.as_secs(),
                        "login locked after repeated failures"
                    );
                    err = AuthError::FailedLocking(lock);
                }
            }
            Err(refuse(stream, err, user_name).await)
        }
    }
}

async fn exchange(
    stream: &mut BoxStream,
    user_name: &str,
    user: Option<&User>,
) -> Result<(), AuthError> {
    let mut buf = BytesMut::new();
    send(stream, &Authentication::SASL(vec![MECHANISM.to_owned()])).await?;
    let first = password_message(stream, &mut buf).await?;
    let client_first = sasl_initial_response(frame::body(&first))?;
    let (server, server_first) =
        ScramServer::start(user_name, user.map(|u| &u.verifier), client_first)
            .map_err(scram_error)?;
    send(stream, &Authentication::SASLContinue(server_first.into())).await?;
    let fin = password_message(stream, &mut buf).await?;
    let server_final = server.finish(frame::body(&fin)).map_err(scram_error)?;
    let mut out = frame::encode(&Authentication::SASLFinal(server_final.into()));
    out.extend_from_slice(&frame::encode(&Authentication::Ok));
    stream.write_all(&out).await?;
    Ok(())
}

fn scram_error(err: ScramError) -> AuthError {
    match err {
        ScramError::Failed => AuthError::Failed,
        ScramError::Protocol(why) => AuthError::Protocol(why),
    }
}

async fn send(stream: &mut BoxStream, message: &Authentication) -> Result<(), AuthError> {
    stream.write_all(&frame::encode(message)).await?;
    Ok(())
}

async fn password_message(
    stream: &mut BoxStream,
    buf: &mut BytesMut,
) -> Result<bytes::Bytes, AuthError> {
    let frame = frame::read_frame(stream, buf, MAX_AUTH_FRAME)
        .await?
        .ok_or_else(|| AuthError::Io(std::io::ErrorKind::UnexpectedEof.into()))?;
    if frame[0] != b'p' {
        return Err(AuthError::Protocol(format!(
            "expected a password message, got {:?}",
            frame[0] as char
        )));
    }
    Ok(frame)
}

/// The client-first-message of a SASLInitialResponse body (mechanism, length, data).
fn sasl_initial_response(body: &[u8]) -> Result<&[u8], AuthError> {
    let malformed = || AuthError::Protocol("malformed SASLInitialResponse".into());
    let (mechanism, rest) = frame::cstr(body).ok_or_else(malformed)?;
    if mechanism != MECHANISM.as_bytes() {
        return Err(AuthError::Protocol(
            "client selected an invalid SASL authentication mechanism".into(),
        ));
    }
    let (len, data) = rest.split_first_chunk::<4>().ok_or_else(malformed)?;
    let len = i32::from_be_bytes(*len);
    if len < 0 || len as usize != data.len() {
        return Err(malformed());
    }
    Ok(data)
}

/// Tells the client why it is not logged in, and returns the error.
async fn refuse(stream: &mut BoxStream, err: AuthError, user_name: &str) -> AuthError {
    let (code, message) = match &err {
        AuthError::Failed | AuthError::FailedLocking(_) => ("28P01", format!("password authentication failed for user \"{user_name}\"")),
        AuthError::LockedOut => (
            "28000",
            "too many failed login attempts: further attempts for this user or from this address are \
             temporarily blocked; try again later"
                .to_owned(),
        ),
        AuthError::Protocol(why) => ("08P01", why.clone()),
        AuthError::Io(_) => return err,
    };
    frame::send_fatal(stream, code, &message).await;
    err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_response_is_checked() {
        assert_eq!(
            sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x03abc").unwrap(),
            b"abc"
        );
        assert!(sasl_initial_response(b"SCRAM-SHA-256\0\0\0\0\x09abc").is_err());
        assert!(sasl_initial_response(b"PLAIN\0\0\0\0\x03abc").is_err());
        assert!(sasl_initial_response(b"SCRAM").is_err());
    }
}
