"""The public privacy notice (GDPR arts. 12 and 13; procedure §6): what the school tells the
people in its recordings, built from the configuration and from what the vault holds, so it
is always current.

The facts come from here; the legal wording lives in templates the school's officer may
override from the instance folder (``docs/operations.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from vault.models import AccessOrderGrantee, AccessOrderRecording, Recording, UserRole
from vault.services import calendar
from vault.services.access import DESIGNATABLE_ROLES
from vault.services.recordings import PLATFORM_LABELS, Platform
from vault.settings import Settings


@dataclass(frozen=True)
class NoticeFacts:
    school_name: str
    school_address: str
    dpo_contact: str
    # The platforms of the recordings the vault holds or held (processors, art. 28).
    platforms: tuple[str, ...]
    # The roles of the persons the director's orders name (recipients, by role, not name).
    recipient_roles: tuple[str, ...]
    school_year: str
    last_day: date
    shred_hour: int
    tombstone_days: int


def platforms_used(session: Session, purpose: str | None = None) -> tuple[str, ...]:
    """The labels of the platforms the recordings came from (tombstones included)."""
    query = select(Recording.platform).distinct()
    if purpose is not None:
        query = query.where(Recording.purpose == purpose)
    found = set(session.scalars(query))
    return tuple(PLATFORM_LABELS[platform] for platform in Platform if platform.value in found)


def recipient_roles(session: Session, purpose: str | None = None) -> tuple[str, ...]:
    """The roles of the persons the orders name (of recordings of ``purpose``, if given)."""
    query = (
        select(UserRole.role)
        .join(AccessOrderGrantee, AccessOrderGrantee.user_id == UserRole.user_id)
        .distinct()
    )
    if purpose is not None:
        query = (
            query.join(
                AccessOrderRecording,
                AccessOrderRecording.order_id == AccessOrderGrantee.order_id,
            )
            .join(Recording, Recording.id == AccessOrderRecording.recording_id)
            .where(Recording.purpose == purpose)
        )
    roles = set(session.scalars(query)) & DESIGNATABLE_ROLES
    return tuple(role for role in ("director", "teacher", "staff") if role in roles)


def notice_facts(session: Session, settings: Settings, now: datetime) -> NoticeFacts:
    today = now.astimezone(settings.zone).date()
    school_year = calendar.school_year_of(today)
    return NoticeFacts(
        school_name=settings.school_name,
        school_address=settings.school_address,
        dpo_contact=settings.dpo_contact,
        platforms=platforms_used(session),
        recipient_roles=recipient_roles(session),
        school_year=school_year,
        last_day=calendar.last_day(session, school_year),
        shred_hour=settings.shred_hour,
        tombstone_days=settings.tombstone_days,
    )
