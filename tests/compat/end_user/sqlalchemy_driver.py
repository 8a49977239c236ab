"""SQLAlchemy 2 + psycopg 3 sessions as end users sam and tom through Maschera's application login,
with maschera_sqlalchemy.EndUsers (ES256). Usage: python sqlalchemy_driver.py URI SAM TOM KEY KID:
URI the application login (through Maschera), SAM and TOM the users' own logins (to compare), KEY
the PEM private key, KID its name. One pooled connection serves every session, alternating end
users, each query repeated past psycopg's prepare threshold (the integration turns psycopg's automatic
preparing off on connections serving end users: Maschera refuses a statement prepared for one end
user when executed for another). Prints one outcome line per operation."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy import orm  # noqa: E402

from maschera_sqlalchemy import INFO_KEY, EndUsers  # noqa: E402
from maschera_token import EndUserSigner  # noqa: E402
from outcome import run  # noqa: E402

URI, SAM, TOM, KEY, KID = sys.argv[1:6]
DB_ERRORS = (sa.exc.DBAPIError, psycopg.Error)
COLUMNS = "id, first_name, last_name, email, phone, city, region"


class Base(orm.DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "contacts"
    id = sa.Column(sa.BigInteger, primary_key=True)
    first_name = sa.Column(sa.Text)
    last_name = sa.Column(sa.Text)
    email = sa.Column(sa.Text)
    phone = sa.Column(sa.Text)
    city = sa.Column(sa.Text)
    region = sa.Column(sa.Text)


class Ticket(Base):
    __tablename__ = "tickets"
    id = sa.Column(sa.BigInteger, primary_key=True)
    contact_id = sa.Column(sa.BigInteger)
    subject = sa.Column(sa.Text)
    body = sa.Column(sa.Text)
    status = sa.Column(sa.Text)


def url(uri):
    return "postgresql+psycopg://" + uri.split("://", 1)[1]


engine = sa.create_engine(url(URI), pool_size=1, max_overflow=0)
Session = orm.sessionmaker(engine)
with open(KEY, encoding="utf-8") as file:
    PEM = file.read()
end_users = EndUsers(EndUserSigner(PEM, kid=KID, algorithm="ES256", issuer="crm"))
end_users.install(Session)
# Tokens the proxy refuses, on sessions of their own over the same pool: expired (signed two hours
# ago), and of another issuer.
expired = EndUsers(EndUserSigner(PEM, kid=KID, algorithm="ES256", issuer="crm", clock=lambda: time.time() - 7200))
other_issuer = EndUsers(EndUserSigner(PEM, kid=KID, algorithm="ES256", issuer="erp"))
SESSIONS = {id(end_users): Session}
for bad in (expired, other_issuer):
    SESSIONS[id(bad)] = orm.sessionmaker(engine)
    bad.install(SESSIONS[id(bad)])

ROWS = sa.select(Contact.id, Contact.first_name, Contact.last_name, Contact.email, Contact.phone,
                 Contact.city, Contact.region).order_by(Contact.id).limit(20)
REGIONS = sa.select(Contact.region).distinct().order_by(Contact.region)


def as_text(rows):
    return [[str(value) for value in row] for row in rows]


def direct_rows(uri):
    with psycopg.connect(uri) as conn:
        return as_text(conn.execute(f"SELECT {COLUMNS} FROM contacts ORDER BY id LIMIT 20").fetchall())


def no_end_user():
    with Session() as session:
        return session.execute(ROWS).all()


seen = {"sam": [], "tom": []}
backends = set()


def alternate():
    for _ in range(7):  # past psycopg's prepare_threshold (5)
        for name in ("sam", "tom"):
            # Session.begin(): committed at the end (the pool then skips its reset ROLLBACK, which
            # would make psycopg forget what it prepared).
            with end_users.acting_for(name), Session.begin() as session:
                rows = as_text(session.execute(ROWS).all())
                regions = session.scalars(REGIONS).all()
                backends.add(id(session.connection().connection.dbapi_connection))
                seen[name].append((rows, regions))
    return f"sessions={sum(len(v) for v in seen.values())}"


def check(name, expected):
    same = all(rows == expected for rows, _ in seen[name]) and len(expected) == 20
    emails = [row[3] for rows, _ in seen[name] for row in rows]
    kind = "masked" if all("***@" in e for e in emails) else "clear" if all("***" not in e for e in emails) else "mixed"
    return f"regions={seen[name][0][1]} same_as_own_login={same} emails={kind}"


def sam_update_own_region():
    with end_users.acting_for("sam"), Session() as session:
        contact = session.scalars(sa.select(Contact).where(Contact.region == "north").order_by(Contact.id).offset(1)).first()
        contact.city = "Torino-sam"
        session.commit()
        return f"city={session.get(Contact, contact.id).city}"


def sam_insert_other_region():
    with end_users.acting_for("sam"), Session() as session:
        session.add(Contact(id=710_001, first_name="Eve", last_name="South", email="eve2@example.it",
                            phone="+39 000 710001", city="Bari", region="south"))
        session.commit()


def tom_open_ticket():
    with Session(info={INFO_KEY: "tom"}) as session:
        session.add(Ticket(id=710_002, contact_id=1, subject="write to a@b.it", body="", status="open"))
        session.commit()
        return f"subject={session.get(Ticket, 710_002).subject}"


def tom_update_contact():
    with end_users.acting_for("tom"), Session() as session:
        session.execute(sa.update(Contact).where(Contact.id == 1).values(city="Roma"))
        session.commit()


def contacts_as(users, name, **claims):
    with users.acting_for(name, **claims), SESSIONS[id(users)]() as session:
        return f"regions={session.scalars(REGIONS).all()}"


if __name__ == "__main__":
    run("no_end_user", no_end_user, DB_ERRORS)
    expected = {"sam": direct_rows(SAM), "tom": direct_rows(TOM)}
    if run("alternate", alternate, DB_ERRORS):
        run("sam_contacts", lambda: check("sam", expected["sam"]))
        run("tom_contacts", lambda: check("tom", expected["tom"]))
    run("sam_update_own_region", sam_update_own_region, DB_ERRORS)
    run("sam_insert_other_region", sam_insert_other_region, DB_ERRORS)
    run("tom_open_ticket", tom_open_ticket, DB_ERRORS)
    run("tom_update_contact", tom_update_contact, DB_ERRORS)
    run("no_end_user_after", no_end_user, DB_ERRORS)
    run("expired_token", lambda: contacts_as(expired, "sam"), DB_ERRORS)
    run("other_issuer", lambda: contacts_as(other_issuer, "sam"), DB_ERRORS)
    run("role_not_allowed", lambda: contacts_as(end_users, "sam", role="dpo"), DB_ERRORS)
    run("attribute_not_allowed", lambda: contacts_as(end_users, "sam", attributes={"region": "south"}), DB_ERRORS)
    run("after_bad_tokens", lambda: contacts_as(end_users, "tom"), DB_ERRORS)
    run("one_connection", lambda: f"connections={len(backends)}")
    print("done")
