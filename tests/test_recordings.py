"""Registration, the teacher's pages, download, early deletion with a certificate, requests,
and the school-year calendar."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from storage_backends.base import ObjectNotFound
from tests.support.audit_trail import audit_actions
from tests.support.console import Console
from tests.support.people import Person, add_person, signed_in
from tests.support.recording_support import (
    available_recording,
    insert_recording,
    lesson_day,
    register,
    registration,
    riga_today,
    sample_media,
    store_plaintext,
)
from tests.support.webclient import csrf_token_from
from vault.models import Recording
from vault.services import account_admin, accounts, calendar
from vault.services.actors import OPERATOR
from vault.services.errors import IntegrityFailure
from vault.services.runtime import Runtime


def bearer_for(runtime: Runtime, username: str) -> dict[str, str]:
    token = account_admin.issue_token(runtime, username, "tests", "1d", runtime.clock())
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def other_teacher(runtime: Runtime) -> Person:
    return add_person(runtime, "citaskolotaja", "teacher", name="Līga Zariņa")


# -- registration through the API --------------------------------------------------------------


def test_a_teacher_registers_a_recording(
    client: FlaskClient, runtime: Runtime, teacher: Person
) -> None:
    response = client.post(
        "/api/v1/recordings",
        json=registration(runtime),
        headers=bearer_for(runtime, teacher.username),
    )
    assert response.status_code == 201
    body = response.get_json()
    assert body["status"] == "registered"
    assert body["upload_url"] == "/api/v1/uploads"
    year = calendar.school_year_of(lesson_day(runtime))
    assert body["school_year"] == year
    with runtime.sessions() as session:
        assert body["retain_until"] == calendar.last_day(session, year).isoformat()
        recording = session.get(Recording, __import__("uuid").UUID(body["id"]))
        assert recording is not None and recording.third_party_warning
    assert "recording:registered" in audit_actions(runtime)
    metadata = client.get(
        f"/api/v1/recordings/{body['id']}", headers=bearer_for(runtime, teacher.username)
    ).get_json()
    assert metadata["classification"] == "restricted"
    assert metadata["subjects_informed"]["method"] == "e-klase ziņa vecākiem"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"title": ""}, "title"),
        ({"platform": "myspace"}, "platform"),
        ({"purpose": "marketing"}, "purpose"),
        ({"visible": "everyone"}, "visible"),
        ({"device": "borrowed"}, "device"),
        ({"third_party_warning": False}, "third_party_warning"),
        ({"subjects_informed": {"method": "", "at": "2026-01-01"}}, "subjects_informed.method"),
        ({"lesson_date": "29.11.2026"}, "lesson_date"),
        ({"request_id": "not-a-uuid", "purpose": "methodological"}, "request_id"),
    ],
)
def test_invalid_fields_get_422_with_per_field_errors(
    client: FlaskClient, runtime: Runtime, teacher: Person, overrides: dict[str, object], field: str
) -> None:
    response = client.post(
        "/api/v1/recordings",
        json=registration(runtime, **overrides),
        headers=bearer_for(runtime, teacher.username) | {"Accept-Language": "en"},
    )
    assert response.status_code == 422
    assert response.mimetype == "application/problem+json"
    assert field in response.get_json()["errors"]
    with runtime.sessions() as session:
        assert session.scalars(select(Recording)).all() == []


def test_people_must_be_informed_before_the_lesson(
    client: FlaskClient, runtime: Runtime, teacher: Person
) -> None:
    day = lesson_day(runtime)
    late = {"method": "mutiski", "at": (day + timedelta(days=1)).isoformat()}
    response = client.post(
        "/api/v1/recordings",
        json=registration(runtime, subjects_informed=late),
        headers=bearer_for(runtime, teacher.username),
    )
    assert response.status_code == 422
    assert "subjects_informed.at" in response.get_json()["errors"]


def test_a_lesson_date_past_its_years_last_day_gets_422(
    client: FlaskClient, runtime: Runtime, teacher: Person
) -> None:
    previous_year = calendar.school_year_of(lesson_day(runtime) - timedelta(days=366))
    _, end = calendar.year_bounds(previous_year)
    with runtime.sessions() as session:
        last = calendar.last_day(session, previous_year)
    after_last_day = last + timedelta(days=1)
    assert after_last_day <= end
    payload = registration(
        runtime,
        lesson_date=after_last_day.isoformat(),
        subjects_informed={"method": "e-klase", "at": last.isoformat()},
    )
    response = client.post(
        "/api/v1/recordings", json=payload, headers=bearer_for(runtime, teacher.username)
    )
    assert response.status_code == 422
    errors = response.get_json()["errors"]["lesson_date"]
    assert any("pēdējās mācību dienas" in message for message in errors)


def test_the_schools_rules_are_reported_with_the_missing_fields(
    client: FlaskClient, runtime: Runtime, teacher: Person
) -> None:
    """A future lesson date and an unknown request are named in the same answer as an empty
    title, not only once the title is given."""
    tomorrow = lesson_day(runtime) + timedelta(days=400)
    payload = registration(
        runtime,
        title="",
        lesson_date=tomorrow.isoformat(),
        purpose="methodological",
        request_id=str(uuid.uuid4()),
        subjects_informed={"method": "e-klase", "at": lesson_day(runtime).isoformat()},
    )
    response = client.post(
        "/api/v1/recordings",
        json=payload,
        headers=bearer_for(runtime, teacher.username),
    )
    assert response.status_code == 422
    errors = response.get_json()["errors"]
    assert set(errors) >= {"title", "lesson_date", "request_id"}
    assert "Stundas datums nevar būt nākotnē." in errors["lesson_date"]
    assert errors["request_id"] == ["Nezināms lūgums."]


def test_a_future_lesson_date_gets_422(
    client: FlaskClient, runtime: Runtime, teacher: Person
) -> None:
    tomorrow = (riga_today(runtime) + timedelta(days=1)).isoformat()
    response = client.post(
        "/api/v1/recordings",
        json=registration(runtime, lesson_date=tomorrow),
        headers=bearer_for(runtime, teacher.username),
    )
    assert response.status_code == 422


def test_only_teachers_register(client: FlaskClient, runtime: Runtime) -> None:
    add_person(runtime, "psihologs", "staff")
    response = client.post(
        "/api/v1/recordings", json=registration(runtime), headers=bearer_for(runtime, "psihologs")
    )
    assert response.status_code == 403


# -- the pages ---------------------------------------------------------------------------------


def test_the_registration_form_in_latvian_and_its_errors(
    app: Flask, runtime: Runtime, teacher: Person
) -> None:
    browser = signed_in(app, teacher)
    page = browser.get("/recordings/new").get_data(as_text=True)
    assert "Reģistrēt ierakstu" in page and 'name="third_party_warning"' in page
    token = csrf_token_from(browser, "/recordings/new")
    refused = browser.post("/recordings/new", data={"csrf_token": token, "title": "X"})
    assert refused.status_code == 422
    assert "Šis lauks ir obligāts." in refused.get_data(as_text=True)
    day = lesson_day(runtime).isoformat()
    accepted = browser.post(
        "/recordings/new",
        data={
            "csrf_token": token,
            "title": "Stunda",
            "subject": "Fizika",
            "class_group": "8.a",
            "lesson_date": day,
            "platform": "teams",
            "purpose": "quality_safety",
            "aim": "Pašvērtējums",
            "visible": "teacher_only",
            "subjects_informed_method": "e-klase",
            "subjects_informed_at": day,
            "third_party_warning": "yes",
            "device": "school",
        },
    )
    assert accepted.status_code == 302
    assert re.search(r"/recordings/[0-9a-f-]{36}/upload$", accepted.headers["Location"])
    upload_page = browser.get(accepted.headers["Location"]).get_data(as_text=True)
    assert 'id="uploader"' in upload_page and "upload.js" in upload_page
    mine = browser.get("/recordings").get_data(as_text=True)
    assert "Stunda" in mine and "Ierobežotas pieejamības" in mine


EMPTY_REGISTRATION_MESSAGES = {
    "title": "Šis lauks ir obligāts.",
    "subject": "Šis lauks ir obligāts.",
    "class_group": "Šis lauks ir obligāts.",
    "lesson_date": "Šis lauks ir obligāts.",
    "platform": "Izvēlieties vienu no iespējām.",
    "purpose": "Izvēlieties vienu no iespējām.",
    "aim": "Šis lauks ir obligāts.",
    "visible": "Izvēlieties vienu no iespējām.",
    "subjects_informed-method": "Norādiet, kā ierakstā redzamās personas tika informētas.",
    "subjects_informed-at": "Šis lauks ir obligāts.",
    "third_party_warning": (
        "Apstipriniet, ka personas kameras vai mikrofona tuvumā tika brīdinātas."
    ),
    "device": "Izvēlieties vienu no iespējām.",
}


def test_an_empty_registration_names_every_field_at_once(
    app: Flask, runtime: Runtime, teacher: Person
) -> None:
    """The form is sent back with a summary linking each wrong field, and each field marked
    and described by its own message, all in one answer."""
    browser = signed_in(app, teacher)
    token = csrf_token_from(browser, "/recordings/new")
    refused = browser.post("/recordings/new", data={"csrf_token": token})
    assert refused.status_code == 422
    page = refused.get_data(as_text=True)
    assert " novalidate>" in page
    summary = page.split('<div class="error-summary" role="alert" tabindex="-1"', 1)[1]
    summary = summary.split("</div>", 1)[0]
    for field, message in EMPTY_REGISTRATION_MESSAGES.items():
        assert f'<a href="#field-{field}">' in summary and message in summary, field
        assert (
            f'id="field-{field}" aria-invalid="true" aria-describedby="field-{field}-error"' in page
        ), field
        assert f'id="field-{field}-error"><span>{message}</span>' in page, field


def test_other_teachers_see_nothing(
    app: Flask, runtime: Runtime, teacher: Person, other_teacher: Person, director: Person
) -> None:
    recording_id = register(runtime, teacher.username)
    stranger = app.test_client()
    assert (
        stranger.get(
            f"/api/v1/recordings/{recording_id}",
            headers=bearer_for(runtime, other_teacher.username),
        ).status_code
        == 403
    )
    listed = stranger.get("/api/v1/recordings", headers=bearer_for(runtime, other_teacher.username))
    assert listed.get_json()["recordings"] == []
    browser = signed_in(app, other_teacher)
    assert browser.get(f"/recordings/{recording_id}").status_code == 403
    assert browser.get(f"/recordings/{recording_id}/upload").status_code == 403
    register_view = stranger.get(
        f"/api/v1/recordings/{recording_id}", headers=bearer_for(runtime, director.username)
    )
    assert register_view.status_code == 200
    assert "access:denied" in audit_actions(runtime)


# -- download and early deletion ---------------------------------------------------------------


def test_the_owner_downloads_an_identical_copy(
    app: Flask, runtime: Runtime, teacher: Person, other_teacher: Person, director: Person
) -> None:
    recording_id = register(runtime, teacher.username)
    plaintext = sample_media(300_000)
    store_plaintext(runtime, recording_id, plaintext, chunk_size=4096)
    client = app.test_client()
    response = client.get(
        f"/api/v1/recordings/{recording_id}/download", headers=bearer_for(runtime, teacher.username)
    )
    assert response.status_code == 200
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["Cache-Control"] == "no-store"
    assert hashlib.sha256(response.get_data()).hexdigest() == hashlib.sha256(plaintext).hexdigest()
    for person in (other_teacher, director):
        denied = client.get(
            f"/api/v1/recordings/{recording_id}/download",
            headers=bearer_for(runtime, person.username),
        )
        assert denied.status_code == 403
    assert "recording:downloaded" in audit_actions(runtime)


def test_a_tampered_object_is_never_served(app: Flask, runtime: Runtime, teacher: Person) -> None:
    recording_id = available_recording(runtime, teacher.username, 50_000, chunk_size=1024)
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None and recording.object_key
        key = recording.object_key
    stored = bytearray(b"".join(runtime.store.read_range(key)))
    stored[30_000] ^= 0x01
    runtime.store.put(key, bytes(stored), runtime.store.get_tags(key))
    response = app.test_client().get(
        f"/api/v1/recordings/{recording_id}/download",
        headers=bearer_for(runtime, teacher.username),
    )
    # The failure comes mid-body: the server must abort rather than send unverified bytes.
    with pytest.raises(IntegrityFailure):
        response.get_data()


def test_early_deletion_leaves_a_tombstone_and_a_signed_certificate(
    app: Flask, runtime: Runtime, recvault: Console, teacher: Person, tmp_path: Path
) -> None:
    recording_id = available_recording(runtime, teacher.username, 10_000)
    headers = bearer_for(runtime, teacher.username)
    client = app.test_client()
    assert (
        client.get(f"/api/v1/recordings/{recording_id}/download", headers=headers).status_code
        == 200
    )
    with runtime.sessions() as session:
        key = session.get(Recording, recording_id).object_key  # type: ignore[union-attr]
    assert key is not None

    assert client.delete(f"/api/v1/recordings/{recording_id}", headers=headers).status_code == 204
    with pytest.raises(ObjectNotFound):
        runtime.store.head(key)
    tombstone = client.get(f"/api/v1/recordings/{recording_id}", headers=headers).get_json()
    assert tombstone["status"] == "deleted" and tombstone["title"] == "Fotosintēze"
    assert client.delete(f"/api/v1/recordings/{recording_id}", headers=headers).status_code == 410
    assert (
        client.get(f"/api/v1/recordings/{recording_id}/download", headers=headers).status_code
        == 410
    )

    document = client.get(
        f"/api/v1/certificates/{tombstone['certificate_id']}", headers=headers
    ).get_json()
    statement = document["certificate"]
    assert statement["kind"] == "early_deletion"
    assert statement["cryptographic_erasure"]["complete"] is False
    assert statement["cryptographic_erasure"]["completes_at"].startswith(tombstone["retain_until"])
    assert len(statement["copies_outside_the_vault"]) == 1
    path = tmp_path / "certificate.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    verified = recvault("certificate", "verify", str(path))
    assert verified.exit_code == 0, verified.output
    assert "valid" in verified.output

    document["signed_body"] = document["signed_body"].replace("early_deletion", "early_deletiom")
    path.write_text(json.dumps(document), encoding="utf-8")
    forged = recvault("certificate", "verify", str(path))
    assert forged.exit_code != 0 and "INVALID" in forged.output
    assert "recording:deleted" in audit_actions(runtime)


def test_deletion_through_the_page_asks_first(
    app: Flask, runtime: Runtime, teacher: Person
) -> None:
    recording_id = register(runtime, teacher.username)
    browser = signed_in(app, teacher)
    confirm = browser.get(f"/recordings/{recording_id}/delete")
    assert confirm.status_code == 200 and "Dzēst neatgriezeniski" in confirm.get_data(as_text=True)
    token = csrf_token_from(browser, f"/recordings/{recording_id}/delete")
    done = browser.post(f"/recordings/{recording_id}/delete", data={"csrf_token": token})
    assert done.status_code == 302
    certificate_page = browser.get(done.headers["Location"]).get_data(as_text=True)
    assert "Dzēšanas apliecinājums" in certificate_page


# -- methodological-work requests --------------------------------------------------------------


def test_requests_link_methodological_recordings(
    client: FlaskClient, runtime: Runtime, teacher: Person, other_teacher: Person, director: Person
) -> None:
    made = client.post(
        "/api/v1/requests",
        json={
            "teacher": teacher.username,
            "lesson": "9.b bioloģija, 3. stunda",
            "aim": "Metodiskā darba paraugs jaunajiem kolēģiem",
        },
        headers=bearer_for(runtime, director.username),
    )
    assert made.status_code == 201
    request_id = made.get_json()["id"]
    assert (
        client.post(
            "/api/v1/requests",
            json={"teacher": teacher.username, "lesson": "x", "aim": "y"},
            headers=bearer_for(runtime, teacher.username),
        ).status_code
        == 403
    )
    seen = client.get("/api/v1/requests", headers=bearer_for(runtime, teacher.username)).get_json()
    assert [r["id"] for r in seen["requests"]] == [request_id]
    assert client.get(
        "/api/v1/requests", headers=bearer_for(runtime, other_teacher.username)
    ).get_json() == {"requests": []}
    not_theirs = client.post(
        "/api/v1/recordings",
        json=registration(runtime, purpose="methodological", request_id=request_id),
        headers=bearer_for(runtime, other_teacher.username),
    )
    assert not_theirs.status_code == 422
    linked = client.post(
        "/api/v1/recordings",
        json=registration(runtime, purpose="methodological", request_id=request_id),
        headers=bearer_for(runtime, teacher.username),
    )
    assert linked.status_code == 201
    recording_id = linked.get_json()["id"]
    quality = register(runtime, teacher.username)
    assert (
        client.delete(
            f"/api/v1/recordings/{quality}", headers=bearer_for(runtime, director.username)
        ).status_code
        == 403
    )
    assert (
        client.delete(
            f"/api/v1/recordings/{recording_id}", headers=bearer_for(runtime, director.username)
        ).status_code
        == 204
    )


# -- the calendar --------------------------------------------------------------------------------


def test_the_auditor_reads_every_request_and_issues_none(
    app: Flask, client: FlaskClient, runtime: Runtime, teacher: Person, director: Person
) -> None:
    auditor = add_person(runtime, "dpo", "auditor", name="Māris Liepa")
    made = client.post(
        "/api/v1/requests",
        json={"teacher": teacher.username, "lesson": "7.a fizika", "aim": "Paraugstunda"},
        headers=bearer_for(runtime, director.username),
    )
    assert made.status_code == 201
    seen = client.get("/api/v1/requests", headers=bearer_for(runtime, auditor.username))
    assert [r["id"] for r in seen.get_json()["requests"]] == [made.get_json()["id"]]
    browser = signed_in(app, auditor)
    page = browser.get("/requests")
    assert page.status_code == 200 and "7.a fizika" in page.get_data(as_text=True)
    assert 'name="lesson"' not in page.get_data(as_text=True)
    token = csrf_token_from(browser, "/requests")
    refused = browser.post(
        "/requests",
        data={"csrf_token": token, "teacher": teacher.username, "lesson": "x", "aim": "y"},
    )
    assert refused.status_code == 403
    refused_api = client.post(
        "/api/v1/requests",
        json={"teacher": teacher.username, "lesson": "x", "aim": "y"},
        headers=bearer_for(runtime, auditor.username),
    )
    assert refused_api.status_code == 403


def test_calendar_set_redates_and_retags(
    runtime: Runtime, recvault: Console, teacher: Person
) -> None:
    recording_id = available_recording(runtime, teacher.username, 5_000)
    year = calendar.school_year_of(lesson_day(runtime))
    _, end = calendar.year_bounds(year)
    new_day = end - timedelta(days=10)
    result = recvault("calendar", "set", year, "--last-day", new_day.isoformat())
    assert result.exit_code == 0, result.output
    assert "1 objects re-tagged" in result.output
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None and recording.object_key
        assert recording.retain_until == new_day
        key = recording.object_key
    assert runtime.store.get_tags(key) == {
        "classification": "restricted",
        "school-year": year,
        "retain-until": new_day.isoformat(),
    }
    assert f"{year}\t{new_day.isoformat()}\tset" in recvault("calendar", "show").output
    rules = runtime.store.get_lifecycle_rules()
    assert any(rule.school_year == year and rule.retain_until == new_day for rule in rules.years)
    outside = recvault("calendar", "set", year, "--last-day", "2001-01-01")
    assert outside.exit_code != 0
    assert "calendar:last_day_set" in audit_actions(runtime)


def test_the_default_last_day_is_the_last_weekday_of_may() -> None:
    assert calendar.default_last_day("2025-2026") == date(2026, 5, 29)
    assert calendar.default_last_day("2026-2027") == date(2027, 5, 31)
    assert calendar.school_year_of(date(2026, 8, 31)) == "2025-2026"
    assert calendar.school_year_of(date(2026, 9, 1)) == "2026-2027"


def test_a_disabled_teachers_recording_passes_to_the_director(
    app: Flask, runtime: Runtime, teacher: Person, director: Person
) -> None:
    recording_id = available_recording(runtime, teacher.username, 4_000)
    browser = signed_in(app, director)
    token = csrf_token_from(browser, f"/recordings/{recording_id}")
    refused = browser.post(
        f"/recordings/{recording_id}/take-responsibility", data={"csrf_token": token}
    )
    assert refused.status_code == 403, "the owner is still active"

    with runtime.sessions() as session, session.begin():
        owner = accounts.find_user(session, teacher.username)
        assert owner is not None
        accounts.set_disabled(session, OPERATOR, owner, True, runtime.clock())
    page = browser.get(f"/recordings/{recording_id}").get_data(as_text=True)
    assert "īpašnieks atspējots" in page
    assert (
        browser.delete(
            f"/api/v1/recordings/{recording_id}", headers={"X-CSRF-Token": token}
        ).status_code
        == 403
    )
    taken = browser.post(
        f"/recordings/{recording_id}/take-responsibility", data={"csrf_token": token}
    )
    assert taken.status_code == 302
    with runtime.sessions() as session:
        recording = session.get(Recording, recording_id)
        assert recording is not None and recording.status == "available"
    assert "recording:responsibility_taken" in audit_actions(runtime)
    deleted = browser.delete(f"/api/v1/recordings/{recording_id}", headers={"X-CSRF-Token": token})
    assert deleted.status_code == 204


def test_the_admin_sets_the_last_school_day_on_the_calendar_page(
    app: Flask, runtime: Runtime
) -> None:
    admin = add_person(runtime, "it-admin", "admin")
    browser = signed_in(app, admin)
    page = browser.get("/admin/calendar")
    assert page.status_code == 200 and "Mācību gada kalendārs" in page.get_data(as_text=True)
    token = csrf_token_from(browser, "/admin/calendar")
    refused = browser.post(
        "/admin/calendar",
        data={"csrf_token": token, "school_year": "2030-2031", "last_day": "2029-05-30"},
    )
    assert refused.status_code == 422
    saved = browser.post(
        "/admin/calendar",
        data={"csrf_token": token, "school_year": "2030-2031", "last_day": "2031-06-12"},
    )
    assert saved.status_code == 302
    assert "2031-06-12" in browser.get("/admin/calendar").get_data(as_text=True)
    with runtime.sessions() as session:
        assert calendar.last_day(session, "2030-2031") == date(2031, 6, 12)


def test_the_days_until_deletion_read_right_in_latvian(
    app: Flask, runtime: Runtime, teacher: Person
) -> None:
    """Babel's plural rules and the case "pēc" takes: dienām, but 21 dienas."""
    today = riga_today(runtime)
    for days in (198, 21, 10):
        insert_recording(runtime, teacher.username, retain_until=today + timedelta(days=days))
    page = signed_in(app, teacher).get("/recordings").get_data(as_text=True)
    assert "pēc 198 dienām" in page and "pēc 21 dienas" in page and "pēc 10 dienām" in page
    assert "198 dienas" not in page
