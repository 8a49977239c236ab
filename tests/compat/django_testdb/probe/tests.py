"""What Django's test runner does to a database: it runs in `test_<NAME>`, writes, and flushes every
table after each TransactionTestCase. Routed anywhere else, it would empty that database."""

from django.contrib.auth.models import Group
from django.db import connection
from django.test import TestCase, TransactionTestCase

from .models import Note


def current_database():
    with connection.cursor() as cur:
        cur.execute("SELECT current_database()")
        return cur.fetchone()[0]


class RunsInTheTestDatabase(TransactionTestCase):
    def test_the_session_is_in_the_test_database(self):
        name = connection.settings_dict["NAME"]
        self.assertTrue(name.startswith("test_"), name)
        self.assertEqual(current_database(), name)

    def test_writes_start_from_an_empty_table_and_are_flushed(self):
        self.assertEqual(Note.objects.count(), 0)
        self.assertEqual(Group.objects.count(), 0)
        Note.objects.create(text="written by the test run")
        Group.objects.create(name="test-run")
        self.assertEqual(Note.objects.count(), 1)


class DeletesInATransaction(TestCase):
    def test_delete_everything(self):
        Note.objects.create(text="one more")
        Note.objects.all().delete()
        self.assertEqual(Note.objects.count(), 0)
