"""Drives a real application the project did not write, ihatemoney 7.2.1 from PyPI (Flask,
Flask-SQLAlchemy, Alembic through Flask-Migrate, SQLAlchemy-Continuum for its history), for the e2e
test `real_app`. The application runs in this process with Flask's test client: every page goes
through its own views, forms, ORM and migrations, only the HTTP socket is left out.

    drive.py setup       the application's start (Alembic migrations) and two projects made through
                         its pages: `eur-trip` (EUR) and `usd-team` (USD), members and bills
    drive.py dashboard   the application's start and the admin dashboard's list of projects
    drive.py restricted  the help desk's work through the admin dashboard: the projects list, a
                         project's bills, settings, history and statistics, a member and a bill
                         added, bills edited, a bill's deletion and a member's removal, a project
                         renamed through the ORM, the other desk's project
    drive.py suite NAME...  a named part of the application's own pytest suite (tests/ in its wheel)
                         on the database of TESTING_SQLALCHEMY_DATABASE_URI; one line per test

Prints one `op<TAB>outcome<TAB>detail` line per operation (outcome.py) and `done` at the end. The
database comes from the environment (ihatemoney_settings.cfg). Not for: assertions (the Rust test
holds the expectations).
"""

import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/compat: outcome.py

import outcome  # noqa: E402

ADMIN_PASSWORD = "help-desk-p4ss"


def app():
    from werkzeug.security import generate_password_hash

    os.environ["IHATEMONEY_SETTINGS_FILE_PATH"] = os.path.join(HERE, "ihatemoney_settings.cfg")
    os.environ["IHATEMONEY_ADMIN_HASH"] = generate_password_hash(ADMIN_PASSWORD)
    from ihatemoney.run import create_app

    # create_app runs the application's Alembic migrations (a no-op when at head) on every start.
    flask_app = create_app(instance_path=HERE)
    # A page's database error reaches the driver (reported with its SQLSTATE), not a bare HTTP 500.
    flask_app.config["PROPAGATE_EXCEPTIONS"] = True
    return flask_app


def run(op, fn):
    import sqlalchemy.exc

    return outcome.run(op, fn, db_errors=(sqlalchemy.exc.DBAPIError,))


def ok(response, what):
    assert response.status_code in (200, 302, 303), f"{what}: HTTP {response.status_code}"
    return response


def text(response):
    return response.get_data(as_text=True)


def setup():
    holder = {}

    def migrate():
        flask_app = app()
        holder["app"] = flask_app
        from ihatemoney.models import db

        with flask_app.app_context():
            version = db.session.execute(db.text("SELECT version_num FROM alembic_version")).scalar()
        return f"alembic at {version}"

    if not run("migrate", migrate):
        return
    flask_app = holder["app"]

    def projects():
        client = flask_app.test_client()
        for project_id, currency, email, members, bills in [
            (
                "eur-trip", "EUR", "marco.rossi@example.org", ["Marco Rossi", "Giulia Bianchi"],
                [("Dinner, call Marco on +39 061 234 5958", 60.0), ("Train tickets", 42.5)],
            ),
            (
                "usd-team", "USD", "anna.verdi@example.com", ["Anna Verdi", "Bob Stone"],
                [("Office lunch", 30.0)],
            ),
        ]:
            ok(client.post("/create", data={
                "name": project_id.replace("-", " ").title(), "id": project_id,
                "password": project_id + "-code", "contact_email": email,
                "default_currency": currency, "project_history": "y",
            }), f"create {project_id}")
            for member in members:
                ok(client.post(f"/{project_id}/members/add", data={"name": member, "weight": 1}),
                   f"member {member}")
            from ihatemoney.models import Project

            with flask_app.app_context():
                ids = [m.id for m in Project.query.get(project_id).members]
            for what, amount in bills:
                ok(client.post(f"/{project_id}/add", data={
                    "date": "2026-11-20", "what": what, "payer": ids[0], "payed_for": ids,
                    "bill_type": "Expense", "amount": amount, "original_currency": currency,
                    "external_link": "",
                }), f"bill {what}")
            client.post("/exit")
        with flask_app.app_context():
            counts = [
                Project.query.count(),
                sum(len(p.members) for p in Project.query.all()),
            ]
        return f"projects={counts[0]} members={counts[1]}"

    run("projects", projects)


def dashboard():
    """The application's start and its admin dashboard; the Flask app and a logged-in client, or
    None when it did not start."""
    holder = {}

    def start():
        holder["app"] = app()
        return "started"

    if not run("start", start):
        return None
    flask_app = holder["app"]
    client = flask_app.test_client()

    def admin_login():
        response = ok(client.post("/admin?goto=%2Fdashboard", data={"admin_password": ADMIN_PASSWORD}),
                      "admin")
        assert "/dashboard" in response.headers.get("Location", ""), "admin login refused"
        return "logged in"

    run("admin_login", admin_login)

    def projects():
        page = text(ok(client.get("/dashboard"), "dashboard"))
        shown = sorted(set(re.findall(r'href="/([a-z-]+)/"', page)))
        return "projects=" + ",".join(shown)

    run("dashboard", projects)
    return flask_app, client


def restricted():
    started = dashboard()
    if started is None:
        return
    flask_app, client = started

    def bills():
        page = text(ok(client.get("/eur-trip/"), "bills"))
        found = [w for w in ("Dinner, call Marco on [phone]", "Train tickets", "Marco Rossi")
                 if w in page]
        assert "234 5958" not in page, "a phone number in a bill's description"
        return "shown=" + "|".join(found)

    run("bills", bills)

    def project_settings():
        page = text(ok(client.get("/eur-trip/edit"), "settings"))
        emails = sorted(set(re.findall(r'value="([^"]*@[^"]*)"', page)))
        return "contact_email=" + ",".join(emails)

    run("project_settings", project_settings)

    for name, path in [("history", "/eur-trip/history"), ("statistics", "/eur-trip/statistics"),
                       ("settle", "/eur-trip/settle_bills"),
                       ("export", "/eur-trip/export/bills.json")]:
        run(f"page:{name}", lambda path=path: f"HTTP {ok(client.get(path), path).status_code}")

    from ihatemoney.models import Bill, Person, Project, db

    def member_ids():
        with flask_app.app_context():
            return [m.id for m in Project.query.get("eur-trip").active_members]

    def member_add():
        ok(client.post("/eur-trip/members/add", data={"name": "Luca Neri", "weight": 1}), "member")
        with flask_app.app_context():
            members = Project.query.get("eur-trip").active_members
            return "members=" + ",".join(sorted(m.name for m in members))

    run("member_add", member_add)

    def bill_add():
        ids = member_ids()
        ok(client.post("/eur-trip/add", data={
            "date": "2026-11-21", "what": "Museum, receipt to luca.neri@example.org",
            "payer": ids[0], "payed_for": ids, "bill_type": "Expense", "amount": 36,
            "original_currency": "EUR", "external_link": "",
        }), "add bill")
        with flask_app.app_context():
            bill = Bill.query.filter(Bill.amount == 36).order_by(Bill.id.desc()).first()
            return f"what={bill.what} owers={len(bill.owers)}"

    run("bill_add", bill_add)

    def bill_edit():
        ids = member_ids()
        with flask_app.app_context():
            bill = Bill.query.filter(Bill.what.like("Train%")).one()
            bill_id = bill.id
        ok(client.post(f"/eur-trip/edit/{bill_id}", data={
            "date": "2026-11-20", "what": "Train tickets", "payer": ids[1], "payed_for": ids[1:2],
            "bill_type": "Expense", "amount": 45, "original_currency": "EUR", "external_link": "",
        }), "edit bill")
        with flask_app.app_context():
            bill = db.session.get(Bill, bill_id)
            return f"amount={bill.amount:g} payer={bill.payer.name} owers={len(bill.owers)}"

    run("bill_edit", bill_edit)

    def bill_edit_masked():
        # The bill whose description the desk reads redacted, saved through its form unchanged
        # but for the amount: the redacted description is written back as read.
        ids = member_ids()
        with flask_app.app_context():
            bill = Bill.query.filter(Bill.what.like("Dinner%")).one()
            bill_id, what = bill.id, bill.what
        ok(client.post(f"/eur-trip/edit/{bill_id}", data={
            "date": "2026-11-20", "what": what, "payer": ids[0], "payed_for": ids[:2],
            "bill_type": "Expense", "amount": 61, "original_currency": "EUR", "external_link": "",
        }), "edit bill")
        with flask_app.app_context():
            bill = db.session.get(Bill, bill_id)
            return f"amount={bill.amount:g} what={bill.what}"

    run("bill_edit_masked", bill_edit_masked)

    def bill_delete():
        with flask_app.app_context():
            bill_id = Bill.query.filter(Bill.amount == 36).order_by(Bill.id.desc()).first().id
        ok(client.post(f"/eur-trip/delete/{bill_id}"), "delete bill")
        with flask_app.app_context():
            return f"left={Bill.query.count()}"

    run("bill_delete", bill_delete)

    def member_remove():
        # The application deletes a member without bills (Luca's bill is gone) and deactivates one
        # with bills.
        with flask_app.app_context():
            member_id = Person.query.filter(
                Person.name == "Luca Neri", Person.activated.is_(True)).one().id
        ok(client.post(f"/eur-trip/members/{member_id}/delete"), "remove member")
        with flask_app.app_context():
            person = db.session.get(Person, member_id)
            active = Person.query.filter(Person.activated.is_(True)).count()
            return f"kept={person is not None} active={active}"

    run("member_remove", member_remove)

    def project_rename():
        with flask_app.app_context():
            project = Project.query.get("eur-trip")
            project.name = "Eur Trip 2026"
            db.session.commit()
            project = Project.query.get("eur-trip")
            return f"name={project.name} contact_email={project.contact_email}"

    run("project_rename", project_rename)

    def other_desk():
        response = client.get("/usd-team/")
        with flask_app.app_context():
            hidden = Project.query.get("usd-team") is None and not Person.query.filter(
                Person.name == "Anna Verdi").all()
        return f"HTTP {response.status_code} hidden={hidden}"

    run("other_desk", other_desk)


def suite(names):
    import ihatemoney
    import pytest

    tests = os.path.join(os.path.dirname(ihatemoney.__file__), "tests")

    lines = sys.stdout  # pytest's own report goes to stderr: stdout holds the outcome lines only

    class Report:
        def pytest_runtest_logreport(self, report):
            if report.when == "call" or report.outcome != "passed":
                name = report.nodeid.split("::", 1)[-1]
                print(f"test:{name}\t{report.outcome}\t", file=lines, flush=True)

    uri = "postgresql+psycopg2://{}:{}@{}:{}/{}".format(
        os.environ["MASCHERA_DB_USER"], os.environ["MASCHERA_DB_PASSWORD"],
        os.environ["MASCHERA_DB_HOST"], os.environ["MASCHERA_DB_PORT"], os.environ["MASCHERA_DB_NAME"])
    os.environ["TESTING_SQLALCHEMY_DATABASE_URI"] = uri
    os.environ.pop("IHATEMONEY_SETTINGS_FILE_PATH", None)
    targets = [os.path.join(tests, name) for name in names]
    sys.stdout = sys.stderr
    code = pytest.main(["-q", "-p", "no:cacheprovider", "-o", "addopts=", *targets],
                       plugins=[Report()])
    sys.stdout = lines
    print(f"suite\tpass\texit {int(code)}", flush=True)


def main():
    command, args = sys.argv[1], sys.argv[2:]
    if command == "suite":
        suite(args)
    else:
        {"setup": setup, "dashboard": dashboard, "restricted": restricted}[command]()
    print("done", flush=True)


if __name__ == "__main__":
    main()
