"""The school-year calendar (procedure §15, §19, §21): recordings are kept until the last
school day of their year and shredded on that day.

A lesson date decides its school year: 1 September to 31 August. When the calendar has no
entry for a year, its last school day defaults to the last weekday of May of the year's
second calendar year, which is never later than the real last day of Latvian schools for
grades 1–8; an admin sets the real date with `recvault calendar set` or the calendar page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage_backends.base import BlobStore, LifecycleRules, StorageError, YearExpiry
from vault.models import Recording, SchoolYear
from vault.services import access, audit, errors
from vault.services.actors import OPERATOR, Actor
from vault.services.audit import AuditAction
from vault.services.errors import N_, ValidationFailed
from vault.services.runtime import Runtime
from vault.settings import Settings

SCHOOL_YEAR_PATTERN = re.compile(r"^(\d{4})-(\d{4})$")
FIRST_MONTH = 9  # a school year starts on 1 September


def school_year_of(day: date) -> str:
    start = day.year if day.month >= FIRST_MONTH else day.year - 1
    return f"{start}-{start + 1}"


def parse_school_year(text: str) -> tuple[int, int]:
    match = SCHOOL_YEAR_PATTERN.match(text.strip())
    if not match or int(match[2]) != int(match[1]) + 1:
        raise ValidationFailed({"school_year": [N_("Write the school year as 2025-2026.")]})
    return int(match[1]), int(match[2])


def year_bounds(school_year: str) -> tuple[date, date]:
    first, second = parse_school_year(school_year)
    return date(first, FIRST_MONTH, 1), date(second, FIRST_MONTH, 1) - timedelta(days=1)


def default_last_day(school_year: str) -> date:
    _, second = parse_school_year(school_year)
    day = date(second, 5, 31)
    while day.weekday() >= 5:  # Saturday, Sunday
        day -= timedelta(days=1)
    return day


@dataclass(frozen=True)
class YearEntry:
    school_year: str
    last_day: date
    configured: bool


def year_entry(session: Session, school_year: str) -> YearEntry:
    row = session.get(SchoolYear, school_year)
    if row is not None:
        return YearEntry(school_year, row.last_day, True)
    return YearEntry(school_year, default_last_day(school_year), False)


def last_day(session: Session, school_year: str) -> date:
    return year_entry(session, school_year).last_day


def shred_time(last_school_day: date, shred_hour: int, zone: ZoneInfo) -> datetime:
    """The moment a year is shredded: the configured hour on its last school day."""
    return datetime.combine(last_school_day, time(hour=shred_hour), tzinfo=zone)


def known_years(session: Session) -> list[YearEntry]:
    configured = set(session.scalars(select(SchoolYear.school_year)))
    with_recordings = set(session.scalars(select(Recording.school_year).distinct()))
    return [year_entry(session, year) for year in sorted(configured | with_recordings)]


def object_tags(school_year: str, retain_until: date) -> dict[str, str]:
    """The tags every stored recording carries (procedure §14: restricted-access information)."""
    return {
        "classification": "restricted",
        "school-year": school_year,
        "retain-until": retain_until.isoformat(),
    }


def lifecycle_rules(session: Session) -> LifecycleRules:
    """The store's expiry rules: a backstop behind the shred, one per known school year."""
    return LifecycleRules(
        years=tuple(YearExpiry(entry.school_year, entry.last_day) for entry in known_years(session))
    )


#: A change that brings a shred this close needs the admin's explicit confirmation.
CONFIRMATION_WINDOW = timedelta(days=30)


@dataclass(frozen=True)
class LastDayChange:
    school_year: str
    last_day: date
    # The admin saw the consequence and confirmed it (with their second factor, on the web).
    confirmed: bool = False


@dataclass(frozen=True)
class Consequence:
    """What a change of the last school day destroys, and when."""

    school_year: str
    shred_at: datetime
    recordings: int
    teachers: int


@dataclass(frozen=True)
class LastDaySet:
    school_year: str
    retagged: int
    # Set when the shred is now within 30 days: what it will destroy.
    consequence: Consequence | None


def describe(consequence: Consequence) -> str:
    """The consequence in the operator's words (the console prints it)."""
    return (
        f"{consequence.recordings} recordings of {consequence.teachers} teachers will be "
        f"destroyed on {consequence.shred_at:%Y-%m-%d} at {consequence.shred_at:%H:%M}."
    )


class ConfirmationRequired(errors.Conflict):
    """The change would bring the shred within 30 days: nothing was changed."""

    message = N_(
        "%(recordings)s recordings of %(teachers)s teachers will be destroyed on %(day)s "
        "at %(hour)s. Confirm to go ahead."
    )

    def __init__(self, consequence: Consequence) -> None:
        self.consequence = consequence
        super().__init__(
            recordings=consequence.recordings,
            teachers=consequence.teachers,
            day=consequence.shred_at.strftime("%Y-%m-%d"),
            hour=consequence.shred_at.strftime("%H:%M"),
        )


def consequence_of(session: Session, school_year: str, shred_at: datetime) -> Consequence:
    rows = session.execute(
        select(Recording.owner_id).where(
            Recording.school_year == school_year,
            Recording.status.not_in(["deleted", "shredded"]),
        )
    ).all()
    return Consequence(school_year, shred_at, len(rows), len({row.owner_id for row in rows}))


def set_last_day(
    session: Session,
    store: BlobStore,
    actor: Actor,
    change: LastDayChange,
    now: datetime,
    settings: Settings,
) -> LastDaySet:
    """Set a year's last school day, re-date its recordings and re-tag their objects.

    Moving the day is destructive: the year is shredded on it. A day before tomorrow is
    refused (the year-end --early is the one way to destroy at once), a year whose year-end
    has started cannot move, and a change that brings the shred within 30 days and earlier
    than before raises ``ConfirmationRequired`` unless ``change.confirmed``.

    Returns how many objects were re-tagged, and what the shred will destroy when it is
    within 30 days. A store failure leaves the database unchanged
    (the caller rolls back), so tags and rows never disagree for long; `recvault fsck`
    reports any that do.
    """
    school_year, new_last_day = change.school_year, change.last_day
    start, end = year_bounds(school_year)
    if not start <= new_last_day <= end:
        raise ValidationFailed(
            {"last_day": [N_("The last school day must fall within that school year.")]}
        )
    if new_last_day <= now.astimezone(settings.zone).date():
        raise ValidationFailed(
            {
                "last_day": [
                    N_(
                        "The last school day cannot be earlier than tomorrow. To destroy a "
                        "year's recordings at once, run its year-end early."
                    )
                ]
            }
        )
    if access.year_closed(session, school_year):
        raise ValidationFailed(
            {"school_year": [N_("This school year's recordings have already been deleted.")]}
        )
    recordings = session.scalars(
        select(Recording).where(Recording.school_year == school_year)
    ).all()
    if any(r.lesson_date > new_last_day for r in recordings):
        raise ValidationFailed(
            {"last_day": [N_("Some recordings of this year have a later lesson date.")]}
        )
    row = session.get(SchoolYear, school_year)
    before = last_day(session, school_year)
    shred_at = shred_time(new_last_day, settings.shred_hour, settings.zone)
    consequence = consequence_of(session, school_year, shred_at)
    within_window = shred_at <= now + CONFIRMATION_WINDOW
    destructive = new_last_day < before and within_window
    if destructive and not change.confirmed:
        raise ConfirmationRequired(consequence)
    if row is None:
        session.add(SchoolYear(school_year=school_year, last_day=new_last_day))
    else:
        row.last_day = new_last_day
    retagged = 0
    for recording in recordings:
        recording.retain_until = new_last_day
        if recording.object_key and recording.status not in ("deleted", "shredded"):
            try:
                store.set_tags(recording.object_key, object_tags(school_year, new_last_day))
            except StorageError as exc:
                raise errors.StorageUnavailable() from exc
            retagged += 1
    session.flush()
    audit.record(
        session,
        audit.by(
            actor,
            AuditAction.CALENDAR_LAST_DAY_SET,
            object_id=school_year,
            details={
                "before": before.isoformat() if row is not None else None,
                "after": new_last_day.isoformat(),
                "retagged": retagged,
                "via": actor.via,
                "confirmed": destructive,
                "recordings": consequence.recordings,
            },
        ),
    )
    try:
        store.ensure_ready(lifecycle_rules(session))
    except StorageError as exc:
        raise errors.StorageUnavailable() from exc
    return LastDaySet(school_year, retagged, consequence if within_window else None)


def set_last_day_as_operator(runtime: Runtime, change: LastDayChange) -> LastDaySet:
    """`recvault calendar set`: one transaction; the store's tags follow the database."""
    with runtime.sessions() as session, session.begin():
        return set_last_day(
            session, runtime.store, OPERATOR, change, runtime.clock(), runtime.settings
        )
