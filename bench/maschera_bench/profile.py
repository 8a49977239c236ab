"""`bench/profile`: where Maschera spends its CPU under `pgbench -S`. Starts the same private
PostgreSQL and Maschera as bench/run, then (1) samples the proxy with `perf record` during a pgbench run
and prints the hottest symbols, and (2) counts the proxy's system calls per transaction with
`strace -c -f` during a run of a fixed number of transactions. Not for: comparisons (see bench/run)."""

import argparse
import os
import subprocess
import tempfile

from .main import PROXY_USER, REPO
from .procs import BenchError, find_tool, run
from .servers import Login, Maschera, PostgreSQL, build_maschera, run_guarded


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", default="prepared", help="pgbench -M mode (default prepared)")
    p.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    p.add_argument("--seconds", type=int, default=10, help="seconds of perf sampling (default 10)")
    p.add_argument("--transactions", type=int, default=2000,
                   help="transactions per client under strace (default 2000)")
    p.add_argument("--top", type=int, default=40, help="symbols to print (default 40)")
    p.add_argument("--binary", help="the maschera binary to profile (default: cargo build --release)")
    p.add_argument("--upstream", choices=("tcp", "unix"), default="unix",
                   help="how Maschera reaches PostgreSQL: its socket (default) or TCP on 127.0.0.1")
    p.add_argument("--worker-threads", type=int,
                   help="`[limits] worker_threads` of the proxy (default: the proxy's default)")
    p.add_argument("--transaction", action="store_true",
                   help="serve the client in transaction mode (`[pool] mode = \"transaction\"`)")
    p.add_argument("--pool-size", type=int, default=20,
                   help="`[pool] size` with --transaction (default 20)")
    p.add_argument("--out", help="folder for perf.data and the reports (default: a temporary one)")
    return p.parse_args(argv)


def pgbench_args(o, *extra):
    return ["pgbench", "-n", "-S", "-M", o.mode, "-c", str(o.clients), "-j",
            str(min(o.clients, 2)), *extra]


def sample(o, proxy, login, out):
    data = os.path.join(out, "perf.data")
    perf = subprocess.Popen(
        ["perf", "record", "-e", "cpu-clock", "-F", "2999", "-g", "-o", data, "-p", str(proxy.pid),
         "--", "sleep", str(o.seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run(pgbench_args(o, "-T", str(o.seconds)), env=login.env())
    _, err = perf.communicate()
    if perf.returncode != 0:
        raise BenchError(f"perf record failed: {err.strip()}")
    flat, _ = run(["perf", "report", "-i", data, "--stdio", "--no-children", "--percent-limit", "0.5",
                   "--sort", "dso,symbol", "-g", "none"])
    callers, _ = run(["perf", "report", "-i", data, "--stdio", "--children", "--percent-limit", "2",
                      "--sort", "symbol", "-g", "none"])
    for name, text in (("flat.txt", flat), ("children.txt", callers)):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    lines = [line for line in flat.splitlines() if line.strip() and not line.startswith("#")]
    print(f"== perf: hottest symbols of maschera (self time), -M {o.mode}, {o.clients} clients ==")
    print("\n".join(lines[: o.top]))


def syscalls(o, proxy, login, out):
    report = os.path.join(out, "strace.txt")
    strace = subprocess.Popen(["strace", "-c", "-f", "-o", report, "-p", str(proxy.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        stdout, _ = run(pgbench_args(o, "-t", str(o.transactions)), env=login.env())
    finally:
        strace.send_signal(2)
        strace.wait(30)
    transactions = o.transactions * o.clients
    print(f"\n== strace -c -f: system calls of maschera per transaction ({transactions} transactions) ==")
    with open(report) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and parts[3].isdigit():
                calls, name = int(parts[3]), parts[-1]
                print(f"{name:>16}: {calls / transactions:6.2f} per transaction ({calls} calls)")


def main(argv):
    o = parse_args(argv)
    out = o.out or tempfile.mkdtemp(prefix="maschera-profile-")
    os.makedirs(out, exist_ok=True)

    def body(started):
        find_tool("perf", "linux-perf")
        find_tool("strace", "strace")
        binary = o.binary or build_maschera(REPO)
        pg = PostgreSQL()
        started.append(pg)
        owner = pg.create_owner("bench", "bench-" + os.urandom(6).hex(), "bench")
        run(["pgbench", "-i", "-q", "-s", "1"], env=owner.env())
        extra = (f'\n[pool]\nmode = "transaction"\nsize = {o.pool_size}\n' if o.transaction
                 else "")
        proxy = Maschera(binary, owner, [PROXY_USER], extra=extra,
                         upstream_host=pg.upstream_host(o.upstream), worker_threads=o.worker_threads)
        started.append(proxy)
        login = Login(proxy.port, PROXY_USER[0], PROXY_USER[1], "bench")
        sample(o, proxy, login, out)
        syscalls(o, proxy, login, out)
        print(f"\nperf.data and full reports in {out}")
        return 0

    return run_guarded("bench/profile", body)
