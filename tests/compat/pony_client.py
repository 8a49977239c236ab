"""Pony ORM (on psycopg2) against the reference CRM through Maschera, as one user.

What an application does with Pony: `generate_mapping(check_tables=True)` at start-up (a
`SELECT ... WHERE 0 = 1` of every mapped column), generator queries (select with order/limit, a page,
count, a join through a relation attribute with group by), `prefetch` of a relation, a JSON value built
in SQL, entities created in a `db_session` (INSERTs at commit), the change of a loaded entity (Pony
writes the changed columns, with an optimistic check of the columns it read in the UPDATE's WHERE:
the masked values as read), a rollback, delete. Pony has no upsert, no savepoint and no server-side
cursor API. The entities map the columns the user's role has. Usage: python3 pony_client.py URI USER
BASE. Prints one outcome line per operation (see outcome.py); the Rust test
(tests/tests/e2e/compat_orms.rs) decides what each user must get.
"""

import datetime
import json
import sys

import psycopg2
from pony import orm
from pony.orm import Database, Optional, PrimaryKey, Required, Set, db_session, desc, select

from orm_roles import ROLES, change_masked, change_shown, dropped
from outcome import run

URI, USER, BASE = sys.argv[1], sys.argv[2], int(sys.argv[3])
ROLE = ROLES[USER]
DB_ERRORS = (psycopg2.Error, orm.dbapiprovider.DBException, orm.core.TransactionError)
DROPPED = dropped(ROLE)
# The analyst's ids are pseudonyms (text).
KEY = str if ROLE == "analyst" else int

db = Database()


def entity(name, table, attrs):
    attrs = {k: v for k, v in attrs.items() if k not in DROPPED}
    attrs["_table_"] = table
    return type(name, (db.Entity,), attrs)


Contact = entity(
    "Contact",
    "contacts",
    {
        "id": PrimaryKey(KEY, size=64) if KEY is int else PrimaryKey(str),
        "first_name": Optional(str),
        "last_name": Optional(str),
        "email": Optional(str),
        "phone": Optional(str),
        "birth_date": Optional(datetime.date),
        "tax_code": Optional(str),
        "street_address": Optional(str),
        "city": Optional(str),
        "region": Required(str),
        "created_at": Optional(datetime.datetime),
        "last_activity_at": Optional(datetime.datetime),
        "interactions": Set("Interaction"),
    },
)
Interaction = entity(
    "Interaction",
    "interactions",
    {
        "id": PrimaryKey(KEY, size=64) if KEY is int else PrimaryKey(str),
        "contact": Required(Contact, column="contact_id"),
        "channel": Required(str),
        "occurred_at": Required(datetime.datetime, default=datetime.datetime.now),
    },
)
# Support writes tickets (the other roles' scripts do not map them).
if ROLE == "support":
    Ticket = entity(
        "Ticket",
        "tickets",
        {
            "id": PrimaryKey(int, size=64),
            "contact_id": Required(int, size=64),
            "subject": Optional(str),
            "body": Optional(str),
            "status": Required(str),
        },
    )
state = {"contact": None}


def op(name):
    """Runs the decorated function as operation `name` in a `db_session` (committed at its end)."""

    def wrap(fn):
        run(name, db_session(fn), DB_ERRORS)
        return fn

    return wrap


def shown(row, keys):
    return " ".join(f"{k}={getattr(row, k)}" for k in keys if hasattr(row, k))


@op("connect")
def _():
    db.bind(provider="postgres", dsn=URI)
    return "user=%s" % db.select("SELECT current_user")[0]


@op("check_tables")
def _():
    db.generate_mapping(check_tables=True, create_tables=False)
    return "mapped"


@op("select")
def _():
    rows = Contact.select().order_by(Contact.id)[:5]
    state["contact"] = select(c.id for c in Contact if c.region == "north").order_by(1).first()
    return f"rows={len(rows)} columns={len(rows[0].to_dict())} {shown(rows[0], ('tax_code', 'email'))}"


@op("paginate")
def _():
    page = Contact.select().order_by(Contact.id).page(2, pagesize=10)
    return f"page={len(page)} total={Contact.select().count()}"


@op("join")
def _():
    rows = select((i.channel, orm.count(i)) for i in Interaction if i.contact.region in ("north", "centre", "south")).order_by(1)[:]
    return "channels=" + ",".join(r[0] for r in rows)


@op("prefetch")
def _():
    contacts = Contact.select().order_by(Contact.id).prefetch(Contact.interactions)[:3]
    return f"contacts={len(contacts)} interactions={sum(len(c.interactions) for c in contacts)}"


@op("json")
def _():
    doc = db.select("SELECT to_jsonb(c) FROM contacts c ORDER BY id LIMIT 1")[0]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    return f"keys={len(doc)} " + " ".join(f"{k}={doc[k]}" for k in ("tax_code", "email") if k in doc)


@op("create")
def _():
    contact = Contact[state["contact"]]
    for i in range(5):
        Interaction(id=KEY(BASE + i), contact=contact, channel="call")
    orm.commit()
    return "inserted=%d" % select(i for i in Interaction if i.id >= KEY(BASE) and i.id < KEY(BASE + 5)).count()


# The change of a loaded entity: Pony writes the changed column, with an optimistic check of the
# columns it read (the masked values as read) in the WHERE; contacts' city (tom: a ticket's status).
Written = Ticket if ROLE == "support" else Contact  # noqa: F821 (defined for support)


@op("save_loaded")
def _():
    row = Written.select().order_by(Written.id).first()
    # Read first: Pony then checks in the UPDATE's WHERE that the stored value is still what it read
    # (optimistic concurrency), here the masked tax code or the redacted subject.
    before = shown(row, ("tax_code", "subject"))
    change_shown(row, ROLE, "Ponycity")
    orm.commit()
    saved = Written[row.id]
    return f"saved {shown(saved, ('tax_code', 'subject'))} read {before}"


@op("save_changed_masked")
def _():
    # The last row (the unrestricted user's run changes it: the first rows are what the tests read).
    row = Written.select().order_by(desc(Written.id)).first()
    change_masked(row, ROLE)
    orm.commit()
    return "saved"


@op("rollback")
def _():
    Interaction(id=KEY(BASE + 9), contact=Contact[state["contact"]], channel="meeting")
    orm.flush()
    orm.rollback()
    return "kept=%d" % select(i for i in Interaction if i.id == KEY(BASE + 9)).count()


@op("select_health_records")
def _():
    return "n=%d" % db.select("SELECT count(*) FROM health_records")[0]


@op("after_refusal")
def _():
    return "n=%d" % select(c for c in Contact if c.region == "north").count()


@op("delete")
def _():
    n = Interaction.select(lambda i: i.id >= KEY(BASE) and i.id < KEY(BASE + 100)).delete(bulk=True)
    return f"deleted={n}"


print("done", flush=True)
