#!/usr/bin/env python3
"""What each part of a role's compiled view costs PostgreSQL per statement (issue 18): planning and
execution time of one statement read through variants of the sales role's `contacts` view, each a view of
its own in a scratch schema, owned by the owner role like the compiled one and read by the sales login:
the base table (as the owner), a plain `SELECT *` view, the role's masks alone, the row filter (the
compiled policy) alone, the masks over the row filter without the guard, the view as `policy apply`
compiled it, and the same with the guard's checks written as SQL into the view (the C functions and an
`EXISTS` on `pg_policy`) instead of the PL/pgSQL call. Times are
`EXPLAIN (ANALYZE, SUMMARY, TIMING OFF)`'s, min and median of N runs in one session (1 µs resolution, the
steadiest figure on a shared machine). The scratch schemas are dropped at the end.

Not for: throughput (bench/run --cases 2), nor any check of the protection (the e2e tests).

Usage: bench/probes/view_parts.py HOST PORT DATABASE [N]
  HOST is a host name or a socket folder. The superuser `postgres`, the owner of the CRM's tables and
  the login `maschera_sales` must connect without a password prompt (trust or ~/.pgpass), to a database
  where `maschera crm load` and `maschera policy apply examples/crm/policy.toml` ran.
"""
import os
import re
import statistics
import subprocess
import sys

SALES = "maschera_sales"
OWNER_ROLE = "maschera_sales_owner"
POINT = ("SELECT id, first_name, last_name, email, phone, birth_date, tax_code, city, region, "
         "last_activity_at FROM {} WHERE id = 1234")
PAGE = ("SELECT id, first_name, last_name, email, phone, city, last_activity_at FROM {} "
        "WHERE region = 'north' AND id >= {{half}} ORDER BY id LIMIT 50")


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
    half = su("SELECT max(id) / 2 FROM public.contacts").strip()
    compiled = su("SELECT pg_get_viewdef('maschera_sales.contacts'::regclass)").strip().rstrip(";")
    if " WHERE " not in compiled:
        print("the sales role's contacts view has no guard: is the policy applied?")
        return 1
    select = compiled.rsplit(" WHERE ", 1)[0]
    masks = select.replace(" FROM contacts", " FROM public.contacts")
    tab, pol, version, owner_role = re.search(
        r"intact\(\(?(\d+)\)?::oid, \(?(\d+)\)?::oid, '(\d+)'::xid, \(?(\d+)\)?::oid\)", compiled).groups()
    # The guard's checks written into the view instead of the PL/pgSQL call: the two C functions as
    # a one-time filter and the policy's row version as an uncorrelated EXISTS (an InitPlan).
    sql_guard = (f" WHERE pg_catalog.row_security_active({tab}::pg_catalog.oid) AND NOT "
                 f"pg_catalog.has_table_privilege({owner_role}::pg_catalog.oid, {tab}::pg_catalog.oid, "
                 "'SELECT WITH GRANT OPTION') AND EXISTS (SELECT FROM pg_catalog.pg_policy p "
                 f"WHERE p.oid = {pol}::pg_catalog.oid AND p.polrelid = {tab}::pg_catalog.oid "
                 f"AND p.xmin = '{version}'::pg_catalog.xid)")
    variants = {
        "plain": "SELECT * FROM public.contacts",
        "masks_only": masks,
        "filter_only": "SELECT * FROM public.contacts",
        "masks": masks,
        "sql_guard": masks + sql_guard,
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
        + f"ALTER VIEW probe_masks_only.contacts OWNER TO {owner}; "
        + f"ALTER VIEW probe_filter_only.contacts OWNER TO {OWNER_ROLE}; "
        + f"ALTER VIEW probe_masks.contacts OWNER TO {OWNER_ROLE}; "
        + f"ALTER VIEW probe_sql_guard.contacts OWNER TO {OWNER_ROLE};")
    rows = [
        ("the base table, as its owner", owner, "public.contacts"),
        ("a plain view SELECT *", SALES, "probe_plain.contacts"),
        ("the masks alone (no filter, no guard)", SALES, "probe_masks_only.contacts"),
        ("the policy's filter alone (no masks, no guard)", SALES, "probe_filter_only.contacts"),
        ("masks and the policy's filter, no guard", SALES, "probe_masks.contacts"),
        ("the view as compiled (masks, filter, guard)", SALES, "maschera_sales.contacts"),
        ("compiled, the guard as SQL in the view", SALES, "probe_sql_guard.contacts"),
    ]
    try:
        for label, statement in (("point lookup", POINT), ("page of 50 contacts", PAGE)):
            print(f"{label}: planning / execution µs, min (median) of {n}")
            for name, user, relation in rows:
                p, pm, e, em = times(host, port, db, user, statement.format(relation).format(half=half), n)
                print(f"  {name:46s} {p:5.0f} ({pm:4.0f}) / {e:5.0f} ({em:4.0f})")
    finally:
        su("".join(f"DROP SCHEMA IF EXISTS probe_{name} CASCADE; " for name in variants))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
