"""Drives django_site.py with Django's test Client. Usage:
  python django_driver.py setup URI           Django's tables (migrate) and its users sam and tom,
                                              straight into PostgreSQL as its owner;
  python django_driver.py serve URI SAM TOM   as the application login URI (through Maschera): the
                                              login flow of sam and tom over the application's own
                                              role, then their requests alternating on one
                                              persistent connection, compared with what sam and tom
                                              see through their own logins (URIs SAM and TOM).
Prints one outcome line per operation (see ../outcome.py)."""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "django"), os.path.dirname(HERE)]

COMMAND, URI = sys.argv[1], sys.argv[2]
from django_env import use_database  # noqa: E402

use_database(URI, "django_site")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.db import DatabaseError  # noqa: E402
from django.test import Client  # noqa: E402

from django_urls import COLUMNS  # noqa: E402
from outcome import run  # noqa: E402

PASSWORDS = {"sam": "sam-crm-password", "tom": "tom-crm-password"}
DB_ERRORS = (DatabaseError, psycopg.Error)


class Refused(Exception):
    """A refusal the site answered (the view caught the database's error)."""

    def __init__(self, body):
        super().__init__(body.get("message", ""))
        self.sqlstate = body["refused"]


def setup():
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    for name, password in PASSWORDS.items():
        User.objects.create_user(name, f"{name}@crm.example", password)
    return f"users={User.objects.count()}"


def get(client, url, connections):
    response = client.get(url)
    assert response.status_code == 200, f"{url}: HTTP {response.status_code}"
    body = json.loads(response.content)
    connections.add(body["connection"])
    if "refused" in body:
        raise Refused(body)
    return body["result"]


def direct_rows(uri):
    """What the user sees through their own login: the same columns and rows."""
    with psycopg.connect(uri) as conn:
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM contacts ORDER BY id LIMIT 20").fetchall()
    return [[str(value) for value in row] for row in rows]


def serve(sam_uri, tom_uri):
    connections = set()
    anonymous, clients = Client(), {"sam": Client(), "tom": Client()}
    run("anonymous_contacts", lambda: get(anonymous, "/contacts/", connections), DB_ERRORS + (Refused,))

    def login(name):
        response = clients[name].post("/login/", {"username": name, "password": PASSWORDS[name]})
        assert response.status_code == 302, f"login of {name}: HTTP {response.status_code}"
        return f"status={response.status_code}"

    def bad_login():
        response = Client().post("/login/", {"username": "sam", "password": "wrong"})
        return f"status={response.status_code}"

    run("login_sam", lambda: login("sam"), DB_ERRORS)
    run("login_tom", lambda: login("tom"), DB_ERRORS)
    run("login_wrong_password", bad_login, DB_ERRORS)

    expected = {"sam": direct_rows(sam_uri), "tom": direct_rows(tom_uri)}
    seen = {"sam": [], "tom": []}

    def alternate():
        for _ in range(6):
            for name in ("sam", "tom"):
                seen[name].append(get(clients[name], "/contacts/", connections))
        return f"requests={sum(len(v) for v in seen.values())}"

    run("alternate", alternate, DB_ERRORS + (Refused,))
    for name in ("sam", "tom"):
        def check(name=name):
            results = seen[name]
            same = all(r["rows"] == expected[name] for r in results) and len(expected[name]) == 20
            masked = all("***@" in row[3] for r in results for row in r["rows"])
            clear = all("***" not in row[3] and "@" in row[3] for r in results for row in r["rows"])
            return (f"regions={results[0]['regions']} same_as_own_login={same} "
                    f"emails={'masked' if masked else 'clear' if clear else 'mixed'}")
        run(f"{name}_contacts", check)

    errors = DB_ERRORS + (Refused,)
    run("sam_update_own_region", lambda: f"city={get(clients['sam'], '/update-own/', connections)}", errors)
    run("sam_insert_other_region", lambda: get(clients["sam"], "/insert-south/", connections), errors)
    run("sam_health_records", lambda: get(clients["sam"], "/health-records/", connections), errors)
    run("tom_open_ticket", lambda: f"subject={get(clients['tom'], '/open-ticket/', connections)}", errors)
    run("tom_update_contact", lambda: get(clients["tom"], "/update-contact/", connections), errors)
    run("anonymous_after", lambda: get(anonymous, "/contacts/", connections), errors)

    # Bad tokens: the request fails (it never runs as the application's own role), the connection
    # goes on serving the next request.
    def with_settings(name, **changes):
        from django.conf import settings
        from django.test import override_settings

        with override_settings(MASCHERA_END_USER={**settings.MASCHERA_END_USER, **changes}):
            client = Client()
            client.force_login(User.objects.get(username=name))
            return get(client, "/contacts/", connections)

    from django.contrib.auth.models import User

    run("unknown_key", lambda: with_settings("sam", KID="crm-unknown"), errors)
    run("role_not_allowed", lambda: with_settings("tom", CLAIMS="django_urls.as_dpo"), errors)
    run("after_bad_tokens", lambda: f"regions={get(clients['sam'], '/contacts/', connections)['regions']}", errors)
    run("one_connection", lambda: f"connections={len(connections)}")


if __name__ == "__main__":
    if COMMAND == "setup":
        run("setup", setup, DB_ERRORS)
    else:
        serve(sys.argv[3], sys.argv[4])
    print("done")
