"""Look-ups in the audit log, for tests that check what an act recorded."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select

from vault.models import AuditEvent
from vault.services import audit
from vault.services.runtime import Runtime


def record(
    runtime: Runtime, action: audit.AuditAction = audit.AuditAction.SYSTEM_INIT, **fields: Any
) -> int:
    """Record one event as an act of its own; its number in the chain, read back once
    linked (on PostgreSQL just after the commit)."""
    with runtime.sessions() as session, session.begin():
        event_id = audit.record(session, audit.Event(action, **fields)).id
    with runtime.sessions() as session:
        seq = session.scalars(select(AuditEvent.seq).where(AuditEvent.id == event_id)).one()
    assert seq is not None, "the event was committed but not linked"
    return seq


def audit_actions(runtime: Runtime) -> list[str]:
    """The action of every event recorded so far, oldest first."""
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


def denial_count(
    runtime: Runtime, recording_id: uuid.UUID, actor_id: uuid.UUID | None = None
) -> int:
    """How many refusals were audited for the recording, of ``actor_id`` only if given."""
    query = (
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.action == "access:denied", AuditEvent.recording_id == recording_id)
    )
    if actor_id is not None:
        query = query.where(AuditEvent.actor_id == actor_id)
    with runtime.sessions() as session:
        return session.scalar(query) or 0


def append_events(runtime: Runtime, count: int, *, address: str | None = None) -> None:
    """``count`` events, each in a transaction of its own, as separate acts would write them
    (with a request address when ``address`` is given)."""
    for index in range(count):
        with runtime.sessions() as session, session.begin():
            audit.record(
                session,
                audit.Event(
                    audit.AuditAction.SYSTEM_INIT,
                    actor_id=uuid.uuid4(),
                    details={"index": index, "played": [[0, 6.5]]},
                    context=audit.RequestContext(ip_address=address) if address else None,
                ),
            )
