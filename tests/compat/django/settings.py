"""Django settings for the compatibility suite: one database, the reference CRM through Maschera,
given by the environment (MASCHERA_DB_HOST, _PORT, _USER, _PASSWORD, _NAME)."""

import os

SECRET_KEY = "compat-suite-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "crmapp",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ["MASCHERA_DB_HOST"],
        "PORT": os.environ["MASCHERA_DB_PORT"],
        "USER": os.environ["MASCHERA_DB_USER"],
        "PASSWORD": os.environ["MASCHERA_DB_PASSWORD"],
        "NAME": os.environ["MASCHERA_DB_NAME"],
        "OPTIONS": {"connect_timeout": 30},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
