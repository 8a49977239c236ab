"""EndUsers against a plain PostgreSQL (no proxy; PostgreSQL takes `maschera.end_user` as a custom
setting, so a query can read what the session event set): each Session transaction carries the
current end user's token, set before it began, and a pooled connection goes back without it. Needs MASCHERA_TEST_POSTGRES (a postgres://
URI; the e2e test end_user_integrations starts one), else skipped."""

import os

import jwt
import pytest
import sqlalchemy as sa
from sqlalchemy import orm

from maschera_sqlalchemy import INFO_KEY, EndUsers
from maschera_token import EndUserSigner

URI = os.environ.get("MASCHERA_TEST_POSTGRES")
SECRET = "a shared secret of at least 32 bytes"
pytestmark = pytest.mark.skipif(not URI, reason="MASCHERA_TEST_POSTGRES is not set")
SETTING = sa.text("SELECT current_setting('maschera.end_user', true)")


@pytest.fixture
def setup():
    url = "postgresql+psycopg://" + URI.split("://", 1)[1]
    engine = sa.create_engine(url, pool_size=1, max_overflow=0)
    Session = orm.sessionmaker(engine)
    end_users = EndUsers(EndUserSigner(SECRET, kid="k1"))
    end_users.install(Session)
    yield end_users, Session, engine
    engine.dispose()


def sub(token):
    return jwt.decode(token, SECRET, algorithms=["HS256"])["sub"] if token else token


def test_each_transaction_is_served_as_the_current_end_user_and_only_that_transaction(setup):
    end_users, Session, engine = setup
    with Session() as session:
        with end_users.acting_for("sam", role="sales", attributes={"region": "north"}):
            token = session.scalar(SETTING)
            session.commit()
        claims = jwt.decode(token, SECRET, algorithms=["HS256"])
        assert (claims["sub"], claims["role"], claims["attributes"]) == ("sam", "sales", {"region": "north"})
        assert session.scalar(SETTING) in ("", None), "a transaction begun without an end user has none"
        session.rollback()
        with end_users.acting_for("tom"):
            assert sub(session.scalar(SETTING)) == "tom"
            session.rollback()
            assert sub(session.scalar(SETTING)) == "tom", "set again in the next transaction"
    with engine.connect() as raw:
        assert raw.scalar(SETTING) in ("", None), "the pooled connection comes back without one"


def test_session_info_names_the_end_user(setup):
    end_users, Session, _ = setup
    with Session(info={INFO_KEY: "sara"}) as session:
        assert sub(session.scalar(SETTING)) == "sara"
    with Session(info={INFO_KEY: {"sub": "mia", "role": "marketing"}}) as session, end_users.acting_for("sam"):
        token = session.scalar(SETTING)
        assert jwt.decode(token, SECRET, algorithms=["HS256"])["role"] == "marketing"


def test_no_end_user_no_statement(setup):
    _, Session, _ = setup
    with Session() as session:
        assert session.scalar(SETTING) in ("", None)


def test_a_bad_identity_fails_when_made_current(setup):
    end_users, _, _ = setup
    with pytest.raises(ValueError):
        with end_users.acting_for(""):
            pass


def test_core_connections_set_it_explicitly(setup):
    end_users, _, engine = setup
    with engine.begin() as conn, end_users.acting_for("ana"):
        assert end_users.apply(conn)
        assert sub(conn.scalar(SETTING)) == "ana"
    with engine.begin() as conn:
        assert not end_users.apply(conn)
        assert conn.scalar(SETTING) in ("", None)


def test_it_is_set_before_the_transaction_begins(setup):
    """Set at session level before BEGIN (Maschera serves a transaction as the end user it began
    with): the transaction's rollback does not undo it, the connection's checkin does."""
    end_users, _, engine = setup
    with engine.connect() as conn:
        with end_users.acting_for("sam"):
            conn.begin()
            end_users.apply(conn)
            token = conn.scalar(SETTING)
            conn.rollback()
        assert sub(token) == "sam" and conn.scalar(SETTING) == token
    with engine.connect() as conn:
        assert conn.scalar(SETTING) in ("", None), "reset when it went back to the pool"


def test_setting_it_inside_a_transaction_is_refused(setup):
    end_users, _, engine = setup
    with engine.begin() as conn, end_users.acting_for("sam"):
        conn.scalar(sa.text("SELECT 1"))
        with pytest.raises(RuntimeError, match="before the transaction's first statement"):
            end_users.apply(conn)


def test_psycopg_prepares_nothing_on_a_connection_serving_end_users(setup):
    """Maschera refuses a statement prepared for one end user executed for another (26000)."""
    end_users, Session, _ = setup
    with Session() as session, end_users.acting_for("sam"):
        session.scalar(SETTING)
        dbapi = session.connection().connection.dbapi_connection
        assert dbapi.prepare_threshold is None
        for _ in range(8):
            session.scalar(sa.text("SELECT count(*) FROM pg_class WHERE relname = :n"), {"n": "x"})
        assert session.scalar(sa.text("SELECT count(*) FROM pg_prepared_statements")) == 0
