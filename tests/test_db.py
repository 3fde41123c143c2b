"""The database engine's pool: a connection closed behind its back is never handed to an act."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.conftest import postgres_base_url
from tests.support.backends import missing_backend
from vault import db

pytestmark = pytest.mark.postgres

BACKEND_PID = text("SELECT pg_backend_pid()")


@pytest.fixture
def engine() -> Iterator[Engine]:
    base_url = postgres_base_url()
    if base_url is None:
        missing_backend("PostgreSQL (set VAULT_TEST_DATABASE_URL)")
    made = db.make_engine(base_url, pool_size=1, max_overflow=0)
    yield made
    made.dispose()


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        pid = connection.execute(BACKEND_PID).scalar_one()
    assert isinstance(pid, int)
    return pid


def test_an_idle_connection_closed_by_the_server_is_replaced_unseen(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = backend_pid(engine)
    base_url = postgres_base_url()
    assert base_url is not None
    killer = db.make_engine(base_url)
    try:
        with killer.connect() as connection:
            connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    finally:
        killer.dispose()
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert backend_pid(engine) != first


def test_a_connection_used_a_moment_ago_is_not_checked_again(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings: list[Any] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 3600.0)
    pid = backend_pid(engine)
    assert [backend_pid(engine) for _ in range(3)] == [pid] * 3
    assert pings == []
    monkeypatch.setattr(db, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert backend_pid(engine) == pid
    assert len(pings) == 1
