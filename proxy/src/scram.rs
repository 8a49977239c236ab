//! Server side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, against stored verifiers.
//! Not for: reading the users file or the wire protocol; it turns client messages into server messages.
//! INTERFACE STUB: the auth work stream replaces the bodies; the signatures are the contract.

use thiserror::Error;

/// A SCRAM-SHA-256 verifier in PostgreSQL's `pg_authid` format:
/// `SCRAM-SHA-256$<iterations>:<salt base64>$<StoredKey base64>:<ServerKey base64>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ScramError {
    /// The client's message does not follow the protocol (SQLSTATE 08P01).
    #[error("malformed SCRAM message: {0}")]
    Protocol(String),
    /// Wrong password or unknown user; deliberately indistinguishable (SQLSTATE 28P01).
    #[error("password authentication failed")]
    Failed,
}

impl Verifier {
    /// Derives a verifier from a password with a fresh random salt.
    pub fn from_password(_password: &str, _iterations: u32) -> Verifier {
        unimplemented!("auth work stream")
    }

    /// Parses the `pg_authid` text form.
    pub fn parse(_text: &str) -> Result<Verifier, ScramError> {
        unimplemented!("auth work stream")
    }

    /// The `pg_authid` text form.
    pub fn to_text(&self) -> String {
        unimplemented!("auth work stream")
    }
}

/// One SCRAM exchange, after the client's first message.
#[derive(Debug)]
pub struct ScramServer {}

impl ScramServer {
    /// Starts an exchange from the client-first-message (the SASLInitialResponse data). `verifier` is
    /// `None` for an unknown user: the exchange then runs against a fake verifier derived from the
    /// user name so that the answer does not tell whether the user exists, and always fails.
    /// Returns the server-first-message to send in AuthenticationSASLContinue.
    pub fn start(
        _user: &str,
        _verifier: Option<&Verifier>,
        _client_first: &[u8],
    ) -> Result<(ScramServer, Vec<u8>), ScramError> {
        unimplemented!("auth work stream")
    }

    /// Checks the client-final-message (SASLResponse data) and returns the server-final-message to
    /// send in AuthenticationSASLFinal.
    pub fn finish(self, _client_final: &[u8]) -> Result<Vec<u8>, ScramError> {
        unimplemented!("auth work stream")
    }
}
