"""The retention purge of the audit log: whole ranges up to a signed checkpoint, recorded
before anything goes, after which the chain, the checkpoints and exports still verify; and
on PostgreSQL the one function that may delete events, which refuses any other range."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import delete, func, select
from sqlalchemy.exc import DBAPIError

from tests.support.audit_trail import append_events
from tests.support.clock import TestClock
from tests.support.console import Console
from vault.models import AuditCheckpoint, AuditEvent, AuditEventContext
from vault.services import audit_chain, audit_checkpoints, audit_retention
from vault.services.audit import AuditAction
from vault.services.audit_chain import Damage
from vault.services.runtime import Runtime

RETENTION_DAYS = 30


def later(runtime: Runtime, days: int = RETENTION_DAYS + 1) -> datetime:
    """An instant when every event recorded so far is past its retention, counted from the
    newest event's own time."""
    with runtime.sessions() as session:
        newest: datetime | None = session.scalar(select(func.max(AuditEvent.occurred_at)))
    assert newest is not None
    return newest.replace(tzinfo=newest.tzinfo or UTC) + timedelta(days=days)


def checkpoint(runtime: Runtime) -> audit_checkpoints.SignedCheckpoint:
    made = audit_checkpoints.checkpoint_now(runtime, runtime.clock())
    assert made is not None
    return made


def purge(runtime: Runtime, now: datetime) -> audit_retention.Purge | None:
    with runtime.sessions() as session, session.begin():
        return audit_retention.purge_expired(session, now, RETENTION_DAYS)


def first_seq(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.min(AuditEvent.seq))) or 0


def test_the_purge_stops_at_a_checkpoint_and_the_rest_still_verifies(
    runtime: Runtime, recvault: Console, tmp_path: Path
) -> None:
    append_events(runtime, 5, address="192.0.2.7")
    boundary = checkpoint(runtime)
    append_events(runtime, 3)
    assert purge(runtime, later(runtime, 0)) is None  # nothing is old enough yet

    done = purge(runtime, later(runtime))
    assert done is not None
    # Every event is past retention, but only ``boundary`` is a checkpoint to stop at.
    assert done.through_seq == boundary.tree_size
    assert first_seq(runtime) == boundary.tree_size + 1
    with runtime.sessions() as session:
        purged = session.scalars(
            select(AuditEvent).where(AuditEvent.action == AuditAction.AUDIT_PURGED.value)
        ).one()
        assert purged.details["through_seq"] == boundary.tree_size
        assert purged.details["checkpoint_root_hash"] == boundary.root_hash
        assert session.scalar(select(func.count()).select_from(AuditEventContext)) == 0
        verdict = audit_chain.verify(session)
        assert verdict.intact and verdict.purged == boundary.tree_size

    later_checkpoint = checkpoint(runtime)
    witness = tmp_path / "kept.json"
    witness.write_text(
        json.dumps({"checkpoints": [boundary.as_json(), later_checkpoint.as_json()]}),
        encoding="utf-8",
    )
    shown = recvault("audit", "verify", "--witness", str(witness))
    assert shown.exit_code == 0, shown.output
    assert "audit checkpoints: 2 stored, 2 kept; all verify" in shown.output

    # A filtered export made after the purge still proves each event against a checkpoint.
    target = tmp_path / "after.jsonl"
    exported = recvault("audit", "export", "--output", str(target), "--action", "system:init")
    assert exported.exit_code == 0, exported.output
    assert recvault("audit", "verify", "--export", str(target)).exit_code == 0


def test_without_a_checkpoint_nothing_is_purged(runtime: Runtime) -> None:
    append_events(runtime, 3)
    assert purge(runtime, later(runtime)) is None
    assert first_seq(runtime) == 1


def test_events_still_within_retention_are_never_purged(runtime: Runtime) -> None:
    append_events(runtime, 3)
    early = checkpoint(runtime)
    append_events(runtime, 2)
    checkpoint(runtime)
    # Only the events up to ``early`` are older than the cut-off: the two after it are not.
    with runtime.sessions() as session, session.begin():
        young = session.scalars(select(AuditEvent).where(AuditEvent.seq > early.tree_size))
        cutoff = min(event.occurred_at for event in young)
    now = cutoff.replace(tzinfo=UTC) + timedelta(days=RETENTION_DAYS)
    done = purge(runtime, now)
    assert done is not None and done.through_seq == early.tree_size


def test_events_missing_from_the_start_without_a_purge_are_deleted_ones(
    runtime: Runtime,
) -> None:
    append_events(runtime, 4)
    checkpoint(runtime)
    with runtime.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.execute(delete(AuditEvent).where(AuditEvent.seq <= 2))
    with runtime.sessions() as session:
        verdict = audit_chain.verify(session)
    assert (verdict.damage, verdict.at_seq) == (Damage.DELETED, 1)


def test_the_lifecycle_run_purges_and_says_so(
    runtime: Runtime, recvault: Console, clock: TestClock
) -> None:
    append_events(runtime, 3)
    made = checkpoint(runtime)
    clock.set(later(runtime, runtime.settings.audit_retention_days + 1))
    shown = recvault("lifecycle", "run")
    assert shown.exit_code == 0, shown.output
    assert (
        f"purged {made.tree_size} audit events past their retention, through event {made.tree_size}"
    ) in shown.output
    with runtime.sessions() as session:
        assert audit_chain.verify(session).intact


@pytest.mark.postgres
def test_only_the_purge_function_deletes_and_only_a_recorded_range_to_a_checkpoint(
    runtime: Runtime,
) -> None:
    append_events(runtime, 4)
    made = checkpoint(runtime)
    with runtime.sessions() as session, pytest.raises(DBAPIError, match="never changed or removed"):
        session.execute(delete(AuditEvent).where(AuditEvent.seq <= made.tree_size))
    statement = sa.text("SELECT audit_purge(:through)")
    with runtime.sessions() as session, pytest.raises(DBAPIError, match="no checkpoint covers"):
        session.execute(statement, {"through": made.tree_size - 1})
    with runtime.sessions() as session, pytest.raises(DBAPIError, match="not recorded itself"):
        session.execute(statement, {"through": made.tree_size})
    assert first_seq(runtime) == 1
    assert purge(runtime, later(runtime)) is not None
    assert first_seq(runtime) == made.tree_size + 1
    with runtime.sessions() as session:  # checkpoints are never purged
        assert session.scalar(select(func.count()).select_from(AuditCheckpoint)) == 1
