"""Shared by the Django client scripts: the database of a postgres:// URI put in the environment the
settings modules read (MASCHERA_DB_HOST, _PORT, _USER, _PASSWORD, _NAME), with the settings module."""

import os
from urllib.parse import unquote, urlparse


def use_database(uri, settings_module):
    parts = urlparse(uri)
    os.environ.update(
        DJANGO_SETTINGS_MODULE=settings_module,
        MASCHERA_DB_HOST=parts.hostname,
        MASCHERA_DB_PORT=str(parts.port),
        MASCHERA_DB_USER=unquote(parts.username),
        MASCHERA_DB_PASSWORD=unquote(parts.password or ""),
        MASCHERA_DB_NAME=parts.path.lstrip("/"),
    )
