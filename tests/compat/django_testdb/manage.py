#!/usr/bin/env python3
"""A minimal Django project for the database-routing test: `manage.py test` through Maschera must create
and use `test_<NAME>` and leave the real database alone. The connection comes from the environment
(MASCHERA_DB_HOST, _PORT, _USER, _PASSWORD, _NAME)."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
