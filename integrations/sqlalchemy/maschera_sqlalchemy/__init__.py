"""SQLAlchemy session event: each transaction of a Session is served by Maschera as the current end
user, through the one database login of the application.

For: an application whose engine connects as a Maschera application user. `EndUsers.install`
listens to the Session's `after_begin`: when an end user is current (`acting_for`, or the session's
`info["maschera_end_user"]`), its signed token is set on the connection before the transaction's
first statement, and reset when the connection goes back to the pool (a connection whose reset
fails is invalidated, never reused with the identity).

Why not `set_config(..., true)` inside the transaction: Maschera serves a transaction as the end
user it began with, and the driver's `BEGIN` is its first statement, so the end user is set just
before it, at session level (`set_config('maschera.end_user', %s, false)` with the token bound, or
`SET` for psycopg2, which binds on the client), in autocommit; the driver's `BEGIN` follows.
Maschera refuses (26000) a statement prepared for one end user when it is executed for another, so
psycopg 3's automatic prepared statements are turned off on the connections it sets end users on.
A token the proxy refuses (28000 or 42501) raises the driver's error at the transaction's first
statement; nothing of that transaction runs.

Not for: Core connections outside a Session (call `EndUsers.apply(connection)` before their first
statement), async engines, or verifying anything (the proxy does).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Mapping, Optional

from sqlalchemy import event

from maschera_token import RESET_STATEMENT, EndUserSigner, set_config_statement, set_statement

__all__ = ["EndUsers", "INFO_KEY"]

#: `Session.info` key naming the session's end user: a username, or a mapping with `sub` and
#: optionally `role` and `attributes`. Takes precedence over `acting_for`.
INFO_KEY = "maschera_end_user"

# The key of a pooled connection's `info` holding the token it is set to.
_SET = "maschera_end_user_token"


class EndUsers:
    """The end users of one application, signed with `signer` (a maschera_token.EndUserSigner)."""

    def __init__(self, signer: EndUserSigner):
        self.signer = signer
        self._current: contextvars.ContextVar = contextvars.ContextVar(
            f"maschera_end_user_{id(self)}", default=None
        )
        self._pools: set = set()

    def install(self, target) -> None:
        """Listens to `after_begin` of `target`: a Session class, a sessionmaker or a Session."""
        event.listen(target, "after_begin", self._after_begin)

    @contextlib.contextmanager
    def acting_for(
        self,
        sub: str,
        role: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
    ):
        """Within the block, transactions that begin are served as end user `sub`."""
        self.signer.token(sub, role, attributes)  # a bad identity fails here, not at the next query
        marker = self._current.set({"sub": sub, "role": role, "attributes": attributes})
        try:
            yield
        finally:
            self._current.reset(marker)

    def apply(self, connection, identity=None) -> bool:
        """Sets the current end user (or `identity`: a username or a mapping with `sub`, `role`,
        `attributes`) on `connection` (a SQLAlchemy Connection) before its transaction's first
        statement; with none, resets an earlier one. Returns whether an end user is set."""
        identity = identity if identity is not None else self._current.get()
        if isinstance(identity, str):
            identity = {"sub": identity}
        token = None
        if identity is not None:
            token = self.signer.token(
                identity["sub"], identity.get("role"), identity.get("attributes")
            )
        fairy = connection.connection
        if fairy.info.get(_SET) == token:
            return token is not None
        pool = connection.engine.pool
        if pool not in self._pools:
            event.listen(pool, "checkin", _reset_on_checkin)
            self._pools.add(pool)
        _run_in_autocommit(fairy.dbapi_connection, connection.dialect.driver, token)
        fairy.info[_SET] = token
        return token is not None

    def _after_begin(self, session, transaction, connection) -> None:
        self.apply(connection, session.info.get(INFO_KEY))


def _run_in_autocommit(dbapi_connection, driver: str, token: Optional[str]) -> None:
    """Sets (or with `token` None resets) the end user at session level, outside a transaction."""
    if getattr(dbapi_connection, "prepare_threshold", None) is not None:
        dbapi_connection.prepare_threshold = None  # psycopg 3: nothing prepared for one end user only
    if token is None:
        statement, params = RESET_STATEMENT, None
    elif driver == "psycopg2":
        statement, params = set_statement(token), None
    else:
        statement, params = set_config_statement("%s", local=False), [token]
    if not getattr(dbapi_connection, "autocommit", True):
        try:
            dbapi_connection.autocommit = True
        except Exception as err:
            raise RuntimeError(
                "the end user must be set before the transaction's first statement"
            ) from err
        restore = True
    else:
        restore = False
    try:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(statement, params) if params else cursor.execute(statement)
        finally:
            cursor.close()
    finally:
        if restore:
            dbapi_connection.autocommit = False


def _reset_on_checkin(dbapi_connection, connection_record) -> None:
    if dbapi_connection is None or connection_record.info.get(_SET) is None:
        return
    connection_record.info[_SET] = None
    try:
        _run_in_autocommit(dbapi_connection, "", None)
    except Exception:
        connection_record.invalidate()
