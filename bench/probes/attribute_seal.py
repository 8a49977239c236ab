#!/usr/bin/env python3
"""What the sealed attribute read costs PostgreSQL per statement: the sales role's masks over its row
filter on `contacts`, twice, each in a scratch schema with an owner role and a restrictive policy of its
own (as `policy apply` compiles them, without the guard): once with the attribute read as before
(`(SELECT NULLIF(current_setting('maschera.region', true), ''))`, which any session may set) and once
as now (`(SELECT maschera_private.attribute('maschera.region'))`, which verifies the proxy's seal).
Reports, interleaved in rounds, `EXPLAIN (ANALYZE, SUMMARY, TIMING OFF)` planning and execution µs (min
and median) and pgbench `-M extended -c 1` transactions per second of the point lookup and the page of
50 (`bench/crm/point_lookup.sql`, `region_page.sql`) read by the sales login with sam's sealed region.
The scratch schemas and roles are dropped at the end.

Not for: the whole compiled view (bench/probes/view_parts.py), throughput at 8 clients (bench/run).

Usage: bench/probes/attribute_seal.py HOST PORT DATABASE [N] [SECONDS] [ROUNDS]
  HOST is a host name or a socket folder. The superuser `postgres` and the login `maschera_sales` must
  connect without a password prompt (trust or ~/.pgpass), to a database where `maschera crm load` and
  `maschera policy apply examples/crm/policy.toml` ran.
"""
import os
import re
import statistics
import subprocess
import sys

from view_parts import psql, region_options  # this folder is on sys.path when run as a script

SALES = "maschera_sales"
HERE = os.path.dirname(os.path.abspath(__file__))
CRM = os.path.join(HERE, "..", "crm")
READS = {
    "unsealed": "(SELECT NULLIF(current_setting('maschera.region', true), ''))",
    "sealed": "(SELECT maschera_private.attribute('maschera.region'))",
}
POINT = ("SELECT id, first_name, last_name, email, phone, birth_date, tax_code, city, region, "
         "last_activity_at FROM {}.contacts WHERE id = 1234")
PAGE = ("SELECT id, first_name, last_name, email, phone, city, last_activity_at FROM {}.contacts "
        "WHERE region = 'north' AND id >= 3000 ORDER BY id LIMIT 50")


def main(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    host, port, db = argv[0], int(argv[1]), argv[2]
    n = int(argv[3]) if len(argv) > 3 else 200
    seconds = argv[4] if len(argv) > 4 else "5"
    rounds = int(argv[5]) if len(argv) > 5 else 3
    su = lambda sql: psql(host, port, db, "postgres", sql)  # noqa: E731
    options = region_options(host, port, db, SALES)
    compiled = su("SELECT pg_get_viewdef('maschera_sales.contacts'::regclass)").strip().rstrip(";")
    masks = compiled.rsplit(" WHERE ", 1)[0].replace(" FROM contacts", " FROM public.contacts")
    max_id = su("SELECT max(id) FROM contacts").strip()
    setup = ""
    for name, read in READS.items():
        setup += (f"CREATE ROLE probe_{name}_owner NOLOGIN; "
                  f"GRANT SELECT ON public.contacts TO probe_{name}_owner; "
                  f"GRANT EXECUTE ON FUNCTION maschera_private.attribute(text) TO probe_{name}_owner; "
                  f"CREATE POLICY probe_{name} ON public.contacts AS RESTRICTIVE FOR ALL "
                  f"TO probe_{name}_owner USING (region = {read}); "
                  f"CREATE SCHEMA probe_{name}; CREATE VIEW probe_{name}.contacts AS {masks}; "
                  f"ALTER VIEW probe_{name}.contacts OWNER TO probe_{name}_owner; "
                  f"GRANT USAGE ON SCHEMA probe_{name} TO {SALES}, probe_{name}_owner; "
                  f"GRANT SELECT ON probe_{name}.contacts TO {SALES}; ")
    cleanup(su)
    su(setup)
    results = {}
    try:
        for name in READS:
            rows = psql(host, port, db, SALES, f"SELECT count(*) FROM probe_{name}.contacts", options)
            print(f"{name}: sam's region has {rows.strip()} contacts through the probe view")
        for _ in range(rounds):
            for name in READS:
                relation = f"probe_{name}"
                for label, statement in (("point lookup", POINT), ("page of 50", PAGE)):
                    script = "".join(
                        "EXPLAIN (ANALYZE, SUMMARY, TIMING OFF, COSTS OFF) "
                        f"{statement.format(relation)};\n" for _ in range(n))
                    out = psql(host, port, db, SALES, script, options)
                    r = results.setdefault((label, name), {"plan": [], "run": [], "tps": []})
                    r["plan"] += [float(line.split()[2]) * 1000 for line in out.splitlines()
                                  if line.startswith("Planning Time")]
                    r["run"] += [float(line.split()[2]) * 1000 for line in out.splitlines()
                                 if line.startswith("Execution Time")]
                    file = os.path.join(CRM, "point_lookup.sql" if label == "point lookup"
                                        else "region_page.sql")
                    text = open(file).read().replace("FROM contacts", f"FROM {relation}.contacts")
                    script_file = f"/tmp/attribute_seal_{name}.sql"
                    with open(script_file, "w") as f:
                        f.write(text)
                    bench = subprocess.run(
                        ["pgbench", "-h", host, "-p", str(port), "-U", SALES, "-n", "-M", "extended",
                         "-c", "1", "-T", seconds, "-D", f"max_id={max_id}", "-f", script_file, db],
                        capture_output=True, text=True, check=True,
                        env=dict(os.environ, PGOPTIONS=options))
                    tps = re.search(r"tps = ([0-9.]+)", bench.stdout)
                    r["tps"].append(float(tps.group(1)))
        print(f"planning / execution µs: min (median) of {n * rounds}; pgbench -M extended -c 1 "
              f"TPS: median of {rounds} runs of {seconds} s")
        for (label, name), r in sorted(results.items()):
            print(f"  {label:13s} {name:9s} {min(r['plan']):5.0f} ({statistics.median(r['plan']):4.0f})"
                  f" / {min(r['run']):5.0f} ({statistics.median(r['run']):4.0f})"
                  f"   {statistics.median(r['tps']):8.0f} TPS")
    finally:
        cleanup(su)
    return 0


def cleanup(su):
    """Drops the scratch schemas, policies and roles (of this run or of one that was interrupted)."""
    for name in READS:
        su(f"DROP SCHEMA IF EXISTS probe_{name} CASCADE; "
           f"DROP POLICY IF EXISTS probe_{name} ON public.contacts; "
           f"DO $$ BEGIN IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'probe_{name}_owner') THEN "
           f"DROP OWNED BY probe_{name}_owner; DROP ROLE probe_{name}_owner; END IF; END $$;")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
