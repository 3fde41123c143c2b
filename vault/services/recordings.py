"""Registering recordings with the facts the procedure demands, and reading them back.

Procedure §11–§18 and §23: a declared purpose of exactly two kinds with a concrete aim;
the people in the recording informed beforehand; who is visible; the third-person warning;
the recording device. Each is a required field, checked here with a message a teacher
understands.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from vault.models import (
    AccessOrderGrantee,
    AccessOrderRecording,
    MethodologicalRequest,
    Recording,
    User,
)
from vault.services import access, audit, calendar, fields
from vault.services.access import Action, authorize, decide
from vault.services.accounts import Role
from vault.services.actors import Actor
from vault.services.audit import AuditAction
from vault.services.errors import N_, NotFound, PermissionDenied, ValidationFailed


class Platform(StrEnum):
    ZOOM = "zoom"
    MEET = "meet"
    WEBEX = "webex"
    SKYPE = "skype"
    TEAMS = "teams"
    OTHER = "other"


class Purpose(StrEnum):
    METHODOLOGICAL = "methodological"
    QUALITY_SAFETY = "quality_safety"


class Visibility(StrEnum):
    TEACHER_ONLY = "teacher_only"
    TEACHER_AND_STUDENTS = "teacher_and_students"


class Device(StrEnum):
    SCHOOL = "school"
    PERSONAL_APPROVED = "personal_approved"


PLATFORM_LABELS = {
    Platform.ZOOM: "Zoom",
    Platform.MEET: "Google Meet",
    Platform.WEBEX: "Cisco Webex",
    Platform.SKYPE: "Skype",
    Platform.TEAMS: "Microsoft Teams",
    Platform.OTHER: N_("Other"),
}
PURPOSE_LABELS = {
    Purpose.METHODOLOGICAL: N_("Methodological work (the school's request)"),
    Purpose.QUALITY_SAFETY: N_("Quality and safety (the teacher's own initiative)"),
}
VISIBILITY_LABELS = {
    Visibility.TEACHER_ONLY: N_("Teacher only"),
    Visibility.TEACHER_AND_STUDENTS: N_("Teacher and pupils"),
}
DEVICE_LABELS = {
    Device.SCHOOL: N_("School device"),
    Device.PERSONAL_APPROVED: N_("Personal device approved by the school"),
}

STATUS_LABELS = {
    "registered": N_("registered"),
    "uploading": N_("uploading"),
    "processing": N_("processing"),
    "available": N_("available"),
    "failed": N_("failed"),
    "restricted": N_("restricted (art. 18)"),
    "deleted": N_("deleted"),
    "shredded": N_("shredded at year-end"),
}

ChoiceT = TypeVar("ChoiceT", bound=StrEnum)

TEXT_LIMITS = {"title": 200, "subject": 100, "class_group": 50, "aim": 2000}


@dataclass(frozen=True)
class Registration:
    """A validated registration, ready to store."""

    title: str
    subject: str
    class_group: str
    lesson_date: date
    platform: Platform
    purpose: Purpose
    aim: str
    visible: Visibility
    subjects_informed_method: str
    subjects_informed_at: date
    third_party_warning: bool
    device: Device
    request_id: uuid.UUID | None


def _choice(
    raw: Mapping[str, Any], name: str, kind: type[ChoiceT], errors: dict[str, list[str]]
) -> ChoiceT | None:
    try:
        return kind(str(raw.get(name)))
    except ValueError:
        errors.setdefault(name, []).append(N_("Choose one of the options."))
        return None


def parse_registration(raw: Mapping[str, Any]) -> Registration:
    """Validate the fields of SPEC §3 from a JSON object (or a form flattened into one)."""
    errors: dict[str, list[str]] = {}
    informed = raw.get("subjects_informed")
    informed = informed if isinstance(informed, Mapping) else {}
    method = informed.get("method")
    method_text = method.strip() if isinstance(method, str) else ""
    if not method_text:
        errors["subjects_informed.method"] = [
            N_("Say how the people in the recording were informed.")
        ]
    title = fields.required_text(raw, "title", TEXT_LIMITS["title"], errors)
    subject = fields.required_text(raw, "subject", TEXT_LIMITS["subject"], errors)
    class_group = fields.required_text(
        raw, "class_group", TEXT_LIMITS.get("class_group", 300), errors
    )
    aim = fields.required_text(raw, "aim", TEXT_LIMITS["aim"], errors)
    lesson_date = fields.iso_date(raw.get("lesson_date"), "lesson_date", errors)
    informed_at = fields.iso_date(informed.get("at"), "subjects_informed.at", errors)
    platform = _choice(raw, "platform", Platform, errors)
    purpose = _choice(raw, "purpose", Purpose, errors)
    visible = _choice(raw, "visible", Visibility, errors)
    device = _choice(raw, "device", Device, errors)
    if raw.get("third_party_warning") is not True:
        errors["third_party_warning"] = [
            N_("Confirm that people near the camera or microphone were warned.")
        ]
    if lesson_date and informed_at and informed_at > lesson_date:
        errors.setdefault("subjects_informed.at", []).append(
            N_("The people must be informed before the lesson is recorded.")
        )
    request_id = None
    raw_request = raw.get("request_id")
    if raw_request not in (None, ""):
        try:
            request_id = uuid.UUID(str(raw_request))
        except ValueError:
            errors["request_id"] = [N_("Unknown request.")]
        if purpose is not None and purpose is not Purpose.METHODOLOGICAL:
            errors.setdefault("request_id", []).append(
                N_("Only a methodological recording answers a director's request.")
            )
    if errors:
        raise ValidationFailed(errors)
    assert lesson_date and informed_at and platform and purpose and visible and device
    return Registration(
        title=title,
        subject=subject,
        class_group=class_group,
        lesson_date=lesson_date,
        platform=platform,
        purpose=purpose,
        aim=aim,
        visible=visible,
        subjects_informed_method=method_text,
        subjects_informed_at=informed_at,
        third_party_warning=True,
        device=device,
        request_id=request_id,
    )


def register_fields(
    session: Session,
    actor: Actor,
    owner: User,
    raw: Mapping[str, Any],
    now: datetime,
    zone: ZoneInfo,
) -> Recording:
    """Register from the submitted fields, with every problem in one answer: a teacher who
    left a field empty also learns at once that the lesson date is in the future or the
    request unknown, instead of only after correcting the rest."""
    _require_teacher(owner)
    try:
        registration = parse_registration(raw)
    except ValidationFailed as invalid:
        errors = invalid.field_errors
        lesson_date = fields.iso_date(raw.get("lesson_date"), "lesson_date", {})
        try:
            request_id = uuid.UUID(str(raw.get("request_id")))
        except ValueError:
            request_id = None
        _check_against_the_school(session, owner, lesson_date, request_id, now, zone, errors)
        raise ValidationFailed(errors) from None
    return register(session, actor, owner, registration, now, zone)


def _require_teacher(owner: User) -> None:
    if Role.TEACHER not in owner.roles:
        raise PermissionDenied(N_("Only teachers register recordings."))


def _check_against_the_school(
    session: Session,
    owner: User,
    lesson_date: date | None,
    request_id: uuid.UUID | None,
    now: datetime,
    zone: ZoneInfo,
    errors: dict[str, list[str]],
) -> None:
    """The rules a registration's fields meet only in this school: its calendar and the
    owner's requests. Problems are added to ``errors``."""
    if lesson_date is not None:
        if lesson_date > now.astimezone(zone).date():
            errors.setdefault("lesson_date", []).append(
                N_("The lesson date cannot be in the future.")
            )
        school_year = calendar.school_year_of(lesson_date)
        if lesson_date > calendar.last_day(session, school_year):
            errors.setdefault("lesson_date", []).append(
                N_("The lesson date is after the last school day of its school year.")
            )
        if access.year_closed(session, school_year):
            errors.setdefault("lesson_date", []).append(
                N_("The recordings of this school year have already been deleted.")
            )
    if request_id is not None:
        request = session.get(MethodologicalRequest, request_id)
        if (request is None or request.teacher_id != owner.id) and "request_id" not in errors:
            errors["request_id"] = [N_("Unknown request.")]


def register(
    session: Session,
    actor: Actor,
    owner: User,
    registration: Registration,
    now: datetime,
    zone: ZoneInfo,
) -> Recording:
    """Store a registration; the recording then waits for its upload."""
    _require_teacher(owner)
    errors: dict[str, list[str]] = {}
    _check_against_the_school(
        session, owner, registration.lesson_date, registration.request_id, now, zone, errors
    )
    if errors:
        raise ValidationFailed(errors)
    school_year = calendar.school_year_of(registration.lesson_date)
    retain_until = calendar.last_day(session, school_year)
    recording = Recording(
        owner_id=owner.id,
        title=registration.title,
        subject=registration.subject,
        class_group=registration.class_group,
        lesson_date=registration.lesson_date,
        platform=registration.platform.value,
        purpose=registration.purpose.value,
        aim=registration.aim,
        visible=registration.visible.value,
        subjects_informed_method=registration.subjects_informed_method,
        subjects_informed_at=registration.subjects_informed_at,
        third_party_warning=registration.third_party_warning,
        device=registration.device.value,
        request_id=registration.request_id,
        school_year=school_year,
        retain_until=retain_until,
        status="registered",
        created_at=now,
    )
    session.add(recording)
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.RECORDING_REGISTERED,
            recording_id=recording.id,
            details={"school_year": school_year, "purpose": recording.purpose},
        ),
    )
    return recording


def get(
    session: Session,
    actor: Actor,
    recording_id: uuid.UUID,
    action: Action,
    now: datetime,
    zone: ZoneInfo,
) -> Recording:
    """The recording, if the policy allows ``action`` on it (404 for unknown ids)."""
    recording = session.get(Recording, recording_id)
    if recording is None:
        raise NotFound()
    authorize(session, actor, action, recording, now, zone)
    return recording


def own_recordings(
    session: Session, owner_id: uuid.UUID, status: str | None = None, school_year: str | None = None
) -> list[Recording]:
    query: Select[Recording] = select(Recording).where(Recording.owner_id == owner_id)
    if status:
        query = query.where(Recording.status == status)
    if school_year:
        query = query.where(Recording.school_year == school_year)
    return list(session.scalars(query.order_by(Recording.lesson_date.desc(), Recording.created_at)))


# -- methodological-work requests (procedure §12, §20) -----------------------------------------


def create_request(
    session: Session, actor: Actor, director: User, teacher_username: str, lesson: str, aim: str
) -> MethodologicalRequest:
    if Role.DIRECTOR not in director.roles:
        raise PermissionDenied()
    errors: dict[str, list[str]] = {}
    teacher = session.scalars(select(User).where(User.username == teacher_username)).one_or_none()
    if teacher is None or Role.TEACHER not in teacher.roles or teacher.disabled_at is not None:
        errors["teacher"] = [N_("Choose an active teacher.")]
    if not lesson.strip() or len(lesson) > 300:
        errors["lesson"] = [N_("Describe the lesson in up to 300 characters.")]
    if not aim.strip():
        errors["aim"] = [N_("State the concrete aim of the methodological work.")]
    if errors:
        raise ValidationFailed(errors)
    assert teacher is not None
    request = MethodologicalRequest(
        director_id=director.id, teacher_id=teacher.id, lesson=lesson.strip(), aim=aim.strip()
    )
    session.add(request)
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.REQUEST_CREATED,
            object_id=str(request.id),
            details={"teacher": str(teacher.id)},
        ),
    )
    return request


def requests_for(session: Session, user: User) -> list[MethodologicalRequest]:
    """Directors and auditors see every request; a teacher sees the requests addressed to
    them."""
    query = select(MethodologicalRequest).order_by(MethodologicalRequest.created_at.desc())
    if not user.roles & {Role.DIRECTOR, Role.AUDITOR}:
        query = query.where(MethodologicalRequest.teacher_id == user.id)
    return list(session.scalars(query))


def visible_to(
    session: Session,
    actor: Actor,
    now: datetime,
    zone: ZoneInfo,
    status: str | None = None,
    school_year: str | None = None,
) -> list[Recording]:
    """The recordings whose metadata the policy shows this person (the API's list)."""
    query: Select[Recording] = select(Recording)
    if not actor.roles & {Role.DIRECTOR, Role.AUDITOR}:
        named = (
            select(AccessOrderRecording.recording_id)
            .join(AccessOrderGrantee, AccessOrderGrantee.order_id == AccessOrderRecording.order_id)
            .where(AccessOrderGrantee.user_id == actor.user_id)
        )
        query = query.where(or_(Recording.owner_id == actor.user_id, Recording.id.in_(named)))
    if status:
        query = query.where(Recording.status == status)
    if school_year:
        query = query.where(Recording.school_year == school_year)
    candidates = session.scalars(query.order_by(Recording.lesson_date.desc(), Recording.id))
    return [
        recording
        for recording in candidates
        if decide(session, actor, Action.VIEW_METADATA, recording, now, zone).allowed
    ]


def take_responsibility(
    session: Session,
    actor: Actor,
    recording_id: uuid.UUID,
    now: datetime,
    zone: ZoneInfo,
) -> Recording:
    """The director takes over a disabled teacher's recording (and its deletion duty)."""
    recording = get(session, actor, recording_id, Action.TAKE_RESPONSIBILITY, now, zone)
    recording.responsible_id = actor.account_id
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.RECORDING_RESPONSIBILITY_TAKEN,
            recording_id=recording.id,
            details={"previous_owner": str(recording.owner_id)},
        ),
    )
    session.commit()
    return recording
