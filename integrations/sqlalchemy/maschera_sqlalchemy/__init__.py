"""SQLAlchemy session event: each transaction of a Session is served by Maschera as the current end
user, through the one database login of the application.

For: an application whose engine connects as a Maschera application user. `EndUsers.install`
listens to the Session's `after_begin`: when an end user is current (`acting_for`, or the session's
`info["maschera_end_user"]`), the transaction's first statement on each connection sets its signed
token for that transaction only (`set_config('maschera.end_user', :token, true)`, or `SET LOCAL`
for psycopg2, which binds on the client). Nothing outlives the transaction, so a pooled connection
returns to the pool without an end user.

Not for: Core connections outside a Session (call `EndUsers.set_local(connection)` in their
transaction), or verifying anything (the proxy does). A session whose transaction began before the
end user was made current keeps serving that transaction as it began.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Mapping, Optional

from sqlalchemy import event, text

from maschera_token import EndUserSigner, set_config_statement, set_statement

__all__ = ["EndUsers", "INFO_KEY"]

#: `Session.info` key naming the session's end user: a username, or a mapping with `sub` and
#: optionally `role` and `attributes`. Takes precedence over `acting_for`.
INFO_KEY = "maschera_end_user"

_SET_CONFIG = text(set_config_statement(":token", local=True))


class EndUsers:
    """The end users of one application, signed with `signer` (a maschera_token.EndUserSigner)."""

    def __init__(self, signer: EndUserSigner):
        self.signer = signer
        self._current: contextvars.ContextVar = contextvars.ContextVar(
            f"maschera_end_user_{id(self)}", default=None
        )

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

    def set_local(self, connection, identity=None) -> bool:
        """Sets the current end user (or `identity`) on `connection` for its current transaction.
        Returns whether there was one to set."""
        identity = identity if identity is not None else self._current.get()
        if identity is None:
            return False
        if isinstance(identity, str):
            identity = {"sub": identity}
        token = self.signer.token(
            identity["sub"], identity.get("role"), identity.get("attributes")
        )
        if connection.dialect.driver == "psycopg2":
            connection.exec_driver_sql(set_statement(token, local=True))
        else:
            connection.execute(_SET_CONFIG, {"token": token})
        return True

    def _after_begin(self, session, transaction, connection) -> None:
        self.set_local(connection, session.info.get(INFO_KEY))
