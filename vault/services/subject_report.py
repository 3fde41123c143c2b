"""The data-subject report (GDPR art. 15), for the auditor: for a class or group over a
period, the recordings in which its pupils were visible, who accessed each and under which
order, and when each is or was deleted. Tombstones count: a deleted recording's row keeps
what this report needs. Producing the report is itself an audit event.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.models import AuditEvent, Recording, User
from vault.services import audit, calendar
from vault.services.access import TOMBSTONE_STATUSES
from vault.services.accounts import Role
from vault.services.actors import Actor
from vault.services.audit import AuditAction
from vault.services.errors import N_, PermissionDenied, ValidationFailed
from vault.services.recordings import Visibility
from vault.settings import Settings

# The acts that show a recording's content to someone.
ACCESS_ACTIONS = (AuditAction.VIEW_STARTED.value, AuditAction.RECORDING_DOWNLOADED.value)


@dataclass(frozen=True)
class Access:
    at: datetime
    who: str
    username: str | None
    act: str
    order_number: str | None


@dataclass(frozen=True)
class ReportedRecording:
    id: uuid.UUID
    title: str
    subject: str
    teacher: str
    lesson_date: date
    purpose: str
    aim: str
    status: str
    accesses: tuple[Access, ...]
    # When it was deleted (a tombstone), or when it will be at the latest.
    deleted_at: datetime | None
    deleted_by: datetime | None
    certificate_id: uuid.UUID | None


@dataclass(frozen=True)
class SubjectReport:
    class_group: str
    start: date
    end: date
    recordings: tuple[ReportedRecording, ...]


def parse_period(raw_from: str, raw_to: str) -> tuple[date, date]:
    errors: dict[str, list[str]] = {}
    parsed: dict[str, date] = {}
    for name, raw in (("from", raw_from), ("to", raw_to)):
        try:
            parsed[name] = date.fromisoformat(raw.strip())
        except ValueError:
            errors[name] = [N_("Enter a date as YYYY-MM-DD.")]
    if not errors and parsed["from"] > parsed["to"]:
        errors["to"] = [N_("The end of the period cannot be before its start.")]
    if errors:
        raise ValidationFailed(errors)
    return parsed["from"], parsed["to"]


def subject_report(
    session: Session,
    actor: Actor,
    class_group: str,
    period: tuple[date, date],
    settings: Settings,
) -> SubjectReport:
    """The report for ``class_group`` over ``period``; the caller commits its audit event."""
    if Role.AUDITOR.value not in actor.roles:
        raise audit.deny(
            session,
            actor,
            PermissionDenied(),
            {"action": "subject_report", "reason": "not_auditor"},
        )
    group = class_group.strip()
    if not group:
        raise ValidationFailed({"class_group": [N_("Name the class or group.")]})
    start, end = period
    recordings = session.scalars(
        select(Recording)
        .where(
            Recording.class_group == group,
            Recording.lesson_date >= start,
            Recording.lesson_date <= end,
            Recording.visible == Visibility.TEACHER_AND_STUDENTS.value,
        )
        .order_by(Recording.lesson_date, Recording.title)
    ).all()
    teachers = dict(
        session.execute(
            select(User.id, User.full_name).where(
                User.id.in_({recording.owner_id for recording in recordings})
            )
        ).all()
    )
    accesses = _accesses(session, [recording.id for recording in recordings])
    reported = tuple(
        ReportedRecording(
            id=recording.id,
            title=recording.title,
            subject=recording.subject,
            teacher=teachers.get(recording.owner_id, ""),
            lesson_date=recording.lesson_date,
            purpose=recording.purpose,
            aim=recording.aim,
            status=recording.status,
            accesses=tuple(accesses.get(recording.id, [])),
            deleted_at=recording.deleted_at,
            deleted_by=None
            if recording.status in TOMBSTONE_STATUSES
            else calendar.shred_time(recording.retain_until, settings.shred_hour, settings.zone),
            certificate_id=recording.certificate_id,
        )
        for recording in recordings
    )
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.REPORT_SUBJECT_PRODUCED,
            details={
                "class_group": group,
                "from": start.isoformat(),
                "to": end.isoformat(),
                "recordings": len(reported),
            },
        ),
    )
    return SubjectReport(group, start, end, reported)


def _accesses(session: Session, recording_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Access]]:
    found: dict[uuid.UUID, list[Access]] = {}
    if not recording_ids:
        return found
    rows = session.execute(
        select(AuditEvent, User.full_name, User.username)
        .join(User, User.id == AuditEvent.actor_id, isouter=True)
        .where(
            AuditEvent.recording_id.in_(recording_ids),
            AuditEvent.action.in_(ACCESS_ACTIONS),
            AuditEvent.outcome == "success",
        )
        .order_by(AuditEvent.id)
    ).all()
    for event, name, username in rows:
        assert event.recording_id is not None
        found.setdefault(event.recording_id, []).append(
            Access(
                at=event.occurred_at,
                who=name or str(event.actor_id),
                username=username,
                act=event.action,
                order_number=(event.details or {}).get("order_number"),
            )
        )
    return found


def as_json(report: SubjectReport) -> dict[str, Any]:
    """The report as the API gives it: dates and times in ISO 8601 with their offsets."""
    return {
        "class_group": report.class_group,
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "recordings": [
            {
                "id": str(item.id),
                "title": item.title,
                "subject": item.subject,
                "teacher": item.teacher,
                "lesson_date": item.lesson_date.isoformat(),
                "purpose": item.purpose,
                "aim": item.aim,
                "status": item.status,
                "accesses": [
                    {
                        "at": access.at.isoformat(),
                        "who": access.who,
                        "username": access.username,
                        "act": access.act,
                        "order_number": access.order_number,
                    }
                    for access in item.accesses
                ],
                "deleted_at": item.deleted_at.isoformat() if item.deleted_at else None,
                "deleted_by": item.deleted_by.isoformat() if item.deleted_by else None,
                "certificate_id": str(item.certificate_id) if item.certificate_id else None,
            }
            for item in report.recordings
        ],
    }
