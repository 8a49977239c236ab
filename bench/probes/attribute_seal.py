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

With `--calls`, instead: what one call of the function costs and what each part of it costs, as
variants of it in a scratch schema owned by the function's owner (the body as applied; without its
`SET search_path`; without the key lookup; both keys in one query; PL/pgSQL calls that do nothing, with
and without the clause), read by the sales login: µs per call over N calls in one statement
(`count(f(...))`, min and median of ROUNDS), µs of execution of a statement that makes one call (as the
initplan does: `EXPLAIN ANALYZE`, min and median of N), and the same statement when the `search_path`
changes between statements (reads under the login's path alternating with the write triggers'
`pg_catalog`), where PL/pgSQL plans its queries again unless the function sets its own path.

Not for: the whole compiled view (bench/probes/view_parts.py), throughput at 8 clients (bench/run).

Usage: bench/probes/attribute_seal.py HOST PORT DATABASE [N] [SECONDS] [ROUNDS]
       bench/probes/attribute_seal.py --calls HOST PORT DATABASE [N] [ROUNDS]
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
    if argv[:1] == ["--calls"]:
        return calls(argv[1:])
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


CALLS_SCHEMA = "probe_calls"
QUALIFIED = {"=": "OPERATOR(pg_catalog.=)", "||": "OPERATOR(pg_catalog.||)"}


def call_variants(body, path):
    """The function variants of --calls: name -> (clauses, body), built from the applied body and
    search path."""
    first_key = body.split(" SELECT k.key INTO key", 2)
    one_key = first_key[0] + " SELECT k.key INTO key" + first_key[1].split(" RETURN value; END IF;")[0] \
        + " RETURN value; END IF; RETURN NULL; END "
    both_keys = (
        " DECLARE value text := pg_catalog.current_setting(setting, true); BEGIN "
        "IF value IS NULL OR value {=} '' THEN RETURN NULL; END IF; PERFORM FROM maschera_private.keys k "
        "WHERE k.name {=} ANY ('{{attributes,attributes_previous}}') AND pg_catalog.encode(pg_catalog.sha384("
        "k.key {||} pg_catalog.convert_to(SESSION_USER {||} ':' {||} setting {||} '=' {||} value, 'UTF8')), "
        "'hex') {=} pg_catalog.current_setting(setting {||} '.sig', true); "
        "IF FOUND THEN RETURN value; END IF; RETURN NULL; END ").format(**{
            "=": QUALIFIED["="], "||": QUALIFIED["||"]})
    no_key = one_key.replace(
        "SELECT k.key INTO key FROM maschera_private.keys k WHERE k.name OPERATOR(pg_catalog.=) "
        "'attributes';", "key := '\\x00';")
    qualified_types = body.replace(" text ", " pg_catalog.text ").replace(" bytea;", " pg_catalog.bytea;")
    sd = "SECURITY DEFINER"
    path = f"SET search_path = {path}"
    return {
        "noop": ("", " BEGIN RETURN setting; END "),
        "noop_definer": (sd, " BEGIN RETURN setting; END "),
        "noop_definer_path": (f"{sd} {path}", " BEGIN RETURN setting; END "),
        "as_applied": (f"{sd} {path}", body),
        "no_set_path": (sd, qualified_types),
        "no_key_lookup": (f"{sd} {path}", no_key),
        "both_keys_one_query": (f"{sd} {path}", both_keys),
    }


def calls(argv):
    if len(argv) < 3:
        print(__doc__)
        return 2
    host, port, db = argv[0], int(argv[1]), argv[2]
    n = int(argv[3]) if len(argv) > 3 else 300
    rounds = int(argv[4]) if len(argv) > 4 else 5
    su = lambda sql: psql(host, port, db, "postgres", sql)  # noqa: E731
    options = region_options(host, port, db, SALES)
    owner, path, body = su(
        "SELECT proowner::regrole, split_part(proconfig[1], '=', 2), prosrc FROM pg_proc "
        "WHERE oid = 'maschera_private.attribute(text)'::regprocedure").rstrip("\n").split("|", 2)
    variants = call_variants(body, path)
    setup = (f"DROP SCHEMA IF EXISTS {CALLS_SCHEMA} CASCADE; CREATE SCHEMA {CALLS_SCHEMA} AUTHORIZATION {owner}; "
             f"GRANT USAGE ON SCHEMA {CALLS_SCHEMA} TO {SALES}; SET ROLE {owner}; ")
    for name, (clauses, text) in variants.items():
        setup += (f"CREATE FUNCTION {CALLS_SCHEMA}.{name}(setting text) RETURNS text LANGUAGE plpgsql "
                  f"STABLE {clauses} AS $probe${text}$probe$; ")
    su(setup + f"RESET ROLE; GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {CALLS_SCHEMA} TO {SALES};")
    calls_n = 20000
    try:
        print(f"per call: µs over {calls_n} calls in one statement, min (median) of {rounds}; "
              f"per statement of one call: execution µs, min (median) of {n}, same path / path alternating")
        for name in variants:
            f = f"{CALLS_SCHEMA}.{name}('maschera.region')"
            script = "\\timing on\n" + f"SELECT count({f}) FROM generate_series(1, {calls_n});\n" * rounds
            out = psql(host, port, db, SALES, script, options)
            per_call = sorted(float(t) * 1000 / calls_n for t in re.findall(r"Time: ([0-9.]+) ms", out))
            statement = "".join(f"EXPLAIN (ANALYZE, SUMMARY, TIMING OFF, COSTS OFF) SELECT {f};\n"
                                for _ in range(n))
            alternating = "".join(
                f"SET search_path = {'pg_catalog' if i % 2 else SALES};\n"
                f"EXPLAIN (ANALYZE, SUMMARY, TIMING OFF, COSTS OFF) SELECT {f};\n" for i in range(n))
            figures = []
            for text in (statement, alternating):
                out = psql(host, port, db, SALES, text, options)
                run = [float(line.split()[2]) * 1000 for line in out.splitlines()
                       if line.startswith("Execution Time")]
                figures.append(f"{min(run):4.0f} ({statistics.median(run):4.0f})")
            print(f"  {name:20s} {per_call[0]:5.2f} ({statistics.median(per_call):5.2f})"
                  f"   {figures[0]} / {figures[1]}")
    finally:
        su(f"DROP SCHEMA IF EXISTS {CALLS_SCHEMA} CASCADE;")
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
