"""Database engine and sessions. Imports only SQLAlchemy."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker

# Concurrent gunicorn threads writing to SQLite wait this long for the write lock
# instead of failing at once with "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 15_000
# A pooled connection is checked with a round trip before use when it has been idle this
# long: one that sat unused may have been closed by a database restart or a network device
# on the way, while one in use a moment ago is as good as checked. Checking every time
# would cost a round trip per act on a busy server, where connections are never idle.
PING_AFTER_IDLE_SECONDS = 1.0


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
    engine = create_engine(url, **engine_options)
    _check_idle_connections(engine)
    return engine


def _check_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")  # none yet: a connection just opened
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool then discards it and hands out a new connection instead.
            raise DisconnectionError("the pooled connection was closed") from exc


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
