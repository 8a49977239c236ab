"""Settings of the database-routing test project: one database through Maschera, from the environment."""

import os

SECRET_KEY = "routing-test-not-secret"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "probe",
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
