"""Django settings of the real CRM (DjangoCRM, django-crm-admin on PyPI) as the e2e test `real_crm` runs
it: the CRM's own settings, with PostgreSQL through Maschera (or directly) given by the environment
(MASCHERA_DB_HOST, _PORT, _USER, _PASSWORD, _NAME). Nothing else of the CRM is changed."""

import os

from webcrm.settings import *  # noqa: F401,F403  (the CRM's settings, unchanged)

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ["MASCHERA_DB_HOST"],
        "PORT": os.environ["MASCHERA_DB_PORT"],
        "USER": os.environ["MASCHERA_DB_USER"],
        "PASSWORD": os.environ.get("MASCHERA_DB_PASSWORD", ""),
        "NAME": os.environ["MASCHERA_DB_NAME"],
        "OPTIONS": {"connect_timeout": 30},
    }
}

# The CRM's login over the application's own account (realcrm_auth.py): set for a restricted account
# whose policy hides the password hashes and does not let it write users.
if os.environ.get("MASCHERA_AUTH_DB_USER"):
    DATABASES["auth"] = dict(
        DATABASES["default"],
        USER=os.environ["MASCHERA_AUTH_DB_USER"],
        PASSWORD=os.environ.get("MASCHERA_AUTH_DB_PASSWORD", ""),
    )
    AUTHENTICATION_BACKENDS = ["realcrm_auth.AuthDatabaseBackend"]
    DATABASE_ROUTERS = ["realcrm_auth.AuthRouter"]
