"""A minimal PostgreSQL client (protocol 3.0, stdlib only): connect, log in with SCRAM-SHA-256, md5
or a cleartext password, wait for ReadyForQuery, and run a simple query. The benchmark uses it to hold
many idle logged-in connections open. Not for: results (rows are not decoded) or TLS."""

import base64
import hashlib
import hmac
import os
import socket
import struct

from .procs import BenchError

_salted_cache = {}


def _message(kind, payload):
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _read_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise BenchError("server closed the connection")
        buf += chunk
    return bytes(buf)


def _read_message(sock):
    header = _read_exact(sock, 5)
    length = struct.unpack("!I", header[1:])[0]
    return header[:1], _read_exact(sock, length - 4)


def _error_text(payload):
    fields = dict((f[:1], f[1:].decode(errors="replace")) for f in payload.split(b"\0") if f)
    return f"{fields.get(b'C', '?')}: {fields.get(b'M', '')}"


def _salted_password(password, salt, iterations):
    key = (password, salt, iterations)
    if key not in _salted_cache:
        _salted_cache[key] = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return _salted_cache[key]


def _scram(sock, user, password, mechanisms):
    if b"SCRAM-SHA-256" not in mechanisms:
        raise BenchError(f"server offers no SCRAM-SHA-256 ({mechanisms!r})")
    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = f"n=,r={nonce}"
    first = ("n,," + first_bare).encode()
    sock.sendall(
        _message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first)
    )
    kind, payload = _read_message(sock)
    if kind == b"E":
        raise BenchError(_error_text(payload))
    code = struct.unpack("!I", payload[:4])[0]
    if kind != b"R" or code != 11:
        raise BenchError(f"expected SASLContinue, got {kind!r} {code}")
    server_first = payload[4:].decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    salted = _salted_password(password, base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    final_bare = f"c=biws,r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{final_bare}".encode()
    signature = hmac.digest(stored_key, auth_message, "sha256")
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    final = f"{final_bare},p={base64.b64encode(proof).decode()}".encode()
    sock.sendall(_message(b"p", final))


def connect(port, user, password, database, host="127.0.0.1"):
    """A logged-in socket, ready for queries. Errors are BenchErrors with the server's message."""
    sock = socket.create_connection((host, port), timeout=60)
    try:
        params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
        body = struct.pack("!I", 196608) + params
        sock.sendall(struct.pack("!I", len(body) + 4) + body)
        while True:
            kind, payload = _read_message(sock)
            if kind == b"E":
                raise BenchError(_error_text(payload))
            if kind == b"R":
                code = struct.unpack("!I", payload[:4])[0]
                if code == 10:
                    _scram(sock, user, password, payload[4:].split(b"\0"))
                elif code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                    outer = hashlib.md5(inner + payload[4:8]).hexdigest().encode()
                    sock.sendall(_message(b"p", b"md5" + outer + b"\0"))
                elif code == 3:
                    sock.sendall(_message(b"p", password.encode() + b"\0"))
            elif kind == b"Z":
                return sock
    except BaseException:
        sock.close()
        raise


def simple_query(sock, sql):
    """Runs one statement with the simple protocol; returns the number of DataRows."""
    sock.sendall(_message(b"Q", sql.encode() + b"\0"))
    rows, error = 0, None
    while True:
        kind, payload = _read_message(sock)
        if kind == b"D":
            rows += 1
        elif kind == b"E":
            error = _error_text(payload)
        elif kind == b"Z":
            if error:
                raise BenchError(error)
            return rows
