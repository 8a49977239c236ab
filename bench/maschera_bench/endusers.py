"""Case 8 of bench/run (issue 22): the reference CRM's scripts as an end user behind one application
login against the same as a direct Maschera user. One Maschera enforcing the CRM policy (case 2's
set-up) serves sam (role sales, region north) and the application user `crm`, allowed to act for
sales with attributes from the users file, with an Ed25519 key in `[end_users]`; a token of sam
comes from `maschera end-user token`. Each transaction of the application is one request:
`SELECT set_config('maschera.end_user', $1, false)` with the token bound (pgbench `-M extended`; the
token is verified once, then found in the proxy's cache), then the script's statement, as the
integrations do per request (node-postgres's); sam runs the script alone. Both in
session mode, and in transaction mode when the proxy serves application users there (else the
reason is noted). Not for: the cost of verifying a token (`cargo bench -p maschera --bench
end_user`)."""

import os

from . import pgwire
from .cases import CRM_SCRIPTS, POLICY, SAM, Target, su_login
from .pooling import CRM_SCRIPTS_POOLED, _measure, pool_section
from .procs import BenchError, run
from .servers import Login, Maschera

CRM_APP = ("crm", "Crm-app-bench-password-5d1f-plover", None, {},
           ["--application", "--end-user-role", "sales"])
SAM_DIRECT = "sam, session mode"
AS_END_USER = "crm for sam's token, session mode"
AS_END_USER_TX = "crm for sam's token, transaction mode"
SAM_DIRECT_TX = "sam, transaction mode"


def _keys(bench):
    """An Ed25519 key pair (PEM files) for the `[end_users]` section; returns its TOML."""
    private = os.path.join(bench.workdir, "end-user-key.pem")
    public = os.path.join(bench.workdir, "end-user-public.pem")
    if not os.path.exists(private):
        run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", private])
        run(["openssl", "pkey", "-in", private, "-pubout", "-out", public])
    return (f'\n[end_users]\nkeys = [{{ kid = "bench", algorithm = "EdDSA", '
            f'public_key = "{public}", private_key = "{private}" }}]\n')


def _proxy(bench, pooled):
    creds = os.path.join(bench.pg.dir, "logins.toml")
    extra = f'\n[policy]\nfile = "{POLICY}"\ncredentials = "{creds}"\n' + _keys(bench)
    if pooled:
        extra += pool_section(bench.opts.pool_size)
    return Maschera(bench.binary, su_login(bench.pg, "crm"), [SAM, CRM_APP], extra,
                    upstream_host=bench.upstream_host)


def _check(proxy, token):
    """Sees that crm, with sam's token set, reads contacts through the proxy; raises BenchError
    with the server's message otherwise."""
    sock = pgwire.connect(proxy.port, CRM_APP[0], CRM_APP[1], "crm")
    try:
        pgwire.simple_query(sock, f"SET maschera.end_user = '{token}'")
        if not pgwire.simple_query(sock, "SELECT id FROM contacts LIMIT 1"):
            raise BenchError("no contact came back for sam's end user")
    finally:
        sock.close()


def end_users(bench, crm, contacts):
    """Case 8 (see the module doc)."""
    _, variables, _, _ = crm
    o = bench.opts
    proxies = []
    try:
        try:
            session = _proxy(bench, pooled=False)
        except BenchError as err:
            bench.results.skip(8, "not available yet: maschera serve does not start with an "
                                  f"application user and [end_users]: {str(err).splitlines()[0]}")
            return
        proxies.append(session)
        token, _ = run([bench.binary, "end-user", "token", "--config", session.config,
                        "--end-user", SAM[0], "--ttl", "3600"])
        token = token.strip()
        try:
            _check(session, token)
        except BenchError as err:
            bench.results.skip(8, f"not available yet: crm cannot act for sam: {err}")
            return
        targets = [
            (Target(SAM_DIRECT, Login(session.port, SAM[0], SAM[1], "crm"), session.pid), False),
            (Target(AS_END_USER, Login(session.port, CRM_APP[0], CRM_APP[1], "crm"),
                    session.pid), True),
        ]
        pooled = _proxy(bench, pooled=True)
        proxies.append(pooled)
        try:
            _check(pooled, token)
            targets += [
                (Target(SAM_DIRECT_TX, Login(pooled.port, SAM[0], SAM[1], "crm"), pooled.pid),
                 False),
                (Target(AS_END_USER_TX, Login(pooled.port, CRM_APP[0], CRM_APP[1], "crm"),
                        pooled.pid), True),
            ]
        except BenchError as err:
            bench.results.note(8, "transaction mode not measured: an application user cannot "
                                  f"act for an end user in transaction mode yet ({err})")
        scripts = {}
        for figure, script in CRM_SCRIPTS_POOLED:
            with open(os.path.join(CRM_SCRIPTS, script)) as f:
                text = f.read()
            path = os.path.join(bench.workdir, f"end-user-{script}")
            with open(path, "w") as f:
                f.write(f"SELECT set_config('maschera.end_user', :token, false);\n{text}")
            scripts[figure] = (os.path.join(CRM_SCRIPTS, script), path)
        clients = o.pool_crm_clients
        for round_no in range(1, o.rounds + 1):
            for figure, _ in CRM_SCRIPTS_POOLED:
                name = f"{figure}, {contacts:,} contacts, {clients} clients"
                for t, as_end_user in targets:
                    script = scripts[figure][1 if as_end_user else 0]
                    token_var = ["-D", f"token={token}"] if as_end_user else []
                    _measure(bench, 8, name, t,
                             ["-M", "extended", "-c", str(clients), "-j", str(min(clients, 2)),
                              *bench.run_length(), "-f", script, *variables, *token_var],
                             "crm", round_no)
        for figure, _ in CRM_SCRIPTS_POOLED:
            name = f"{figure}, {contacts:,} contacts, {clients} clients"
            for mine, base in ((AS_END_USER, SAM_DIRECT), (AS_END_USER_TX, SAM_DIRECT_TX)):
                ratio = bench.results.ratio(8, name, "TPS", mine, base)
                cpu = bench.results.summary(8, name, "proxy CPU µs/tx", mine)
                base_cpu = bench.results.summary(8, name, "proxy CPU µs/tx", base)
                if ratio and cpu and base_cpu:
                    bench.results.note(
                        8, f"{figure}: TPS {mine} / {base} {ratio.median:.2f} "
                           f"[{ratio.min:.2f}–{ratio.max:.2f}]; proxy CPU per request "
                           f"{cpu.median:.1f} µs against {base_cpu.median:.1f} µs per statement")
    finally:
        for proxy in proxies:
            proxy.stop()
