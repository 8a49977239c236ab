"""asyncpg's LISTEN/NOTIFY (`add_listener`) against the reference CRM through Maschera, as one user.

`add_listener` sends `LISTEN "channel"` and delivers each NotificationResponse to a callback; a second
connection sends `NOTIFY` and `pg_notify`. An unrestricted role receives both payloads; the reference
policy gives the restricted roles no channel (`[roles.<role>] channels`), so each of those statements
is refused (42501, naming the channel) and the connection goes on. Usage: python3 asyncpg_listen.py
URI USER. Prints one outcome line per operation (see outcome.py); the Rust test
(tests/tests/e2e/compat_orms.rs) decides what each user must get.
"""

import asyncio
import sys

import asyncpg

from outcome import run_async

URI, USER = sys.argv[1], sys.argv[2]
CHANNEL = "crm_events"
DB_ERRORS = (asyncpg.PostgresError,)


async def main():
    listener = await asyncpg.connect(URI)
    sender = await asyncpg.connect(URI)
    received = asyncio.Queue()

    def on_notify(_connection, _pid, channel, payload):
        received.put_nowait(f"{channel}:{payload}")

    listening = []

    async def add_listener():
        await listener.add_listener(CHANNEL, on_notify)
        listening.append(CHANNEL)
        return "listening"

    async def notify():
        await sender.execute(f"NOTIFY {CHANNEL}, 'first'")
        await sender.execute("SELECT pg_notify($1, $2)", CHANNEL, "second")
        return "sent"

    async def receive():
        # Both payloads when listening; when not, nothing within a second.
        got = []
        try:
            while len(got) < 2:
                got.append(await asyncio.wait_for(received.get(), 10 if listening else 1))
        except asyncio.TimeoutError:
            pass
        return "received=" + (",".join(got) or "none")

    async def remove_listener():
        await listener.remove_listener(CHANNEL, on_notify)
        return "removed"

    async def after():
        return "n=%d" % await listener.fetchval("SELECT count(*) FROM contacts")

    await run_async("add_listener", add_listener, DB_ERRORS)
    await run_async("notify", notify, DB_ERRORS)
    await run_async("receive", receive, DB_ERRORS)
    await run_async("remove_listener", remove_listener, DB_ERRORS)
    await run_async("after_refusal", after, DB_ERRORS)
    await listener.close()
    await sender.close()
    print("done", flush=True)


asyncio.run(main())
