"""The three things the benchmark compares, each started privately on a free port of 127.0.0.1:
a PostgreSQL (initdb in a temporary folder, fsync off, also listening on a Unix-domain socket in that
folder), pgbouncer (session pool, SCRAM secret in an auth_file) and Maschera (`maschera serve` with a
users file made by `maschera user add`); both proxies reach PostgreSQL the same way, over TCP or over
its socket (`upstream_host` below).
Each has `.port`, `.pid` (the process whose CPU and memory we read, None for PostgreSQL) and `.stop()`.
Not for: running workloads (see pgbench.py, cases.py)."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from .procs import (
    BenchError,
    as_postgres,
    chown_to_postgres,
    free_port,
    run,
    wait_port,
)

SUPERUSER = "postgres"


def pg_bin_dir():
    """PostgreSQL server binaries: PG_BIN_DIR, else the newest /usr/lib/postgresql/<v>/bin."""
    if os.environ.get("PG_BIN_DIR"):
        return os.environ["PG_BIN_DIR"]
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2].split(".")[0])
    )
    for d in reversed(dirs):
        if os.path.isfile(os.path.join(d, "initdb")):
            return d
    raise BenchError("no PostgreSQL server binaries; install them with `apt-get install postgresql`")


def private_dir(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    os.chmod(path, 0o700)
    chown_to_postgres(path)
    return path


def write_private(path, text):
    """Writes a file that only its owner (postgres when we are root) can read."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    chown_to_postgres(path)


def stop_process(proc, folder):
    """Terminates a server process we started (killed after 10 s) and removes its folder."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


def run_guarded(program, body):
    """Runs body(started): servers it appends to `started` are stopped afterwards, in reverse order,
    whatever happens; a BenchError is printed and gives exit status 1."""
    started = []
    try:
        return body(started)
    except BenchError as err:
        print(f"{program}: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        for server in reversed(started):
            server.stop()


class Login:
    """A user and password on a host and port; produces the environment libpq tools read."""

    def __init__(self, port, user, password, database):
        self.port, self.user, self.password, self.database = port, user, password, database

    def env(self, extra=None):
        env = dict(os.environ)
        env.update(
            PGHOST="127.0.0.1",
            PGPORT=str(self.port),
            PGUSER=self.user,
            PGPASSWORD=self.password,
            PGDATABASE=self.database,
            PGSSLMODE="disable",
        )
        env.pop("PGOPTIONS", None)
        env.update(extra or {})
        return env

    def psql(self, sql, database=None, extra_env=None):
        env = self.env(extra_env)
        if database:
            env["PGDATABASE"] = database
        out, _ = run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], env=env)
        return out.strip()


class PostgreSQL:
    """A private PostgreSQL run as user postgres (when root), fsync off, max_connections 1200."""

    pid = None

    def __init__(self, max_connections=1200):
        self.bin = pg_bin_dir()
        self.dir = private_dir("maschera-bench-pg-")
        self.data = os.path.join(self.dir, "data")
        self.password = "pw-" + os.urandom(8).hex()
        pwfile = os.path.join(self.dir, "pwfile")
        write_private(pwfile, self.password)
        run(
            [
                os.path.join(self.bin, "initdb"), "-D", self.data, "-U", SUPERUSER,
                "--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C", "--no-sync",
            ],
            preexec=as_postgres(),
        )
        self.port = free_port()
        with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
            f.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.dir}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                f"max_connections = {max_connections}\nshared_buffers = 128MB\n"
                "log_min_messages = warning\n"
            )
        run(
            [os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-l",
             os.path.join(self.dir, "server.log"), "-w", "-t", "60", "start"],
            preexec=as_postgres(),
        )
        self.superuser = Login(self.port, SUPERUSER, self.password, "postgres")
        self.version = self.superuser.psql("SHOW server_version")

    def upstream_host(self, kind):
        """What a proxy puts as PostgreSQL's host: 127.0.0.1 (`tcp`) or the socket directory (`unix`)."""
        return self.dir if kind == "unix" else "127.0.0.1"

    def create_owner(self, user, password, database):
        """A login owning a new database; returns its Login."""
        su = self.superuser
        su.psql(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")
        su.psql(f"CREATE DATABASE {database} OWNER {user}")
        return Login(self.port, user, password, database)

    def scram_secret(self, user):
        return self.superuser.psql(f"SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'")

    def stop(self):
        subprocess.run(
            [os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", "immediate", "stop"],
            preexec_fn=as_postgres(),
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class Pgbouncer:
    """pgbouncer in session mode (or `pool_mode`) in front of `pg`; clients authenticate with the
    SCRAM secrets of the logins in `logins` (auth_file), which pgbouncer then reuses towards
    PostgreSQL."""

    def __init__(self, binary, pg, logins, databases, pool_size=20, upstream_host="127.0.0.1",
                 pool_mode="session"):
        self.dir = private_dir("maschera-bench-pgbouncer-")
        self.port = free_port()
        auth = "".join(f'"{l.user}" "{pg.scram_secret(l.user)}"\n' for l in logins)
        write_private(os.path.join(self.dir, "users.txt"), auth)
        dbs = "".join(f"{d} = host={upstream_host} port={pg.port} dbname={d}\n" for d in databases)
        write_private(
            os.path.join(self.dir, "pgbouncer.ini"),
            f"[databases]\n{dbs}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            f"unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {self.dir}/users.txt\n"
            f"pool_mode = {pool_mode}\nmax_client_conn = 1200\ndefault_pool_size = {pool_size}\n"
            "server_tls_sslmode = disable\nlog_connections = 0\nlog_disconnections = 0\n"
            f"logfile = {self.dir}/pgbouncer.log\n",
        )
        self.proc = subprocess.Popen(
            [binary, os.path.join(self.dir, "pgbouncer.ini")],
            preexec_fn=as_postgres(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.dir, "stderr.log"), "w"),
        )
        self.pid = self.proc.pid
        try:
            wait_port(self.port, self.proc, what="pgbouncer")
        except BenchError as err:
            raise BenchError(f"{err}\n{self.log()}") from None

    def log(self):
        text = ""
        for name in ("pgbouncer.log", "stderr.log"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    text += f.read()[-4000:]
            except OSError:
                pass
        return text

    def stop(self):
        stop_process(self.proc, self.dir)


def build_maschera(repo, release=True):
    """`cargo build [--release] -p maschera`; returns the binary's path."""
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(repo, "target")
    args = ["cargo", "build", *(["--release"] if release else []), "-p", "maschera"]
    proc = subprocess.run(args, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"{' '.join(args)} failed:\n{proc.stderr[-4000:]}")
    return os.path.join(target, "release" if release else "debug", "maschera")


class Maschera:
    """`maschera serve` in front of `upstream` (a Login), with proxy users (name, password, role or
    None, attributes, optionally a list of further `user add` arguments such as `--application`)
    added through `maschera user add --password-stdin`. `extra` is appended to the
    configuration (e.g. `[policy]` or `[audit]` sections). `upstream_host` is `[upstream] host`:
    127.0.0.1, or PostgreSQL's socket directory; `worker_threads` is `[limits] worker_threads`
    (None: the proxy's default, half the cores and at least one); `upstream_extra` are further lines
    of `[upstream]` (e.g. `plan_cache = true`)."""

    def __init__(self, binary, upstream, users, extra="", max_connections=1200,
                 upstream_host="127.0.0.1", worker_threads=None, upstream_extra=""):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="maschera-bench-proxy-")
        users_file = os.path.join(self.dir, "users.toml")
        for name, password, role, attrs, *flags in users:
            args = [binary, "user", "--users", users_file, "add", name, "--password-stdin"]
            args += ["--role", role] if role else []
            for key, value in attrs.items():
                args += ["--attr", f"{key}={value}"]
            run(args + (flags[0] if flags else []), input_text=password + "\n")
        self.port = free_port()
        self.config = os.path.join(self.dir, "maschera.toml")
        with open(self.config, "w") as f:
            f.write(
                f'listen = "127.0.0.1:{self.port}"\n\n[upstream]\nhost = "{upstream_host}"\n'
                f'port = {upstream.port}\ndatabase = "{upstream.database}"\nuser = "{upstream.user}"\n'
                f'password = "{upstream.password}"\ntls = "off"\n{upstream_extra}\n'
                '[users]\nfile = "users.toml"\n\n'
                f"[limits]\nmax_connections = {max_connections}\n"
                # Case 4 holds 1,000 sessions of one user: no per-user or per-role session limit.
                "max_sessions_per_user = 0\nmax_sessions_per_role = 0\n"
                + (f"worker_threads = {worker_threads}\n" if worker_threads else "")
                + extra
            )
        self.log_path = os.path.join(self.dir, "maschera.log")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", self.config],
            env=dict(os.environ, RUST_LOG="warn"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "w"),
        )
        self.pid = self.proc.pid
        try:
            wait_port(self.port, self.proc, what="maschera serve")
        except BenchError as err:
            self.proc.kill()
            raise BenchError(f"{err}\n{self.log()}") from None

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self):
        stop_process(self.proc, self.dir)
