"""Settings of the database-routing test project: the compatibility suite's Django settings (one database
through Maschera, from the environment), with this project's `probe` app in place of the CRM models."""

import os
import runpy

_compat = runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "django", "settings.py"))
globals().update({name: value for name, value in _compat.items() if name.isupper()})

SECRET_KEY = "routing-test-not-secret"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "probe",
]
