"""What is about to be destroyed, told in time (procedure §21: the teacher is responsible).

For the 30 days before a school year's shred, its teachers and the director see "N
recordings will be deleted on DATE" on their home page, and each gets one e-mail about it
when SMTP is configured (``notices_sent`` keeps later runs from sending it again; a new
date is news, so it is sent again). Admins see when the coming year's last school day is
still the default.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vault.models import NoticeSent, Recording, User, UserRole
from vault.services import calendar
from vault.services.access import TOMBSTONE_STATUSES, year_closed
from vault.services.accounts import Role
from vault.services.mail import MailNotSent, configured_mailer
from vault.services.runtime import Runtime
from vault.settings import Settings

#: How long before a shred its reminders begin.
REMINDER_WINDOW = timedelta(days=30)
DELETION_REMINDER = "deletion_reminder"
_TOMBSTONE_VALUES = [status.value for status in TOMBSTONE_STATUSES]


@dataclass(frozen=True)
class ComingDeletion:
    """``recordings`` of ``school_year`` (those the reader is responsible for, or all for the
    director) are destroyed at ``shred_at``."""

    school_year: str
    shred_at: datetime
    recordings: int


def _years_due_soon(
    session: Session, settings: Settings, now: datetime
) -> list[tuple[str, datetime]]:
    due = []
    for entry in calendar.known_years(session):
        shred_at = calendar.shred_time(entry.last_day, settings.shred_hour, settings.zone)
        if now < shred_at <= now + REMINDER_WINDOW and not year_closed(session, entry.school_year):
            due.append((entry.school_year, shred_at))
    return due


def _live_count(session: Session, school_year: str, owner_id: uuid.UUID | None) -> int:
    query = (
        select(func.count())
        .select_from(Recording)
        .where(Recording.school_year == school_year, Recording.status.not_in(_TOMBSTONE_VALUES))
    )
    if owner_id is not None:
        query = query.where(
            (Recording.owner_id == owner_id) | (Recording.responsible_id == owner_id)
        )
    return int(session.scalar(query) or 0)


def coming_deletions(
    session: Session, settings: Settings, user_id: uuid.UUID, roles: frozenset[str], now: datetime
) -> list[ComingDeletion]:
    """The home page's reminders for this reader: a teacher's own recordings, the director's
    whole school; nothing for other roles."""
    if not roles & {Role.TEACHER.value, Role.DIRECTOR.value}:
        return []
    whole_school = Role.DIRECTOR.value in roles
    found = []
    for school_year, shred_at in _years_due_soon(session, settings, now):
        count = _live_count(session, school_year, None if whole_school else user_id)
        if count:
            found.append(ComingDeletion(school_year, shred_at, count))
    return found


def last_day_unset(
    session: Session, settings: Settings, now: datetime
) -> calendar.YearEntry | None:
    """The coming school year, when its last school day is still the default (the admins'
    banner): the year of today, or the next one once today's year has been shredded."""
    today = now.astimezone(settings.zone).date()
    year = calendar.school_year_of(today)
    entry = calendar.year_entry(session, year)
    if calendar.shred_time(entry.last_day, settings.shred_hour, settings.zone) <= now:
        start, _ = calendar.year_bounds(year)
        entry = calendar.year_entry(
            session, calendar.school_year_of(start.replace(year=start.year + 1))
        )
    return None if entry.configured else entry


@dataclass(frozen=True)
class Sent:
    sent: int
    failed: int


def send_reminders(runtime: Runtime, now: datetime, school_year: str | None = None) -> Sent:
    """E-mail each teacher and director once about each coming deletion (of ``school_year``
    only, when given: the announcement of a calendar change). Without SMTP, nothing."""
    settings = runtime.settings
    mailer = configured_mailer(settings)
    if mailer is None:
        return Sent(0, 0)
    sent = failed = 0
    with runtime.sessions() as session:
        due = [
            (year, shred_at)
            for year, shred_at in _years_due_soon(session, settings, now)
            if school_year is None or year == school_year
        ]
        readers = session.scalars(
            select(User)
            .join(UserRole, UserRole.user_id == User.id)
            .where(
                UserRole.role.in_([Role.TEACHER.value, Role.DIRECTOR.value]),
                User.disabled_at.is_(None),
                User.email.is_not(None),
            )
            .distinct()
        ).all()
        letters = []
        for year, shred_at in due:
            day = shred_at.date()
            already = set(
                session.scalars(
                    select(NoticeSent.user_id).where(
                        NoticeSent.kind == DELETION_REMINDER,
                        NoticeSent.school_year == year,
                        NoticeSent.about_date == day,
                    )
                )
            )
            for reader in readers:
                if reader.id in already:
                    continue
                for deletion in coming_deletions(session, settings, reader.id, reader.roles, now):
                    if deletion.school_year == year:
                        letters.append((reader.id, reader.email, deletion))
    for user_id, address, deletion in letters:
        assert address is not None
        try:
            mailer.send(address, *_letter(deletion))
        except MailNotSent:
            failed += 1  # the next run tries again
            continue
        with runtime.sessions() as session, session.begin():
            session.add(
                NoticeSent(
                    kind=DELETION_REMINDER,
                    school_year=deletion.school_year,
                    user_id=user_id,
                    about_date=deletion.shred_at.date(),
                    sent_at=now,
                )
            )
        sent += 1
    return Sent(sent, failed)


def _letter(deletion: ComingDeletion) -> tuple[str, str]:
    when = deletion.shred_at.strftime("%Y-%m-%d %H:%M")
    subject = (
        f"Recording Vault: ieraksti tiks dzēsti {deletion.shred_at:%Y-%m-%d} / "
        f"recordings will be deleted on {deletion.shred_at:%Y-%m-%d}"
    )
    body = (
        f"Mācību gada {deletion.school_year} ieraksti (skaits: {deletion.recordings}) tiks "
        f"neatgriezeniski dzēsti {when} (skolas laiks). Ja kādu no tiem esat lejupielādējis, "
        "izdzēsiet arī kopijas ārpus sistēmas.\n\n"
        f"{deletion.recordings} recordings of the school year {deletion.school_year} will be "
        f"destroyed for good on {when} (school time). If you downloaded any of them, delete "
        "those copies outside the vault as well.\n"
    )
    return subject, body
