"""Process plumbing for the benchmark: running commands, dropping to the `postgres` user when root,
free ports, waiting for a port, and reading a process's CPU time and resident size from /proc.
Not for: knowing anything about PostgreSQL, pgbouncer or Maschera (see servers.py)."""

import os
import pwd
import shutil
import socket
import subprocess
import time


class BenchError(Exception):
    """A real failure: the benchmark cannot go on."""


def running_as_root():
    return os.geteuid() == 0


def postgres_ids():
    entry = pwd.getpwnam("postgres")
    return entry.pw_uid, entry.pw_gid


def as_postgres():
    """A preexec_fn that drops to the `postgres` user when we are root (PostgreSQL and pgbouncer
    refuse to run as root); None otherwise."""
    if not running_as_root():
        return None
    uid, gid = postgres_ids()

    def drop():
        os.setgid(gid)
        os.setgroups([])
        os.setuid(uid)

    return drop


def chown_to_postgres(path):
    if running_as_root():
        uid, gid = postgres_ids()
        os.chown(path, uid, gid)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, limit=30.0, what="server"):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"{what} did not accept connections on port {port} within {limit:.0f} s")


def run(args, env=None, input_text=None, preexec=None, check=True, timeout=None):
    """Runs a command, returns (stdout, stderr); a non-zero exit is a BenchError naming the command."""
    proc = subprocess.run(
        args,
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        preexec_fn=preexec,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise BenchError(
            f"`{' '.join(str(a) for a in args)}` failed with status {proc.returncode}:\n"
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )
    return proc.stdout, proc.stderr


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    """Resident set size of a process, in KiB (VmRSS of /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


def find_tool(name, debian_package):
    """The path of a tool, installing its Debian package when missing and we are root."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path:
        return path
    if running_as_root() and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", debian_package], env=env, capture_output=True
        )
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
        if path:
            return path
    raise BenchError(f"`{name}` is missing and could not be installed (Debian package {debian_package})")
