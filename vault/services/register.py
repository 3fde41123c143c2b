"""The register of recordings (procedure §22): every recording's metadata, for the director
and the auditor, never the media; each row still passes the one access policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.models import Recording, User
from vault.services import access, orders
from vault.services.access import Action
from vault.services.actors import Actor


@dataclass(frozen=True)
class RegisterFilter:
    teacher: str | None = None
    class_group: str | None = None
    status: str | None = None
    school_year: str | None = None


@dataclass(frozen=True)
class RegisterRow:
    """A recording's metadata, and which of the acts the register links to the reader may
    take on it (as the one policy decides, so a link is never offered in vain)."""

    recording: Recording
    teacher: orders.Person
    may_list_accesses: bool
    may_restrict: bool
    may_erase: bool


def read(
    session: Session,
    actor: Actor,
    reader: User,
    selection: RegisterFilter,
    now: datetime,
    zone: ZoneInfo,
) -> list[RegisterRow]:
    """Every recording's metadata, for the director and the auditor; never the media."""
    orders.require_reader(session, actor, reader, "read_register")
    query = select(Recording, User).join(User, User.id == Recording.owner_id)
    if selection.teacher:
        query = query.where(User.username == selection.teacher.strip().lower())
    if selection.class_group:
        query = query.where(Recording.class_group == selection.class_group.strip())
    if selection.status:
        query = query.where(Recording.status == selection.status)
    if selection.school_year:
        query = query.where(Recording.school_year == selection.school_year.strip())
    query = query.order_by(Recording.lesson_date.desc(), Recording.title)
    reader_actor = Actor.of(reader)

    def allowed(action: Action, recording: Recording) -> bool:
        return access.decide(session, reader_actor, action, recording, now, zone).allowed

    return [
        RegisterRow(
            recording,
            orders.person_of(teacher),
            may_list_accesses=allowed(Action.LIST_ACCESSES, recording),
            may_restrict=allowed(Action.RESTRICT, recording),
            may_erase=allowed(Action.ERASE, recording),
        )
        for recording, teacher in session.execute(query)
        if allowed(Action.VIEW_METADATA, recording)
    ]


def filter_choices(session: Session) -> tuple[list[User], list[str], list[str]]:
    """Teachers, classes and school years that appear in the register (for its filters)."""
    teachers = list(
        session.scalars(
            select(User).where(User.id.in_(select(Recording.owner_id))).order_by(User.full_name)
        )
    )
    classes = list(
        session.scalars(select(Recording.class_group).distinct().order_by(Recording.class_group))
    )
    years = list(
        session.scalars(
            select(Recording.school_year).distinct().order_by(Recording.school_year.desc())
        )
    )
    return teachers, classes, years
