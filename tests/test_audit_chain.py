"""The audit log's hash chain: numbered without gaps, linked, and every kind of tampering
with the stored events found at the right event."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Connection, delete, insert, select, update

from tests.support.audit_trail import append_events
from tests.support.console import Console
from vault.models import AuditChainHead, AuditEvent, AuditEventContext
from vault.services import audit, audit_chain
from vault.services.audit_chain import Damage
from vault.services.runtime import Runtime

WRITERS = 4
EVENTS_PER_WRITER = 25


def recorded(runtime: Runtime) -> int:
    """How many events the chain holds (setting up the runtime records some)."""
    with runtime.sessions() as session:
        head = session.get(AuditChainHead, audit_chain.HEAD_ROW_ID)
        return head.seq if head else 0


def verdict(runtime: Runtime) -> audit_chain.Verdict:
    with runtime.sessions() as session:
        return audit_chain.verify(session)


@contextmanager
def tampering(runtime: Runtime) -> Iterator[Connection]:
    """A connection that writes past the database's own guard, as someone holding the
    database files or a superuser would (PostgreSQL's trigger refuses everyone else)."""
    with runtime.engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        yield connection


def test_events_are_numbered_from_one_and_linked(runtime: Runtime, recvault: Console) -> None:
    append_events(runtime, 5, address="192.0.2.9")
    with runtime.sessions() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        head = session.get(AuditChainHead, audit_chain.HEAD_ROW_ID)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    assert head is not None and head.seq == len(events)
    assert head.entry_hash == events[-1].entry_hash
    result = verdict(runtime)
    assert result.intact and result.count == len(events)
    shown = recvault("audit", "verify")
    assert shown.exit_code == 0, shown.output
    assert f"audit chain intact: {len(events)} events" in shown.output


def test_a_rolled_back_act_leaves_no_gap(runtime: Runtime) -> None:
    append_events(runtime, 2)
    with runtime.sessions() as session:
        audit.record(session, audit.Event(audit.AuditAction.SYSTEM_INIT))
        session.rollback()
    append_events(runtime, 2)
    with runtime.sessions() as session:
        numbers = list(session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
    assert numbers == list(range(1, len(numbers) + 1))
    assert verdict(runtime).intact


def test_personal_details_enter_the_chain_only_as_a_commitment(runtime: Runtime) -> None:
    append_events(runtime, 3, address="203.0.113.77")
    with runtime.sessions() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
        assert event is not None
        kept = session.get(AuditEventContext, event.id)
        assert kept is not None and kept.salt is not None
        entry = audit_chain.canonical(audit_chain.entry_of(event))
    assert "203.0.113.77" not in entry
    assert event.context_commitment == audit_chain.commitment(kept.salt, "203.0.113.77", None, None)
    # Erasing the details (and the key of their commitment) keeps the chain verifying.
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(AuditEventContext).values(
                ip_address=None, user_agent=None, request_text=None, salt=None
            )
        )
    assert verdict(runtime).intact


# Each case: what is done to the six events appended (numbered 1 to 6 among them), and the
# damage reported, at the position among them.
@pytest.mark.parametrize(
    ("change", "damage", "at"),
    [
        ("edit", Damage.EDITED, 3),
        ("delete", Damage.DELETED, 3),
        ("swap", Damage.EDITED, 2),
        ("truncate", Damage.TRUNCATED, 5),
        ("append_unlinked", Damage.HEAD_MISMATCH, 7),
    ],
)
def test_tampering_is_found_at_the_right_event(
    runtime: Runtime, recvault: Console, change: str, damage: Damage, at: int
) -> None:
    base = recorded(runtime)
    append_events(runtime, 6)
    with runtime.sessions() as session:
        events = {e.seq - base: e for e in session.scalars(select(AuditEvent))}
    with tampering(runtime) as connection:
        if change == "edit":
            connection.execute(
                update(AuditEvent).where(AuditEvent.seq == base + 3).values(outcome="denied")
            )
        elif change == "delete":
            connection.execute(delete(AuditEvent).where(AuditEvent.seq == base + 3))
        elif change == "swap":
            for position, other in ((2, 4), (4, 2)):
                connection.execute(
                    update(AuditEvent)
                    .where(AuditEvent.seq == base + position)
                    .values(details=events[other].details, actor_id=events[other].actor_id)
                )
        elif change == "truncate":
            connection.execute(delete(AuditEvent).where(AuditEvent.seq >= base + 5))
        else:
            # A forged last event, correctly linked, whose append never reached the head.
            last = events[6]
            forged = {**audit_chain.entry_of(last), "seq": last.seq + 1, "object_id": "forged"}
            connection.execute(
                insert(AuditEvent).values(
                    occurred_at=last.occurred_at,
                    action=last.action,
                    outcome=last.outcome,
                    object_id="forged",
                    details=last.details,
                    seq=last.seq + 1,
                    entry_hash=audit_chain.link(forged, last.entry_hash),
                    actor_id=last.actor_id,
                )
            )
    found = verdict(runtime)
    assert (found.damage, found.at_seq) == (damage, base + at)
    shown = recvault("audit", "verify")
    assert shown.exit_code == 1
    assert f"damaged at event {base + at}: {damage.value}" in shown.output


def test_concurrent_appends_never_fork_or_skip(runtime: Runtime) -> None:
    base = recorded(runtime)
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            append_events(runtime, EVENTS_PER_WRITER)
        except BaseException as exc:  # reported below, with the test's own assertion
            failures.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with runtime.sessions() as session:
        numbers = list(session.scalars(select(AuditEvent.seq).order_by(AuditEvent.seq)))
    assert numbers == list(range(1, base + WRITERS * EVENTS_PER_WRITER + 1))
    assert verdict(runtime).intact


@pytest.mark.postgres
def test_postgresql_refuses_to_change_or_remove_an_event(runtime: Runtime) -> None:
    append_events(runtime, 2)
    for statement in (
        update(AuditEvent).where(AuditEvent.seq == 1).values(outcome="denied"),
        delete(AuditEvent).where(AuditEvent.seq == 1),
    ):
        with (
            pytest.raises(Exception, match="never changed or removed"),
            runtime.engine.begin() as connection,
        ):
            connection.execute(statement)
    assert verdict(runtime).intact
