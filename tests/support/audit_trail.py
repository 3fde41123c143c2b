"""Look-ups in the audit log, for tests that check what an act recorded."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from vault.models import AuditEvent
from vault.services.runtime import Runtime


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
