"""Database engine and sessions. Imports only SQLAlchemy."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

# Concurrent gunicorn threads writing to SQLite wait this long for the write lock
# instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 15_000


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant white space, UTF-8 as is.

    Integers are written exactly. The only fractional numbers in audit events are a player's
    reported seconds (tenths), written in their shortest round-trip form; NaN and the
    infinities have no JSON form and are refused.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def make_engine(database_url: str | URL, **engine_options: Any) -> Engine:
    # JSON columns are stored in canonical form: the audit chain hashes an event's details in
    # that form, so verification can hash the stored text as it is instead of parsing and
    # re-serialising every event (``audit_chain.stored_chain``).
    engine_options.setdefault("json_serializer", canonical_json)
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **engine_options,
        )
        event.listen(engine, "connect", _configure_sqlite_connection)
        return engine
    engine_options.setdefault("pool_pre_ping", True)
    return create_engine(url, **engine_options)


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (streams, pages) proceed while one writer commits;
    # foreign keys are off by default in SQLite and the schema relies on them.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)
