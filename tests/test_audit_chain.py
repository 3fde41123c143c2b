"""The audit log's hash chain: numbered without gaps, linked, and every kind of tampering
with the stored events found at the right event."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest
from sqlalchemy import Connection, delete, insert, select, text, update

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


# Stored events whose every column takes an unusual value: what the database renders as their
# canonical line must be, byte for byte, what the chain's definition hashes.
UNUSUAL_EVENTS = [
    {
        "occurred_at": datetime(2026, 11, 18, 8, 30, tzinfo=UTC),  # whole seconds
        "action": "auth:login_succeeded",
        "outcome": "success",
        "actor_id": uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"),
        "recording_id": None,
        "object_id": None,
        "details": {},
        "context_commitment": None,
    },
    {
        "occurred_at": datetime(2026, 3, 29, 0, 59, 59, 1, tzinfo=UTC),
        "action": "view:ended",
        "outcome": "denied",
        "actor_id": None,
        "recording_id": uuid.UUID("fedcba98-7654-3210-0123-456789abcdef"),
        "object_id": 'quote " back\\slash \t tab',
        "details": {
            "title": 'Ģeogrāfija: "kartes"\n\u0001\u007f ✓ 𝄞',
            "played": [[0, 6.5], [12.3, 30.1]],
            "zero": 0,
            "big": 2**53 + 1,
            "nested": {"b": [True, False, None], "a": -1},
        },
        "context_commitment": "ab" * 32,
    },
]


def test_the_stored_line_of_any_event_is_its_canonical_entry(runtime: Runtime) -> None:
    """Verification hashes the line the database renders; it must be the definition's."""
    with tampering(runtime) as connection:
        for offset, event in enumerate(UNUSUAL_EVENTS):
            connection.execute(
                insert(AuditEvent).values(seq=10_000 + offset, entry_hash="0" * 64, **event)
            )
    with runtime.sessions() as session:
        lines = {
            entry.seq: entry.line
            for entry in audit_chain.stored_chain(session, after=9_999).entries
        }
        events = session.scalars(select(AuditEvent).where(AuditEvent.seq >= 10_000))
        expected = {e.seq: audit_chain.canonical(audit_chain.entry_of(e)) for e in events}
    assert lines == expected and len(lines) == len(UNUSUAL_EVENTS)


def test_every_appended_event_is_linked_as_the_definition_says(runtime: Runtime) -> None:
    """On PostgreSQL the database links the events (``audit_link``) after the act commits;
    every link must be the one an auditor recomputes offline from an export's entries."""
    for event in UNUSUAL_EVENTS:
        with runtime.sessions() as session, session.begin():
            audit_chain.append(session, AuditEvent(**event), kept=None)
    with runtime.sessions() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
    assert [e.action for e in events[-2:]] == [e["action"] for e in UNUSUAL_EVENTS]
    previous: str | None = audit_chain.GENESIS_HASH
    for stored in events:
        assert previous is not None
        assert stored.entry_hash == audit_chain.link(audit_chain.entry_of(stored), previous)
        previous = stored.entry_hash
    result = verdict(runtime)
    assert result.intact and result.count == len(events) and result.rehashed == 0


@pytest.mark.postgres
def test_an_event_left_unlinked_is_counted_and_the_lifecycle_run_links_it(
    runtime: Runtime, recvault: Console
) -> None:
    """A process that ends between an act's commit and the linking after it leaves its
    event committed but unlinked (only possible on PostgreSQL, which links after commit)."""
    append_events(runtime, 2)
    linked = recorded(runtime)
    with tampering(runtime) as connection:
        connection.execute(insert(AuditEvent).values(**UNUSUAL_EVENTS[0]))
    result = verdict(runtime)
    assert result.intact and result.count == linked and result.unlinked == 1
    checked = recvault("audit", "verify")
    assert checked.exit_code == 0, checked.output
    assert "1 events committed but not linked into the chain yet" in checked.output
    ran = recvault("lifecycle", "run")
    assert ran.exit_code == 0, ran.output
    result = verdict(runtime)
    assert result.intact and result.unlinked == 0
    with runtime.sessions() as session:
        late = session.scalars(
            select(AuditEvent).where(AuditEvent.action == UNUSUAL_EVENTS[0]["action"])
        ).one()
    assert late.seq == linked + 1  # the run's own events come after it


@pytest.mark.postgres
def test_a_linking_that_fails_leaves_its_events_to_the_next_one(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    append_events(runtime, 1)  # the runtime's linker now holds its connection
    linked = recorded(runtime)
    with runtime.engine.connect() as connection:
        killed = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE '%FROM audit_link()%' AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert killed >= 1
    append_events(runtime, 1)  # committed; its linking fails on the closed connection
    assert "not linked" in caplog.text
    result = verdict(runtime)
    assert result.intact and result.count == linked and result.unlinked == 1
    append_events(runtime, 1)  # the next act's linking, on a new connection, links both
    result = verdict(runtime)
    assert result.intact and result.count == linked + 2 and result.unlinked == 0


def test_events_written_by_the_app_verify_as_stored(runtime: Runtime) -> None:
    append_events(runtime, 5, address="192.0.2.9")
    result = verdict(runtime)
    assert result.intact and result.rehashed == 0
    with runtime.sessions() as session:
        every = audit_chain.stored_chain(session)
        beyond = audit_chain.stored_chain(session, after=every.head_seq)
        assert len(list(every.entries)) == every.head_seq == result.count
        # No event in the range: the head still comes, read by itself.
        assert (beyond.head_seq, beyond.head_hash) == (every.head_seq, every.head_hash)
        assert list(beyond.entries) == []


def test_an_event_stored_in_another_form_still_verifies_by_the_definition(
    runtime: Runtime,
) -> None:
    """Details stored before they were written canonically hash by their content."""
    append_events(runtime, 3)
    last = recorded(runtime)
    with tampering(runtime) as connection:
        connection.exec_driver_sql(
            'UPDATE audit_events SET details = \'{"played": [[0, 6.5]], "index": 2}\''
            f" WHERE seq = {last}"
        )
    result = verdict(runtime)
    assert result.intact and result.rehashed == 1


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
        events = {audit_chain.number_of(e) - base: e for e in session.scalars(select(AuditEvent))}
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
            after_last = audit_chain.number_of(last) + 1
            assert last.entry_hash is not None
            forged = {**audit_chain.entry_of(last), "seq": after_last, "object_id": "forged"}
            connection.execute(
                insert(AuditEvent).values(
                    occurred_at=last.occurred_at,
                    action=last.action,
                    outcome=last.outcome,
                    object_id="forged",
                    details=last.details,
                    seq=after_last,
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


def test_verifying_while_acts_append_finds_nothing_wrong(runtime: Runtime) -> None:
    """The head and the events are read as of one instant: an event appended after the
    head was read is not taken for one the head never counted."""
    appending = threading.Event()
    done = threading.Event()
    failures: list[BaseException] = []

    def writer() -> None:
        try:
            while not done.is_set():
                append_events(runtime, 1)
                appending.set()
        except BaseException as exc:  # reported below, with the test's own assertion
            failures.append(exc)
            appending.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        appending.wait(timeout=30)
        verdicts = [verdict(runtime) for _ in range(20)]
    finally:
        done.set()
        thread.join()
    assert failures == []
    assert [v.damage for v in verdicts if not v.intact] == []
    assert verdicts[-1].count > verdicts[0].count


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
