"""Drives the real CRM (DjangoCRM, django-crm-admin 1.7.0 from PyPI) for the e2e test `real_crm`.

    drive.py setup              migrations and the CRM's own reference data, one company, one lead
                                and the CRM user `sally` (a manager); run as an unrestricted user
    drive.py restricted         sally logs in and uses the CRM: its pages, a contact created, edited
                                and searched, a lead saved; run as a restricted user
    drive.py crawl              sally's view of every list page of the CRM (status counts)
    drive.py leads              the lead as the ORM reads it (restricted: masked)
    drive.py migrate APP TARGET  Django's migrate to a migration of one app (`zero`, a name, or the
                                latest with `latest`)
    drive.py suite LABEL...     a named part of the CRM's own test suite (Django's test runner, which
                                creates and drops test_<db>); one line per test

Prints one `op<TAB>outcome<TAB>detail` line per operation (outcome: pass, refused with the SQLSTATE
first in the detail, fail, or broken for anything else) and `done` at the end. The database comes from
the environment (see realcrm_settings.py). Not for: assertions (the Rust test holds the expectations).
"""

import os
import sys
import time
import traceback

SALLY_PASSWORD = "Sally-CRM-p4ss!"


def out(op, outcome, detail=""):
    detail = " ".join(str(detail).split())[:300]
    print(f"{op}\t{outcome}\t{detail}", flush=True)


def sqlstate_of(err):
    """The SQLSTATE of a database error anywhere in an exception's chain, or None."""
    seen = 0
    while err is not None and seen < 10:
        state = getattr(err, "sqlstate", None)
        if state:
            return state
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def attempt(op, fn):
    """Runs fn(); prints pass (with its detail), refused (SQLSTATE) or broken."""
    try:
        detail = fn()
        out(op, "pass", detail if detail is not None else "")
    except AssertionError as err:
        out(op, "fail", err)
    except Exception as err:  # noqa: BLE001  (every client failure is reported, not raised)
        state = sqlstate_of(err)
        if state:
            out(op, "refused", f"{state} {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
        else:
            out(op, "broken", f"{type(err).__name__}: {err} {traceback.format_exc(limit=3)}")


def setup_django(testing=False):
    import crm

    os.chdir(os.path.dirname(os.path.dirname(crm.__file__)))  # the CRM reads tests/fixtures, media/
    sys.argv = ["manage.py", "test"] if testing else ["manage.py"]
    os.environ["DJANGO_SETTINGS_MODULE"] = "realcrm_settings"
    import django

    django.setup()


def setup():
    setup_django()
    from django.contrib.auth.models import Group, User
    from django.core.management import call_command

    def migrate():
        started = time.monotonic()
        call_command("migrate", verbosity=0, interactive=False)
        from django.db.migrations.recorder import MigrationRecorder

        applied = MigrationRecorder.Migration.objects.count()
        return f"{applied} migrations in {time.monotonic() - started:.1f}s"

    attempt("migrate", migrate)

    def reference_data():
        call_command(
            "loaddata", "country.json", "currency.json", "groups.json", "resolution.json",
            "department.json", "deal_stage.json", "projectstage.json", "taskstage.json",
            "client_type.json", "closing_reason.json", "industry.json", "lead_source.json",
            "publicemaildomain.json", "sites.json", "reminders.json", "massmailsettings.json",
            verbosity=0,
        )
        return "loaded"

    attempt("reference_data", reference_data)

    def users_and_rows():
        from crm.models import Company, Lead

        sally = User.objects.create_user(
            "sally", email="sally.manager@example.org", password=SALLY_PASSWORD,
            first_name="Sally", last_name="Manager", is_staff=True,
        )
        department = Group.objects.get(name="Global sales")
        sally.groups.add(Group.objects.get(name="managers"), department)
        company = Company.objects.create(
            full_name="Acme Trading", email="office@acme.example", phone="+390612345678",
            owner=sally, department=department,
        )
        Lead.objects.create(
            first_name="Marco", last_name="Rossi", email="marco.rossi@example.org",
            phone="+39061234958", birth_date="1984-07-19", company_name="Rossi srl",
            owner=sally, department=department,
        )
        # The admin's history (django_admin_log): one entry of sally's, one of another user's.
        from django.contrib.admin.models import CHANGE, LogEntry
        from django.contrib.contenttypes.models import ContentType

        bob = User.objects.create_user("bob", email="bob@example.org", password=SALLY_PASSWORD + "b")
        # Sally's names an inline contact with its e-mail, as Django's change messages do.
        sallys_change = (
            '[{"changed": {"name": "contact", "object": "Marco Rossi <marco.rossi@example.org>", '
            '"fields": ["Email"]}}]'
        )
        for user, name, change in [
            (sally, "Acme Trading", sallys_change), (bob, "Bob's prospect Anna Verdi", "[]"),
        ]:
            LogEntry.objects.create(
                user=user, content_type=ContentType.objects.get_for_model(Company),
                object_id=str(company.id), object_repr=name, action_flag=CHANGE,
                change_message=change,
            )
        return f"sally, bob, company {company.id}, one lead, two history entries"

    attempt("users_and_rows", users_and_rows)


def restricted():
    setup_django()
    from django.test import Client
    from django.urls import reverse

    client = Client(HTTP_HOST="localhost")
    def login():
        assert client.login(username="sally", password=SALLY_PASSWORD), "login refused"
        return "logged in"

    attempt("login", login)

    def page(name, must_contain=()):
        def get():
            response = client.get(reverse(name), follow=True)
            assert response.status_code == 200, f"HTTP {response.status_code}"
            body = response.content.decode()
            for text in must_contain:
                assert text in body, f"{text!r} not on the page"
            return f"HTTP 200, {len(body)} bytes"
        return get

    for name in ["site:crm_company_changelist", "site:crm_contact_changelist", "site:crm_deal_changelist",
                 "site:crm_request_changelist", "site:crm_crmemail_changelist",
                 "site:tasks_task_changelist", "site:tasks_memo_changelist"]:
        attempt(f"page:{name.split(':')[1]}", page(name))
    attempt("page:lead_list_masked", page("site:crm_lead_changelist", ["Rossi"]))

    from crm.models import Company, Contact, Lead
    from django.contrib.auth.models import User

    state = {}

    def create():
        sally = User.objects.get(username="sally")
        contact = Contact.objects.create(
            first_name="Giulia", last_name="Bianchi", email="giulia.bianchi@example.org",
            phone="+390255501234", company=Company.objects.get(full_name="Acme Trading"),
            owner=sally, department=sally.groups.get(name="Global sales"),
        )
        state["id"] = contact.id
        return f"contact {contact.id}"

    attempt("contact_create", create)

    def edit():
        contact = Contact.objects.get(id=state["id"])
        contact.title = "Purchasing manager"
        contact.save()  # a full-model save: every column
        assert Contact.objects.get(id=state["id"]).title == "Purchasing manager"
        return "saved"

    attempt("contact_edit", edit)

    def search():
        response = client.get(reverse("site:crm_contact_changelist") + "?q=Bianchi", follow=True)
        assert response.status_code == 200, f"HTTP {response.status_code}"
        assert "Bianchi" in response.content.decode(), "the contact is not in the search result"
        return "found"

    attempt("contact_search", search)
    attempt("contact_page", lambda: _change_page(client, reverse, "site:crm_contact_change", state["id"], "Bianchi"))

    def history():
        from django.contrib.admin.models import LogEntry

        entries = LogEntry.objects.select_related("user").order_by("id")
        return "; ".join(f"{e.user.username}: {e.object_repr} {e.change_message}" for e in entries)

    attempt("history", history)

    def framework_tables():
        # Over the sales account (default): users readable without their hashes, framework tables
        # not writable. (The login itself ran over the CRM's own account: realcrm_auth.py.)
        from django.contrib.auth.models import User
        from django.db import connection, transaction

        sally = User.objects.get(username="sally")
        outcomes = []
        for sql in [
            "UPDATE auth_user SET is_superuser = true WHERE username = 'sally'",
            "INSERT INTO auth_permission (name, content_type_id, codename) VALUES ('x', 1, 'x')",
            "DELETE FROM django_migrations",
        ]:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(sql)
                outcomes.append("accepted")
            except Exception as err:  # noqa: BLE001  (the SQLSTATE is the outcome)
                outcomes.append(str(sqlstate_of(err)))
        hash_seen = "none" if sally.password is None else "readable"
        return f"hash={hash_seen} writes={','.join(outcomes)} staff={sally.is_staff}"

    attempt("framework_tables", framework_tables)

    attempt("lead_read", lead_read)

    def edit_on_page(name, object_id, model, check):
        # The CRM's change form, posted back with its own initial values and one field changed, the
        # way the CRM's own tests do it (tests.utils.helpers.get_adminform_initials).
        from tests.utils.helpers import get_adminform_initials

        url = reverse(name, args=(object_id,))
        data = get_adminform_initials(client.get(url, follow=True))
        data["description"] = "edited on the page"
        response = client.post(url, data, follow=True)
        assert response.status_code == 200, f"HTTP {response.status_code}"
        stored = model.objects.get(id=object_id)
        if not check(stored):
            context = response.context or {}
            form = context.get("adminform").form if context.get("adminform") else None
            errors = {field: list(e) for field, e in form.errors.items()} if form is not None else {}
            messages = [str(m) for m in context.get("messages", [])] if context else []
            for inline in (context.get("inline_admin_formsets") or []) if context else []:
                formset = inline.formset
                if formset.errors or formset.non_form_errors():
                    errors[formset.prefix] = [formset.errors, list(formset.non_form_errors())]
            if context and context.get("errors"):
                errors["all"] = [str(e) for e in context["errors"]]
            raise AssertionError(
                f"the change was not saved; form errors: {errors}; messages: {messages}; "
                f"redirects: {[url for url, _ in response.redirect_chain]}; "
                f"errors on the page: {_errors_on_page(response.content.decode())}"
            )
        return "saved"

    attempt("contact_page_edit", lambda: edit_on_page(
        "site:crm_contact_change", state["id"], Contact,
        lambda c: c.description == "edited on the page"))
    attempt("lead_page_edit", lambda: edit_on_page(
        "site:crm_lead_change", Lead.objects.get(last_name="Rossi").id, Lead,
        lambda c: c.description == "edited on the page"))

    def lead_save():
        lead = Lead.objects.get(last_name="Rossi")
        lead.description = "called back"
        lead.save()  # writes back the masked e-mail, phone and birth date
        return "saved"

    attempt("lead_save", lead_save)

    def lead_save_own_columns():
        lead = Lead.objects.get(last_name="Rossi")
        lead.description = "called back"
        lead.save(update_fields=["description", "update_date"])  # only columns shown as stored
        return "saved"

    attempt("lead_save_update_fields", lead_save_own_columns)
    attempt("lead_page", lambda: _change_page(
        client, reverse, "site:crm_lead_change", Lead.objects.get(last_name="Rossi").id, "m***@example.org"))


def crawl(client, reverse):
    """Every list page of the CRM's own admin site ("site"), as the CRM serves them to the logged-in
    user: the count of each HTTP status. Pages the CRM itself forbids (403, or a redirect) are counted
    apart; any other status but 200 fails."""
    from crm.site.crmadminsite import crm_site

    counts = {}
    bad = []
    for model in crm_site._registry:
        name = f"site:{model._meta.app_label}_{model._meta.model_name}_changelist"
        response = client.get(reverse(name))
        code = response.status_code
        counts[code] = counts.get(code, 0) + 1
        if code not in (200, 302, 403):
            bad.append(f"{model._meta.db_table}: HTTP {code}")
    assert not bad, ", ".join(bad)
    return " ".join(f"HTTP {code}: {n}" for code, n in sorted(counts.items()))


def crawl_only():
    setup_django()
    from django.test import Client
    from django.urls import reverse

    client = Client(HTTP_HOST="localhost")
    assert client.login(username="sally", password=SALLY_PASSWORD), "login refused"
    attempt("crawl", lambda: crawl(client, reverse))


def lead_read():
    from crm.models import Lead

    lead = Lead.objects.get(last_name="Rossi")
    return f"email={lead.email} phone={lead.phone} birth_date={lead.birth_date}"


def leads():
    setup_django()
    attempt("lead_read", lead_read)


def migrate_app(app, target):
    setup_django()
    from django.core.management import call_command

    args = [app] if target == "latest" else [app, target]
    attempt(f"migrate:{app}:{target}", lambda: call_command(
        "migrate", *args, verbosity=0, interactive=False))


def _errors_on_page(html):
    """The error texts an admin page shows (errornote, errorlist items), tags stripped."""
    import re

    found = re.findall(r'class="errornote"[^>]*>(.*?)</p>', html, re.S)
    for block in re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', html, re.S):
        found += re.findall(r"<li>(.*?)</li>", block, re.S)
    return [" ".join(re.sub(r"<[^>]+>", " ", text).split()) for text in found]


def _change_page(client, reverse, name, object_id, text):
    response = client.get(reverse(name, args=(object_id,)), follow=True)
    assert response.status_code == 200, f"HTTP {response.status_code}"
    assert text in response.content.decode(), f"{text!r} not on the page"
    return "HTTP 200"


def suite(labels):
    setup_django(testing=True)
    import unittest

    from django.test.runner import DiscoverRunner

    def ids(tests):
        for test in tests:
            if isinstance(test, unittest.TestSuite):
                yield from ids(test)
            else:
                yield test.id()

    class Runner(DiscoverRunner):
        def run_suite(self, test_suite, **kwargs):
            test_ids = list(ids(test_suite))  # running the suite empties it
            result = unittest.TestResult()
            test_suite.run(result)
            bad = {}
            for test, _ in result.failures:
                bad[test.id()] = "fail"
            for test, _ in result.errors:
                bad[test.id()] = "error"
            for test, _ in result.skipped:
                bad[test.id()] = "skip"

            for test_id in test_ids:
                out(f"test:{test_id}", bad.get(test_id, "pass"))
            return result

    started = time.monotonic()
    Runner(verbosity=0, interactive=False).run_tests(labels)
    out("suite", "pass", f"{time.monotonic() - started:.1f}s")


def main():
    step = sys.argv[1] if len(sys.argv) > 1 else ""
    labels = sys.argv[2:]
    if step == "setup":
        setup()
    elif step == "restricted":
        restricted()
    elif step == "crawl":
        crawl_only()
    elif step == "leads":
        leads()
    elif step == "migrate":
        migrate_app(*labels)
    elif step == "suite":
        suite(labels)
    else:
        print(__doc__)
        sys.exit(2)
    print("done", flush=True)


if __name__ == "__main__":
    main()
