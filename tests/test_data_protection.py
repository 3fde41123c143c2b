"""The data-protection outputs: the public privacy notice, the record of processing (art. 30)
and the data-subject report (art. 15), each built from the configuration and the vault's
own data."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from tests.support.clock import TestClock, riga
from tests.support.people import Person, add_person, signed_in
from tests.support.recording_support import (
    delete_early,
    insert_recording,
    register,
    store_plaintext,
)
from tests.support.streaming_support import bearer, browser, issue_order
from vault.app import create_app
from vault.models import AccessOrder, AuditEvent, Recording, View
from vault.services.runtime import Runtime
from vault.settings import Settings

SCHOOL_YEAR = ("2026-09-01", "2027-08-31")


@pytest.fixture
def school_settings(settings: Settings) -> Settings:
    return dataclasses.replace(
        settings,
        school_address="Saules iela 1, Daugavpils, LV-5401",
        dpo_contact="dpo@dcvs.example.lv, 65400000",
    )


@pytest.fixture
def school_app(school_settings: Settings, runtime: Runtime) -> Flask:
    return create_app(school_settings, dataclasses.replace(runtime, settings=school_settings))


def set_platform(runtime: Runtime, recording_id: uuid.UUID, platform: str) -> None:
    with runtime.sessions() as session, session.begin():
        session.execute(
            update(Recording).where(Recording.id == recording_id).values(platform=platform)
        )


def test_the_privacy_notice_is_public_current_and_in_both_languages(
    school_app: Flask, runtime: Runtime
) -> None:
    add_person(runtime, "skolotaja", "teacher")
    set_platform(runtime, insert_recording(runtime, "skolotaja"), "zoom")
    set_platform(runtime, insert_recording(runtime, "skolotaja", title="Otra"), "teams")
    anonymous = school_app.test_client()
    latvian = anonymous.get("/privacy")
    assert latvian.status_code == 200
    page = latvian.get_data(as_text=True)
    assert "Privātuma paziņojums" in page
    for fact in (
        "Daugavpils Centra vidusskola",
        "Saules iela 1, Daugavpils, LV-5401",
        "dpo@dcvs.example.lv, 65400000",
        "Zoom",
        "Microsoft Teams",
        "Datu valsts inspekcija",
        "6(1)(e)",
        "2027-05-31",
    ):
        assert fact in page, fact
    assert "Cisco Webex" not in page and "Skype" not in page
    english = anonymous.get("/privacy?lang=en").get_data(as_text=True)
    assert "Privacy notice" in english and "Data State Inspectorate" in english
    assert "Microsoft Teams" in english


def test_an_officers_template_replaces_one_section_and_nothing_else(
    school_settings: Settings, school_app: Flask
) -> None:
    overrides = school_settings.instance_dir / "templates"
    (overrides / "privacy").mkdir(parents=True)
    (overrides / "privacy" / "rights.html").write_text(
        "<h2>Jūsu tiesības</h2><p>Rakstiet skolas direktoram, Saules ielā 1.</p>",
        encoding="utf-8",
    )
    # Only the notice's sections can be replaced from the instance folder.
    (overrides / "base.html").write_text("replaced", encoding="utf-8")
    page = school_app.test_client().get("/privacy").get_data(as_text=True)
    assert "Rakstiet skolas direktoram, Saules ielā 1." in page
    assert "Datu valsts inspekcija" not in page
    assert "Kas apstrādā datus" in page  # the controller's section, as shipped
    assert "replaced" not in page


@dataclasses.dataclass(frozen=True)
class Planted:
    teacher: Person
    staff: Person
    auditor: Person
    director: Person
    visible: uuid.UUID
    deleted: uuid.UUID
    teacher_only: uuid.UUID
    other_class: uuid.UUID
    last_year: uuid.UUID


def plant(runtime: Runtime, clock: TestClock) -> Planted:
    teacher = add_person(runtime, "skolotaja", "teacher", name="Anna Bērziņa")
    staff = add_person(runtime, "metodikis", "staff", name="Jānis Kalniņš")
    director = add_person(runtime, "direktore", "director", name="Ilze Ozola")
    auditor = add_person(runtime, "dpo", "auditor", name="Māris Liepa")
    clock.set(riga(2026, 5, 12, 10))
    last_year = register(runtime, "skolotaja", title="Pagājušā gada", class_group="9.b")
    clock.set(riga(2026, 11, 18, 10, 30))
    visible = register(runtime, "skolotaja", title="Fotosintēze", class_group="9.b")
    store_plaintext(runtime, visible, b"\x00\x00\x00\x18ftypisom" + bytes(2000))
    deleted = register(runtime, "skolotaja", title="Šūnas", class_group="9.b")
    store_plaintext(runtime, deleted, b"\x00\x00\x00\x18ftypisom" + bytes(1000))
    teacher_only = register(
        runtime, "skolotaja", title="Tikai skolotājs", class_group="9.b", visible="teacher_only"
    )
    other_class = register(runtime, "skolotaja", title="Cita klase", class_group="9.a")
    return Planted(
        teacher, staff, auditor, director, visible, deleted, teacher_only, other_class, last_year
    )


def test_the_data_subject_report_lists_exactly_the_recordings_that_show_the_class(
    app: Flask, client: FlaskClient, runtime: Runtime, clock: TestClock
) -> None:
    planted = plant(runtime, clock)
    issue_order(runtime, ["metodikis"], [planted.visible, planted.deleted], "7-2/15")
    metodikis = browser(app, planted.staff)
    assert metodikis.start_view(planted.visible).status_code == 201
    delete_early(runtime, planted.deleted)

    query = f"/api/v1/reports/subject?class_group=9.b&from={SCHOOL_YEAR[0]}&to={SCHOOL_YEAR[1]}"
    answer = client.get(query, headers=bearer(runtime, "dpo"))
    assert answer.status_code == 200
    report = answer.get_json()
    listed = {item["id"]: item for item in report["recordings"]}
    assert set(listed) == {str(planted.visible), str(planted.deleted)}
    seen = listed[str(planted.visible)]
    assert [(a["who"], a["order_number"]) for a in seen["accesses"]] == [
        ("Jānis Kalniņš", "7-2/15")
    ]
    assert seen["deleted_at"] is None and seen["deleted_by"].startswith("2027-05-31T18:00")
    gone = listed[str(planted.deleted)]
    assert gone["status"] == "deleted" and gone["certificate_id"]
    with runtime.sessions() as session:
        produced = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "report:subject_produced")
        ).one()
    assert produced.details["class_group"] == "9.b" and produced.details["recordings"] == 2

    for refused in ("direktore", "skolotaja"):
        assert client.get(query, headers=bearer(runtime, refused)).status_code == 403
    page = signed_in(app, planted.auditor).get(
        f"/reports/subject?class_group=9.b&from={SCHOOL_YEAR[0]}&to={SCHOOL_YEAR[1]}"
    )
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Fotosintēze" in text and "Šūnas" in text and "Cita klase" not in text
    assert "7-2/15" in text


def test_the_record_of_processing_counts_what_the_database_holds(
    app: Flask, client: FlaskClient, runtime: Runtime, clock: TestClock
) -> None:
    planted = plant(runtime, clock)
    issue_order(runtime, ["metodikis"], [planted.visible], "7-2/16")
    answer = client.get("/api/v1/reports/processing", headers=bearer(runtime, "direktore"))
    assert answer.status_code == 200
    record = answer.get_json()
    with runtime.sessions() as session:
        for year in record["school_years"]:
            in_year = Recording.school_year == year["school_year"]
            assert year["recordings"] == session.scalar(
                select(func.count()).select_from(Recording).where(in_year)
            )
            assert year["views"] == session.scalar(
                select(func.count(View.id)).join(Recording).where(in_year)
            )
        assert sum(y["orders"] for y in record["school_years"]) == session.scalar(
            select(func.count()).select_from(AccessOrder)
        )
    years = {y["school_year"]: y for y in record["school_years"]}
    assert years["2026-2027"]["recordings"] == 4 and years["2025-2026"]["recordings"] == 1
    assert years["2026-2027"]["orders"] == 1
    purposes = {p["purpose"]: p for p in record["purposes"]}
    assert purposes["quality_safety"]["recipients"] == ["staff"]
    assert purposes["quality_safety"]["processors"] == ["Zoom"]
    assert purposes["quality_safety"]["legal_basis"] == "GDPR art. 6(1)(e)"
    assert record["measures"]["storage"]["backend"] in (
        "local directory",
        "S3-compatible object storage",
    )
    assert (
        client.get("/api/v1/reports/processing", headers=bearer(runtime, "dpo")).status_code == 200
    )
    assert (
        client.get("/api/v1/reports/processing", headers=bearer(runtime, "skolotaja")).status_code
        == 403
    )
    page = signed_in(app, planted.director).get("/reports/processing").get_data(as_text=True)
    assert "Apstrādes darbību reģistrs" in page and "7-2/16" not in page


def test_the_measures_follow_the_configuration(
    settings: Settings, runtime: Runtime, client: FlaskClient, tmp_path: Path
) -> None:
    add_person(runtime, "direktore", "director")
    token = bearer(runtime, "direktore")
    here = client.get("/api/v1/reports/processing", headers=token).get_json()
    on_s3 = settings.storage_url.startswith("s3:")
    moved = dataclasses.replace(
        settings,
        storage_url=(tmp_path / "elsewhere").as_uri()
        if on_s3
        else "s3://recordings?endpoint=http://minio:9000",
    )
    moved_app = create_app(moved, dataclasses.replace(runtime, settings=moved))
    there = moved_app.test_client().get("/api/v1/reports/processing", headers=token).get_json()
    backends = {"S3-compatible object storage", "local directory"}
    assert {here["measures"]["storage"]["backend"], there["measures"]["storage"]["backend"]} == (
        backends
    )
