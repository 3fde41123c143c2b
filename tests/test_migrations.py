"""The migrated schema equals the models, and every revision upgrades and downgrades."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.orm import Session

from tests.conftest import create_postgres_schema, drop_postgres_schema, postgres_base_url
from tests.support.backends import missing_backend
from vault import schema
from vault.db import make_engine
from vault.models import AuditEventContext, Base
from vault.services import audit_chain


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'migrations.db'}")
        yield engine
        engine.dispose()
        return
    base_url = postgres_base_url()
    if base_url is None:
        missing_backend("PostgreSQL: set VAULT_TEST_DATABASE_URL")
    name, url = create_postgres_schema(base_url, "vault_migrations")
    engine = make_engine(url)
    yield engine
    engine.dispose()
    drop_postgres_schema(base_url, name)


def test_head_matches_models(empty_engine: Engine) -> None:
    schema.upgrade(empty_engine)
    with empty_engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
    assert schema.current_revision(empty_engine) == schema.head_revision()


def test_every_revision_upgrades_and_downgrades(empty_engine: Engine) -> None:
    revisions = schema.revisions_base_to_head()
    assert revisions, "there must be at least one migration"
    for revision in revisions:
        schema.upgrade(empty_engine, revision)
        assert schema.current_revision(empty_engine) == revision
    for revision in reversed(revisions[:-1]):
        schema.downgrade(empty_engine, revision)
        assert schema.current_revision(empty_engine) == revision
    schema.downgrade(empty_engine, "base")
    remaining = set(inspect(empty_engine).get_table_names()) - {"alembic_version"}
    assert remaining == set()
    schema.upgrade(empty_engine)
    assert schema.current_revision(empty_engine) == schema.head_revision()


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        with engine.connect() as connection:
            journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            timeout = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
            foreign_keys = connection.exec_driver_sql("PRAGMA foreign_keys").scalar()
    finally:
        engine.dispose()
    assert journal == "wal"
    assert timeout is not None and int(timeout) >= 5000
    assert foreign_keys == 1


def test_request_texts_already_in_audit_events_move_to_the_erasable_table(
    empty_engine: Engine,
) -> None:
    schema.upgrade(empty_engine, "0008")
    with empty_engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO audit_events (occurred_at, action, outcome, details) VALUES "
                "(:at, 'recording:restricted', 'success', :details)"
            ),
            {"at": datetime(2026, 11, 1, tzinfo=UTC), "details": json.dumps({"request": "Ozols"})},
        )
    schema.upgrade(empty_engine)
    with empty_engine.connect() as connection:
        details = connection.execute(text("SELECT details FROM audit_events")).scalar_one()
        kept = connection.execute(text("SELECT request_text FROM audit_event_context")).scalar_one()
    loaded = json.loads(details) if isinstance(details, str) else details
    assert loaded == {"request_text_kept_apart": True}
    assert kept == "Ozols"


def test_events_written_before_the_chain_are_chained_in_order(empty_engine: Engine) -> None:
    schema.upgrade(empty_engine, "0010")
    with empty_engine.begin() as connection:
        for minute, address in ((1, "192.0.2.1"), (2, None), (3, "192.0.2.3")):
            event_id = connection.execute(
                text(
                    "INSERT INTO audit_events (occurred_at, action, outcome, details) VALUES "
                    "(:at, 'auth:login_succeeded', 'success', :details) RETURNING id"
                ),
                {"at": datetime(2026, 11, 1, 8, minute, tzinfo=UTC), "details": "{}"},
            ).scalar_one()
            if address:
                connection.execute(
                    text("INSERT INTO audit_event_context (event_id, ip_address) VALUES (:i, :a)"),
                    {"i": event_id, "a": address},
                )
    schema.upgrade(empty_engine)
    with Session(empty_engine) as session:
        verdict = audit_chain.verify(session)
        kept = session.scalars(
            select(AuditEventContext.ip_address).order_by(AuditEventContext.event_id)
        ).all()
    assert verdict.intact and verdict.count == 3
    assert kept == ["192.0.2.1", "192.0.2.3"]
