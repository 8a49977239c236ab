"""The signing part of the integrations, without the proxy: what a token carries, per algorithm, how
long it is reused, and the statements built around it."""

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from maschera_token import EndUserSigner, set_config_statement, set_statement


def pem_pair(private):
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, private.public_key()


KEYS = {
    "EdDSA": lambda: pem_pair(ed25519.Ed25519PrivateKey.generate()),
    "ES256": lambda: pem_pair(ec.generate_private_key(ec.SECP256R1())),
    "RS256": lambda: pem_pair(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
}


# The tests sign at a fixed time, not now.
UNCHECKED_TIMES = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}
SECRET = "a shared secret of at least 32 bytes"


class Clock:
    def __init__(self, now=1_800_000_000):
        self.now = now

    def __call__(self):
        return self.now


@pytest.mark.parametrize("algorithm", sorted(KEYS))
def test_public_key_algorithms_sign_what_the_public_key_verifies(algorithm):
    private, public = KEYS[algorithm]()
    clock = Clock()
    signer = EndUserSigner(private, kid="app-2026", algorithm=algorithm, lifetime=120, clock=clock)
    token = signer.token("sam", role="sales", attributes={"region": "north"})
    assert jwt.get_unverified_header(token) == {"alg": algorithm, "typ": "JWT", "kid": "app-2026"}
    claims = jwt.decode(token, public, algorithms=[algorithm], options=UNCHECKED_TIMES)
    assert claims == {
        "sub": "sam",
        "role": "sales",
        "attributes": {"region": "north"},
        "iat": clock.now,
        "exp": clock.now + 120,
    }
    other, other_public = KEYS[algorithm]()
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, other_public, algorithms=[algorithm], options=UNCHECKED_TIMES)


def test_hs256_with_issuer_and_audience_and_no_role_claims_when_not_asserted():
    signer = EndUserSigner(SECRET, kid="k1", issuer="crm", audience="maschera")
    token = signer.token("tom")
    claims = jwt.decode(token, SECRET, algorithms=["HS256"], audience="maschera", issuer="crm")
    assert set(claims) == {"sub", "iat", "exp", "iss", "aud"}
    assert claims["sub"] == "tom" and claims["exp"] - claims["iat"] == 300
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, "another shared secret of 32 bytes or more", algorithms=["HS256"], audience="maschera")


def test_a_token_is_reused_until_a_quarter_of_its_lifetime_is_left():
    clock = Clock()
    signer = EndUserSigner(SECRET, kid="k1", lifetime=400, clock=clock)
    first = signer.token("sam", role="sales")
    clock.now += 299
    assert signer.token("sam", role="sales") == first
    assert signer.token("sam", role="support") != first, "another identity, another token"
    assert signer.token("sam", role="sales", attributes={"region": "north"}) != first
    clock.now += 1
    renewed = signer.token("sam", role="sales")
    assert renewed != first
    assert jwt.decode(renewed, SECRET, algorithms=["HS256"], options=UNCHECKED_TIMES)["iat"] == clock.now


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"lifetime": 3601}, "lifetime"),
        ({"lifetime": 0}, "lifetime"),
        ({"kid": ""}, "kid"),
        ({"algorithm": "none"}, "algorithm"),
        ({"algorithm": "HS512"}, "algorithm"),
        ({"key": ""}, "key"),
    ],
)
def test_a_signer_the_proxy_would_refuse_is_not_made(kwargs, message):
    arguments = {"key": SECRET, "kid": "k1", **kwargs}
    with pytest.raises(ValueError, match=message):
        EndUserSigner(**arguments)


def test_hs256_refuses_a_private_key_as_its_secret():
    private, _ = KEYS["EdDSA"]()
    with pytest.raises(ValueError, match="shared secret"):
        EndUserSigner(private, kid="k1", algorithm="HS256")


@pytest.mark.parametrize(
    "sub, role, attributes",
    [("", None, None), (None, None, None), ("sam", "", None), ("sam", None, {"region": 1})],
)
def test_identities_are_strings(sub, role, attributes):
    with pytest.raises(ValueError):
        EndUserSigner(SECRET, kid="k1").token(sub, role=role, attributes=attributes)


def test_set_statement_carries_only_a_compact_jwt():
    token = EndUserSigner(SECRET, kid="k1").token("sam")
    assert set_statement(token) == f"SET maschera.end_user = '{token}'"
    assert set_statement(token, local=True) == f"SET LOCAL maschera.end_user = '{token}'"
    for bad in ["", "a.b", "a.b.c'; DROP TABLE contacts; --", token + "\n", "a.b.c d", 42]:
        with pytest.raises(ValueError):
            set_statement(bad)


def test_set_config_statement_is_the_form_the_proxy_routes():
    assert set_config_statement() == "SELECT set_config('maschera.end_user', $1, true)"
    assert set_config_statement(":token", local=False) == "SELECT set_config('maschera.end_user', :token, false)"
