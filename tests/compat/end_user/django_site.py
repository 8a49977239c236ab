"""Settings of a small Django site over the reference CRM's models (tests/compat/django/crmapp),
served through Maschera's application login with maschera_django.EndUserMiddleware; its views are
django_urls.py. The database and the signing key come from the environment (MASCHERA_DB_HOST, _PORT,
_USER, _PASSWORD, _NAME; MASCHERA_END_USER_KEY_FILE, MASCHERA_END_USER_KID)."""

import os

SECRET_KEY = "end-user-integrations-not-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["testserver"]
ROOT_URLCONF = "django_urls"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "crmapp",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "maschera_django.EndUserMiddleware",
]
# The login page a wrong password gets (the site has no template folder).
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "OPTIONS": {
            "loaders": [
                ("django.template.loaders.locmem.Loader", {"registration/login.html": "login {{ form.errors }}"})
            ]
        },
    }
]
# Quick hashing: the test is about the database, not the hash.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("MASCHERA_DB_HOST", ""),
        "PORT": os.environ.get("MASCHERA_DB_PORT", ""),
        "USER": os.environ.get("MASCHERA_DB_USER", ""),
        "PASSWORD": os.environ.get("MASCHERA_DB_PASSWORD", ""),
        "NAME": os.environ.get("MASCHERA_DB_NAME", ""),
        "CONN_MAX_AGE": None,  # one persistent connection for every request
        "OPTIONS": {"connect_timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
MASCHERA_END_USER = {
    "KEY_FILE": os.environ.get("MASCHERA_END_USER_KEY_FILE"),
    "KID": os.environ.get("MASCHERA_END_USER_KID", ""),
    "ALGORITHM": "EdDSA",
    "LIFETIME": 600,
    "ISSUER": "crm",
}
