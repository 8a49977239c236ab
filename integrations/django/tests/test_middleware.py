"""EndUserMiddleware against a plain PostgreSQL (no proxy; PostgreSQL takes `maschera.end_user` as
a custom setting, so a view can read what the middleware set): the token of request.user is set
before the view and reset after, on one persistent connection, whatever the view does."""

import jwt
import pytest

from conftest import SECRET


def claims_of(token):
    return jwt.decode(token, SECRET, algorithms=["HS256"])


def setting_and_backend():
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('maschera.end_user', true), pg_backend_pid()")
        return cursor.fetchone()


def serve(view, user, settings_override=None):
    """One request through the middleware as `user` (None: anonymous); what the view returned."""
    from django.contrib.auth.models import AnonymousUser, User
    from django.http import HttpResponse
    from django.test import RequestFactory, override_settings

    from maschera_django import EndUserMiddleware

    seen = {}

    def wrapped(request):
        seen["value"] = view(request)
        return HttpResponse("ok")

    request = RequestFactory().get("/")
    request.user = User(username=user) if user else AnonymousUser()
    with override_settings(**(settings_override or {})):
        EndUserMiddleware(wrapped)(request)
    return seen.get("value")


def test_alternating_users_on_one_persistent_connection_each_get_their_own_token():
    seen = [serve(lambda r: setting_and_backend(), user) for user in ["sam", "tom", "sam", "tom"]]
    assert [claims_of(token)["sub"] for token, _ in seen] == ["sam", "tom", "sam", "tom"]
    assert len({backend for _, backend in seen}) == 1, "one persistent connection"
    assert seen[0][0] == seen[2][0], "sam's token is reused while it lives"
    assert all("role" not in claims_of(token) for token, _ in seen)
    after, backend = setting_and_backend()
    assert after == "" and backend == seen[0][1], "reset after the request, connection kept"


def test_anonymous_requests_set_no_end_user():
    assert serve(lambda r: setting_and_backend(), None)[0] in ("", None)


def test_reset_after_a_view_that_raises():
    def failing(request):
        raise RuntimeError("view failed")

    with pytest.raises(RuntimeError):
        serve(failing, "sam")
    assert setting_and_backend()[0] == ""


def test_a_connection_opened_again_during_the_request_gets_the_token():
    from django.db import connection

    def reconnecting(request):
        before = setting_and_backend()
        connection.close()
        return before, setting_and_backend()

    (token, backend), (again, other_backend) = serve(reconnecting, "tom")
    assert other_backend != backend
    assert claims_of(token)["sub"] == "tom" and again == token
    assert setting_and_backend()[0] == ""


def test_a_connection_whose_reset_fails_is_closed_not_reused():
    from django.db import connection

    def leaves_a_failed_transaction(request):
        connection.set_autocommit(False)
        with connection.cursor() as cursor:
            try:
                cursor.execute("SELECT 1/0")
            except Exception:
                pass
        return setting_and_backend  # not called: the transaction is aborted

    serve(leaves_a_failed_transaction, "sam")
    assert connection.connection is None, "closed by the middleware"
    connection.set_autocommit(True)
    assert setting_and_backend()[0] in ("", None)


def role_from_group(user):
    if user.username == "nobody":
        return None
    return {"role": "sales", "attributes": {"region": "north"}}


def test_the_claims_hook_gives_role_and_attributes_or_no_end_user():
    hook = {
        "MASCHERA_END_USER": {
            "KEY": SECRET,
            "KID": "k1",
            "CLAIMS": "test_middleware.role_from_group",
        }
    }
    token, _ = serve(lambda r: setting_and_backend(), "sam", hook)
    claims = claims_of(token)
    assert (claims["sub"], claims["role"], claims["attributes"]) == ("sam", "sales", {"region": "north"})
    assert jwt.get_unverified_header(token)["kid"] == "k1"
    assert serve(lambda r: setting_and_backend(), "nobody", hook)[0] in ("", None)


@pytest.mark.parametrize(
    "config, message",
    [
        (None, "needs the MASCHERA_END_USER setting"),
        ({"KEY": SECRET}, "kid"),
        ({"KEY": SECRET, "KID": "k1", "LIFETIME": 7200}, "lifetime"),
        ({"KID": "k1"}, "key"),
    ],
)
def test_a_misconfiguration_is_refused_at_start(config, message):
    from django.core.exceptions import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=message):
        serve(lambda r: None, "sam", {"MASCHERA_END_USER": config})


def test_the_middleware_must_follow_authentication():
    from django.core.exceptions import ImproperlyConfigured
    from django.test import RequestFactory

    from maschera_django import EndUserMiddleware

    with pytest.raises(ImproperlyConfigured, match="AuthenticationMiddleware"):
        EndUserMiddleware(lambda r: None)(RequestFactory().get("/"))


def test_the_views_transactions_begin_after_the_end_user_is_set():
    """ATOMIC_REQUESTS or a view's own atomic blocks begin after the middleware's SET (Maschera
    serves a transaction as the end user it began with); their rollback does not undo it."""
    from django.db import connection, transaction

    def atomic_view(request):
        with transaction.atomic():
            inside = setting_and_backend()[0]
            transaction.set_rollback(True)
        return inside, setting_and_backend()[0], connection.get_autocommit()

    inside, after_rollback, autocommit = serve(atomic_view, "tom")
    assert claims_of(inside)["sub"] == "tom" and after_rollback == inside and autocommit
    assert setting_and_backend()[0] == ""
