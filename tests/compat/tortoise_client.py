"""Tortoise ORM (on asyncpg) against the reference CRM through Maschera, as one user.

What an application does with Tortoise: `generate_schemas(safe=True)` at start-up (`CREATE TABLE IF
NOT EXISTS`: DDL, the owner's), select with order/limit, pagination (offset/limit and count), a join
with group by, `prefetch_related` and `select_related`, a JSON value built in SQL, an enum field
(`CharEnumField`), `create`, `bulk_create` (also with `ignore_conflicts`: ON CONFLICT DO NOTHING, and
with `on_conflict`/`update_fields`: an upsert), `get_or_create` (a get, then a create in a nested
transaction: a savepoint), `update_or_create`, `save()` of a loaded model (every column written, the
masked values as read), nested `in_transaction()` blocks with the inner one rolled back (a savepoint),
delete. The models map the columns the user's role has. asyncpg prepares every statement (named,
binary). Usage: python3 tortoise_client.py URI USER BASE. Prints one outcome line per operation (see
outcome.py); the Rust test (tests/tests/e2e/compat_orms.rs) decides what each user must get.
"""

import asyncio
import enum
import json
import sys
from urllib.parse import unquote, urlsplit

import asyncpg
from tortoise import Tortoise, connections, fields
from tortoise.exceptions import BaseORMException
from tortoise.functions import Count
from tortoise.models import Model
from tortoise.transactions import in_transaction

from orm_roles import ROLES, change_masked, change_shown, dropped
from outcome import run_async

URI, USER, BASE = sys.argv[1], sys.argv[2], int(sys.argv[3])
ROLE = ROLES[USER]
DB_ERRORS = (BaseORMException, asyncpg.PostgresError)
DROPPED = dropped(ROLE)


def key(**options):
    """An id or a reference to one: the analyst's are pseudonyms (text)."""
    if ROLE == "analyst":
        return fields.CharField(max_length=64, **options)
    return fields.BigIntField(**options)


class Channel(str, enum.Enum):
    CALL = "call"
    EMAIL = "email"
    MEETING = "meeting"


def model(name, table, attrs):
    attrs = {k: v for k, v in attrs.items() if k not in DROPPED}
    attrs["Meta"] = type("Meta", (), {"table": table})
    attrs["__module__"] = __name__
    return type(name, (Model,), attrs)


Contact = model(
    "Contact",
    "contacts",
    {
        "id": key(primary_key=True),
        "first_name": fields.TextField(null=True),
        "last_name": fields.TextField(null=True),
        "email": fields.TextField(null=True),
        "phone": fields.TextField(null=True),
        "birth_date": fields.DateField(null=True),
        "tax_code": fields.TextField(null=True),
        "street_address": fields.TextField(null=True),
        "city": fields.TextField(null=True),
        "region": fields.TextField(),
        "created_at": fields.DatetimeField(null=True),
        "last_activity_at": fields.DatetimeField(null=True),
    },
)
Interaction = model(
    "Interaction",
    "interactions",
    {
        "id": key(primary_key=True),
        "contact": fields.ForeignKeyField("models.Contact", related_name="interactions", source_field="contact_id", db_constraint=False),
        "channel": fields.CharEnumField(Channel),
        "occurred_at": fields.DatetimeField(auto_now_add=True),
    },
)
Ticket = model(
    "Ticket",
    "tickets",
    {
        "id": key(primary_key=True),
        "contact_id": key(),
        "subject": fields.TextField(null=True),
        "body": fields.TextField(null=True),
        "status": fields.TextField(),
    },
)
HealthRecord = model("HealthRecord", "health_records", {"id": key(primary_key=True)})


def shown(values, keys):
    return " ".join(f"{k}={values[k]}" for k in keys if k in values)


async def main():
    parts = urlsplit(URI)
    credentials = {
        "host": parts.hostname, "port": parts.port, "user": unquote(parts.username),
        "password": unquote(parts.password), "database": parts.path.lstrip("/"),
    }
    config = {
        "connections": {"default": {"engine": "tortoise.backends.asyncpg", "credentials": {**credentials, "maxsize": 2}}},
        "apps": {"models": {"models": [__name__], "default_connection": "default"}},
    }
    state = {"contact": 1}
    row = lambda offset, channel=Channel.CALL: Interaction(id=BASE + offset, contact_id=state["contact"], channel=channel)  # noqa: E731
    ops = []

    def op(name):
        def wrap(fn):
            ops.append((name, fn))
            return fn
        return wrap

    @op("connect")
    async def _():
        await Tortoise.init(config=config)
        rows = await connections.get("default").execute_query_dict("SELECT current_user AS u")
        return f"user={rows[0]['u']}"

    @op("generate_schemas")
    async def _():
        await Tortoise.generate_schemas(safe=True)
        return "created if not exists"

    @op("select")
    async def _():
        rows = await Contact.all().order_by("id").limit(5).values()
        north = await Contact.filter(region="north").order_by("id").first().values("id")
        state["contact"] = north["id"]
        return f"rows={len(rows)} columns={len(rows[0])} {shown(rows[0], ('tax_code', 'email'))}"

    @op("paginate")
    async def _():
        page = await Contact.all().order_by("id").offset(10).limit(10).values("id", "city")
        return f"page={len(page)} total={await Contact.all().count()}"

    @op("join")
    async def _():
        rows = await (
            Interaction.filter(contact__region__in=["north", "centre", "south"])
            .annotate(n=Count("id")).group_by("channel").order_by("channel").values("channel", "n")
        )
        return "channels=" + ",".join(r["channel"] for r in rows)

    @op("prefetch_related")
    async def _():
        contacts = await Contact.all().order_by("id").limit(3).prefetch_related("interactions")
        return f"contacts={len(contacts)} interactions={sum(len(c.interactions) for c in contacts)}"

    @op("select_related")
    async def _():
        rows = await Interaction.all().order_by("id").limit(5).select_related("contact")
        return f"rows={len(rows)} regions={sorted({r.contact.region for r in rows})}"

    @op("json")
    async def _():
        rows = await connections.get("default").execute_query_dict("SELECT to_jsonb(c) AS doc FROM contacts c ORDER BY id LIMIT 1")
        doc = json.loads(rows[0]["doc"])
        return f"keys={len(doc)} {shown(doc, ('tax_code', 'email'))}"

    @op("enum_filter")
    async def _():
        return f"n={await Interaction.filter(channel=Channel.CALL).count()}"

    @op("create")
    async def _():
        created = await Interaction.create(id=BASE, contact_id=state["contact"], channel=Channel.CALL)
        return f"id={created.id} channel={created.channel.value}"

    @op("bulk_create")
    async def _():
        await Interaction.bulk_create([row(i, Channel.EMAIL) for i in range(1, 6)])
        return f"inserted={await Interaction.filter(id__gte=BASE + 1, id__lte=BASE + 5).count()}"

    @op("bulk_create_ignore_conflicts")
    async def _():
        await Interaction.bulk_create([row(0), row(6)], ignore_conflicts=True)
        return f"rows={await Interaction.filter(id__gte=BASE, id__lte=BASE + 6).count()}"

    @op("get_or_create")
    async def _():
        first, created = await Interaction.get_or_create(id=BASE + 7, defaults={"contact_id": state["contact"], "channel": Channel.MEETING})
        again, created_again = await Interaction.get_or_create(id=BASE + 7, defaults={"contact_id": state["contact"], "channel": Channel.CALL})
        return f"created={created} then={created_again} channel={again.channel.value}"

    @op("update_or_create")
    async def _():
        saved, created = await Interaction.update_or_create(id=BASE + 1, defaults={"contact_id": state["contact"], "channel": Channel.MEETING})
        return f"created={created} channel={saved.channel.value}"

    @op("upsert")
    async def _():
        await Interaction.bulk_create([row(0, Channel.MEETING)], on_conflict=["id"], update_fields=["channel"])
        return "upserted"

    # save() of a loaded model writes every column; one changed: contacts' city (for support, which may
    # not update contacts, a ticket's status).
    written = Ticket if ROLE == "support" else Contact

    @op("save_loaded")
    async def _():
        loaded = await written.all().order_by("id").first()
        change_shown(loaded, ROLE, "Tortoisecity")
        await loaded.save()
        saved = await written.filter(id=loaded.id).first().values()
        return f"saved {shown(saved, ('tax_code', 'subject'))}"

    @op("save_changed_masked")
    async def _():
        # The last row (the unrestricted user's run changes it: the first rows are what the tests read).
        loaded = await written.all().order_by("-id").first()
        change_masked(loaded, ROLE)
        await loaded.save()
        return "saved"

    @op("transaction_savepoint")
    async def _():
        class RollBack(Exception):
            pass

        async with in_transaction():
            await row(8).save(force_create=True)
            try:
                async with in_transaction():
                    await row(9).save(force_create=True)
                    raise RollBack()
            except RollBack:
                pass
        kept = await Interaction.filter(id__in=[BASE + 8, BASE + 9]).values_list("id", flat=True)
        return "kept=" + ",".join(str(int(k) - BASE) for k in kept)

    @op("select_health_records")
    async def _():
        return f"n={await HealthRecord.all().count()}"

    @op("after_refusal")
    async def _():
        return f"n={await Contact.filter(region='north').count()}"

    @op("delete")
    async def _():
        return f"deleted={await Interaction.filter(id__gte=BASE, id__lt=BASE + 100).delete()}"

    for name, fn in ops:
        await run_async(name, fn, DB_ERRORS)
    await Tortoise.close_connections()
    print("done", flush=True)


asyncio.run(main())
