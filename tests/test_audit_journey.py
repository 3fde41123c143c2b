"""One school's journey through the JSON API and the browser-session endpoints, and the audit
log it leaves: exactly one event for every act SPEC §4.6 names (sign-in, upload, order, view,
denial, export), in the order the acts happened, with the right outcome and actor, and nothing
else.

A teacher signs in, registers a recording and uploads it over tus; the director signs in with
TOTP and issues an order naming a staff member; the staff member signs in and watches (the
view starts, ranges are streamed, a heartbeat reports what played, the view ends); the
director revokes the order, and the staff member's next attempt is refused; the auditor signs
in with TOTP and exports the log. Every request goes through the app as a browser's script
sends it: the session cookie plus the CSRF token of the page.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from tests.support.clock import SteppingClock
from tests.support.people import Person, add_person
from tests.support.recording_support import keep_year_open, registration, riga_today
from tests.support.streaming_support import Browser, browser, user_id
from tests.support.uploads_support import MIB, encode_metadata, media, published
from vault.models import AuditEvent
from vault.services import audit_chain, audit_export
from vault.services.audit import AuditAction, Outcome
from vault.services.runtime import Runtime

UPLOADS = "/api/v1/uploads"
# Large enough to be sent in two PATCH requests, small enough to keep the test quick.
RECORDING_BYTES = MIB + 12_345
FIRST_PATCH_BYTES = 700_000


@dataclass(frozen=True)
class Expected:
    """One event as the journey must leave it."""

    action: AuditAction
    outcome: Outcome
    actor: str | None  # a username; None for what the vault does by itself
    recording: bool = False  # whether the event names the journey's recording


@dataclass(frozen=True)
class Recorded:
    seq: int
    action: str
    outcome: str
    actor_id: uuid.UUID | None
    recording_id: uuid.UUID | None
    object_id: str | None
    details: dict[str, Any]


@dataclass
class Cast:
    teacher: Person
    director: Person
    staff: Person
    auditor: Person


@pytest.fixture
def cast(runtime: Runtime) -> Cast:
    keep_year_open(runtime)
    return Cast(
        teacher=add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa"),
        director=add_person(runtime, "direktore", "director", name="Ilze Ozola"),
        staff=add_person(runtime, "psihologs", "staff", name="Jānis Kalniņš"),
        auditor=add_person(runtime, "dpo", "auditor", name="Māris Liepa"),
    )


def head_seq(runtime: Runtime) -> int:
    with runtime.sessions() as session:
        return int(session.scalar(select(func.coalesce(func.max(AuditEvent.seq), 0))) or 0)


def events_after(runtime: Runtime, seq: int) -> list[Recorded]:
    with runtime.sessions() as session:
        rows = session.scalars(
            select(AuditEvent).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)
        )
        return [
            Recorded(
                audit_chain.number_of(row),
                row.action,
                row.outcome,
                row.actor_id,
                row.recording_id,
                row.object_id,
                dict(row.details),
            )
            for row in rows
        ]


def upload_in_the_browser(teacher: Browser, recording_id: str, data: bytes) -> None:
    """tus creation and two PATCH requests with the session cookie and the CSRF header, as
    the upload page's script sends them."""
    tus = {"Tus-Resumable": "1.0.0", **teacher.csrf}
    created = teacher.client.post(
        UPLOADS,
        headers={
            **tus,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": encode_metadata(recording_id=recording_id, filename="stunda.mp4"),
        },
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    location = created.headers["Location"]
    offset = 0
    for end in (FIRST_PATCH_BYTES, len(data)):
        patched = teacher.client.patch(
            location,
            data=data[offset:end],
            headers={
                **tus,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
        )
        assert patched.status_code == 204, patched.get_data(as_text=True)
        offset = int(patched.headers["Upload-Offset"])
    assert offset == len(data)
    # The page asks where the upload stands before it reports success.
    status = teacher.client.head(location, headers=tus)
    assert status.headers["Upload-Offset"] == str(len(data))


def test_the_journey_leaves_exactly_one_event_per_act(
    app: Flask,
    runtime: Runtime,
    clock: SteppingClock,
    cast: Cast,
    tmp_path: Path,
    verify_passes_finished: None,
) -> None:
    start = head_seq(runtime)
    today = riga_today(runtime)

    # The teacher registers a lesson and uploads it.
    teacher = browser(app, cast.teacher)
    registered = teacher.post_json("/api/v1/recordings", registration(runtime))
    assert registered.status_code == 201, registered.get_json()
    recording_id = registered.get_json()["id"]
    data = media(RECORDING_BYTES)
    upload_in_the_browser(teacher, recording_id, data)
    assert published(runtime, uuid.UUID(recording_id)).status == "available"
    shown = teacher.get(f"/api/v1/recordings/{recording_id}")
    assert shown.get_json()["status"] == "available"

    # The director signs in with a one-time code and names the staff member in an order.
    director = browser(app, cast.director)
    issued = director.post_json(
        "/api/v1/orders",
        {
            "number": "7-2/15",
            "issued_on": today.isoformat(),
            "purpose": "Stundas vērošana metodiskajā komisijā",
            "grantees": [cast.staff.username],
            "recording_ids": [recording_id],
            "valid_from": today.isoformat(),
            "valid_until": (today + timedelta(days=7)).isoformat(),
        },
    )
    assert issued.status_code == 201, issued.get_json()
    order_id = issued.get_json()["id"]

    # The staff member watches: a view, the player's range requests, a heartbeat, the end.
    staff = browser(app, cast.staff)
    started = staff.start_view(uuid.UUID(recording_id))
    assert started.status_code == 201, started.get_json()
    view = started.get_json()
    assert view["order"]["number"] == "7-2/15"
    for first, last, status in [(0, 65_535, 206), (500_000, None, 206), (None, None, 200)]:
        if first is None:
            headers = {}  # the whole file, as a player without Range support asks
        else:
            headers = {"Range": f"bytes={first}-{'' if last is None else last}"}
        streamed = staff.client.get(view["stream_url"], headers=headers)
        assert streamed.status_code == status, streamed.get_data(as_text=True)
        body = streamed.get_data()
        begin = first or 0
        assert body == data[begin : len(data) if last is None else last + 1]
    clock.advance(timedelta(seconds=30))
    beat = staff.post_json(view["heartbeat_url"], {"played": [[0, 12.5]], "duration": 40.0})
    assert beat.status_code == 200, beat.get_json()
    ended = staff.post_json(view["end_url"], {"played": [[30, 31.5]]})
    assert ended.status_code == 204, ended.get_data(as_text=True)

    # The director revokes the order; the staff member's next attempt is refused.
    revoked = director.post_json(
        f"/api/v1/orders/{order_id}/revoke", {"reason": "Metodiskais darbs pabeigts"}
    )
    assert revoked.status_code == 200, revoked.get_json()
    assert revoked.get_json()["state"] == "revoked"
    again = staff.start_view(uuid.UUID(recording_id))
    assert again.status_code == 403, again.get_data(as_text=True)

    # The auditor signs in with a one-time code, takes the public key to verify with, and
    # exports the log.
    auditor = browser(app, cast.auditor)
    key = auditor.get("/api/v1/audit/public-key")
    assert key.status_code == 200, key.get_data(as_text=True)
    exported = auditor.get("/api/v1/audit/events?format=jsonl")
    assert exported.status_code == 200, exported.get_data(as_text=True)
    export_file = tmp_path / "audit-events.jsonl"
    export_file.write_bytes(exported.get_data())
    lines = [json.loads(line) for line in export_file.read_text().splitlines()]

    people = {
        user_id(runtime, person.username): person.username
        for person in (cast.teacher, cast.director, cast.staff, cast.auditor)
    }
    ok, denied = Outcome.SUCCESS, Outcome.DENIED
    expected = [
        Expected(AuditAction.AUTH_LOGIN_SUCCEEDED, ok, "skolotaja"),
        Expected(AuditAction.RECORDING_REGISTERED, ok, "skolotaja", recording=True),
        Expected(AuditAction.UPLOAD_CREATED, ok, "skolotaja", recording=True),
        Expected(AuditAction.UPLOAD_COMPLETED, ok, "skolotaja", recording=True),
        Expected(AuditAction.AUTH_LOGIN_SUCCEEDED, ok, "direktore"),
        Expected(AuditAction.ORDER_ISSUED, ok, "direktore"),
        Expected(AuditAction.AUTH_LOGIN_SUCCEEDED, ok, "psihologs"),
        Expected(AuditAction.VIEW_STARTED, ok, "psihologs", recording=True),
        Expected(AuditAction.VIEW_ENDED, ok, "psihologs", recording=True),
        Expected(AuditAction.ORDER_REVOKED, ok, "direktore"),
        Expected(AuditAction.ACCESS_DENIED, denied, "psihologs", recording=True),
        Expected(AuditAction.AUTH_LOGIN_SUCCEEDED, ok, "dpo"),
        # The export is bound to a checkpoint signed as it starts (docs/audit.md), an event
        # of the vault's own, then it is itself an event of the auditor's.
        Expected(AuditAction.AUDIT_CHECKPOINT_CREATED, ok, None),
        Expected(AuditAction.AUDIT_EXPORTED, ok, "dpo"),
    ]
    recorded = events_after(runtime, start)
    as_recorded = [
        (
            event.action,
            event.outcome,
            people.get(event.actor_id) if event.actor_id else None,
            event.recording_id is not None and str(event.recording_id) == recording_id,
        )
        for event in recorded
    ]
    assert as_recorded == [
        (want.action.value, want.outcome.value, want.actor, want.recording) for want in expected
    ]

    # Each event says which act it is: the second factor at sign-in, the order, the view.
    by_action = {event.action: event for event in recorded}
    second_factors = [
        event.details.get("second_factor")
        for event in recorded
        if event.action == AuditAction.AUTH_LOGIN_SUCCEEDED
    ]
    assert second_factors == [False, True, False, True]
    for action in (AuditAction.ORDER_ISSUED, AuditAction.ORDER_REVOKED):
        assert by_action[action].object_id == order_id
    assert by_action[AuditAction.ORDER_ISSUED].details["grantees"] == [
        str(user_id(runtime, "psihologs"))
    ]
    for action in (AuditAction.VIEW_STARTED, AuditAction.VIEW_ENDED):
        assert by_action[action].object_id == view["view_id"]
    assert by_action[AuditAction.VIEW_STARTED].details["order_number"] == "7-2/15"
    summary = by_action[AuditAction.VIEW_ENDED].details
    assert summary["requests"] == 3
    assert summary["played_reported_seconds"] == [[0, 12.5], [30, 31.5]]
    refusal = by_action[AuditAction.ACCESS_DENIED].details
    assert (refusal["action"], refusal["reason"]) == ("start_view", "order_not_valid")

    # The export holds the log up to the checkpoint it is bound to (which covers everything
    # before the checkpoint's own event), names its own event, and verifies offline under
    # the key the auditor was given.
    manifest = lines[0]["manifest"]
    checkpoint_event, export_event = recorded[-2:]
    assert manifest["export_seq"] == export_event.seq
    assert exported.headers["X-Audit-Export-Seq"] == str(export_event.seq)
    assert manifest["head_seq"] == checkpoint_event.seq - 1
    assert [line["seq"] for line in lines[1:]] == list(range(1, checkpoint_event.seq))
    exported_journey = [line for line in lines[1:] if line["seq"] > start]
    assert [(line["action"], line["outcome"]) for line in exported_journey] == [
        (want.action.value, want.outcome.value) for want in expected[:-2]
    ]
    public_key = audit_export.public_key_from_file(key.get_data(as_text=True))
    offline = audit_export.verify_export(export_file, public_key)
    assert offline.intact and offline.signed, offline

    with runtime.sessions() as session:
        verdict = audit_chain.verify(session)
    assert verdict.intact, verdict
    assert verdict.count == export_event.seq
