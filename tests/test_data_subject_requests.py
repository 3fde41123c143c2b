"""Art. 18 restriction and art. 17 erasure of a recording, by the auditor."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from storage_backends.base import ObjectNotFound
from tests.support.people import Person, add_person, signed_in
from tests.support.recording_support import available_recording
from tests.support.webclient import csrf_token_from
from vault.models import AuditEvent, AuditEventContext, Recording
from vault.services import account_admin
from vault.services.runtime import Runtime


def bearer(runtime: Runtime, username: str) -> dict[str, str]:
    token = account_admin.issue_token(runtime, username, "t", "1d", runtime.clock())
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def auditor(runtime: Runtime) -> Person:
    return add_person(runtime, "dpo", "auditor")


def test_a_restriction_stops_every_use_until_lifted(
    client: FlaskClient, runtime: Runtime, teacher: Person, auditor: Person
) -> None:
    recording_id = available_recording(runtime, teacher.username, 5_000)
    owner, dpo = bearer(runtime, teacher.username), bearer(runtime, auditor.username)
    url = f"/api/v1/recordings/{recording_id}"

    assert client.post(f"{url}/restrict", json={"reason": "x"}, headers=owner).status_code == 403
    assert client.post(f"{url}/restrict", json={"reason": " "}, headers=dpo).status_code == 422
    restricted = client.post(f"{url}/restrict", json={"reason": "Pieprasījums 7/2026"}, headers=dpo)
    assert restricted.status_code == 200 and restricted.get_json()["status"] == "restricted"
    assert client.get(f"{url}/download", headers=owner).status_code == 403
    assert client.delete(url, headers=owner).status_code == 403
    assert client.post(f"{url}/views", headers=owner).status_code == 403

    lifted = client.post(
        f"{url}/restrict",
        json={"reason": "Pieprasījums 7/2026 atsaukts", "lift": True},
        headers=dpo,
    )
    assert lifted.get_json()["status"] == "available"
    assert client.get(f"{url}/download", headers=owner).status_code == 200
    with runtime.sessions() as session:
        actions = set(session.scalars(select(AuditEvent.action)))
    assert {"recording:restricted", "recording:restriction_lifted"} <= actions


def test_erasure_removes_the_object_and_names_the_request(
    client: FlaskClient, runtime: Runtime, teacher: Person, auditor: Person
) -> None:
    recording_id = available_recording(runtime, teacher.username, 5_000)
    dpo = bearer(runtime, auditor.username)
    url = f"/api/v1/recordings/{recording_id}"
    client.post(f"{url}/restrict", json={"reason": "Pieprasījums 8/2026"}, headers=dpo)
    with runtime.sessions() as session:
        key = session.get(Recording, recording_id).object_key  # type: ignore[union-attr]
    assert key is not None

    assert (
        client.post(
            f"{url}/erase", json={"reason": "x"}, headers=bearer(runtime, teacher.username)
        ).status_code
        == 403
    )
    erased = client.post(
        f"{url}/erase", json={"reason": "Pieprasījums 9/2026 (art. 17)"}, headers=dpo
    )
    assert erased.status_code == 200
    with pytest.raises(ObjectNotFound):
        runtime.store.head(key)
    document = client.get(
        f"/api/v1/certificates/{erased.get_json()['certificate_id']}", headers=dpo
    ).get_json()
    assert document["certificate"]["reason"] == "erasure_request"
    assert document["certificate"]["request"] == "Pieprasījums 9/2026 (art. 17)"
    assert client.post(f"{url}/erase", json={"reason": "again"}, headers=dpo).status_code == 410
    with runtime.sessions() as session:
        assert "recording:erased" in set(session.scalars(select(AuditEvent.action)))


def test_the_auditor_acts_from_the_recording_page(
    app: Flask, runtime: Runtime, teacher: Person, auditor: Person
) -> None:
    recording_id = available_recording(runtime, teacher.username, 5_000)
    browser = signed_in(app, auditor)
    page = browser.get(f"/recordings/{recording_id}").get_data(as_text=True)
    title = page.split("<title>", 1)[1].split("</title>", 1)[0]
    assert "<" not in title
    assert page.count('class="data-subject-requests"') == 1
    token = csrf_token_from(browser, f"/recordings/{recording_id}")
    done = browser.post(
        f"/recordings/{recording_id}/restrict",
        data={"csrf_token": token, "reason": "Pieprasījums 10/2026"},
    )
    assert done.status_code == 302
    with runtime.sessions() as session:
        assert session.get(Recording, recording_id).status == "restricted"  # type: ignore[union-attr]


def test_the_request_text_is_kept_apart_from_the_audit_event_and_erasable(
    client: FlaskClient, runtime: Runtime, teacher: Person, auditor: Person
) -> None:
    """A request names people ("Jānis Ozols, 7.a, asks ..."); the audit event never holds it."""
    recording_id = available_recording(runtime, teacher.username, 5_000)
    text = "Jāņa Ozola (7.a) vecāku pieprasījums 12/2026"
    response = client.post(
        f"/api/v1/recordings/{recording_id}/restrict",
        json={"reason": text},
        headers=bearer(runtime, auditor.username),
    )
    assert response.status_code == 200
    with runtime.sessions() as session, session.begin():
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "recording:restricted")
        ).one()
        assert "Ozol" not in json.dumps(event.details, ensure_ascii=False)
        assert event.details["request_text_kept_apart"] is True
        kept = session.get(AuditEventContext, event.id)
        assert kept is not None and kept.request_text == text
        kept.request_text = None  # erased on its own (art. 17)
    with runtime.sessions() as session:
        assert session.scalars(
            select(AuditEvent).where(AuditEvent.action == "recording:restricted")
        ).one().details == {"request_text_kept_apart": True, "role": "auditor"}
