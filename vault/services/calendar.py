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
from vault.services import audit, errors
from vault.services.actors import OPERATOR, Actor
from vault.services.audit import AuditAction
from vault.services.errors import N_, ValidationFailed
from vault.services.runtime import Runtime

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


def set_last_day(
    session: Session,
    store: BlobStore,
    actor: Actor,
    school_year: str,
    new_last_day: date,
) -> int:
    """Set a year's last school day, re-date its recordings and re-tag their objects.

    Returns how many objects were re-tagged. A store failure leaves the database unchanged
    (the caller rolls back), so tags and rows never disagree for long; `recvault fsck`
    reports any that do.
    """
    start, end = year_bounds(school_year)
    if not start <= new_last_day <= end:
        raise ValidationFailed(
            {"last_day": [N_("The last school day must fall within that school year.")]}
        )
    recordings = session.scalars(
        select(Recording).where(Recording.school_year == school_year)
    ).all()
    if any(r.lesson_date > new_last_day for r in recordings):
        raise ValidationFailed(
            {"last_day": [N_("Some recordings of this year have a later lesson date.")]}
        )
    row = session.get(SchoolYear, school_year)
    before = row.last_day if row is not None else None
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
                "before": before.isoformat() if before else None,
                "after": new_last_day.isoformat(),
                "retagged": retagged,
                "via": actor.via,
            },
        ),
    )
    try:
        store.ensure_ready(lifecycle_rules(session))
    except StorageError as exc:
        raise errors.StorageUnavailable() from exc
    return retagged


def set_last_day_as_operator(runtime: Runtime, school_year: str, new_last_day: date) -> int:
    """`recvault calendar set`: one transaction; the store's tags follow the database."""
    with runtime.sessions() as session, session.begin():
        return set_last_day(session, runtime.store, OPERATOR, school_year, new_last_day)
