"""How long maschera-token takes to sign a token per algorithm, and to hand back a cached one (what
a user's second and later requests cost while the token lives). Usage: python bench_signing.py.
Not a test: it prints microseconds per token."""

import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from maschera_token import EndUserSigner


def pem(private):
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


KEYS = {
    "HS256": "a shared secret of at least 32 bytes",
    "EdDSA": pem(ed25519.Ed25519PrivateKey.generate()),
    "ES256": pem(ec.generate_private_key(ec.SECP256R1())),
    "RS256": pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
}

for algorithm, key in KEYS.items():
    signer = EndUserSigner(key, kid="bench", algorithm=algorithm)
    n = 300 if algorithm == "RS256" else 2000
    start = time.perf_counter()
    for i in range(n):
        signer.token(f"user{i}", role="sales", attributes={"region": "north"})
    fresh = (time.perf_counter() - start) / n * 1e6
    start = time.perf_counter()
    for _ in range(20000):
        signer.token("user1", role="sales", attributes={"region": "north"})
    cached = (time.perf_counter() - start) / 20000 * 1e6
    print(f"{algorithm}: signed {fresh:.0f} us/token, cached {cached:.1f} us/token")
