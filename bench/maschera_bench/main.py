"""`bench/run`: the command line, the set-up shared by the cases (build, private PostgreSQL, pgbench
tables, pgbouncer, Maschera), the cases in order, and the outputs (BENCHMARKS.md, results JSON).
Exit status 0 when every case ran or was skipped for a stated reason, 1 on a real failure.
Not for: the measurements themselves (see cases.py)."""

import argparse
import datetime
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from . import cases, endusers, pooling, report
from .procs import find_tool, run
from .results import Results
from .servers import Login, Maschera, Pgbouncer, PostgreSQL, build_maschera, run_guarded

REPO = os.path.dirname(cases.HERE)
PROXY_USER = ("bench", "Bench-proxy-password-4c1e-osprey", "dpo", {})
COMPARED = "maschera (compare)"

SMOKE_TRANSACTIONS = 200
SMOKE = dict(rounds=1, seconds=1, scale=1, rows=100_000, stream_repeat=1, idle_clients=50,
             contacts="1000", pool_clients=20, pool_size=5, pool_crm_clients=10,
             pool_transactions=SMOKE_TRANSACTIONS)
FULL = dict(rounds=3, seconds=10, scale=10, rows=1_000_000, stream_repeat=3, idle_clients=1000,
            contacts="10000,200000", pool_clients=1000, pool_size=20, pool_crm_clients=50,
            pool_transactions=50)


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="bench/run",
        description="Maschera against direct PostgreSQL and pgbouncer, interleaved rounds; "
        "writes BENCHMARKS.md (or bench/results/smoke.md with --smoke).",
    )
    p.add_argument("--smoke", action="store_true",
                   help="a few seconds per case, for CI: debug build, 1 round of 200 transactions per "
                   "client, small data; "
                   "writes bench/results/smoke.md and smoke.json instead of BENCHMARKS.md")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 3; smoke 1)")
    p.add_argument("--seconds", type=int, help="seconds per pgbench run (default 10)")
    p.add_argument("--clients", default="1,8", help="pgbench client counts (default 1,8)")
    p.add_argument("--scale", type=int, help="pgbench -i scale (default 10; smoke 1)")
    p.add_argument("--rows", type=int, help="rows streamed in case 3 (default 1000000)")
    p.add_argument("--stream-repeat", type=int,
                   help="statements of case 3 per target and round (default 3; smoke 1)")
    p.add_argument("--idle-clients", type=int, help="idle clients of case 4 (default 1000; smoke 50)")
    p.add_argument("--contacts", help="CRM contacts for case 2, comma-separated sizes, each run in turn "
                   "(default 10000,200000; smoke 1000)")
    p.add_argument("--pool-clients", type=int,
                   help="case 7: pgbench clients through the pools (default 1000; smoke 20)")
    p.add_argument("--pool-transactions", type=int,
                   help="case 7: transactions per client of each pgbench run but -C (default 50; "
                   "smoke 200)")
    p.add_argument("--pool-size", type=int,
                   help="cases 7 and 8: upstream connections per pool of Maschera and pgbouncer in "
                   "transaction mode (default 20; smoke 5)")
    p.add_argument("--pool-crm-clients", type=int,
                   help="cases 7 and 8: pgbench clients of the CRM scripts (default 50; smoke 10)")
    p.add_argument("--cases", default="1,2,3,4,5,6,7,8", help="which cases to run (default all)")
    p.add_argument("--binary", help="the maschera binary to measure (default: build it with cargo)")
    p.add_argument("--compare", metavar="BINARY",
                   help="another maschera binary (e.g. a build of an earlier commit) measured as the "
                   "extra target `maschera (compare)` in cases 1, 3 and 4 (in case 6: `access log sync (compare)`), "
                   "interleaved with the others")
    p.add_argument("--upstream", choices=("tcp", "unix"), default="unix",
                   help="how pgbouncer and Maschera both reach PostgreSQL: its Unix-domain socket "
                   "(default: the proxy next to the database) or TCP on 127.0.0.1; clients always "
                   "connect over TCP")
    p.add_argument("--worker-threads", type=int,
                   help="`[limits] worker_threads` of the Maschera targets of cases 1, 3 and 4 "
                   "(default: the proxy's default, half the cores and at least one)")
    p.add_argument("--audit-modes", default="off,sync,batch",
                   help="the access-log targets of case 6, comma-separated: `off`, or a durability "
                   "(`sync`, `batch`) optionally followed by `[audit]` settings as `:key=value` "
                   "(e.g. `sync:group_commit_us=0`) (default off,sync,batch)")
    p.add_argument("--crm-audit-modes", default="batch,sync",
                   help="case 2: Maschera as sam is also measured with each of these access-log modes "
                   "(as for --audit-modes; empty: none), each a proxy of its own in the same rounds, "
                   "against the owner like the others (default batch,sync)")
    p.add_argument("--crm-plan-cache", action="store_true",
                   help="case 2: also Maschera as sam with `[upstream] plan_cache = true`, access log off "
                        "and batch, in the same interleaved rounds")
    p.add_argument("--crm-no-plan-cache", action="store_true",
                   help="case 2: also Maschera as sam with `[upstream] plan_cache = false` (the cache is "
                        "on by default), access log off and batch, in the same interleaved rounds")
    p.add_argument("--crm-prepared", action="store_true",
                   help="case 2: also the owner and the role's login direct with `-M prepared` (planned "
                        "once per connection), in the same interleaved rounds, against the owner's "
                        "`-M extended`")
    p.add_argument("--crm-pgbouncer", action="store_true",
                   help="case 2: also the owner through pgbouncer (session mode, the same upstream), in "
                        "the same interleaved rounds: what a relay without any policy costs here")
    p.add_argument("--note", help="a sentence about the conditions of the run, written into the report")
    p.add_argument("--report-only", action="store_true",
                   help="measure nothing: write the report again from the --json results (give the "
                   "options of that run so that the set-up is described right)")
    p.add_argument("--output", help="the Markdown report (default BENCHMARKS.md at the repository root)")
    p.add_argument("--json", help="raw results (default bench/results/latest.json)")
    opts = p.parse_args(argv)
    defaults = SMOKE if opts.smoke else FULL
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    opts.run_length = (f"{SMOKE_TRANSACTIONS} transactions per client" if opts.smoke
                       else f"{opts.seconds} s")
    opts.clients = [int(c) for c in opts.clients.split(",")]
    opts.contacts = [int(c) for c in str(opts.contacts).split(",")]
    opts.cases = {int(c) for c in opts.cases.split(",")}
    opts.crm_audit_modes = [m for m in opts.crm_audit_modes.split(",") if m]
    results_dir = os.path.join(cases.HERE, "results")
    name = "smoke" if opts.smoke else "latest"
    opts.output = opts.output or (os.path.join(results_dir, "smoke.md") if opts.smoke
                                  else os.path.join(REPO, "BENCHMARKS.md"))
    opts.json = opts.json or os.path.join(results_dir, f"{name}.json")
    return opts


def machine_facts(pg, pgbouncer_bin):
    def first(path, prefix):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(prefix):
                        return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return "unknown"

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    version, _ = run([pgbouncer_bin, "--version"])
    mem_kib = first("/proc/meminfo", "MemTotal").split()[0]
    return dict(
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit,
        cpu=first("/proc/cpuinfo", "model name"),
        cores=os.cpu_count(),
        memory=f"{int(mem_kib) // 1024 // 1024} GiB RAM" if mem_kib.isdigit() else "unknown RAM",
        kernel=platform.release(),
        load=" ".join(f"{x:.2f}" for x in os.getloadavg()),
        postgres=pg.version,
        pgbouncer=version.splitlines()[0],
    )


class Bench:
    """What the cases share: options, servers, binaries, results, a log."""

    def __init__(self, opts):
        self.opts = opts
        self.started = time.monotonic()
        self.workdir = tempfile.mkdtemp(prefix="maschera-bench-")
        self.proxy_user = PROXY_USER

    def run_length(self):
        """pgbench arguments for how long each run lasts: `-T seconds`, or in smoke mode a fixed
        number of transactions per client, so that slow logins (debug build) cannot leave a run
        without transactions."""
        if self.opts.smoke:
            return ["-t", str(SMOKE_TRANSACTIONS)]
        return ["-T", str(self.opts.seconds)]

    def log(self, message):
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.0f}s] {message}", file=sys.stderr, flush=True)


def run_cases(bench, targets):
    want = bench.opts.cases
    if 1 in want:
        cases.select_only(bench, targets)
    if 3 in want:
        cases.streaming(bench, targets)
    if 4 in want:
        cases.idle_memory(bench)
    if 7 in want:
        pooling.transaction_pooling(bench)
    if want & {2, 6, 7, 8}:
        # Case 2 at each size; cases 6, 7 (its CRM part) and 8 at the last one.
        sizes = bench.opts.contacts if 2 in want else bench.opts.contacts[-1:]
        for i, contacts in enumerate(sizes):
            bench.log(f"[2] setting up the CRM, {contacts:,} contacts")
            crm = cases.crm_setup(bench, contacts)
            try:
                if isinstance(crm, str):
                    for case in want & {2, 8}:
                        bench.results.skip(case, crm)
                    if 7 in want:
                        bench.results.note(7, f"the CRM scripts were not run: {crm}")
                    break
                if 2 in want:
                    cases.crm_workload(bench, crm, contacts)
                if i == len(sizes) - 1:
                    if 6 in want:
                        cases.access_log(bench, crm)
                    if 7 in want:
                        pooling.crm_pooling(bench, crm, contacts)
                    if 8 in want:
                        endusers.end_users(bench, crm, contacts)
            finally:
                if not isinstance(crm, str):
                    crm[2].stop()
                    for proxy in crm[3]:
                        proxy.stop()
    if 5 in want:
        cases.rewriter(bench)


def write_report(results, opts, argv):
    command = " ".join(["bench/run", *(a for a in argv if a != "--report-only")])
    with open(opts.output, "w") as f:
        f.write(report.render(results, opts, command))


def main(argv):
    opts = parse_args(argv)
    if opts.report_only:
        write_report(Results.load(opts.json), opts, argv)
        return 0
    bench = Bench(opts)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(opts.idle_clients, opts.pool_clients) + 512
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))

    def body(started):
        for tool, package in (("psql", "postgresql-client"), ("pgbench", "postgresql-contrib")):
            find_tool(tool, package)
        bench.pgbouncer_bin = find_tool("pgbouncer", "pgbouncer")
        build = "cargo build -p maschera" if opts.smoke else "cargo build --release -p maschera"
        if not opts.binary:
            bench.log(f"building maschera ({build})")
        bench.binary = opts.binary or build_maschera(REPO, release=not opts.smoke)
        bench.log("starting PostgreSQL")
        pg = bench.pg = PostgreSQL()
        started.append(pg)
        owner = bench.owner = pg.create_owner("bench", "bench-" + os.urandom(6).hex(), "bench")
        bench.upstream_host = pg.upstream_host(opts.upstream)
        bench.proxy_options = dict(upstream_host=bench.upstream_host,
                                   worker_threads=opts.worker_threads)
        bench.results = Results(dict(machine_facts(pg, bench.pgbouncer_bin), upstream=opts.upstream,
                                     worker_threads=opts.worker_threads, note=opts.note))
        bench.log(f"pgbench -i -s {opts.scale}")
        run(["pgbench", "-i", "-q", "-s", str(opts.scale)], env=owner.env())
        bouncer = Pgbouncer(bench.pgbouncer_bin, pg, [owner], ["bench", "crm"],
                            upstream_host=bench.upstream_host)
        started.append(bouncer)
        bench.bouncer = bouncer
        proxy = Maschera(bench.binary, owner, [PROXY_USER], **bench.proxy_options)
        started.append(proxy)
        targets = [
            cases.Target("direct", owner),
            cases.Target("pgbouncer", Login(bouncer.port, owner.user, owner.password, "bench"),
                         bouncer.pid),
            cases.Target("maschera", Login(proxy.port, PROXY_USER[0], PROXY_USER[1], "bench"),
                         proxy.pid),
        ]
        if opts.compare:
            other = Maschera(opts.compare, owner, [PROXY_USER], **bench.proxy_options)
            started.append(other)
            targets.append(cases.Target(
                COMPARED, Login(other.port, PROXY_USER[0], PROXY_USER[1], "bench"), other.pid))
        run_cases(bench, targets)
        return 0

    status = run_guarded("bench/run", body)
    shutil.rmtree(bench.workdir, ignore_errors=True)
    if status != 0:
        return status
    os.makedirs(os.path.dirname(opts.json), exist_ok=True)
    bench.results.save(opts.json)
    write_report(bench.results, opts, argv)
    for case, reason in sorted(bench.results.skipped.items()):
        bench.log(f"case {case} skipped: {reason}")
    bench.log(f"wrote {opts.output} and {opts.json}")
    return 0
