//! The proxy under test: writes a configuration and a users file into a temporary folder, spawns the
//! real `maschera serve` in front of a [`PgServer`], waits until its port accepts connections, keeps
//! its standard error in a file (printed when a test fails), and kills it on drop.

use crate::pg::{PgServer, SUPERUSER, free_port};
use anyhow::{Context, Result, bail};
use maschera::net::scram::Verifier;
use maschera::users::{User, UserStore};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long [`Proxy::wait_for_log`] waits.
const LOG_WAIT: Duration = Duration::from_secs(45);

/// The user every proxy gets unless a test says otherwise.
pub const TEST_USER: &str = "alice";
/// Its password.
pub const TEST_PASSWORD: &str = "correct horse battery staple";

/// How the proxy under test is configured. Sections are TOML lines inside the named table.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Proxy users: (name, password, role).
    pub users: Vec<(String, String, String)>,
    /// The login the proxy uses upstream: (user, password); default the superuser.
    pub upstream_login: Option<(String, String)>,
    /// Database the proxy connects to upstream.
    pub database: String,
    /// `[upstream] tls`.
    pub upstream_tls: String,
    /// Extra lines for `[upstream]` (e.g. `ca_file = ...`).
    pub upstream_extra: String,
    /// Reach PostgreSQL over its Unix-domain socket (`[upstream] host` = the server's socket
    /// directory) instead of TCP.
    pub upstream_socket: bool,
    /// Lines of `[tls]` (empty: TLS off).
    pub tls: String,
    /// Lines of `[auth]`.
    pub auth: String,
    /// Lines of `[limits]`.
    pub limits: String,
    /// Lines of `[log]`.
    pub log: String,
    /// Serve `[metrics]` on a free port.
    pub metrics: bool,
    /// Lines of `[policy]` (empty: no policy).
    pub policy: String,
    /// Lines of `[audit]` (empty: no access log).
    pub audit: String,
    /// Lines of `[retention]` (empty: no scheduled retention).
    pub retention: String,
    /// A users file to serve instead of one written from `users` (e.g. made by `maschera user add`).
    pub users_file: Option<PathBuf>,
    /// `RUST_LOG` of the proxy (default `debug`; load tests use `info`).
    pub log_level: String,
    /// Further top-level tables, verbatim (e.g. `[databases.crm2]` sections).
    pub sections: String,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            users: vec![(TEST_USER.into(), TEST_PASSWORD.into(), "sales".into())],
            upstream_login: None,
            database: "postgres".into(),
            upstream_tls: "off".into(),
            upstream_extra: String::new(),
            upstream_socket: false,
            tls: String::new(),
            auth: String::new(),
            limits: String::new(),
            log: String::new(),
            metrics: false,
            policy: String::new(),
            audit: String::new(),
            retention: String::new(),
            users_file: None,
            log_level: "debug".into(),
            sections: String::new(),
        }
    }
}

/// A running `maschera serve`.
pub struct Proxy {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    metrics_port: Option<u16>,
}

impl Proxy {
    /// Starts the proxy in front of `pg` and waits until it accepts connections. A port taken by
    /// someone else in the meantime is retried with another one.
    pub fn start(pg: &PgServer, options: ProxyOptions) -> Result<Proxy> {
        let dir = tempfile::Builder::new()
            .prefix("maschera-proxy-")
            .tempdir()?;
        match &options.users_file {
            Some(file) => std::fs::copy(file, dir.path().join("users.toml")).map(|_| ())?,
            None => write_users(&dir.path().join("users.toml"), &options.users)?,
        }
        let log_path = dir.path().join("maschera.log");
        let mut last_error = anyhow::anyhow!("proxy did not start");
        for _ in 0..3 {
            let port = free_port();
            let metrics_port = options.metrics.then(free_port);
            std::fs::write(
                dir.path().join("maschera.toml"),
                config_text(pg, &options, port, metrics_port),
            )?;
            let mut child = Command::new(crate::maschera_bin())
                .args(["serve", "--config"])
                .arg(dir.path().join("maschera.toml"))
                .env("RUST_LOG", &options.log_level)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path)?)
                .spawn()
                .context("spawning maschera serve")?;
            match wait_accepting(&mut child, port) {
                Ok(()) => {
                    return Ok(Proxy {
                        child,
                        dir,
                        port,
                        metrics_port,
                    });
                }
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    let port_taken = log.contains("in use");
                    last_error = err.context(log);
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last_error)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Port of the metrics endpoint, when [`ProxyOptions::metrics`] was set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// The folder holding the configuration, users file and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A connection URI through the proxy.
    pub fn uri_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{}@127.0.0.1:{}/{db}",
            encode(password),
            self.port
        )
    }

    /// A connection URI through the proxy as the default test user.
    pub fn uri(&self, db: &str) -> String {
        self.uri_as(TEST_USER, TEST_PASSWORD, db)
    }

    /// What the proxy wrote on standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maschera.log")).unwrap_or_default()
    }

    /// Waits up to 30 seconds until the proxy's log holds `needle` `count` times (blocking the
    /// thread: async tests whose other tasks must go on meanwhile use [`Proxy::wait_for_log_async`]).
    pub fn wait_for_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + LOG_WAIT;
        while !self.log_holds(needle, count, deadline) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// [`Proxy::wait_for_log`] that lets the runtime's other tasks run while it waits.
    pub async fn wait_for_log_async(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + LOG_WAIT;
        while !self.log_holds(needle, count, deadline) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the log holds `needle` `count` times; panics (showing the log) past `deadline`.
    fn log_holds(&self, needle: &str, count: usize, deadline: Instant) -> bool {
        let log = self.log();
        if log.matches(needle).count() >= count {
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} {count} times in the proxy log within {LOG_WAIT:?}"
        );
        false
    }

    /// Process id of the proxy (e.g. to read its memory from `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A memory figure of the proxy process in KiB from `/proc/<pid>/status`: `"VmRSS"` (resident
    /// now) or `"VmHWM"` (the peak resident size so far).
    pub fn memory_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the proxy's /proc status");
        status
            .lines()
            .filter_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .find_map(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc status"))
    }

    /// Sends a signal (e.g. `libc::SIGTERM`) to the proxy.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits up to `limit` for the proxy to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("maschera serve still running after {limit:?}")
    }
}

fn wait_accepting(child: &mut Child, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("maschera serve exited with {status}");
        }
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("maschera serve did not accept connections on port {port}")
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- maschera log ----\n{}\n---- end of maschera log ----",
                self.log()
            );
        }
    }
}

fn write_users(path: &Path, users: &[(String, String, String)]) -> Result<()> {
    let mut store = UserStore::default();
    for (name, password, role) in users {
        store.insert(User {
            name: name.clone(),
            role: role.clone(),
            attributes: Default::default(),
            verifier: Verifier::from_password(password, 4096),
        })?;
    }
    store.save(path)?;
    Ok(())
}

fn config_text(
    pg: &PgServer,
    options: &ProxyOptions,
    port: u16,
    metrics_port: Option<u16>,
) -> String {
    let (user, password) = options
        .upstream_login
        .clone()
        .unwrap_or_else(|| (SUPERUSER.to_owned(), pg.password().to_owned()));
    let host = match options.upstream_socket {
        true => pg.socket_dir().display().to_string(),
        false => pg.host().to_owned(),
    };
    let mut text = format!(
        "listen = \"127.0.0.1:{port}\"\n\n[upstream]\nhost = {host:?}\nport = {}\ndatabase = \"{}\"\n\
         user = \"{user}\"\npassword = \"{password}\"\ntls = \"{}\"\n{}\n\n[users]\nfile = \"users.toml\"\n",
        pg.port(),
        options.database,
        options.upstream_tls,
        options.upstream_extra,
    );
    for (table, lines) in [
        ("tls", &options.tls),
        ("auth", &options.auth),
        ("limits", &options.limits),
        ("log", &options.log),
        ("policy", &options.policy),
        ("audit", &options.audit),
        ("retention", &options.retention),
    ] {
        if !lines.is_empty() {
            text.push_str(&format!("\n[{table}]\n{lines}\n"));
        }
    }
    if let Some(metrics_port) = metrics_port {
        text.push_str(&format!(
            "\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n"
        ));
    }
    text.push_str(&options.sections);
    text
}

/// Percent-encodes a password for a URI.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Paths of a certificate and key (PEM) for `localhost`/127.0.0.1, signed by a fresh CA whose
/// certificate is written too: (ca, cert, key).
pub fn write_test_certificates(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Maschera test CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let cert = params.signed_by(&key, &issuer)?;
    let paths = (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    );
    std::fs::write(&paths.0, ca_cert.pem())?;
    std::fs::write(&paths.1, cert.pem())?;
    std::fs::write(&paths.2, key.serialize_pem())?;
    Ok(paths)
}

/// A private PostgreSQL with `ssl = on` and a test certificate (see [`write_test_certificates`],
/// written into `certs`, which PostgreSQL must be able to read): the server and the CA file.
pub fn start_tls_pg(certs: &Path) -> Result<(PgServer, PathBuf)> {
    let (ca, cert, key) = write_test_certificates(certs)?;
    if crate::running_as_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(certs)
            .status()?;
        if !status.success() {
            bail!("chown of the test certificates failed");
        }
    }
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let pg = PgServer::start_with(crate::PgServerOptions {
        settings: vec![
            "ssl = on".to_owned(),
            format!("ssl_cert_file = '{}'", cert.display()),
            format!("ssl_key_file = '{}'", key.display()),
        ],
        ..Default::default()
    })?;
    Ok((pg, ca))
}

/// Logs in through the proxy by hand (startup message, SCRAM with postgres-protocol) and reads up to
/// the first ReadyForQuery, for tests that send raw protocol messages. Panics if the login fails.
/// Reads one backend message from a raw session: its type byte and its body.
pub async fn read_message(stream: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let tag = stream.read_u8().await.expect("message type");
    let len = stream.read_i32().await.expect("message length") as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.expect("message body");
    (tag, body)
}

pub async fn raw_login(
    port: u16,
    user: &str,
    password: &str,
    database: &str,
) -> tokio::net::TcpStream {
    use bytes::{Buf, BytesMut};
    use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
    use postgres_protocol::message::frontend;
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the proxy");
    let mut out = BytesMut::new();
    frontend::startup_message([("user", user), ("database", database)], &mut out)
        .expect("startup message");
    stream.write_all(&out).await.expect("send startup");
    let mut scram = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
    loop {
        let (tag, body) = read_message(&mut stream).await;
        let mut out = BytesMut::new();
        let code = body.get(..4).map(|mut b| b.get_i32()).unwrap_or(-1);
        match (tag, code) {
            (b'R', 10) => frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut out)
                .expect("SASL initial response"),
            (b'R', 11) => {
                scram.update(&body[4..]).expect("SCRAM server first");
                frontend::sasl_response(scram.message(), &mut out).expect("SASL response");
            }
            (b'R', 12) => scram.finish(&body[4..]).expect("SCRAM server final"),
            (b'Z', _) => return stream,
            (b'E', _) => panic!("login failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
        stream.write_all(&out).await.expect("send");
    }
}
