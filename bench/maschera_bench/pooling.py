"""Case 7 of bench/run (issue 21): transaction pooling. Many clients (1,000) through pools of a few
upstream connections (20): Maschera in transaction mode against pgbouncer in transaction mode with
the same pool size, in the same interleaved rounds:

- `pgbench -S` in simple and extended protocol;
- in prepared protocol against pgbouncer in session mode (pgbouncer 1.18 cannot run `-M prepared`
  in transaction mode; in session mode it needs a backend per client) and direct PostgreSQL;
- a connection per transaction (`pgbench -C`, as a web framework that closes its connection after
  each request) against direct PostgreSQL and pgbouncer;

each with TPS, p50/p95/p99 latency (pgbench's per-transaction log), the proxy's CPU per transaction
and the most backends PostgreSQL served at once (pg_stat_activity, sampled); then memory per idle
client in transaction mode (as case 4), and the reference CRM's scripts as sam in transaction mode
against session mode (case 2's set-up).
Not for: starting the shared servers (main.py), the session-mode cases (cases.py)."""

import os
import re
import threading
import time

from . import pgwire
from .cases import CRM_SCRIPTS, POLICY, SAM, Target, _hold_idle_clients, su_login
from .pgbench import pgbench
from .procs import BenchError
from .servers import Login, Maschera, Pgbouncer

DIRECT = "direct"
BOUNCER_TX = "pgbouncer, transaction mode"
BOUNCER_SESSION = "pgbouncer, session mode (a backend per client)"
MASCHERA_TX = "maschera, transaction mode"
SAM_SESSION = "maschera as sam, session mode"
SAM_TX = "maschera as sam, transaction mode"

# The CRM scripts of the pooling comparison (figure, script): the short statements, where what
# pooling adds per transaction shows (the join and aggregate of case 2 runs for ~100 ms).
CRM_SCRIPTS_POOLED = [
    ("point lookup of a contact", "point_lookup.sql"),
    ("page of 50 contacts of the region", "region_page.sql"),
    ("page of 50 interactions of the region", "interactions_page.sql"),
    ("insert of an interaction", "insert_interaction.sql"),
]

METRICS = (("TPS", "tps"), ("latency p50 ms", "p50_ms"), ("latency p95 ms", "p95_ms"),
           ("latency p99 ms", "p99_ms"), ("proxy CPU µs/tx", "cpu_us_per_tx"))


def pool_section(size):
    return f'\n[pool]\nmode = "transaction"\nsize = {size}\n'


def application_name(target):
    """The application_name a target's pgbench clients give: PostgreSQL's backends carry it
    through both proxies (Maschera passes it on at login; pgbouncer sets it when it hands a backend
    to a client), so that a target's backends can be told from the idle ones of the others."""
    return "bench " + re.sub(r"[^a-z0-9]+", "-", target.name.lower())[:50]


class BackendSampler:
    """The most client backends of `database` (with `application_name`, if given) at once while
    it runs (a `with` block), from pg_stat_activity every 50 ms over one superuser connection (not
    counted)."""

    def __init__(self, pg, database, application=None):
        su = pg.superuser
        self.sock = pgwire.connect(pg.port, su.user, su.password, "postgres")
        self.sql = ("SELECT 1 FROM pg_stat_activity WHERE backend_type = 'client backend' "
                    f"AND datname = '{database}' AND pid <> pg_backend_pid()")
        if application:
            self.sql += f" AND application_name = '{application}'"
        self.most = 0
        # One connection, asked by the sampling thread and by `wait_below`: one question at a time.
        self.asking = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def count(self):
        with self.asking:
            return pgwire.simple_query(self.sock, self.sql)

    def _sample(self):
        while not self.stop.wait(0.05):
            self.most = max(self.most, self.count())

    def __enter__(self):
        self.most = self.count()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.sock.close()

    def wait_below(self, limit, seconds=30):
        """Waits until fewer than `limit` backends are connected (backends of a stopped pgbouncer
        exit on their own)."""
        deadline = time.monotonic() + seconds
        while self.count() >= limit and time.monotonic() < deadline:
            time.sleep(0.2)


def _measure(bench, case, figure, target, args, database, round_no, extra_env=None):
    """One pgbench run with its latency percentiles and the most backends used."""
    bench.log(f"[{case}] round {round_no}: {figure} via {target.name}")
    name = application_name(target)
    env = dict(extra_env or {}, PGAPPNAME=name)
    with BackendSampler(bench.pg, database, name) as sampler:
        r = pgbench(target, args, extra_env=env, percentiles=True)
    add = bench.results.add
    for metric, key in METRICS:
        add(case, figure, metric, target.name, round_no, r.get(key))
    add(case, figure, "backends (most at once)", target.name, round_no, sampler.most)
    return r


def _cycle_length(bench, connect_per_transaction=False):
    """pgbench's run length: `--pool-transactions` per client (pgbench's `-T` counts the time its
    1,000 clients take to log in, seconds for direct PostgreSQL, which would leave no time for
    transactions); with a connection per transaction, which has no such start, `-T` (smoke: 10
    per client)."""
    if bench.opts.smoke:
        return ["-t", "10"] if connect_per_transaction else bench.run_length()
    if connect_per_transaction:
        return bench.run_length()
    return ["-t", str(bench.opts.pool_transactions)]


def transaction_pooling(bench):
    """The pgbench-table part of case 7 (see the module doc)."""
    o = bench.opts
    owner = bench.owner
    clients, size = o.pool_clients, o.pool_size
    started = []
    try:
        bouncer = Pgbouncer(bench.pgbouncer_bin, bench.pg, [owner], ["bench"], pool_size=size,
                            upstream_host=bench.upstream_host, pool_mode="transaction")
        started.append(bouncer)
        try:
            proxy = Maschera(bench.binary, owner, [bench.proxy_user], extra=pool_section(size),
                             **bench.proxy_options)
        except BenchError as err:
            bench.results.skip(7, "not available: maschera serve does not start in transaction "
                                  f"mode: {str(err).splitlines()[0]}")
            return
        started.append(proxy)
        direct = Target(DIRECT, owner)
        bouncer_tx = Target(BOUNCER_TX, Login(bouncer.port, owner.user, owner.password, "bench"),
                            bouncer.pid)
        user = bench.proxy_user
        maschera_tx = Target(MASCHERA_TX, Login(proxy.port, user[0], user[1], "bench"), proxy.pid)
        pgbench_args = ["-S", "-c", str(clients), "-j", str(min(clients, 2))]
        who = f"{clients:,} clients"
        for round_no in range(1, o.rounds + 1):
            for mode in ("simple", "extended"):
                for t in (bouncer_tx, maschera_tx):
                    _measure(bench, 7, f"-S -M {mode}, {who}", t,
                             [*pgbench_args, "-M", mode, *_cycle_length(bench)], "bench", round_no)
            figure = f"-S -M prepared, {who}"
            for t in (direct, maschera_tx):
                _measure(bench, 7, figure, t,
                         [*pgbench_args, "-M", "prepared", *_cycle_length(bench)], "bench",
                         round_no)
            # pgbouncer in session mode holds a backend per client: started for its run only, so
            # that its backends are gone before the next direct run.
            session = Pgbouncer(bench.pgbouncer_bin, bench.pg, [owner], ["bench"],
                                pool_size=clients, upstream_host=bench.upstream_host)
            try:
                login = Login(session.port, owner.user, owner.password, "bench")
                _measure(bench, 7, figure, Target(BOUNCER_SESSION, login, session.pid),
                         [*pgbench_args, "-M", "prepared", *_cycle_length(bench)], "bench",
                         round_no)
            finally:
                session.stop()
            with BackendSampler(bench.pg, "bench") as sampler:
                sampler.wait_below(2 * size + 2)
            figure = f"-S -M simple -C (a connection per transaction), {who}"
            for t in (direct, bouncer_tx, maschera_tx):
                _measure(bench, 7, figure, t,
                         [*pgbench_args, "-M", "simple", "-C", *_cycle_length(bench, True)],
                         "bench", round_no)
            _idle_memory(bench, round_no)
    finally:
        for server in reversed(started):
            server.stop()
    _verdicts(bench, who)


def _idle_memory(bench, round_no):
    """As case 4, with both proxies in transaction mode (fresh processes)."""
    o = bench.opts
    owner = bench.owner
    size = o.pool_size
    starters = [
        (BOUNCER_TX, lambda: Pgbouncer(bench.pgbouncer_bin, bench.pg, [owner], ["bench"],
                                       pool_size=size, upstream_host=bench.upstream_host,
                                       pool_mode="transaction"),
         (owner.user, owner.password)),
        (MASCHERA_TX, lambda: Maschera(bench.binary, owner, [bench.proxy_user],
                                       extra=pool_section(size), **bench.proxy_options),
         bench.proxy_user[:2]),
    ]
    figure = f"{o.idle_clients:,} idle clients"
    for name, start, (user, password) in starters:
        bench.log(f"[7] round {round_no}: {o.idle_clients} idle clients via {name}")
        proxy = start()
        try:
            login = Login(proxy.port, user, password, "bench")
            per_client, _, _ = _hold_idle_clients(proxy, login, o.idle_clients)
        finally:
            proxy.stop()
        bench.results.add(7, figure, "KiB per client", name, round_no, per_client)


def _verdicts(bench, who):
    """Notes of case 7: the targets of issue 21 that the report's table cannot state."""
    res = bench.results
    for mode in ("simple", "extended"):
        figure = f"-S -M {mode}, {who}"
        tps = res.ratio(7, figure, "TPS", MASCHERA_TX, BOUNCER_TX)
        p99 = res.ratio(7, figure, "latency p99 ms", MASCHERA_TX, BOUNCER_TX)
        if tps and p99:
            res.note(7, f"{mode}: TPS of maschera / pgbouncer (both transaction mode) "
                        f"{tps.median:.2f} [{tps.min:.2f}–{tps.max:.2f}] (target ≥ 1: "
                        f"{'met' if tps.median >= 1 else 'missed'}); p99 latency "
                        f"{p99.median:.2f} [{p99.min:.2f}–{p99.max:.2f}] "
                        f"(target ≤ 1.2: {'met' if p99.median <= 1.2 else 'missed'})")
    figure = f"-S -M prepared, {who}"
    for baseline in (BOUNCER_SESSION, DIRECT):
        tps = res.ratio(7, figure, "TPS", MASCHERA_TX, baseline)
        if tps:
            res.note(7, f"prepared: TPS of maschera (transaction mode) / {baseline} "
                        f"{tps.median:.2f} [{tps.min:.2f}–{tps.max:.2f}]")
    figure = f"-S -M simple -C (a connection per transaction), {who}"
    for other in (DIRECT, BOUNCER_TX):
        tps = res.ratio(7, figure, "TPS", MASCHERA_TX, other)
        if tps:
            target = (f" (target > 1: {'met' if tps.median > 1 else 'missed'})"
                      if other == DIRECT else "")
            res.note(7, f"-C: TPS of maschera (transaction mode) / {other} {tps.median:.2f} "
                        f"[{tps.min:.2f}–{tps.max:.2f}]{target}")


def crm_pooling(bench, crm, contacts):
    """The CRM part of case 7: the short CRM scripts as sam through a Maschera in transaction mode
    (pools of --pool-size) against the session-mode one of case 2's set-up, same rounds."""
    _, variables, session_proxy, _ = crm
    o = bench.opts
    creds = os.path.join(bench.pg.dir, "logins.toml")
    extra = f'\n[policy]\nfile = "{POLICY}"\ncredentials = "{creds}"\n' + pool_section(o.pool_size)
    try:
        proxy = Maschera(bench.binary, su_login(bench.pg, "crm"), [SAM], extra,
                         upstream_host=bench.upstream_host)
    except BenchError as err:
        bench.results.note(7, "the CRM scripts in transaction mode were not run: maschera serve "
                              f"does not start with [pool] and the policy: {str(err).splitlines()[0]}")
        return
    try:
        targets = [
            Target(SAM_SESSION, Login(session_proxy.port, SAM[0], SAM[1], "crm"),
                   session_proxy.pid),
            Target(SAM_TX, Login(proxy.port, SAM[0], SAM[1], "crm"), proxy.pid),
        ]
        clients = o.pool_crm_clients
        for round_no in range(1, o.rounds + 1):
            for figure, script in CRM_SCRIPTS_POOLED:
                name = f"CRM {figure} as sam, {contacts:,} contacts, {clients} clients"
                for t in targets:
                    _measure(bench, 7, name, t,
                             ["-M", "extended", "-c", str(clients), "-j", str(min(clients, 2)),
                              *bench.run_length(), "-f", os.path.join(CRM_SCRIPTS, script),
                              *variables],
                             "crm", round_no)
    finally:
        proxy.stop()
