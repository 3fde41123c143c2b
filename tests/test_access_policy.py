"""The policy function's own guarantees, beyond the matrix: it names the order that allowed
an access, counts validity in the school's time zone, and tells only those it would have
admitted that a recording is gone."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from tests.support.people import add_person
from tests.support.recording_support import insert_order, insert_recording
from tests.support.streaming_support import user_id
from vault.models import AuditEvent, Recording, User
from vault.services import access
from vault.services.access import Action, Decision
from vault.services.actors import Actor
from vault.services.errors import Gone, PermissionDenied
from vault.services.runtime import Runtime

RIGA = ZoneInfo("Europe/Riga")


def subject_of(runtime: Runtime, username: str) -> Actor:
    with runtime.sessions() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        return Actor(user.id, user.roles)


def write_order(
    runtime: Runtime,
    number: str,
    grantee: str,
    recording_id: uuid.UUID,
    valid_from: date,
    valid_until: date,
) -> uuid.UUID:
    director, named = user_id(runtime, "director"), user_id(runtime, grantee)
    with runtime.sessions() as session, session.begin():
        return insert_order(
            session,
            runtime.clock(),
            director,
            [named],
            recording_id,
            valid_from,
            valid_until,
            number=number,
        )


def decide(
    runtime: Runtime, who: str, action: Action, recording_id: uuid.UUID, now: datetime
) -> Decision:
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None
        decision = access.decide(session, subject_of(runtime, who), action, recording, now, RIGA)
        session.expunge_all()
        return decision


@pytest.fixture
def people(runtime: Runtime) -> None:
    add_person(runtime, "owner", "teacher")
    add_person(runtime, "staff", "staff")
    add_person(runtime, "director", "director")
    add_person(runtime, "admin", "admin")


@pytest.mark.usefixtures("people")
def test_the_decision_names_the_order_that_allows_it(runtime: Runtime) -> None:
    now = runtime.clock()
    today = now.astimezone(RIGA).date()
    rid = insert_recording(runtime, "owner")
    write_order(runtime, "old", "staff", rid, today - timedelta(days=30), today - timedelta(days=1))
    write_order(runtime, "short", "staff", rid, today, today + timedelta(days=2))
    long = write_order(
        runtime, "long", "staff", rid, today - timedelta(days=1), today + timedelta(days=9)
    )
    decision = decide(runtime, "staff", Action.START_VIEW, rid, now)
    assert decision.allowed and decision.reason == "order"
    assert decision.order is not None and decision.order.id == long
    owner = decide(runtime, "owner", Action.START_VIEW, rid, now)
    assert owner.allowed and owner.order is None


@pytest.mark.usefixtures("people")
def test_validity_is_counted_in_riga_days(runtime: Runtime) -> None:
    rid = insert_recording(runtime, "owner")
    write_order(runtime, "1", "staff", rid, date(2026, 3, 2), date(2026, 3, 10))
    # 22:30 UTC on 10 March is already 11 March in Riga (UTC+2 in winter).
    late = datetime(2026, 3, 10, 22, 30, tzinfo=UTC)
    assert not decide(runtime, "staff", Action.STREAM, rid, late).allowed
    assert decide(runtime, "staff", Action.STREAM, rid, late - timedelta(hours=1)).allowed
    # 22:30 UTC on 1 March is 2 March in Riga: the order's first day.
    assert decide(
        runtime, "staff", Action.STREAM, rid, datetime(2026, 3, 1, 22, 30, tzinfo=UTC)
    ).allowed
    assert not decide(
        runtime, "staff", Action.STREAM, rid, datetime(2026, 3, 1, 21, 30, tzinfo=UTC)
    ).allowed


@pytest.mark.usefixtures("people")
def test_the_director_streams_only_when_an_order_names_them(runtime: Runtime) -> None:
    now = runtime.clock()
    today = now.astimezone(RIGA).date()
    rid = insert_recording(runtime, "owner")
    assert decide(runtime, "director", Action.VIEW_METADATA, rid, now).allowed
    assert decide(runtime, "director", Action.START_VIEW, rid, now).reason == "not_named"
    write_order(runtime, "self", "director", rid, today, today)
    assert decide(runtime, "director", Action.START_VIEW, rid, now).allowed
    assert not decide(runtime, "director", Action.DOWNLOAD, rid, now).allowed


@pytest.mark.usefixtures("people")
def test_a_tombstone_says_gone_only_to_whom_it_would_have_admitted(runtime: Runtime) -> None:
    now = runtime.clock()
    today = now.astimezone(RIGA).date()
    rid = insert_recording(runtime, "owner", status="shredded")
    write_order(runtime, "1", "staff", rid, today, today + timedelta(days=1))
    assert decide(runtime, "owner", Action.START_VIEW, rid, now).gone
    assert decide(runtime, "owner", Action.UPLOAD, rid, now).gone
    assert decide(runtime, "staff", Action.STREAM, rid, now).gone
    assert decide(runtime, "staff", Action.VIEW_METADATA, rid, now).allowed
    stranger = decide(runtime, "admin", Action.START_VIEW, rid, now)
    assert not stranger.allowed and not stranger.gone
    assert not decide(runtime, "director", Action.STREAM, rid, now).gone


@pytest.mark.usefixtures("people")
def test_authorize_audits_each_refusal_with_its_reason(runtime: Runtime) -> None:
    now = runtime.clock()
    live = insert_recording(runtime, "owner")
    gone = insert_recording(runtime, "owner", status="deleted")
    with runtime.sessions() as session:
        for rid, who, error in ((live, "admin", PermissionDenied), (gone, "owner", Gone)):
            recording = session.get(Recording, rid)
            assert recording is not None
            with pytest.raises(error):
                access.authorize(
                    session, subject_of(runtime, who), Action.DOWNLOAD, recording, now, RIGA
                )
    with runtime.sessions() as session:
        events = list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == "access:denied"))
        )
    assert [(e.recording_id, e.details) for e in events] == [
        (live, {"action": "download", "reason": "download_owner_only", "role": "admin"}),
        (gone, {"action": "download", "reason": "gone", "role": "teacher"}),
    ]
