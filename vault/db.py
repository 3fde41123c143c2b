"""Database engine and sessions. Imports only SQLAlchemy."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

# Concurrent gunicorn threads writing to SQLite wait this long for the write lock
# instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 15_000


def make_engine(database_url: str | URL, **engine_options: Any) -> Engine:
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
