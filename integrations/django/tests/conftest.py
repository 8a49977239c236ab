"""Django configured for the middleware's tests: one database, the PostgreSQL named by
MASCHERA_TEST_POSTGRES (a postgresql:// URI; the e2e test end_user_integrations starts one), with
persistent connections. Without it the tests are skipped."""

import os
from urllib.parse import unquote, urlparse

import django
import pytest
from django.conf import settings

URI = os.environ.get("MASCHERA_TEST_POSTGRES")
SECRET = "a shared secret of at least 32 bytes"

if URI and not settings.configured:
    _u = urlparse(URI)
    settings.configure(
        SECRET_KEY="middleware-tests-not-secret",
        USE_TZ=True,
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "HOST": _u.hostname,
                "PORT": str(_u.port or 5432),
                "USER": unquote(_u.username or ""),
                "PASSWORD": unquote(_u.password or ""),
                "NAME": _u.path.lstrip("/") or "postgres",
                "CONN_MAX_AGE": None,
            }
        },
        MASCHERA_END_USER={"KEY": SECRET, "KID": "k1", "ALGORITHM": "HS256", "LIFETIME": 600},
    )
    django.setup()


def pytest_collection_modifyitems(config, items):
    if not URI:
        skip = pytest.mark.skip(reason="MASCHERA_TEST_POSTGRES is not set")
        for item in items:
            item.add_marker(skip)
