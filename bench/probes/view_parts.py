#!/usr/bin/env python3
"""What each part of a role's compiled view costs PostgreSQL per statement (issue 18): planning and
execution time of one statement read through variants of the sales role's `contacts` view, each a view of
its own in a scratch schema, owned by the owner role like the compiled one and read by the sales login:
the base table (as the owner), a plain `SELECT *` view, the role's masks alone, the masks over the row
filter (the compiled policy) without the guard, and the view as `policy apply` compiled it. Times are
`EXPLAIN (ANALYZE, SUMMARY, TIMING OFF)`'s, min and median of N runs in one session (1 µs resolution, the
steadiest figure on a shared machine). The scratch schemas are dropped at the end.

Not for: throughput (bench/run --cases 2), nor any check of the protection (the e2e tests).

Usage: bench/probes/view_parts.py HOST PORT DATABASE [N]
  HOST is a host name or a socket folder. The superuser `postgres`, the owner of the CRM's tables and
  the login `maschera_sales` must connect without a password prompt (trust or ~/.pgpass), to a database
  where `maschera crm load` and `maschera policy apply examples/crm/policy.toml` ran.
"""
import os
import statistics
import subprocess
import sys

SALES = "maschera_sales"
OWNER_ROLE = "maschera_sales_owner"
POINT = ("SELECT id, first_name, last_name, email, phone, birth_date, tax_code, city, region, "
         "last_activity_at FROM {} WHERE id = 1234")
PAGE = ("SELECT id, first_name, last_name, email, phone, city, last_activity_at FROM {} "
        "WHERE region = 'north' AND id >= 100000 ORDER BY id LIMIT 50")


def psql(host, port, db, user, sql, options=""):
    env = dict(os.environ, PGOPTIONS=options)
    out = subprocess.run(["psql", "-h", host, "-p", str(port), "-U", user, "-d", db, "-Atq",
                          "-v", "ON_ERROR_STOP=1"], input=sql, capture_output=True, text=True,
                         env=env, check=True)
    return out.stdout


def region_options(host, port, db, user):
    """sam's region with its seal for `user`'s sessions (the filters read no unsealed attribute)."""
    seal = psql(host, port, db, "postgres",
                "SELECT encode(sha384(key || convert_to("
                f"'{user}:maschera.region=north', 'UTF8')), 'hex') "
                "FROM maschera_private.keys WHERE name = 'attributes'").strip()
    return f"-c maschera.region=north -c maschera.region.sig={seal}"


def times(host, port, db, user, statement, n):
    script = "".join(f"EXPLAIN (ANALYZE, SUMMARY, TIMING OFF, COSTS OFF) {statement};\n"
                     for _ in range(n))
    out = psql(host, port, db, user, script, region_options(host, port, db, user))
    plan = [float(l.split()[2]) * 1000 for l in out.splitlines() if l.startswith("Planning Time")]
    run = [float(l.split()[2]) * 1000 for l in out.splitlines() if l.startswith("Execution Time")]
    return min(plan), statistics.median(plan), min(run), statistics.median(run)


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    host, port, db = argv[0], int(argv[1]), argv[2]
    n = int(argv[3]) if len(argv) > 3 else 300
    su = lambda sql: psql(host, port, db, "postgres", sql)  # noqa: E731
    owner = su("SELECT relowner::regrole FROM pg_class WHERE oid = 'public.contacts'::regclass").strip()
    compiled = su("SELECT pg_get_viewdef('maschera_sales.contacts'::regclass)").strip().rstrip(";")
    if " WHERE " not in compiled:
        print("the sales role's contacts view has no guard: is the policy applied?")
        return 1
    select = compiled.rsplit(" WHERE ", 1)[0]
    variants = {
        "plain": "SELECT * FROM public.contacts",
        "masks": select.replace(" FROM contacts", " FROM public.contacts"),
    }
    su("".join(
        f"DROP SCHEMA IF EXISTS probe_{name} CASCADE; CREATE SCHEMA probe_{name}; "
        f"CREATE VIEW probe_{name}.contacts AS {body}; "
        f"GRANT USAGE ON SCHEMA probe_{name} TO {SALES}; "
        f"GRANT SELECT ON probe_{name}.contacts TO {SALES}; "
        for name, body in variants.items())
        # The plain view as the table's owner (no policy applies), the masks as the owner role (the
        # compiled policy applies: this is the compiled view without its guard).
        + f"ALTER VIEW probe_plain.contacts OWNER TO {owner}; "
        + f"ALTER VIEW probe_masks.contacts OWNER TO {OWNER_ROLE};")
    rows = [
        ("the base table, as its owner", owner, "public.contacts"),
        ("a plain view SELECT *", SALES, "probe_plain.contacts"),
        ("masks and the policy's filter, no guard", SALES, "probe_masks.contacts"),
        ("the view as compiled (masks, filter, guard)", SALES, "maschera_sales.contacts"),
    ]
    try:
        for label, statement in (("point lookup", POINT), ("page of 50 contacts", PAGE)):
            print(f"{label}: planning / execution µs, min (median) of {n}")
            for name, user, relation in rows:
                p, pm, e, em = times(host, port, db, user, statement.format(relation), n)
                print(f"  {name:46s} {p:5.0f} ({pm:4.0f}) / {e:5.0f} ({em:4.0f})")
    finally:
        su("".join(f"DROP SCHEMA IF EXISTS probe_{name} CASCADE; " for name in variants))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
