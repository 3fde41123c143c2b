"""audit.record() writes inside the caller's transaction and nowhere else."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from vault.models import AuditEvent, AuditEventContext
from vault.services import audit
from vault.services.runtime import Runtime


def count_events(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


def test_record_rolls_back_with_its_transaction(runtime: Runtime) -> None:
    before = count_events(runtime)
    with runtime.sessions() as session:
        audit.record(
            session,
            audit.Event(
                audit.AuditAction.SYSTEM_INIT,
                context=audit.RequestContext(ip_address="192.0.2.7", user_agent="test"),
            ),
        )
        session.rollback()
    assert count_events(runtime) == before
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(AuditEventContext)) == 0


def test_record_commits_with_its_transaction(runtime: Runtime) -> None:
    actor = uuid.uuid4()
    with runtime.sessions() as session, session.begin():
        audit.record(
            session,
            audit.Event(
                audit.AuditAction.SYSTEM_INIT,
                actor_id=actor,
                details={"reason": "test"},
                context=audit.RequestContext(ip_address="192.0.2.7", user_agent="x" * 5000),
            ),
        )
    with runtime.sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.actor_id == actor)).one()
        assert event.action == "system:init"
        assert event.outcome == "success"
        assert event.actor_id == actor
        assert event.details == {"reason": "test"}
        assert event.occurred_at.tzinfo is not None
        stored = session.get(AuditEventContext, event.id)
        assert stored is not None
        assert stored.ip_address == "192.0.2.7"
        assert stored.user_agent is not None
        assert len(stored.user_agent) == audit.MAX_USER_AGENT_LENGTH


def test_action_names_are_subject_colon_action() -> None:
    for action in audit.AuditAction:
        subject, _, verb = action.value.partition(":")
        assert subject and verb and subject.isidentifier() and verb.isidentifier(), action
