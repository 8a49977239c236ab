//! The proxy as a PostgreSQL client: opens a connection to the configured server (TCP with TLS off,
//! prefer, require or verify-full, or a Unix-domain socket when `host` is a socket directory, as in
//! libpq), logs in as a given login (SCRAM-SHA-256, md5, cleartext or trust) and
//! collects what the server says before its first ReadyForQuery (ParameterStatus, BackendKeyData).
//! Also sends CancelRequests to that server. Frontend messages and the client side of SCRAM come from
//! `postgres-protocol`. Not for: relaying a session (see `session`) or choosing the login.

use crate::net::cancel::CancelKey;
use crate::net::socket_upstream::SocketUpstream;
use crate::net::tls::{self, BoxStream};
pub use crate::net::upstream_settings::Login;
use crate::net::upstream_settings::{UpstreamConfig, UpstreamTlsMode};
use crate::wire::frame::{self, FrameError, POSTGRES_MAX_FRAME};
use crate::wire::{Backend, ErrorFields};
use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use std::path::PathBuf;
use std::sync::Arc;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("cannot reach PostgreSQL: {0}")]
    Io(#[from] std::io::Error),
    #[error("PostgreSQL refused TLS but the configuration requires it")]
    TlsRefused,
    #[error("TLS with PostgreSQL failed: {0}")]
    Tls(String),
    #[error("PostgreSQL refused the login: {code} {message}")]
    Refused { code: String, message: String },
    #[error("PostgreSQL asked for a password but the login has none")]
    NoPassword,
    #[error("PostgreSQL spoke unexpectedly: {0}")]
    Protocol(String),
    #[error("PostgreSQL did not answer in time")]
    Timeout,
}

impl UpstreamError {
    /// What a client is told (SQLSTATE, message) when the proxy could not log in upstream as `login`
    /// for it: PostgreSQL's own answer for a database that does not exist (its name is the client's);
    /// for a refused password (a role's login may change its own, straight on PostgreSQL) the login
    /// and the repair, since every user of the role is locked out until an operator runs it; else a
    /// plain "could not connect" (the log has the cause).
    pub fn for_client(&self, login: &str) -> (&'static str, String) {
        match self {
            UpstreamError::Refused { code, message } if code == "3D000" => {
                ("3D000", message.clone())
            }
            UpstreamError::Refused { code, .. } if code == "28P01" => (
                "08004",
                format!(
                    "PostgreSQL refused the password the proxy holds for login \"{login}\": it may have \
                     been changed straight on PostgreSQL (ALTER ROLE ... PASSWORD); an operator repairs \
                     it with `maschera policy apply`, which sets it again from the credentials file"
                ),
            ),
            _ => (
                "08006",
                "could not connect to the database server behind the proxy".to_string(),
            ),
        }
    }
}

impl From<FrameError> for UpstreamError {
    fn from(err: FrameError) -> Self {
        match err {
            FrameError::Io(io) => UpstreamError::Io(io),
            other => UpstreamError::Protocol(other.to_string()),
        }
    }
}

/// Where and how to reach PostgreSQL; built once from the configuration.
pub struct UpstreamTarget {
    config: UpstreamConfig,
    tls: Option<Arc<ClientConfig>>,
}

/// A logged-in upstream session, ready for queries.
pub struct Upstream {
    pub stream: BoxStream,
    /// ParameterStatus and NoticeResponse frames the server sent while logging in, to pass on.
    pub greeting: BytesMut,
    /// The server's cancel key for this session.
    pub key: CancelKey,
    /// Transaction status of the first ReadyForQuery.
    pub status: u8,
}

/// The socket of PostgreSQL when `config.host` is a directory (an absolute path, as in libpq):
/// `<host>/.s.PGSQL.<port>`.
pub fn socket_path(config: &UpstreamConfig) -> Option<PathBuf> {
    config
        .host
        .starts_with('/')
        .then(|| PathBuf::from(&config.host).join(format!(".s.PGSQL.{}", config.port)))
}

impl UpstreamTarget {
    /// Fails when the TLS settings cannot be used: an unreadable `ca_file`, a host that is no TLS
    /// server name, or `require`/`verify-full` with a socket directory (PostgreSQL does not speak
    /// TLS on a Unix-domain socket; `prefer` then means plain, as in libpq).
    pub fn new(config: &UpstreamConfig) -> anyhow::Result<UpstreamTarget> {
        if socket_path(config).is_some() {
            if matches!(
                config.tls,
                UpstreamTlsMode::Require | UpstreamTlsMode::VerifyCa | UpstreamTlsMode::VerifyFull
            ) {
                anyhow::bail!(
                    "[upstream] host `{}` is a Unix-domain socket directory, where PostgreSQL does \
                     not use TLS: set tls = \"off\" (or \"prefer\"), or give a host name for TLS",
                    config.host
                );
            }
            return Ok(UpstreamTarget {
                config: config.clone(),
                tls: None,
            });
        }
        let tls = tls::upstream_config(config.tls, config.ca_file.as_deref())?;
        if tls.is_some() {
            tls::server_name(&config.host)?;
        }
        Ok(UpstreamTarget {
            config: config.clone(),
            tls,
        })
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// Opens a transport to PostgreSQL: the Unix-domain socket, or TCP then TLS as configured (also for the proxy's own
    /// catalog connection, which logs in with tokio-postgres over it).
    pub async fn open_transport(&self) -> Result<BoxStream, UpstreamError> {
        self.open().await
    }

    async fn open(&self) -> Result<BoxStream, UpstreamError> {
        if let Some(path) = socket_path(&self.config) {
            return Ok(Box::new(SocketUpstream::connect(&path).await?));
        }
        let tcp = TcpStream::connect((self.config.host.as_str(), self.config.port)).await?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let mut tcp = tcp;
        let mut request = BytesMut::new();
        frontend::ssl_request(&mut request);
        tcp.write_all(&request).await?;
        match tcp.read_u8().await? {
            b'S' => {
                let name = tls::server_name(&self.config.host)
                    .map_err(|e| UpstreamError::Tls(e.to_string()))?;
                let stream = TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| UpstreamError::Tls(e.to_string()))?;
                Ok(Box::new(stream))
            }
            b'N' if self.config.tls == UpstreamTlsMode::Prefer => Ok(Box::new(tcp)),
            b'N' => Err(UpstreamError::TlsRefused),
            other => Err(UpstreamError::Protocol(format!(
                "answer {other:#x} to SSLRequest"
            ))),
        }
    }

    /// Checks that PostgreSQL accepts connections (for the health endpoint).
    pub async fn probe(&self) -> bool {
        matches!(
            tokio::time::timeout(self.config.connect_timeout(), self.open()).await,
            Ok(Ok(_))
        )
    }

    /// Connects and logs in as `login` to the configured database, passing `params` (client
    /// settings such as `application_name`) in the startup message.
    pub async fn connect(
        &self,
        login: &Login,
        params: &[(String, String)],
    ) -> Result<Upstream, UpstreamError> {
        self.connect_to(login, &self.config.database, params).await
    }

    /// [`UpstreamTarget::connect`] to `database` (the one the client named).
    pub async fn connect_to(
        &self,
        login: &Login,
        database: &str,
        params: &[(String, String)],
    ) -> Result<Upstream, UpstreamError> {
        tokio::time::timeout(
            self.config.connect_timeout(),
            self.connect_now(login, database, params),
        )
        .await
        .map_err(|_| UpstreamError::Timeout)?
    }

    async fn connect_now(
        &self,
        login: &Login,
        database: &str,
        params: &[(String, String)],
    ) -> Result<Upstream, UpstreamError> {
        let mut stream = self.open().await?;
        let mut out = BytesMut::new();
        let mut startup: Vec<(&str, &str)> =
            vec![("user", login.user.as_str()), ("database", database)];
        startup.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        frontend::startup_message(startup, &mut out)?;
        stream.write_all(&out).await?;
        let mut buf = BytesMut::new();
        authenticate(&mut stream, &mut buf, login).await?;
        let mut greeting = BytesMut::new();
        let mut key = None;
        loop {
            let frame = next(&mut stream, &mut buf).await?;
            match Backend::decode(&frame) {
                Ok(Backend::ParameterStatus { .. } | Backend::NoticeResponse(_)) => {
                    greeting.extend_from_slice(&frame)
                }
                Ok(Backend::BackendKeyData { pid, secret }) => {
                    key = Some(CancelKey { pid, secret })
                }
                Ok(Backend::ReadyForQuery { status }) => {
                    let key =
                        key.ok_or_else(|| UpstreamError::Protocol("no BackendKeyData".into()))?;
                    return Ok(Upstream {
                        stream,
                        greeting,
                        key,
                        status,
                    });
                }
                Ok(Backend::ErrorResponse(fields)) => return Err(refused(&fields)),
                Ok(other) => {
                    return Err(UpstreamError::Protocol(format!(
                        "message {:?} during login",
                        other.tag() as char
                    )));
                }
                Err(malformed) => {
                    return Err(UpstreamError::Protocol(format!("{malformed} during login")));
                }
            }
        }
    }

    /// Sends a CancelRequest for `key` on a new connection (PostgreSQL closes it without an answer).
    pub async fn cancel(&self, key: CancelKey) -> Result<(), UpstreamError> {
        let mut stream = tokio::time::timeout(self.config.connect_timeout(), self.open())
            .await
            .map_err(|_| UpstreamError::Timeout)??;
        let mut out = BytesMut::new();
        frontend::cancel_request(key.pid, key.secret, &mut out);
        stream.write_all(&out).await?;
        stream.flush().await?;
        // Wait for the server to close the connection (a reset counts): then it has signalled the
        // backend.
        let mut sink = [0u8; 64];
        let _closed = tokio::time::timeout(self.config.connect_timeout(), stream.read(&mut sink))
            .await
            .map_err(|_| UpstreamError::Timeout)?;
        Ok(())
    }
}

async fn next(stream: &mut BoxStream, buf: &mut BytesMut) -> Result<bytes::Bytes, UpstreamError> {
    frame::read_frame(stream, buf, POSTGRES_MAX_FRAME)
        .await?
        .ok_or_else(|| UpstreamError::Protocol("connection closed during login".into()))
}

fn refused(fields: &ErrorFields<'_>) -> UpstreamError {
    let field = |c: u8| {
        fields
            .get(c)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    UpstreamError::Refused {
        code: field(b'C'),
        message: field(b'M'),
    }
}

/// Answers the server's authentication requests until AuthenticationOk.
async fn authenticate(
    stream: &mut BoxStream,
    buf: &mut BytesMut,
    login: &Login,
) -> Result<(), UpstreamError> {
    let mut scram: Option<ScramSha256> = None;
    let password = || login.password.as_deref().ok_or(UpstreamError::NoPassword);
    loop {
        let frame = next(stream, buf).await?;
        match Backend::decode(&frame) {
            Ok(Backend::ErrorResponse(fields)) => return Err(refused(&fields)),
            Err(malformed) => {
                return Err(UpstreamError::Protocol(format!(
                    "{malformed} during authentication"
                )));
            }
            Ok(_) => {}
        }
        let body = frame::body(&frame);
        if frame[0] != b'R' || body.len() < 4 {
            return Err(UpstreamError::Protocol(format!(
                "message {:?} during authentication",
                frame[0] as char
            )));
        }
        let (code, data) = body.split_at(4);
        let mut out = BytesMut::new();
        match i32::from_be_bytes([code[0], code[1], code[2], code[3]]) {
            0 => return Ok(()),
            3 => frontend::password_message(password()?.as_bytes(), &mut out)?,
            5 => {
                let salt: [u8; 4] = data
                    .get(..4)
                    .and_then(|s| s.try_into().ok())
                    .ok_or_else(|| UpstreamError::Protocol("short md5 salt".into()))?;
                let hash = md5_hash(login.user.as_bytes(), password()?.as_bytes(), salt);
                frontend::password_message(hash.as_bytes(), &mut out)?;
            }
            10 => {
                let offers_scram = data
                    .split(|&b| b == 0)
                    .any(|m| m == SCRAM_SHA_256.as_bytes());
                if !offers_scram {
                    return Err(UpstreamError::Protocol(
                        "server offers no SCRAM-SHA-256".into(),
                    ));
                }
                let exchange =
                    ScramSha256::new(password()?.as_bytes(), ChannelBinding::unsupported());
                frontend::sasl_initial_response(SCRAM_SHA_256, exchange.message(), &mut out)?;
                scram = Some(exchange);
            }
            11 => {
                let exchange = in_progress(&mut scram)?;
                exchange.update(data).map_err(sasl_error)?;
                frontend::sasl_response(exchange.message(), &mut out)?;
            }
            12 => in_progress(&mut scram)?.finish(data).map_err(sasl_error)?,
            other => {
                return Err(UpstreamError::Protocol(format!(
                    "unsupported authentication method {other}"
                )));
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
    }
}

fn in_progress(scram: &mut Option<ScramSha256>) -> Result<&mut ScramSha256, UpstreamError> {
    scram
        .as_mut()
        .ok_or_else(|| UpstreamError::Protocol("SASL message out of order".into()))
}

fn sasl_error(err: std::io::Error) -> UpstreamError {
    UpstreamError::Protocol(format!("SCRAM with PostgreSQL failed: {err}"))
}
