"""SQLAlchemy 2 + psycopg 3 against the reference CRM through Maschera: Core, ORM, reflection and
server-side cursors. Usage: python3 sqlalchemy_client.py URI USER. Prints one outcome line per
operation (see outcome.py); the Rust test decides which outcomes each user must get."""

import sys
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import orm

from outcome import run

URI, USER = sys.argv[1], sys.argv[2]
# Ids of the rows this script writes: far above the generated ones, different per user.
BASE_ID = {"dora": 900_000, "tom": 850_000}.get(USER, 800_000)
DB_ERRORS = (sa.exc.DBAPIError,)


class Base(orm.DeclarativeBase):
    pass


class Contact(Base):
    __tablename__ = "contacts"
    id = sa.Column(sa.BigInteger, primary_key=True)
    first_name = sa.Column(sa.Text, nullable=False)
    last_name = sa.Column(sa.Text, nullable=False)
    email = sa.Column(sa.Text, nullable=False)
    phone = sa.Column(sa.Text, nullable=False)
    birth_date = sa.Column(sa.Date)
    tax_code = sa.Column(sa.Text)
    street_address = sa.Column(sa.Text)
    city = sa.Column(sa.Text)
    region = sa.Column(sa.Text, nullable=False)
    created_at = sa.Column(sa.DateTime(timezone=True), server_default=sa.func.now())
    last_activity_at = sa.Column(sa.DateTime(timezone=True))
    deals = orm.relationship("Deal", back_populates="contact")


class WritableContact(Base):
    """The contact columns a sales representative may change (it sees the birth date and tax code
    masked: it may only write them back as read, or NULL in a new row)."""

    __table__ = Contact.__table__
    __mapper_args__ = {"exclude_properties": ["birth_date", "tax_code"]}


class Deal(Base):
    __tablename__ = "deals"
    id = sa.Column(sa.BigInteger, primary_key=True)
    contact_id = sa.Column(sa.BigInteger, sa.ForeignKey("contacts.id"), nullable=False)
    amount = sa.Column(sa.Numeric(12, 2), nullable=False)
    stage = sa.Column(sa.Text, nullable=False)
    created_at = sa.Column(sa.DateTime(timezone=True), server_default=sa.func.now())
    closed_at = sa.Column(sa.DateTime(timezone=True))
    contact = orm.relationship("Contact", back_populates="deals")


class Interaction(Base):
    __tablename__ = "interactions"
    id = sa.Column(sa.BigInteger, primary_key=True)
    contact_id = sa.Column(sa.BigInteger, sa.ForeignKey("contacts.id"), nullable=False)
    channel = sa.Column(sa.Text, nullable=False)
    notes = sa.Column(sa.Text)
    occurred_at = sa.Column(sa.DateTime(timezone=True), server_default=sa.func.now())


class Ticket(Base):
    __tablename__ = "tickets"
    id = sa.Column(sa.BigInteger, primary_key=True)
    contact_id = sa.Column(sa.BigInteger, nullable=False)
    subject = sa.Column(sa.Text, nullable=False)
    body = sa.Column(sa.Text)
    status = sa.Column(sa.Text, nullable=False)
    created_at = sa.Column(sa.DateTime(timezone=True), server_default=sa.func.now())


engine = sa.create_engine(URI.replace("postgres://", "postgresql+psycopg://", 1), pool_pre_ping=True)
Session = orm.sessionmaker(engine)


def connect():
    with engine.connect() as conn:
        return conn.execute(sa.text("select current_user")).scalar_one()


def core_select():
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Contact.__table__.c.id, Contact.__table__.c.email, Contact.__table__.c.tax_code)
            .where(Contact.__table__.c.id <= sa.bindparam("top"))
            .order_by(Contact.__table__.c.id),
            {"top": 5},
        ).all()
        return f"rows={len(rows)} tax_codes={[r.tax_code for r in rows][:2]}"


def reflect():
    inspector = sa.inspect(engine)
    tables = sorted(inspector.get_table_names() + inspector.get_view_names())
    columns = [c["name"] for c in inspector.get_columns("contacts")]
    return f"tables={','.join(tables)} contacts={','.join(columns)}"


def reflect_health():
    meta = sa.MetaData()
    try:
        table = sa.Table("health_records", meta, autoload_with=engine)
    except sa.exc.NoSuchTableError:
        return "absent"
    with engine.connect() as conn:
        return f"rows={conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()}"


def orm_list():
    with Session() as s:
        contacts = s.scalars(sa.select(Contact).order_by(Contact.id).limit(10)).all()
        return f"n={len(contacts)} regions={sorted({c.region for c in contacts})}"


def orm_filter():
    with Session() as s:
        n = s.scalar(
            sa.select(sa.func.count()).select_from(Contact).where(Contact.city.is_not(None), Contact.email.like("%@%"))
        )
        return f"count={n}"


def orm_paginate():
    with Session() as s:
        page2 = s.scalars(sa.select(Contact.id).order_by(Contact.id).limit(20).offset(20)).all()
        assert len(page2) == 20, page2
        return f"first={page2[0]}"


def orm_join():
    with Session() as s:
        rows = s.execute(
            sa.select(Contact.region, sa.func.count(Deal.id), sa.func.sum(Deal.amount))
            .join(Deal, Deal.contact_id == Contact.id)
            .group_by(Contact.region)
            .order_by(Contact.region)
        ).all()
        return f"regions={[r[0] for r in rows]}"


def orm_relationship():
    with Session() as s:
        contact = s.scalars(sa.select(Contact).join(Contact.deals).order_by(Contact.id).limit(1)).first()
        return f"deals={len(contact.deals)}"


def aggregates():
    with Session() as s:
        rows = s.execute(
            sa.select(Deal.stage, sa.func.count(), sa.func.avg(Deal.amount), sa.func.max(Deal.amount))
            .group_by(Deal.stage)
            .having(sa.func.count() > 0)
        ).all()
        return f"stages={len(rows)}"


def stream_results():
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, max_row_buffer=50).execute(
            sa.select(Contact.__table__.c.id).order_by(Contact.__table__.c.id)
        )
        n = sum(1 for _ in result)
        return f"streamed={n}"


def prepared_repeat():
    """psycopg prepares a statement on the server from its 5th execution (prepare_threshold)."""
    with engine.connect() as conn:
        stmt = sa.select(Contact.__table__.c.email).where(Contact.__table__.c.id == sa.bindparam("id"))
        found = sum(1 for i in range(1, 11) if conn.execute(stmt, {"id": i}).first() is not None)
        prepared = conn.execute(sa.text("select count(*) from pg_prepared_statements")).scalar_one()
        return f"found={found} server_prepared={prepared > 0}"


def yield_per():
    with Session() as s:
        n = 0
        for partition in s.scalars(sa.select(Interaction).execution_options(yield_per=40)).partitions():
            n += len(partition)
        return f"yielded={n}"


def create_full_model():
    """The full model writes NULL into every column it was not given, masked ones included: the
    table's defaults are stored (write-back)."""
    with Session.begin() as s:
        s.add(Contact(id=BASE_ID + 2, first_name="Full", last_name="Model", email=f"f{BASE_ID}@example.it",
                      phone=f"+39 006 {BASE_ID}", region="north"))
    with Session.begin() as s:
        s.delete(s.get(Contact, BASE_ID + 2))


def create():
    with Session.begin() as s:
        s.add(WritableContact(id=BASE_ID, first_name="Compat", last_name="Tester", email=f"compat{BASE_ID}@example.it",
                      phone=f"+39 000 {BASE_ID}", region="north", city="Torino"))
        s.flush()
        s.add(Deal(id=BASE_ID, contact_id=BASE_ID, amount=Decimal("12.50"), stage="open"))
        s.add(Interaction(id=BASE_ID, contact_id=BASE_ID, channel="call", notes="compat suite"))
    with Session() as s:
        return f"email={s.get(Contact, BASE_ID).email}"


def update():
    with Session.begin() as s:
        contact = s.get(Contact, BASE_ID)
        contact.city = "Genova"
        s.get(Deal, BASE_ID).stage = "won"
    with engine.begin() as conn:
        conn.execute(sa.update(Interaction.__table__).where(Interaction.__table__.c.id == BASE_ID).values(notes="edited"))
    with Session() as s:
        return f"city={s.get(Contact, BASE_ID).city}"


def rollback():
    with Session() as s:
        s.begin()
        s.get(Contact, BASE_ID).city = "Roma"
        nested = s.begin_nested()
        s.get(Deal, BASE_ID).stage = "lost"
        s.flush()
        nested.rollback()
        s.rollback()
    with Session() as s:
        return f"city={s.get(Contact, BASE_ID).city} stage={s.get(Deal, BASE_ID).stage}"


def delete():
    with Session.begin() as s:
        s.delete(s.get(Interaction, BASE_ID))
        s.delete(s.get(Deal, BASE_ID))
        s.flush()
        s.delete(s.get(Contact, BASE_ID))
    with Session() as s:
        return f"gone={s.get(Contact, BASE_ID) is None}"


def insert_other_region():
    with Session.begin() as s:
        s.add(WritableContact(id=BASE_ID + 1, first_name="Other", last_name="Region", email=f"o{BASE_ID}@example.it",
                      phone=f"+39 001 {BASE_ID}", region="south"))
    with Session.begin() as s:
        s.delete(s.get(WritableContact, BASE_ID + 1))


def update_masked_column():
    with engine.connect() as conn:
        conn.execute(sa.text("update contacts set tax_code = 'XXXXXXXXXXXXXXXX' where id = :id"), {"id": BASE_ID})


def update_write_back():
    """A save of every mapped column (as Django's save() does): the masked ones written back as read."""
    with Session.begin() as s:
        contact = s.scalars(
            sa.select(Contact).where(Contact.tax_code.is_not(None), Contact.birth_date.is_not(None))
            .order_by(Contact.id).limit(1)
        ).one()
        contact.last_activity_at = contact.created_at
        for column in ("first_name", "last_name", "email", "phone", "birth_date", "tax_code", "city"):
            orm.attributes.flag_modified(contact, column)
        s.flush()
        return f"tax={contact.tax_code} birth={contact.birth_date}"


def write_consents():
    with engine.begin() as conn:
        conn.execute(sa.text("update consents set source = source where id = 1"))


def select_health_records():
    with engine.connect() as conn:
        return f"n={conn.execute(sa.text('select count(*) from health_records')).scalar_one()}"


def support_ticket_save():
    """Support: a ticket added through the ORM, then saved with every mapped column (the redacted
    subject and body written back as read)."""
    with Session.begin() as s:
        s.add(Ticket(id=BASE_ID, contact_id=1, subject=f"mail me at s{BASE_ID}@example.it", body="or +39 333 7654321",
                     status="open"))
    with Session.begin() as s:
        ticket = s.get(Ticket, BASE_ID)
        ticket.status = "closed"
        for column in ("contact_id", "subject", "body"):
            orm.attributes.flag_modified(ticket, column)
    with Session() as s:
        ticket = s.get(Ticket, BASE_ID)
        return f"subject={ticket.subject} status={ticket.status}"


def support_ticket_changed():
    with Session.begin() as s:
        s.get(Ticket, BASE_ID).subject = "mail me at another@example.it"


SUPPORT_OPERATIONS = [
    ("support_ticket_save", support_ticket_save),
    ("support_ticket_changed", support_ticket_changed),
]

OPERATIONS = [
    ("connect", connect),
    ("core_select", core_select),
    ("reflect", reflect),
    ("orm_list", orm_list),
    ("orm_filter", orm_filter),
    ("orm_paginate", orm_paginate),
    ("orm_join", orm_join),
    ("orm_relationship", orm_relationship),
    ("aggregates", aggregates),
    ("stream_results", stream_results),
    ("yield_per", yield_per),
    ("prepared_repeat", prepared_repeat),
    ("create_full_model", create_full_model),
    ("create", create),
    ("update", update),
    ("rollback", rollback),
    ("update_masked_column", update_masked_column),
    ("update_write_back", update_write_back),
    ("delete", delete),
    ("insert_other_region", insert_other_region),
    ("write_consents", write_consents),
    ("select_health_records", select_health_records),
    ("reflect_health_records", reflect_health),
]

if __name__ == "__main__":
    for name, fn in (SUPPORT_OPERATIONS if USER == "tom" else OPERATIONS):
        run(name, fn, DB_ERRORS)
    engine.dispose()
    print("done")
