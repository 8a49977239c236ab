"""The six cases of issue 8, each a function of the running bench (servers started by main.py).
Rounds are interleaved: within a round every target runs the same workload back to back (direct,
pgbouncer, maschera, direct, ...), so that the ratios hold on a noisy machine.
A case that cannot run yet records why (results.skip) instead of failing.
Not for: starting the shared servers or writing the report."""

import os
import re
import statistics
import subprocess
import time
import tomllib

from . import pgwire
from .pgbench import pgbench
from .procs import BenchError, rss_kib, run
from .servers import Login, Maschera, Pgbouncer

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRM_SCRIPTS = os.path.join(HERE, "crm")


class Target:
    """Where a workload connects: a name, a Login, and the proxy's pid (None for direct)."""

    def __init__(self, name, login, pid=None):
        self.name, self.login, self.pid = name, login, pid


# ---------------------------------------------------------------------------------------------
# 1. pgbench -S
# ---------------------------------------------------------------------------------------------


def select_only(bench, targets):
    """pgbench -S in simple, extended and prepared mode at each client count."""
    o = bench.opts
    for round_no in range(1, o.rounds + 1):
        for mode in ("simple", "extended", "prepared"):
            for clients in o.clients:
                figure = f"-S -M {mode}, {clients} client{'s' if clients > 1 else ''}"
                for t in targets:
                    bench.log(f"[1] round {round_no}: {figure} via {t.name}")
                    r = pgbench(
                        t,
                        ["-S", "-M", mode, "-c", str(clients), "-j", str(min(clients, 2)),
                         *bench.run_length()],
                    )
                    add = bench.results.add
                    add(1, figure, "TPS", t.name, round_no, r["tps"])
                    add(1, figure, "latency ms", t.name, round_no, r["latency_ms"])
                    add(1, figure, "proxy CPU µs/tx", t.name, round_no, r.get("cpu_us_per_tx"))


# ---------------------------------------------------------------------------------------------
# 2. The CRM workload as sam (role sales)
# ---------------------------------------------------------------------------------------------

CRM_SCRIPTS_RUN = [
    # (figure, script, role): the owner runs `<script>.owner.sql` where it exists (its natural query on
    # the base tables, the CRM without protection), else the same script.
    ("point lookup of a contact", "point_lookup.sql", "sales"),
    ("page of 50 contacts of the region", "region_page.sql", "sales"),
    ("page of 50 interactions of the region", "interactions_page.sql", "sales"),
    ("insert of an interaction", "insert_interaction.sql", "sales"),
    ("contacts of the region with their deals (join, aggregate)", "region_deals.sql", "sales"),
    ("marketing's page of 50 contacts (consent filter)", "marketing_page.sql", "marketing"),
]
SAM = ("sam", "Sam-bench-password-7f3a-kestrel", "sales", {"region": "north"})
MIA = ("mia", "Mia-bench-password-2b9d-heron", "marketing", {})
POLICY = os.path.join(os.path.dirname(HERE), "examples", "crm", "policy.toml")


def _has_subcommand(binary, *words):
    proc = subprocess.run([binary, *words, "--help"], capture_output=True, text=True)
    return proc.returncode == 0


def crm_setup(bench, contacts=None):
    """Loads the CRM (`contacts` contacts, default --contacts' last size), applies the policy and starts a
    Maschera enforcing it, and one more per --crm-audit-modes (sam with the access log on). Returns
    (targets, variables, maschera, audited proxies) or a reason why the CRM cases cannot run yet.
    targets maps each role (sales, marketing) to its targets: owner, login, maschera (and for sales
    `maschera, access log <mode>` per mode)."""
    contacts = contacts or bench.opts.contacts[-1]
    binary, pg = bench.binary, bench.pg
    if not _has_subcommand(binary, "crm", "load"):
        return "not available yet: `maschera crm load` (the CRM data generator, branch crm) has not landed"
    if not _has_subcommand(binary, "policy", "apply"):
        return "not available yet: `maschera policy apply` (branch policy) has not landed"
    su = pg.superuser
    # WITH (FORCE): a pgbouncer of --crm-pgbouncer still holds server connections to the last size's CRM.
    su.psql("DROP DATABASE IF EXISTS crm WITH (FORCE)")
    su.psql(f"CREATE DATABASE crm OWNER {bench.owner.user}")
    owner = Login(pg.port, bench.owner.user, bench.owner.password, "crm")
    owner_uri = f"postgres://{owner.user}:{owner.password}@127.0.0.1:{pg.port}/crm"
    super_uri = f"postgres://{su.user}:{su.password}@127.0.0.1:{pg.port}/crm"
    try:
        run([binary, "crm", "load", "--upstream", owner_uri, "--contacts", str(contacts)],
            timeout=1800)
        creds = os.path.join(pg.dir, "logins.toml")
        run([binary, "policy", "apply", POLICY, "--upstream", super_uri, "--credentials", creds])
    except BenchError as err:
        return f"not available yet: setting up the CRM failed: {str(err).splitlines()[0]}"
    with open(creds, "rb") as f:
        logins = tomllib.load(f)["logins"]
    maschera = None
    for extra in (f'\n[policy]\nfile = "{POLICY}"\ncredentials = "{creds}"\n',
                  f'\n[policy]\nfile = "{POLICY}"\n'):
        try:
            maschera = Maschera(binary, su_login(pg, "crm"), [SAM, MIA], extra,
                                upstream_host=bench.upstream_host)
            break
        except BenchError as err:
            last = str(err).splitlines()[0]
    if maschera is None:
        return f"not available yet: maschera serve does not take the policy: {last}"
    sam = Login(maschera.port, SAM[0], SAM[1], "crm")
    probe = pgwire.connect(sam.port, sam.user, sam.password, "crm")
    try:
        leaked = pgwire.simple_query(
            probe, "SELECT 1 FROM contacts WHERE tax_code NOT LIKE '%*%' LIMIT 1")
    except BenchError as err:
        maschera.stop()
        return f"not available yet: sam cannot read contacts through the proxy: {err}"
    finally:
        probe.close()
    if leaked:
        maschera.stop()
        return "not available yet: the proxy does not enforce the policy (sam sees unmasked tax codes)"
    facts = owner.psql(
        "SELECT max(id), min(id) FILTER (WHERE region = 'north') FROM contacts").split("|")
    variables = ["-D", f"max_id={facts[0]}", "-D", f"first_north={facts[1]}"]
    owner.psql("ANALYZE")
    mia = Login(maschera.port, MIA[0], MIA[1], "crm")
    targets = {
        role: [
            Target("owner direct", owner),
            Target("role login direct",
                   Login(pg.port, logins[role]["user"], logins[role]["password"], "crm")),
            Target("maschera", user, maschera.pid),
        ]
        for role, user in (("sales", sam), ("marketing", mia))
    }
    if bench.opts.crm_prepared:
        # What a client that prepares its statements gets (`-M prepared`: planned once per
        # connection), the owner and the role's login alike; the ratios stay against the owner's
        # `-M extended` (the CRM as it runs).
        for role in targets:
            owner_t, login_t = targets[role][0], targets[role][1]
            targets[role] += [Target(f"{owner_t.name}{PREPARED}", owner_t.login),
                              Target(f"{login_t.name}{PREPARED}", login_t.login)]
    if bench.opts.crm_pgbouncer:
        # The owner's queries through pgbouncer (session mode, same upstream): what relaying a
        # connection costs on this machine with no policy at all, next to Maschera's figures.
        bouncer = Login(bench.bouncer.port, owner.user, owner.password, "crm")
        for role in targets:
            targets[role].append(Target(OWNER_VIA_PGBOUNCER, bouncer, bench.bouncer.pid))
    audited = []
    for mode in bench.opts.crm_audit_modes:
        try:
            proxy, _ = _audited_proxy(bench, creds, mode, tag=f"crm{contacts}")
        except BenchError as err:
            for p in [maschera, *audited]:
                p.stop()
            return (f"maschera serve does not start with the access log {mode}: "
                    f"{str(err).splitlines()[0]}")
        audited.append(proxy)
        targets["sales"].append(Target(f"maschera, access log {mode}",
                                       Login(proxy.port, SAM[0], SAM[1], "crm"), proxy.pid))
    # `[upstream] plan_cache` (--crm-plan-cache, --crm-no-plan-cache): the same proxies with the cache
    # set on or off explicitly (the targets above have the binary's default), measured in the same
    # interleaved rounds.
    variants = [(on, mode) for on, wanted in ((True, bench.opts.crm_plan_cache),
                                              (False, bench.opts.crm_no_plan_cache)) if wanted
                for mode in ("off", "batch")]
    for on, mode in variants:
        setting = "true" if on else "false"
        try:
            proxy, _ = _audited_proxy(bench, creds, mode, tag=f"crm{contacts}-plan-{setting}",
                                      upstream_extra=f"plan_cache = {setting}\n")
        except BenchError as err:
            for p in [maschera, *audited]:
                p.stop()
            return (f"maschera serve does not start with plan_cache = {setting}: "
                    f"{str(err).splitlines()[0]}")
        audited.append(proxy)
        name = ("maschera, plan cache" if on else "maschera, no plan cache") + (
            "" if mode == "off" else f", access log {mode}")
        targets["sales"].append(Target(name, Login(proxy.port, SAM[0], SAM[1], "crm"), proxy.pid))
    return targets, variables, maschera, audited


# The suffix of case 2's targets measured with `-M prepared` (--crm-prepared).
PREPARED = ", -M prepared"
# Case 2's target of the owner through pgbouncer (--crm-pgbouncer).
OWNER_VIA_PGBOUNCER = "owner via pgbouncer"


def su_login(pg, database):
    su = pg.superuser
    return Login(pg.port, su.user, su.password, database)


def sales_session(bench, login):
    """sam's region as the proxy sends it to the sales login: the setting and its seal (the database
    lock reads no unsealed attribute), computed from the key `policy apply` stored."""
    setting, value = "maschera.region", "north"
    seal = bench.pg.superuser.psql(
        "SELECT encode(sha384(key || convert_to("
        f"'{login}:{setting}={value}', 'UTF8')), 'hex') "
        "FROM maschera_private.keys WHERE name = 'attributes'", database="crm")
    return {"PGOPTIONS": f"-c {setting}={value} -c {setting}.sig={seal}"}


def crm_workload(bench, setup, contacts):
    """Each script in interleaved rounds: the owner's natural query on the base tables (the baseline),
    the role's login straight on PostgreSQL, and Maschera as the role's user."""
    targets, variables, _, _ = setup
    o = bench.opts
    clients = max(o.clients)
    size = f"{contacts:,} contacts"
    sales_login = next(t.login.user for t in targets["sales"] if t.name == "role login direct")
    sealed = sales_session(bench, sales_login)
    for round_no in range(1, o.rounds + 1):
        for figure, script, role in CRM_SCRIPTS_RUN:
            for t in targets[role]:
                bench.log(f"[2] {size}, round {round_no}: {figure} via {t.name}")
                path = os.path.join(CRM_SCRIPTS, script)
                owner_path = path.replace(".sql", ".owner.sql")
                base = t.name.removesuffix(PREPARED)
                if base in ("owner direct", OWNER_VIA_PGBOUNCER) and os.path.exists(owner_path):
                    path = owner_path
                extra = sealed if (base, role) == ("role login direct", "sales") else None
                mode = "prepared" if t.name.endswith(PREPARED) else "extended"
                r = pgbench(
                    t,
                    ["-M", mode, "-c", str(clients), "-j", str(min(clients, 2)),
                     *bench.run_length(), "-f", path, *variables],
                    extra_env=extra,
                )
                name = f"{figure}, {size}"
                bench.results.add(2, name, "TPS", t.name, round_no, r["tps"])
                bench.results.add(2, name, "latency ms", t.name, round_no, r["latency_ms"])


# ---------------------------------------------------------------------------------------------
# 3. Streaming many rows
# ---------------------------------------------------------------------------------------------


def streaming(bench, targets):
    """SELECT of N rows (pgbench, libpq reads every row) and COPY TO STDOUT of N rows (psql \\copy to
    /dev/null); seconds per statement, connection set-up excluded."""
    o = bench.opts
    rows_sql = (f"SELECT g AS id, 'contact-' || g AS name, g * 1.5 AS score "
                f"FROM generate_series(1, {o.rows}) AS g")
    script = os.path.join(bench.workdir, "stream_select.sql")
    with open(script, "w") as f:
        f.write(rows_sql + ";\n")
    rows = f"{o.rows:,}"
    for round_no in range(1, o.rounds + 1):
        for t in targets:
            bench.log(f"[3] round {round_no}: SELECT {rows} rows via {t.name}")
            r = pgbench(t, ["-c", "1", "-t", str(o.stream_repeat), "-f", script])
            bench.results.add(3, f"SELECT {rows} rows", "seconds", t.name, round_no,
                              r["latency_ms"] / 1000)
        for t in targets:
            bench.log(f"[3] round {round_no}: COPY {rows} rows via {t.name}")
            times = []
            for _ in range(o.stream_repeat):
                out, _ = run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "\\timing on",
                              "-c", f"\\copy ({rows_sql}) TO '/dev/null'"], env=t.login.env())
                match = re.search(r"Time: ([\d.]+) ms", out)
                if not match:
                    raise BenchError(f"psql printed no timing for COPY via {t.name}: {out[-500:]}")
                times.append(float(match.group(1)) / 1000)
            bench.results.add(3, f"COPY TO STDOUT {rows} rows", "seconds", t.name, round_no,
                              sum(times) / len(times))


# ---------------------------------------------------------------------------------------------
# 4. Memory per idle client
# ---------------------------------------------------------------------------------------------


def _hold_idle_clients(proxy, login, count):
    """RSS growth of the proxy process per logged-in idle client, in KiB."""
    warm = pgwire.connect(proxy.port, login.user, login.password, login.database)
    pgwire.simple_query(warm, "SELECT 1")
    warm.close()
    time.sleep(0.5)
    before = rss_kib(proxy.pid)
    socks = []
    try:
        for _ in range(count):
            socks.append(pgwire.connect(proxy.port, login.user, login.password, login.database))
        time.sleep(1.0)
        after = rss_kib(proxy.pid)
    finally:
        for s in socks:
            s.close()
    return (after - before) / count, before, after


def idle_memory(bench):
    """Fresh proxies each round; N idle logged-in clients; (RSS after - RSS before) / N."""
    o = bench.opts
    owner = bench.owner
    for round_no in range(1, o.rounds + 1):
        starters = [
            ("pgbouncer", lambda: Pgbouncer(bench.pgbouncer_bin, bench.pg, [owner], ["bench"],
                                            upstream_host=bench.upstream_host)),
            ("maschera", lambda: Maschera(bench.binary, owner, [bench.proxy_user],
                                          **bench.proxy_options)),
        ]
        if o.compare:
            starters.append(("maschera (compare)",
                             lambda: Maschera(o.compare, owner, [bench.proxy_user],
                                              **bench.proxy_options)))
        for name, start in starters:
            bench.log(f"[4] round {round_no}: {o.idle_clients} idle clients via {name}")
            proxy = start()
            try:
                user = bench.proxy_user if name.startswith("maschera") else (owner.user, owner.password)
                login = Login(proxy.port, user[0], user[1], "bench")
                per_client, before, after = _hold_idle_clients(proxy, login, o.idle_clients)
            finally:
                proxy.stop()
            figure = f"{o.idle_clients:,} idle clients"
            bench.results.add(4, figure, "KiB per client", name, round_no, per_client)
            bench.results.add(4, figure, "RSS before, KiB", name, round_no, before)
            bench.results.add(4, figure, "RSS with clients, KiB", name, round_no, after)


# ---------------------------------------------------------------------------------------------
# 5. The rewriter alone (criterion)
# ---------------------------------------------------------------------------------------------

_UNITS = {"ps": 1e-6, "ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}


def rewriter(bench):
    repo = os.path.dirname(HERE)
    if not os.path.exists(os.path.join(repo, "policy", "benches", "rewrite.rs")):
        bench.results.skip(5, "not available yet: policy/benches/rewrite.rs (rewrite stream) has not landed")
        return
    if bench.opts.smoke:
        bench.results.skip(5, "skipped in smoke mode (criterion needs a release build of the policy crate)")
        return
    bench.log("[5] cargo bench -p maschera-policy --bench rewrite")
    out, _ = run(["cargo", "bench", "-p", "maschera-policy", "--bench", "rewrite", "--",
                  "--noplot"], check=True)
    pattern = re.compile(
        r"^(\S[^\n]*?)\s*\n?\s+time:\s+\[([\d.]+) (\S+) ([\d.]+) (\S+) ([\d.]+) (\S+)\]", re.M)
    for m in pattern.finditer(out):
        name = m.group(1).strip()
        low, mid, high = (float(m.group(i)) * _UNITS[m.group(i + 1)] for i in (2, 4, 6))
        bench.results.add(5, name, "µs per statement", "rewriter", 1, mid)
        bench.results.note(5, f"`{name}`: {mid:.3f} µs (criterion 95% interval {low:.3f}–{high:.3f} µs)")
    summary = re.search(
        r"corpus of (\d+) statements: sqlparser parse alone median ([\d.]+) µs.*?"
        r"uncached rewrite median ([\d.]+) µs \(slowest ([\d.]+) µs\), cached median ([\d.]+) µs", out)
    if summary:
        n = summary.group(1)
        for label, group in (("parse alone (sqlparser, baseline)", 2), ("uncached rewrite", 3),
                             ("cached rewrite", 5)):
            bench.results.add(5, f"corpus of {n} statements: {label}", "median µs per statement",
                              "rewriter", 1, float(summary.group(group)))
        bench.results.note(5, f"slowest corpus statement uncached: {summary.group(4)} µs")
    if not bench.results.figures(5):
        raise BenchError(f"cargo bench printed no criterion timings:\n{out[-2000:]}")


# ---------------------------------------------------------------------------------------------
# 6. The access log
# ---------------------------------------------------------------------------------------------


DORA = ("dora", "Dora-bench-password-3c9e-heron", "dpo", {})


def _audited_proxy(bench, creds, mode, binary=None, tag="", upstream_extra=""):
    """A Maschera (`binary`, default the one measured) enforcing the CRM policy for sam and dora, with
    the access log `mode` (`off`, or a durability with optional `:key=value` settings of `[audit]`)
    in a folder of its own (named after the mode and `tag`) with fresh keys (`maschera audit keygen`);
    `upstream_extra`: further lines of its `[upstream]`."""
    binary = binary or bench.binary
    extra = f'\n[policy]\nfile = "{POLICY}"\ncredentials = "{creds}"\n'
    log_dir = None
    if mode != "off":
        durability, *settings = mode.split(":")
        folder = re.sub(r"[^A-Za-z0-9_-]+", "-", mode) + (f"-{tag}" if tag else "")
        if binary != bench.binary:
            folder += "-compare"
        keys = os.path.join(bench.workdir, f"audit-keys-{folder}")
        run([binary, "audit", "keygen", "--out", keys])
        log_dir = os.path.join(bench.workdir, f"audit-log-{folder}")
        extra += (f'\n[audit]\ndir = "{log_dir}"\ndurability = "{durability}"\n'
                  f'key_file = "{keys}/audit.key"\nsigning_key_file = "{keys}/audit-signing.key"\n')
        for setting in settings:
            key, _, value = setting.partition("=")
            extra += f"{key} = {value}\n"
    return (Maschera(binary, su_login(bench.pg, "crm"), [SAM, DORA], extra,
                     upstream_host=bench.upstream_host, upstream_extra=upstream_extra), log_dir)


def _log_records(log_dir):
    total = 0
    for name in os.listdir(log_dir):
        if name.endswith(".jsonl"):
            with open(os.path.join(log_dir, name), "rb") as f:
                total += sum(1 for _ in f)
    return total


def _fdatasync_us(folder, count=50):
    """Median time of fdatasync after appending a 400-byte line to a file in `folder`: what one group
    commit of the access log costs on this disk at this moment."""
    path = os.path.join(folder, "fdatasync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    times = []
    try:
        for _ in range(count):
            os.write(fd, b"x" * 399 + b"\n")
            start = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - start) * 1e6)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(times)


def access_log(bench, crm):
    """Workloads where every statement is audited (the CRM point lookup and page of the region as
    sam, the point lookup as dora, role dpo), through three proxies in the same interleaved rounds:
    the access log off, durability = "sync" and "batch" (and, with `--compare`, that binary with
    "sync", as mode `sync (compare)`). The target: sync costs at most 15% of the TPS with the log
    off."""
    if isinstance(crm, str):
        bench.results.skip(6, f"needs the CRM workload of case 2, which is {crm}")
        return
    creds = os.path.join(bench.pg.dir, "logins.toml")
    proxies = {}
    try:
        modes = [(m, m, None) for m in bench.opts.audit_modes.split(",")]
        if bench.opts.compare:
            modes.append(("sync (compare)", "sync", bench.opts.compare))
        for mode, durability, binary in modes:
            try:
                proxies[mode] = _audited_proxy(bench, creds, durability, binary)
            except BenchError as err:
                bench.results.skip(6, f"maschera serve does not start with the access log {mode}: "
                                      f"{str(err).splitlines()[0]}")
                return
        for mode, (proxy, log_dir) in proxies.items():
            if log_dir is None:
                continue
            probe = pgwire.connect(proxy.port, SAM[0], SAM[1], "crm")
            pgwire.simple_query(probe, "SELECT first_name FROM contacts LIMIT 1")
            probe.close()
            if _log_records(log_dir) < 2:
                bench.results.skip(6, f"the proxy wrote no access log records ({mode})")
                return
        _, variables, _, _ = crm
        o = bench.opts
        workloads = [
            ("point lookup of a contact as sam", SAM, "point_lookup.sql"),
            ("page of 50 contacts of the region as sam", SAM, "region_page.sql"),
            ("point lookup of a contact as dora (dpo)", DORA, "point_lookup.sql"),
        ]
        clients = max(o.clients)
        records_before = {m: _log_records(d) for m, (_, d) in proxies.items() if d}
        fsyncs = []
        for round_no in range(1, o.rounds + 1):
            for figure, user, script in workloads:
                for mode, (proxy, _) in proxies.items():
                    t = Target(f"maschera, access log {mode}",
                               Login(proxy.port, user[0], user[1], "crm"), proxy.pid)
                    bench.log(f"[6] round {round_no}: {figure} via {t.name}")
                    r = pgbench(t, ["-M", "extended", "-c", str(clients), "-j", "2",
                                    *bench.run_length(), "-f", os.path.join(CRM_SCRIPTS, script),
                                    *variables])
                    bench.results.add(6, figure, "TPS", t.name, round_no, r["tps"])
                    bench.results.add(6, figure, "latency ms", t.name, round_no, r["latency_ms"])
                    bench.results.add(6, figure, "proxy CPU µs/tx", t.name, round_no,
                                      r.get("cpu_us_per_tx"))
                fsyncs.append(_fdatasync_us(bench.workdir))
        bench.results.note(6, "fdatasync of a 400-byte append on this disk, median of 50 after each "
                              "workload: " + ", ".join(f"{us:,.0f} µs" for us in fsyncs))
        for mode, before in records_before.items():
            written = _log_records(proxies[mode][1]) - before
            bench.results.note(6, f"access log {mode}: {written:,} records written during the run")
        for figure, _, _ in workloads:
            for mode in [m for m in proxies if m != "off"]:
                ratio = bench.results.ratio(6, figure, "TPS", f"maschera, access log {mode}",
                                            "maschera, access log off")
                if ratio is None:
                    continue
                verdict = ""
                if mode.split(":")[0].startswith("sync"):
                    verdict = " (target ≥ 0.85: " + ("met" if ratio.median >= 0.85 else "missed") + ")"
                bench.results.note(6, f"{figure}: TPS with the log {mode} / log off = "
                                      f"{ratio.median:.2f} [{ratio.min:.2f}–{ratio.max:.2f}]{verdict}")
    finally:
        for proxy, _ in proxies.values():
            proxy.stop()
