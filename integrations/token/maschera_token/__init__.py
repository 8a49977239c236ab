"""Signing the end-user tokens an application sends Maschera, and the statements that carry them.

For: the Django middleware (maschera_django), the SQLAlchemy session event (maschera_sqlalchemy) and
an application's own code. A token is a JWT: header `kid` naming a key of the proxy's
`[[end_users.keys]]`; claims `sub` (the end user), optionally `role` and `attributes` (strings),
`iat`, `exp` (the proxy refuses lifetimes above its `max_lifetime_seconds`, default 3600), and `iss`,
`aud` when the proxy is configured with them.

Not for: verifying tokens (the proxy does), nor deciding who the end user is (the application does).

A signer keeps the token of each identity until a quarter of its lifetime is left, so that a user's
requests send the same token and the proxy's cache of verified tokens answers them.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Tuple

import jwt

__all__ = [
    "ALGORITHMS",
    "EndUserSigner",
    "RESET_STATEMENT",
    "set_config_statement",
    "set_statement",
]

#: The algorithms the proxy verifies.
ALGORITHMS = ("EdDSA", "ES256", "RS256", "HS256")

#: The longest lifetime the proxy accepts by default (`[end_users] max_lifetime_seconds`).
DEFAULT_MAX_LIFETIME = 3600

#: The statement that ends the end user of a session.
RESET_STATEMENT = "RESET maschera.end_user"

#: The statement for drivers that bind parameters on the server (psycopg 3, asyncpg, pg8000,
#: node-postgres, pgjdbc): the token is its one parameter (`$1`, or the driver's placeholder); the
#: end user lasts for the current transaction only (`true`) or for the session (`false`). The
#: proxy recognises exactly this form, with `true` or `false` written out.
_SET_CONFIG = "SELECT set_config('maschera.end_user', {token}, {local})"


def set_config_statement(placeholder: str = "$1", local: bool = True) -> str:
    """`SELECT set_config('maschera.end_user', <placeholder>, true|false)`."""
    return _SET_CONFIG.format(token=placeholder, local="true" if local else "false")


# A JWT in compact form: three base64url parts. Nothing that could end the quoted literal.
_COMPACT_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def set_statement(token: str, local: bool = False) -> str:
    """`SET [LOCAL] maschera.end_user = '<token>'` for the simple query protocol (PostgreSQL takes
    no parameters in SET). Raises ValueError if `token` is not a compact JWT, so that nothing else
    is ever put inside the literal."""
    if not isinstance(token, str) or not _COMPACT_JWT.fullmatch(token):
        raise ValueError("not a compact JWT (three base64url parts)")
    return f"SET {'LOCAL ' if local else ''}maschera.end_user = '{token}'"


@dataclass(frozen=True)
class _Identity:
    sub: str
    role: Optional[str]
    attributes: Tuple[Tuple[str, str], ...]


class EndUserSigner:
    """Signs end-user tokens with one key.

    `key`: for HS256 the shared secret (str or bytes, the value of the proxy's `secret_env`
    variable); for EdDSA, ES256 and RS256 the PEM text of the private key whose public key the proxy
    has. `kid`: the key's name in `[[end_users.keys]]`. `lifetime`: seconds a token lives (at most
    `max_lifetime`, the proxy's limit). `clock`: seconds since the epoch (for tests).
    """

    def __init__(
        self,
        key,
        kid: str,
        algorithm: str = "HS256",
        lifetime: int = 300,
        issuer: Optional[str] = None,
        audience: Optional[str] = None,
        max_lifetime: int = DEFAULT_MAX_LIFETIME,
        clock: Callable[[], float] = time.time,
    ):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        if not kid:
            raise ValueError("kid names the key in the proxy's [[end_users.keys]]")
        if not 1 <= int(lifetime) <= max_lifetime:
            raise ValueError(f"lifetime must be 1 to {max_lifetime} seconds")
        if not key:
            raise ValueError("no signing key")
        if algorithm == "HS256" and isinstance(key, str) and "PRIVATE KEY" in key:
            raise ValueError("HS256 takes a shared secret, not a private key")
        if algorithm != "HS256":
            key = _private_key(key)
        self._key = key
        self._kid = kid
        self._algorithm = algorithm
        self._lifetime = int(lifetime)
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._cache: dict = {}
        self._lock = threading.Lock()

    @property
    def lifetime(self) -> int:
        return self._lifetime

    def token(
        self,
        sub: str,
        role: Optional[str] = None,
        attributes: Optional[Mapping[str, str]] = None,
    ) -> str:
        """The token for end user `sub` (with `role` and `attributes` when the application asserts
        them; without, the proxy takes the end user's from its users file). Reused until a quarter
        of its lifetime is left."""
        if not isinstance(sub, str) or not sub:
            raise ValueError("the end user (sub) must be a non-empty string")
        if role is not None and (not isinstance(role, str) or not role):
            raise ValueError("role must be a non-empty string or None")
        attributes = dict(attributes or {})
        for name, value in attributes.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValueError("attributes map strings to strings")
        identity = _Identity(sub, role, tuple(sorted(attributes.items())))
        now = int(self._clock())
        with self._lock:
            cached = self._cache.get(identity)
            if cached is not None and cached[1] - now > self._lifetime // 4:
                return cached[0]
        claims = {"sub": sub, "iat": now, "exp": now + self._lifetime}
        if role is not None:
            claims["role"] = role
        if attributes:
            claims["attributes"] = attributes
        if self._issuer is not None:
            claims["iss"] = self._issuer
        if self._audience is not None:
            claims["aud"] = self._audience
        token = jwt.encode(claims, self._key, algorithm=self._algorithm, headers={"kid": self._kid})
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            self._cache[identity] = (token, claims["exp"])
        return token


def _private_key(key):
    """A private key object from PEM text or bytes (PKCS#8, or the traditional forms)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    if isinstance(key, str):
        key = key.encode()
    if isinstance(key, bytes):
        return load_pem_private_key(key, password=None)
    return key
