from django.db import models


class Note(models.Model):
    """A table of the project's own: the real database has rows in it, the test database none."""

    text = models.CharField(max_length=200)

    class Meta:
        db_table = "probe_note"
