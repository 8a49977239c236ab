"""Writes the key pairs the integrations' e2e test signs end-user tokens with: Ed25519 (Django),
P-256 (SQLAlchemy, ES256) and RSA (node-postgres, RS256), PKCS#8 private keys and SubjectPublicKeyInfo public keys, in PEM.
Usage: python keys.py DIR."""

import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

out = sys.argv[1]
for name, private in [("ed25519", ed25519.Ed25519PrivateKey.generate()),
                      ("p256", ec.generate_private_key(ec.SECP256R1())),
                      ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))]:
    with open(os.path.join(out, f"{name}.pem"), "wb") as file:
        file.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
    with open(os.path.join(out, f"{name}.pub.pem"), "wb") as file:
        file.write(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
print("done")
