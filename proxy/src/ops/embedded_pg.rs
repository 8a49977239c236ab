//! A private PostgreSQL server: started from the machine's own server binaries in a temporary folder,
//! reachable over TCP on 127.0.0.1 with a superuser password (SCRAM), run as the unprivileged `postgres`
//! user when we are root, stopped and deleted when dropped. Used by `maschera demo` and by the tests.
//!
//! The folder (data, Unix-domain socket, the superuser's password file) is readable by its owner
//! only: mode 0700, the password file written 0600 from the start. A guardian process outlives us to
//! stop the server and remove the folder if we die without dropping it (a crash, an abort, SIGKILL):
//! it waits for the end of a pipe whose writing end only this process holds, which the kernel closes
//! however the process ends.
//! Not for: production databases (fsync is off).

#![allow(
    unsafe_code,
    reason = "libc::geteuid and libc::pipe2 for the private server's process"
)]

use anyhow::{Context, Result, anyhow, bail};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The reference CRM schema, built into the binary so that it works from any folder.
pub const CRM_SCHEMA: &str = include_str!("../../../examples/crm/schema.sql");

/// The superuser the harness creates; its password is [`PgServer::password`].
pub const SUPERUSER: &str = "postgres";

/// How the private server is set up.
#[derive(Debug, Clone)]
pub struct PgServerOptions {
    /// `pg_hba.conf` method for TCP connections: `scram-sha-256`, `md5` or `trust`.
    pub host_auth: String,
    /// Extra `postgresql.conf` lines.
    pub settings: Vec<String>,
}

impl Default for PgServerOptions {
    fn default() -> Self {
        Self {
            host_auth: "scram-sha-256".into(),
            settings: Vec::new(),
        }
    }
}

/// A running private PostgreSQL.
pub struct PgServer {
    dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    port: u16,
    password: String,
    as_postgres_user: bool,
    guardian: Option<Guardian>,
}

/// Finds the PostgreSQL server binaries: `PG_BIN_DIR`, then `pg_config --bindir`, then
/// `/usr/lib/postgresql/<newest>/bin`, then `initdb` on `PATH`.
pub fn pg_bin_dir() -> Result<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let has_server = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    if let Some(dir) = versions.into_iter().rev().find(|d| has_server(d)) {
        return Ok(dir);
    }
    if let Some(dir) = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).find(|d| has_server(d)))
    {
        return Ok(dir);
    }
    bail!("no PostgreSQL server binaries found; install them with `apt-get install postgresql`")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl PgServer {
    /// Starts a server with the default options (SCRAM for TCP).
    pub fn start() -> Result<Self> {
        Self::start_with(PgServerOptions::default())
    }

    pub fn start_with(options: PgServerOptions) -> Result<Self> {
        let bin = pg_bin_dir()?;
        let as_postgres_user = running_as_root();
        let dir = tempfile::Builder::new().prefix("maschera-pg-").tempdir()?;
        owner_only(dir.path(), 0o700)?;
        let guardian = Guardian::spawn(dir.path())?;
        let data = dir.path().join("data");
        let password: String = format!("pw-{:x}", rand_u64());
        let pwfile = dir.path().join("pwfile");
        write_private(&pwfile, &password)?;
        if as_postgres_user {
            chown_to_postgres(dir.path())?;
        }
        let mut server = Self {
            dir,
            data,
            bin,
            port: 0,
            password,
            as_postgres_user,
            guardian: Some(guardian),
        };
        server.run(
            "initdb",
            &[
                "-D",
                path_str(&server.data)?,
                "-U",
                SUPERUSER,
                "--pwfile",
                path_str(&pwfile)?,
                "--auth-local=trust",
                &format!("--auth-host={}", options.host_auth),
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n",
        );
        if options.host_auth == "md5" {
            conf.push_str("password_encryption = md5\n");
        }
        for line in &options.settings {
            conf.push_str(line);
            conf.push('\n');
        }
        let conf_path = server.data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing)?;
        if options.host_auth == "md5" {
            // initdb stored a SCRAM verifier; md5 authentication needs an md5 one.
            server.start_on_free_port()?;
            server.execute(&format!(
                "ALTER USER {SUPERUSER} PASSWORD '{}'",
                server.password
            ))?;
            return Ok(server);
        }
        server.start_on_free_port()?;
        Ok(server)
    }

    fn start_on_free_port(&mut self) -> Result<()> {
        let mut last_error = anyhow!("not started");
        for _ in 0..5 {
            self.port = free_port();
            let log = self.dir.path().join("server.log");
            let opts = format!("-p {} -k {}", self.port, path_str(self.dir.path())?);
            match self.run(
                "pg_ctl",
                &[
                    "-D",
                    path_str(&self.data)?,
                    "-l",
                    path_str(&log)?,
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ) {
                Ok(()) => return self.wait_ready(),
                Err(err) => {
                    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
                    last_error = err.context(log_text);
                }
            }
        }
        Err(last_error)
    }

    fn wait_ready(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.execute("SELECT 1").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("PostgreSQL on port {} did not become ready", self.port)
    }

    /// Runs one of the server binaries, as the `postgres` user when we are root.
    fn run(&self, program: &str, args: &[&str]) -> Result<()> {
        let exe = self.bin.join(program);
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Stops the server (fast shutdown: open sessions are terminated) and keeps its data folder and
    /// port, for fault tests; [`PgServer::start_again`] brings it back.
    pub fn stop(&self) -> Result<()> {
        self.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&self.data)?,
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "stop",
            ],
        )
    }

    /// Starts a server stopped by [`PgServer::stop`] again, on the same port, and waits until it
    /// answers queries.
    pub fn start_again(&self) -> Result<()> {
        let log = self.dir.path().join("server.log");
        let opts = format!("-p {} -k {}", self.port, path_str(self.dir.path())?);
        let data = path_str(&self.data)?;
        let log = path_str(&log)?;
        self.run(
            "pg_ctl",
            &[
                "-D", data, "-l", log, "-o", &opts, "-w", "-t", "60", "start",
            ],
        )?;
        self.wait_ready()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The directory of the server's Unix-domain socket (`<dir>/.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The superuser's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The folder holding the server's data and any files a test wants to keep beside it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The folder with `psql`, `pgbench`, `pg_dump`, ...
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// A URI for the superuser to database `db`.
    pub fn uri(&self, db: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{db}",
            self.password, self.port
        )
    }

    /// A URI for an arbitrary user.
    pub fn uri_as(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL as the superuser in database `postgres` through psql (several statements allowed).
    pub fn execute(&self, sql: &str) -> Result<String> {
        self.psql("postgres", &["-c", sql])
    }

    /// Runs psql as the superuser against `db` with extra arguments; returns standard output.
    pub fn psql(&self, db: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .arg(self.uri(db))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!("psql failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a database owned by the superuser.
    pub fn create_database(&self, name: &str) -> Result<()> {
        self.execute(&format!("CREATE DATABASE \"{name}\""))
            .map(|_| ())
    }

    /// Creates database `db` with the reference CRM schema of `examples/crm/schema.sql`.
    pub fn create_crm_schema(&self, db: &str) -> Result<()> {
        self.create_database(db)?;
        self.psql(db, &["-c", CRM_SCHEMA]).map(|_| ())
    }

    /// A tokio-postgres client as the superuser to `db` (the connection task is spawned).
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client> {
        connect(&self.uri(db)).await
    }
}

/// Connects with tokio-postgres (no TLS) and spawns the connection task.
pub async fn connect(uri: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(uri, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Ok(data) = path_str(&self.data) {
            let _ = self.run("pg_ctl", &["-D", data, "-m", "immediate", "-w", "stop"]);
        }
        if let Some(guardian) = self.guardian.take() {
            guardian.release();
        }
    }
}

/// The process that stops the server and removes its folder once the pipe to it closes: when
/// [`PgServer`] is dropped (then there is nothing left to do) or when this process ends in any other
/// way. It runs in a process group of its own, so that a Ctrl-C meant for us does not end it first.
struct Guardian {
    child: std::process::Child,
    pipe: std::os::fd::OwnedFd,
}

/// The guardian's script: `$1` the data folder, `$2` the folder to remove.
const GUARDIAN_SCRIPT: &str = r#"
while read -r _; do :; done
pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null)
case "$pid" in
  ''|*[!0-9]*) ;;
  *)
    kill -QUIT "$pid" 2>/dev/null
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
    kill -KILL "$pid" 2>/dev/null
    ;;
esac
rm -rf "$2"
"#;

impl Guardian {
    fn spawn(dir: &Path) -> Result<Guardian> {
        use std::os::fd::{FromRawFd, OwnedFd};
        use std::os::unix::process::CommandExt;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new descriptors into `fds`; both are close-on-exec, so no other
        // child inherits the writing end.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error()).context("creating the guardian's pipe");
        }
        // SAFETY: both descriptors were just created and are owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let data = dir.join("data");
        let child = Command::new("sh")
            .args(["-c", GUARDIAN_SCRIPT, "maschera-pg-guardian"])
            .arg(&data)
            .arg(dir)
            .stdin(Stdio::from(read))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting the guardian of the private PostgreSQL")?;
        Ok(Guardian { child, pipe: write })
    }

    /// Closes the pipe (the guardian then does its work) and waits for the guardian to finish.
    fn release(mut self) {
        drop(self.pipe);
        let _ = self.child.wait();
    }
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str()
        .ok_or_else(|| anyhow!("path {} is not UTF-8", path.display()))
}

/// Sets `path`'s mode (before anything is written into a folder, so there is no window).
fn owner_only(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// Writes a new file, created with mode 0600 (readable by its owner only from the start).
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn chown_to_postgres(path: &Path) -> Result<()> {
    let status = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .status()?;
    if !status.success() {
        bail!("chown postgres {} failed", path.display());
    }
    Ok(())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}
