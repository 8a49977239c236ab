"""Peewee (on psycopg2) against the reference CRM through Maschera, as one user.

What an application does with Peewee: its introspection (`get_tables`, `get_views`, `get_columns`),
select with where/order/limit, `paginate`, a join with group by, `prefetch` of a relation, a JSON value
built in SQL, `create` (INSERT ... RETURNING), `insert_many`, `save()` of a loaded model (every column
written, the masked values as read), upsert (`on_conflict` with an update) and insert-or-ignore
(`on_conflict_ignore`), `get_or_create` (a get, then an insert inside `atomic()`: a savepoint), nested
`atomic()` blocks with a savepoint rolled back, a server-side cursor (`ServerSide`: a named cursor), and
delete. The models map the columns the user's role has (a column the matrix drops does not exist for
the role). Usage: python3 peewee_client.py URI USER BASE. Prints one outcome line per operation (see
outcome.py); the Rust test (tests/tests/e2e/compat_orms.rs) decides what each user must get.
"""

import sys
from urllib.parse import urlsplit

import peewee as pw
from playhouse.postgres_ext import PostgresqlExtDatabase, ServerSide

from orm_roles import ROLES, change_masked, change_shown, dropped
from outcome import run

URI, USER, BASE = sys.argv[1], sys.argv[2], int(sys.argv[3])
ROLE = ROLES[USER]
DB_ERRORS = (pw.DatabaseError,)

# The URI as psycopg2 reads it (its password may be percent-encoded).
db = PostgresqlExtDatabase(urlsplit(URI).path.lstrip("/"), dsn=URI, autoconnect=True, register_hstore=False)
# The columns the matrix drops for the role (the role's application does not map them).
DROPPED = dropped(ROLE)
# The analyst's ids are pseudonyms: text.
Key = pw.TextField if ROLE == "analyst" else pw.BigIntegerField


def model(name, fields):
    """The model of table `name` with the role's fields of `fields`."""
    attrs = {k: v for k, v in fields.items() if k not in DROPPED}
    attrs["Meta"] = type("Meta", (), {"database": db, "table_name": name})
    return type(name.title(), (pw.Model,), attrs)


Contact = model(
    "contacts",
    {
        "id": Key(primary_key=True),
        "first_name": pw.TextField(null=True),
        "last_name": pw.TextField(null=True),
        "email": pw.TextField(null=True),
        "phone": pw.TextField(null=True),
        "birth_date": pw.DateField(null=True),
        "tax_code": pw.TextField(null=True),
        "street_address": pw.TextField(null=True),
        "city": pw.TextField(null=True),
        "region": pw.TextField(),
        "created_at": pw.DateTimeField(null=True),
        "last_activity_at": pw.DateTimeField(null=True),
    },
)
CHANNELS = (("call", "call"), ("email", "email"), ("meeting", "meeting"))
Interaction = model(
    "interactions",
    {
        "id": Key(primary_key=True),
        "contact": pw.ForeignKeyField(Contact, column_name="contact_id", field="id", backref="interactions", lazy_load=False),
        "channel": pw.TextField(choices=CHANNELS),
        "occurred_at": pw.DateTimeField(null=True),
    },
)
Ticket = model(
    "tickets",
    {
        "id": Key(primary_key=True),
        "contact_id": Key(),
        "subject": pw.TextField(null=True),
        "body": pw.TextField(null=True),
        "status": pw.TextField(),
    },
)
HealthRecord = model("health_records", {"id": Key(primary_key=True)})
state = {"contact": 1}


def op(name):
    """Runs the decorated function as operation `name` (in autocommit, as Peewee does by default)."""

    def wrap(fn):
        run(name, fn, DB_ERRORS)
        if not db.in_transaction():
            return fn
        db.rollback()
        return fn

    return wrap


def shown(row, keys):
    return " ".join(f"{k}={getattr(row, k)}" for k in keys if hasattr(row, k))


def interaction(offset, channel="call"):
    return {"id": BASE + offset, "contact": state["contact"], "channel": channel}


@op("connect")
def _():
    return "user=%s" % db.execute_sql("SELECT current_user").fetchone()[0]


@op("introspection")
def _():
    relations = sorted(set(db.get_tables()) | set(db.get_views() and [v.name for v in db.get_views()]))
    columns = db.get_columns("contacts")
    return f"relations={','.join(relations)} columns={len(columns)}"


@op("select")
def _():
    rows = list(Contact.select().order_by(Contact.id).limit(5))
    state["contact"] = Contact.select(Contact.id).where(Contact.region == "north").order_by(Contact.id).first().id
    return f"rows={len(rows)} columns={len(rows[0].__data__)} {shown(rows[0], ('tax_code', 'email'))}"


@op("paginate")
def _():
    page = list(Contact.select(Contact.id, Contact.city).order_by(Contact.id).paginate(2, 10))
    return f"page={len(page)} total={Contact.select().count()}"


@op("join")
def _():
    rows = (
        Interaction.select(Interaction.channel, pw.fn.count(Interaction.id).alias("n"))
        .join(Contact)
        .group_by(Interaction.channel)
        .order_by(Interaction.channel)
    )
    return "channels=" + ",".join(r.channel for r in rows)


@op("prefetch")
def _():
    contacts = Contact.select(Contact.id, Contact.city).order_by(Contact.id).limit(3)
    rows = pw.prefetch(contacts, Interaction.select(Interaction.id, Interaction.contact, Interaction.channel))
    return f"contacts={len(rows)} interactions={sum(len(r.interactions) for r in rows)}"


@op("json")
def _():
    doc = Contact.select(pw.fn.to_jsonb(pw.SQL('"t1"')).alias("doc")).order_by(Contact.id).first().doc
    return f"keys={len(doc)} " + " ".join(f"{k}={doc[k]}" for k in ("tax_code", "email") if k in doc)


@op("create")
def _():
    row = Interaction.create(**interaction(0))
    return f"id={row.id}"


@op("insert_many")
def _():
    Interaction.insert_many([interaction(i, "email") for i in range(1, 6)]).execute()
    return "inserted=%d" % Interaction.select().where(Interaction.id.between(BASE + 1, BASE + 5)).count()


@op("insert_or_ignore")
def _():
    Interaction.insert_many([interaction(0), interaction(6)]).on_conflict_ignore().execute()
    return "rows=%d" % Interaction.select().where(Interaction.id.between(BASE, BASE + 6)).count()


@op("get_or_create")
def _():
    row, created = Interaction.get_or_create(id=BASE + 7, defaults={"contact": state["contact"], "channel": "meeting"})
    again, created_again = Interaction.get_or_create(id=BASE + 7, defaults={"contact": state["contact"], "channel": "call"})
    return f"created={created} then={created_again} channel={again.channel}"


@op("upsert")
def _():
    Interaction.insert(**interaction(0)).on_conflict(conflict_target=[Interaction.id], update={Interaction.channel: "meeting"}).execute()
    return "upserted"


@op("update")
def _():
    return "updated=%d" % Interaction.update(channel="meeting").where(Interaction.id == BASE + 1).execute()


# save() of a loaded model writes every column; one changed: contacts' city (for support, which may not
# update contacts, a ticket's status).
Written = Ticket if ROLE == "support" else Contact


@op("save_loaded")
def _():
    row = Written.select().order_by(Written.id).first()
    change_shown(row, ROLE, "Peeweecity")
    row.save()
    saved = Written.get_by_id(row.id)
    return f"saved {shown(saved, ('tax_code', 'subject'))}"


@op("save_changed_masked")
def _():
    # The last row (the unrestricted user's run changes it: the first rows are what the tests read).
    row = Written.select().order_by(Written.id.desc()).first()
    change_masked(row, ROLE)
    return "updated=%d" % row.save()


@op("transaction_savepoint")
def _():
    with db.atomic():
        Interaction.create(**interaction(8))
        with db.atomic() as inner:
            Interaction.create(**interaction(9))
            inner.rollback()
    kept = Interaction.select(Interaction.id).where(Interaction.id.in_([BASE + 8, BASE + 9]))
    return "kept=" + ",".join(str(r.id - BASE) for r in kept)


@op("server_side_cursor")
def _():
    # On psycopg2 Peewee declares every named cursor WITH HOLD (psycopg2 refuses a named cursor in
    # autocommit): it outlives the transaction, which pins the session in transaction mode.
    with db.atomic():
        streamed, holdable = 0, None
        for _ in ServerSide(Contact.select(Contact.id, Contact.city).order_by(Contact.id), array_size=25):
            streamed += 1
            if holdable is None:
                holdable = db.execute_sql("SELECT bool_or(is_holdable) FROM pg_cursors").fetchone()[0]
    return f"holdable={holdable} streamed={streamed}"


@op("server_side_cursor_psycopg3")
def _():
    # On psycopg 3 Peewee declares the cursor WITH HOLD only outside a transaction: inside
    # `atomic()` it lives in the transaction and pins nothing in transaction mode.
    db3 = PostgresqlExtDatabase(urlsplit(URI).path.lstrip("/"), conninfo=URI, prefer_psycopg3=True)
    try:
        with db3.bind_ctx([Contact]), db3.atomic():
            query = Contact.select(Contact.id, Contact.city).order_by(Contact.id)
            streamed, holdable = 0, None
            for _ in ServerSide(query, array_size=25):
                streamed += 1
                if holdable is None:
                    holdable = db3.execute_sql("SELECT bool_or(is_holdable) FROM pg_cursors").fetchone()[0]
        return f"driver={type(db3.connection()).__module__.split('.')[0]} holdable={holdable} streamed={streamed}"
    finally:
        db3.close()


@op("select_health_records")
def _():
    return "n=%d" % HealthRecord.select().count()


@op("after_refusal")
def _():
    return "n=%d" % Contact.select().where(Contact.region == "north").count()


@op("delete")
def _():
    return "deleted=%d" % Interaction.delete().where(Interaction.id.between(BASE, BASE + 99)).execute()


db.close()
print("done", flush=True)
