"""Recordings for tests: valid registrations, and available recordings stored directly.

``store_plaintext`` encrypts and stores a file the way a finished upload leaves it, so that
tests of reading, deleting and access do not depend on the upload protocol. The rows that
``insert_recording`` and ``insert_order`` write skip the services' checks altogether.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tests.support.clock import RIGA
from vault import crypto
from vault.models import (
    AccessOrder,
    AccessOrderGrantee,
    AccessOrderRecording,
    Recording,
    SchoolYear,
    User,
)
from vault.services import accounts, calendar, deletion, recordings
from vault.services.actors import Actor
from vault.services.runtime import Runtime


def riga_today(runtime: Runtime) -> date:
    """Today in the school's time zone, by the runtime's clock."""
    return runtime.clock().astimezone(runtime.settings.zone).date()


def lesson_day(runtime: Runtime) -> date:
    """A recent day in the current school year (never before its 1 September)."""
    today = riga_today(runtime)
    start, _ = calendar.year_bounds(calendar.school_year_of(today))
    return max(start, today - timedelta(days=3))


def keep_year_open(runtime: Runtime) -> None:
    """In summer the default last school day has passed; move it so lessons still register.

    Needed by the tests that run on the machine's clock (on the test clock's November
    morning the year is open anyway). Written straight to the calendar: on 31 August the
    service rightly refuses a last day that is not after today."""
    today = riga_today(runtime)
    year = calendar.school_year_of(today)
    with runtime.sessions() as session, session.begin():
        if calendar.last_day(session, year) < today:
            _, end = calendar.year_bounds(year)
            session.merge(SchoolYear(school_year=year, last_day=end))
            session.execute(
                update(Recording).where(Recording.school_year == year).values(retain_until=end)
            )


def registration(runtime: Runtime, **overrides: Any) -> dict[str, Any]:
    day = lesson_day(runtime)
    payload: dict[str, Any] = {
        "title": "Fotosintēze",
        "subject": "Bioloģija",
        "class_group": "9.b",
        "lesson_date": day.isoformat(),
        "platform": "zoom",
        "purpose": "quality_safety",
        "aim": "Pārskatīt stundas tempu un skolēnu iesaisti.",
        "visible": "teacher_and_students",
        "subjects_informed": {"method": "e-klase ziņa vecākiem", "at": day.isoformat()},
        "third_party_warning": True,
        "device": "school",
    }
    payload.update(overrides)
    return payload


def register(runtime: Runtime, owner_username: str, **overrides: Any) -> uuid.UUID:
    keep_year_open(runtime)
    with runtime.sessions() as session, session.begin():
        owner = accounts.find_user(session, owner_username)
        assert owner is not None
        recording = recordings.register(
            session,
            Actor(user_id=owner.id),
            owner,
            recordings.parse_registration(registration(runtime, **overrides)),
            runtime.clock(),
            runtime.settings.zone,
        )
        return recording.id


MP4_HEADER = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def sample_media(size: int, marker: bytes = b"") -> bytes:
    body = (marker + bytes(range(256))) * (size // (256 + len(marker)) + 1)
    return (MP4_HEADER + body)[:size]


def store_plaintext(
    runtime: Runtime, recording_id: uuid.UUID, plaintext: bytes, *, chunk_size: int = 65536
) -> None:
    """Encrypt and store ``plaintext`` as the recording's finished object."""
    with runtime.sessions() as session, session.begin():
        recording = session.get(Recording, recording_id)
        assert recording is not None
        data_key, wrapped = runtime.keyring.new_data_key(
            session, recording.id, recording.school_year
        )
        ciphertext = crypto.encrypt_bytes(
            data_key, recording.id, recording.school_year, plaintext, chunk_size=chunk_size
        )
        key = f"recordings/{recording.school_year}/{recording.id}"
        runtime.store.put(
            key, ciphertext, calendar.object_tags(recording.school_year, recording.retain_until)
        )
        recording.object_key = key
        recording.wrapped_data_key = wrapped
        recording.size_bytes = len(plaintext)
        recording.content_type = "video/mp4"
        recording.plaintext_sha256 = hashlib.sha256(plaintext).hexdigest()
        recording.ciphertext_sha256 = hashlib.sha256(ciphertext).hexdigest()
        recording.status = "available"
        recording.available_at = runtime.clock()


def available_recording(
    runtime: Runtime, owner_username: str, size: int, *, chunk_size: int = 65536
) -> uuid.UUID:
    """A registered recording whose finished object holds ``sample_media(size)``."""
    recording_id = register(runtime, owner_username)
    store_plaintext(runtime, recording_id, sample_media(size), chunk_size=chunk_size)
    return recording_id


def delete_early(runtime: Runtime, recording_id: uuid.UUID) -> uuid.UUID:
    """Delete a recording before its year ends, as its owner does; its certificate's id."""
    with runtime.sessions() as session, session.begin():
        owner_id = session.scalars(
            select(Recording.owner_id).where(Recording.id == recording_id)
        ).one()
        deletion.delete_early(
            session,
            deletion.DeletionContext(
                runtime.keyring,
                runtime.store,
                runtime.clock(),
                runtime.settings.zone,
                runtime.settings.shred_hour,
            ),
            Actor(user_id=owner_id, roles=frozenset({"teacher"})),
            recording_id,
        )
    with runtime.sessions() as session:
        certificate = session.scalars(
            select(Recording.certificate_id).where(Recording.id == recording_id)
        ).one()
    assert certificate is not None
    return certificate


def insert_recording(
    runtime: Runtime,
    owner: str,
    *,
    title: str = "Daļskaitļi",
    class_group: str = "7.a",
    lesson_date: date | None = None,
    status: str = "available",
    retain_until: date | None = None,
    purpose: str = "quality_safety",
) -> uuid.UUID:
    """A recording row as registration leaves it, with the status a test needs; its media is
    never read here, so no object is stored."""
    lesson = lesson_date or riga_today(runtime) - timedelta(days=10)
    with runtime.sessions() as session, session.begin():
        owner_id = session.scalars(select(User.id).where(User.username == owner)).one()
        recording = Recording(
            owner_id=owner_id,
            title=title,
            subject="Matemātika",
            class_group=class_group,
            lesson_date=lesson,
            platform="zoom",
            purpose=purpose,
            aim="Atgriezeniskā saite par stundas gaitu",
            visible="teacher_only",
            subjects_informed_method="e-klase ziņa",
            subjects_informed_at=lesson - timedelta(days=2),
            third_party_warning=True,
            device="school",
            school_year=calendar.school_year_of(lesson),
            retain_until=retain_until or riga_today(runtime) + timedelta(days=60),
            status=status,
            created_at=runtime.clock(),
        )
        session.add(recording)
        session.flush()
        return recording.id


def insert_order(
    session: Session,
    now: datetime,
    director_id: uuid.UUID,
    grantees: list[uuid.UUID],
    recording_id: uuid.UUID,
    start: date,
    end: date,
    *,
    revoked: bool = False,
    number: str | None = None,
) -> uuid.UUID:
    """An order row written directly, not through the service: tests of the policy itself
    need what the service would never create (an order naming the admin or the auditor),
    and orders in the past or future."""
    order = AccessOrder(
        number=number or f"P-{recording_id.hex[:8]}-{uuid.uuid4().hex[:6]}",
        issued_on=min(start, now.astimezone(RIGA).date()),
        purpose="Pārbaude",
        issued_by=director_id,
        valid_from=start,
        valid_until=end,
        created_at=now,
        revoked_at=now - timedelta(hours=1) if revoked else None,
        revoked_by=director_id if revoked else None,
        revocation_reason="Pārbaude pabeigta" if revoked else None,
    )
    session.add(order)
    session.flush()
    session.add_all(AccessOrderGrantee(order_id=order.id, user_id=uid) for uid in grantees)
    session.add(AccessOrderRecording(order_id=order.id, recording_id=recording_id))
    return order.id
