"""The retention purge of the audit log: events older than ``VAULT_AUDIT_RETENTION_DAYS``
leave the database, a whole range at a time.

The range always runs from the first stored event to a signed checkpoint, so the chain that
remains begins at a point the checkpoint vouches for (``audit_chain.start_of``), and the
checkpoints after it still verify from its stored frontier. The purge records itself first,
in the same transaction, naming the range and the checkpoint; on PostgreSQL the deletion is
done by the ``audit_purge`` function (migration 0013), which refuses any other range and
runs with its owner's rights, so the roles the app and the scheduler use never hold DELETE
on the events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session

from vault.models import AuditCheckpoint, AuditEvent, AuditEventContext
from vault.services import audit, audit_chain
from vault.services.audit import AuditAction


@dataclass(frozen=True)
class Purge:
    through_seq: int
    removed: int
    checkpoint_root: str


def _oldest_kept(session: Session, cutoff: datetime) -> int | None:
    """The number of the first event recorded at or after ``cutoff``; None if none is."""
    return session.scalar(select(func.min(AuditEvent.seq)).where(AuditEvent.occurred_at >= cutoff))


def purge_expired(session: Session, now: datetime, retention_days: int) -> Purge | None:
    """Remove the events older than the retention period, up to the newest checkpoint that
    covers only such events; None when no checkpoint allows a purge. In the caller's
    transaction."""
    start = audit_chain.start_of(session)
    if start is None:
        return None  # a damaged start: ``recvault audit verify`` reports it; nothing is removed
    head = session.scalar(select(func.max(AuditEvent.seq))) or 0
    first_kept = _oldest_kept(session, now - timedelta(days=retention_days))
    newest_expired = (first_kept - 1) if first_kept is not None else head
    boundary = session.scalars(
        select(AuditCheckpoint)
        .where(
            AuditCheckpoint.tree_size > start.purged,
            AuditCheckpoint.tree_size <= newest_expired,
        )
        .order_by(AuditCheckpoint.tree_size.desc())
        .limit(1)
    ).first()
    if boundary is None:
        return None
    through = boundary.tree_size
    removed = through - start.purged
    audit.record(
        session,
        audit.Event(
            AuditAction.AUDIT_PURGED,
            object_id=str(through),
            details={
                "through_seq": through,
                "removed": removed,
                "checkpoint_root_hash": boundary.root_hash,
                "checkpoint_head_hash": boundary.head_hash,
                "retention_days": retention_days,
            },
        ),
    )
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT audit_purge(:through)"), {"through": through})
    else:
        doomed = select(AuditEvent.id).where(AuditEvent.seq <= through).scalar_subquery()
        session.execute(delete(AuditEventContext).where(AuditEventContext.event_id.in_(doomed)))
        session.execute(delete(AuditEvent).where(AuditEvent.seq <= through))
    return Purge(through, removed, boundary.root_hash)
