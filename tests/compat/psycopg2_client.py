"""psycopg2 (psycopg2-binary) against the reference CRM through Maschera.

psycopg2 interpolates parameters into the statement text on the client (simple protocol only), runs
named cursors as `DECLARE ... CURSOR` in the transaction it opens implicitly, inserts many rows with
`execute_values` (one multi-row VALUES) and copies with `copy_expert`. Usage: python3
psycopg2_client.py URI USER. Prints one outcome line per operation (see outcome.py); the Rust test
(tests/tests/e2e/compat_more.rs) decides what each user must get.
"""

import io
import sys

import psycopg2
import psycopg2.extras

from outcome import run

URI, USER = sys.argv[1], sys.argv[2]
# Ids of the rows this script writes: far above the generated ones, different per user.
BASE_ID = {"dora": 810_000, "sam": 820_000, "tom": 830_000, "ana": 840_000}.get(USER, 850_000)
DB_ERRORS = (psycopg2.Error,)

conn = psycopg2.connect(URI)
state = {}


def op(name):
    """Runs the decorated function as operation `name`; rolls back after a failure so that the
    implicit transaction psycopg2 keeps open does not stay aborted."""

    def wrap(fn):
        def body():
            with conn.cursor() as cur:
                detail = fn(cur)
            conn.commit()
            return detail

        if not run(name, body, DB_ERRORS):
            conn.rollback()
        return fn

    return wrap


@op("connect")
def _(cur):
    cur.execute("SELECT current_user, current_schema()")
    return "user=%s schema=%s" % cur.fetchone()


@op("select")
def _(cur):
    cur.execute("SELECT * FROM contacts ORDER BY id LIMIT 5")
    names = [d.name for d in cur.description]
    first = dict(zip(names, cur.fetchone()))
    cur.execute("SELECT id FROM contacts WHERE region = %s ORDER BY id LIMIT 1", ("north",))
    state["north_id"] = cur.fetchone()[0]
    shown = {k: str(first[k]) for k in ("tax_code", "email", "birth_date") if k in first}
    return f"columns={len(names)} id_type={type(first['id']).__name__} {shown}"


@op("interpolated")
def _(cur):
    # Quotes, a backslash and a percent sign in the values: psycopg2 escapes them into the text.
    cur.execute(
        "SELECT count(*) FROM contacts WHERE region = %(r)s AND city <> %(c)s AND city NOT LIKE %(l)s",
        {"r": "north", "c": "O'Brien \\ 100%", "l": "%'--%"},
    )
    return f"n={cur.fetchone()[0]}"


@op("named_cursor")
def _(cur):
    seen = 0
    with conn.cursor(name="contacts_cursor") as named:
        named.itersize = 40
        named.execute("SELECT id, city FROM contacts WHERE city IS NOT NULL ORDER BY id")
        for _ in named:
            seen += 1
    return f"streamed={seen}"


@op("named_cursor_fetchmany")
def _(cur):
    with conn.cursor(name="deals_cursor", cursor_factory=psycopg2.extras.DictCursor) as named:
        named.execute("SELECT d.id, d.amount, d.stage FROM deals d ORDER BY d.id")
        page = named.fetchmany(7)
    return f"page={len(page)}"


CONTACT = state.get("north_id") if isinstance(state.get("north_id"), int) else 1


@op("execute_values")
def _(cur):
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO interactions (id, contact_id, channel) VALUES %s",
        [(BASE_ID + i, CONTACT, "call") for i in range(10)],
        page_size=4,
    )
    cur.execute("SELECT count(*) FROM interactions WHERE id >= %s AND id < %s", (BASE_ID, BASE_ID + 10))
    return f"inserted={cur.fetchone()[0]}"


@op("copy_expert_in")
def _(cur):
    data = "".join(f"{BASE_ID + 100 + i},{CONTACT},email\n" for i in range(5))
    cur.copy_expert("COPY interactions (id, contact_id, channel) FROM STDIN WITH (FORMAT csv)", io.StringIO(data))
    cur.execute("SELECT count(*) FROM interactions WHERE id >= %s AND id < %s", (BASE_ID + 100, BASE_ID + 105))
    return f"copied={cur.fetchone()[0]}"


@op("copy_from")
def _(cur):
    # The older API: `COPY "interactions" ("id","contact_id","channel") FROM stdin WITH DELIMITER AS ...`.
    data = "".join(f"{BASE_ID + 110 + i}\t{CONTACT}\tmeeting\n" for i in range(3))
    cur.copy_from(io.StringIO(data), "interactions", columns=("id", "contact_id", "channel"))
    cur.execute("SELECT count(*) FROM interactions WHERE id >= %s AND id < %s", (BASE_ID + 110, BASE_ID + 113))
    return f"copied={cur.fetchone()[0]}"


@op("copy_to")
def _(cur):
    out = io.StringIO()
    cur.copy_to(out, "interactions", columns=("id", "channel"))
    return f"lines={out.getvalue().count(chr(10))}"


@op("copy_expert_out")
def _(cur):
    out = io.StringIO()
    cur.copy_expert("COPY (SELECT id, city FROM contacts ORDER BY id LIMIT 10) TO STDOUT WITH CSV HEADER", out)
    return f"lines={out.getvalue().count(chr(10))}"


@op("update")
def _(cur):
    cur.execute("UPDATE interactions SET channel = %s WHERE id = %s", ("meeting", BASE_ID))
    return f"updated={cur.rowcount}"


@op("execute_batch")
def _(cur):
    psycopg2.extras.execute_batch(
        cur,
        "UPDATE interactions SET channel = %s WHERE id = %s",
        [("call", BASE_ID + i) for i in range(4)],
        page_size=2,
    )
    return f"rowcount={cur.rowcount}"


def session_settings():
    # BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY on the next transaction, then autocommit.
    conn.set_session(isolation_level="SERIALIZABLE", readonly=True)
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT current_setting('transaction_isolation') AS iso, count(*) AS n FROM contacts")
            row = cur.fetchone()
        conn.commit()
    finally:
        conn.rollback()
        conn.set_session(isolation_level="DEFAULT", readonly="DEFAULT")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM contacts")
            n = cur.fetchone()[0]
    finally:
        conn.autocommit = False
    return f"iso={row['iso']} n={row['n']} autocommit_n={n}"


if not run("session_settings", session_settings, DB_ERRORS):
    conn.rollback()


@op("select_health_records")
def _(cur):
    cur.execute("SELECT count(*) FROM health_records")
    return f"n={cur.fetchone()[0]}"


@op("after_refusal")
def _(cur):
    cur.execute("SELECT count(*) FROM contacts WHERE region = %s", ("north",))
    return f"n={cur.fetchone()[0]}"


@op("delete")
def _(cur):
    cur.execute("DELETE FROM interactions WHERE id >= %s AND id < %s", (BASE_ID, BASE_ID + 200))
    return f"deleted={cur.rowcount}"


conn.close()
print("done", flush=True)
