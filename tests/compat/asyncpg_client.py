"""asyncpg, and SQLAlchemy's asyncio engine over it, against the reference CRM through Maschera.

asyncpg prepares every statement under a name (its statement cache), exchanges values in binary,
introspects a type it has no codec for (a query over pg_type on first use), sends `executemany` as one
pipeline, copies with `COPY ... FROM STDIN (FORMAT binary)` and reads server-side cursors inside a
transaction. Usage: python3 asyncpg_client.py URI USER. Prints one outcome line per operation (see
outcome.py); the Rust test (tests/tests/e2e/compat_more.rs) decides what each user must get.
"""

import asyncio
import io
import sys
from decimal import Decimal

import asyncpg
import sqlalchemy as sa
from sqlalchemy import orm
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from outcome import run_async

URI, USER = sys.argv[1], sys.argv[2]
# Ids of the rows this script writes: far above the generated ones, different per user.
BASE_ID = {"dora": 910_000, "sam": 920_000, "tom": 930_000, "ana": 940_000}.get(USER, 950_000)


async def run(op, fn):
    """Awaits fn(); prints its outcome (asyncpg's errors carry `sqlstate`)."""
    return await run_async(op, fn, (asyncpg.PostgresError, sa.exc.DBAPIError))


def as_int(value, fallback=1):
    return value if isinstance(value, int) else fallback


async def driver():
    conn = await asyncpg.connect(URI, statement_cache_size=100)
    state = {}

    async def select_contacts():
        rows = await conn.fetch("SELECT * FROM contacts ORDER BY id LIMIT 5")
        first = dict(rows[0])
        state["north_id"] = await conn.fetchval(
            "SELECT id FROM contacts WHERE region = $1 ORDER BY id LIMIT 1", "north"
        )
        state["text_ids"] = isinstance(first["id"], str)
        shown = {k: first[k] for k in ("tax_code", "email", "birth_date") if k in first}
        return f"rows={len(rows)} columns={len(first)} id_type={type(first['id']).__name__} {shown}"

    await run("select", select_contacts)

    async def prepared():
        stmt = await conn.prepare("SELECT count(*) FROM contacts WHERE region = $1 AND city <> $2")
        counts = [await stmt.fetchval(region, "-") for region in ("north", "centre", "south") * 3]
        return f"counts={counts[:3]} executions={len(counts)}"

    await run("prepared", prepared)

    async def binary_types():
        row = await conn.fetchrow(
            "SELECT sum(amount) AS total, max(created_at) AS newest, count(*) AS n FROM deals"
        )
        return f"total_type={type(row['total']).__name__} newest_type={type(row['newest']).__name__} n={row['n']}"

    await run("binary_types", binary_types)

    async def type_introspection():
        # information_schema's columns are domains (sql_identifier): no builtin codec, so asyncpg
        # asks pg_type about them before decoding.
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_name = $1 ORDER BY ordinal_position",
            "contacts",
        )
        return f"columns={','.join(r['column_name'] for r in rows)}"

    await run("type_introspection", type_introspection)

    async def cursor_in_transaction():
        seen = 0
        async with conn.transaction():
            async for _ in conn.cursor("SELECT id, city FROM contacts ORDER BY id", prefetch=25):
                seen += 1
            cur = await conn.cursor("SELECT id FROM contacts ORDER BY id")
            page = await cur.fetch(7)
        return f"streamed={seen} page={len(page)}"

    await run("cursor_in_transaction", cursor_in_transaction)

    contact = as_int(state.get("north_id"))

    async def executemany():
        await conn.executemany(
            "INSERT INTO interactions (id, contact_id, channel) VALUES ($1, $2, $3)",
            [(BASE_ID + i, contact, "call") for i in range(10)],
        )
        n = await conn.fetchval(
            "SELECT count(*) FROM interactions WHERE id >= $1 AND id < $2", BASE_ID, BASE_ID + 10
        )
        return f"inserted={n}"

    await run("executemany", executemany)

    async def copy_records():
        # Records of the types the role's relation has (asyncpg encodes them client-side): the
        # analyst's ids are pseudonyms, text.
        key = str if state.get("text_ids") else int
        status = await conn.copy_records_to_table(
            "interactions",
            records=[(key(BASE_ID + 100 + i), key(contact), "email") for i in range(5)],
            columns=["id", "contact_id", "channel"],
        )
        n = await conn.fetchval(
            "SELECT count(*) FROM interactions WHERE id >= $1 AND id < $2", BASE_ID + 100, BASE_ID + 105
        )
        return f"status={status} copied={n}"

    await run("copy_records_to_table", copy_records)

    async def copy_out():
        out = []

        class Sink:
            async def __call__(self, data):
                out.append(data)

        await conn.copy_from_query("SELECT id, city FROM contacts ORDER BY id LIMIT 10", output=Sink())
        lines = b"".join(out).count(b"\n")
        return f"lines={lines}"

    await run("copy_from_query", copy_out)

    async def copy_table_out():
        buffer = io.BytesIO()
        await conn.copy_from_table("interactions", columns=["id", "channel"], output=buffer, format="csv")
        lines = buffer.getvalue().count(b"\n")
        return f"lines={lines}"

    await run("copy_from_table", copy_table_out)

    async def copy_table_in():
        key = str if state.get("text_ids") else int
        data = "".join(f"{key(BASE_ID + 120 + i)},{key(contact)},meeting\n" for i in range(3))
        status = await conn.copy_to_table(
            "interactions", source=io.BytesIO(data.encode()), columns=["id", "contact_id", "channel"], format="csv"
        )
        return f"status={status}"

    await run("copy_to_table", copy_table_in)

    async def pool():
        # asyncpg's own pool resets a connection on release (advisory locks, CLOSE ALL, UNLISTEN *,
        # RESET ALL) and checks it on acquire.
        async with asyncpg.create_pool(URI, min_size=1, max_size=2) as p:
            counts = []
            for _ in range(4):
                async with p.acquire() as c:
                    counts.append(await c.fetchval("SELECT count(*) FROM contacts WHERE region = $1", "north"))
            both = await asyncio.gather(*(p.fetchval("SELECT count(*) FROM interactions") for _ in range(4)))
        return f"acquired={len(counts)} n={counts[0]} concurrent={len(both)}"

    await run("pool", pool)

    async def health():
        return f"n={await conn.fetchval('SELECT count(*) FROM health_records')}"

    await run("select_health_records", health)

    async def after_refusal():
        return f"n={await conn.fetchval('SELECT count(*) FROM contacts WHERE region = $1', 'north')}"

    await run("after_refusal", after_refusal)

    async def cleanup():
        status = await conn.execute(
            "DELETE FROM interactions WHERE id >= $1 AND id < $2", BASE_ID, BASE_ID + 200
        )
        return f"status={status}"

    await run("delete", cleanup)
    await conn.close()


class Base(orm.DeclarativeBase):
    pass


class Deal(Base):
    __tablename__ = "deals"
    id = sa.Column(sa.BigInteger, primary_key=True)
    contact_id = sa.Column(sa.BigInteger, nullable=False)
    amount = sa.Column(sa.Numeric(12, 2), nullable=False)
    stage = sa.Column(sa.Text, nullable=False)


class Interaction(Base):
    __tablename__ = "interactions"
    id = sa.Column(sa.Text, primary_key=True)
    channel = sa.Column(sa.Text, nullable=False)


async def sqlalchemy_asyncio():
    engine = create_async_engine(URI.replace("postgres://", "postgresql+asyncpg://", 1))

    async def connect():
        async with engine.connect() as c:
            return f"schema={(await c.execute(sa.text('SELECT current_schema()'))).scalar()}"

    await run("sa_connect", connect)

    async def reflect():
        async with engine.connect() as c:

            def names(sync_conn):
                insp = sa.inspect(sync_conn)
                return sorted(insp.get_table_names() + insp.get_view_names())

            return f"relations={','.join(await c.run_sync(names))}"

    await run("sa_reflect", reflect)

    async def core():
        async with engine.connect() as c:
            rows = (
                await c.execute(
                    sa.text("SELECT region, count(*) AS n FROM contacts WHERE city <> :c GROUP BY region ORDER BY region"),
                    {"c": "-"},
                )
            ).all()
            return f"regions={[r.region for r in rows]}"

    await run("sa_core", core)

    async def orm_read():
        async with AsyncSession(engine) as session:
            result = await session.execute(
                sa.select(Interaction.channel, sa.func.count())
                .group_by(Interaction.channel)
                .order_by(Interaction.channel)
            )
            return f"channels={[r[0] for r in result]}"

    await run("sa_orm_select", orm_read)

    async def stream():
        async with engine.connect() as c:
            n = 0
            result = await c.stream(sa.text("SELECT id FROM contacts ORDER BY id"))
            async for _ in result:
                n += 1
            return f"streamed={n}"

    await run("sa_stream", stream)

    async def deals_denied_or_read():
        async with engine.connect() as c:
            n = (await c.execute(sa.select(sa.func.count()).select_from(Deal))).scalar()
            return f"deals={n}"

    await run("sa_deals", deals_denied_or_read)

    async def orm_write():
        # ORM unit of work over asyncpg: insert, update and delete of a deal of a north contact.
        async with AsyncSession(engine) as session:
            contact = (
                await session.execute(
                    sa.text("SELECT id FROM contacts WHERE region = 'north' ORDER BY id LIMIT 1")
                )
            ).scalar()
            deal = Deal(id=BASE_ID + 300, contact_id=contact, amount=Decimal("12.50"), stage="open")
            session.add(deal)
            await session.commit()
            deal.stage = "won"
            await session.commit()
            stage = (await session.execute(sa.select(Deal.stage).where(Deal.id == BASE_ID + 300))).scalar()
            await session.delete(deal)
            await session.commit()
            return f"stage={stage}"

    await run("sa_orm_write", orm_write)
    await engine.dispose()


async def main():
    await run("connect", probe)
    await driver()
    await sqlalchemy_asyncio()
    print("done", flush=True)


async def probe():
    conn = await asyncpg.connect(URI)
    try:
        return f"user={await conn.fetchval('SELECT current_user')}"
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
