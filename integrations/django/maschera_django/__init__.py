"""Django middleware: each request's database statements are served by Maschera as the request's
user (the end user), through the one database login of the application.

For: a Django application whose database login is a Maschera application user. Per request, after
AuthenticationMiddleware, it signs `request.user`'s identity (`sub` = the username; `role` and
`attributes` from the optional `CLAIMS` hook, else the proxy takes them from its users file) and sets
it on the request's database connection(s) before the view runs, and resets it after.

Not for: verifying anything (the proxy does), async views (the middleware is synchronous), or
requests of anonymous users: those run as the application's own role (what the login view and the
session middleware need), and the proxy refuses them personal data.

Why a session-level `SET` and `RESET` in `finally`, not `SET LOCAL` in ATOMIC_REQUESTS: Django runs in
autocommit unless told otherwise, and ATOMIC_REQUESTS wraps the view only, not the middleware nor
the `transaction.atomic` blocks of a view in autocommit mode; `SET LOCAL` outside a transaction has
no effect. A session `SET` covers every statement and transaction of the request. It is undone by
the `RESET` after the response (or by closing the connection when the `RESET` fails), so a
persistent connection (CONN_MAX_AGE > 0) never carries one user's identity into another request; a
connection Django opens again during the request gets the identity from the `connection_created`
signal. Inside a transaction that rolls back, the proxy undoes a session `SET` as PostgreSQL does.

A token the proxy refuses (SQLSTATE 28000 or 42501: a wrong key, an expired token, a role outside
the application's bounds) fails the request with that DatabaseError before the view runs: it never
runs as the application's own role instead. The connection goes on serving the next request.

Settings::

    MASCHERA_END_USER = {
        "KEY": os.environ["CRM_END_USER_SECRET"],  # HS256 secret, or PEM text of a private key
        # "KEY_FILE": "/etc/crm/end-user-key.pem",  # instead of KEY
        "KID": "crm-1",                             # the key's kid in [[end_users.keys]]
        "ALGORITHM": "HS256",                        # EdDSA, ES256, RS256 or HS256
        "LIFETIME": 300,                             # seconds; tokens are reused until 1/4 is left
        "ISSUER": None, "AUDIENCE": None,            # when the proxy checks them
        "DATABASES": ["default"],                    # the aliases served through the proxy
        "CLAIMS": "crm.maschera.claims",            # optional: user -> {"role", "attributes"} or None
    }
"""

from __future__ import annotations

import contextvars
from typing import Optional

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connections
from django.db.backends.signals import connection_created
from django.utils.module_loading import import_string

from maschera_token import RESET_STATEMENT, EndUserSigner, set_statement

__all__ = ["EndUserMiddleware"]

# One signer (and its cache of tokens) per signing configuration, shared by every instance of the
# middleware: Django may build the middleware more than once (per handler, per test), and a token
# is reused until a quarter of its lifetime is left whichever instance serves the request.
_signers: dict = {}


def _signer(signing: tuple) -> EndUserSigner:
    key, kid, algorithm, lifetime, issuer, audience = signing
    try:
        signer = _signers.get(signing)
    except TypeError:  # a setting that is not hashable (e.g. a list): a signer of its own
        signer = None
        signing = None
    if signer is None:
        signer = EndUserSigner(
            key, kid=kid, algorithm=algorithm, lifetime=lifetime, issuer=issuer, audience=audience
        )
        if signing is not None:
            _signers[signing] = signer
    return signer


# The token of the request being served, and the aliases it is set on (for connections Django opens
# during the request).
_current: contextvars.ContextVar = contextvars.ContextVar("maschera_end_user", default=None)

# The attribute of a DatabaseWrapper holding the token its open connection is set to.
_APPLIED = "_maschera_end_user_token"


class EndUserMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response):
        self.get_response = get_response
        config = getattr(settings, "MASCHERA_END_USER", None)
        if not isinstance(config, dict):
            raise ImproperlyConfigured("EndUserMiddleware needs the MASCHERA_END_USER setting")
        key = config.get("KEY")
        if config.get("KEY_FILE"):
            with open(config["KEY_FILE"], encoding="utf-8") as file:
                key = file.read()
        signing = (
            key,
            config.get("KID", ""),
            config.get("ALGORITHM", "HS256"),
            config.get("LIFETIME", 300),
            config.get("ISSUER"),
            config.get("AUDIENCE"),
        )
        try:
            self.signer = _signer(signing)
        except ValueError as err:
            raise ImproperlyConfigured(f"MASCHERA_END_USER: {err}") from err
        self.aliases = tuple(config.get("DATABASES", ["default"]))
        claims = config.get("CLAIMS")
        self.claims = import_string(claims) if isinstance(claims, str) else claims
        connection_created.connect(_on_connection_created, dispatch_uid="maschera_django.end_user")

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is None:
            raise ImproperlyConfigured(
                "EndUserMiddleware must come after django.contrib.auth's AuthenticationMiddleware"
            )
        token = self.token_for(user) if user.is_authenticated else None
        if token is None:
            return self.get_response(request)
        marker = _current.set((token, self.aliases))
        try:
            for alias in self.aliases:
                _apply(connections[alias], token)
            return self.get_response(request)
        finally:
            _current.reset(marker)
            for alias in self.aliases:
                _reset(connections[alias])

    def token_for(self, user) -> Optional[str]:
        """The token of `user`, or None when the CLAIMS hook says the request has no end user."""
        claims = {"sub": user.get_username()}
        if self.claims is not None:
            extra = self.claims(user)
            if extra is None:
                return None
            claims.update(extra)
        return self.signer.token(
            claims["sub"], role=claims.get("role"), attributes=claims.get("attributes")
        )


def _apply(connection, token: str) -> None:
    connection.ensure_connection()  # a new connection is set by _on_connection_created
    if getattr(connection, _APPLIED, None) != token:
        _set(connection, token)


def _set(connection, token: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(set_statement(token))
    setattr(connection, _APPLIED, token)


def _reset(connection) -> None:
    """Ends the end user on `connection`; closes it when that fails, so that it is never reused
    with the identity still set."""
    if getattr(connection, _APPLIED, None) is None:
        return
    setattr(connection, _APPLIED, None)
    if connection.connection is None:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(RESET_STATEMENT)
    except DatabaseError:
        connection.close()


def _on_connection_created(sender, connection, **kwargs) -> None:
    setattr(connection, _APPLIED, None)
    current = _current.get()
    if current is not None and connection.alias in current[1]:
        _set(connection, current[0])
